"""The wide part in logreg mode: fitted from the model's own n-gram features before
training, weighed beside the encoder on validation, saved and exported with the model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from scrclf.calibration import fit_mix
from scrclf.modeling.encoders import build_model, load_tokenizer
from scrclf.modeling.model import first_segment
from scrclf.modeling.wide import feature_matrix, fit_wide, smooth_idf, wide_logits_of
from scrclf.tasks import TaskSet
from tests.helpers import CONFIG_DIR, compose_train

TEXTS = [
    "The board should audit supervision records every quarter.",
    "Training for health visitors on recognising bruising in babies.",
    "Share information with the police about domestic abuse.",
    "Audit the records of supervision in children's social care.",
    "All GPs should attend training on safeguarding babies.",
    "Information sharing between police and social care must improve.",
] * 4


@pytest.fixture(scope="module")
def tasks():
    return TaskSet.from_config(OmegaConf.load(CONFIG_DIR / "task" / "codebook.yaml").tasks)


@pytest.fixture(scope="module")
def model_and_ids(tasks):
    cfg = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "model" / "tiny.yaml"))
    cfg["wide"] = {"buckets": 4096, "ngrams": 2, "mode": "logreg", "C": 4.0}
    model = build_model(cfg, tasks, max_length=64).eval()
    ids = load_tokenizer(cfg)(TEXTS)["input_ids"]
    return model, ids


def _targets(tasks, n):
    themes = np.zeros((n, tasks["themes"].num_labels))
    themes[:, 6] = [1 if "audit" in t.lower() else 0 for t in TEXTS[:n]]  # audit_assurance
    themes[:, 1] = [1 if "training" in t.lower() else 0 for t in TEXTS[:n]]  # training_learning
    themes[:, 4] = [1 if "information" in t.lower() else 0 for t in TEXTS[:n]]
    evidence = np.array([i % 2 for i in range(n)])
    strength = np.array([("audit" in t.lower()) * 1 for t in TEXTS[:n]])
    return {"themes": themes, "evidence": evidence, "action_strength": strength}


def test_logreg_wide_is_frozen_and_off_until_weighed(model_and_ids):
    model, _ = model_and_ids
    assert not model.wide.weight.requires_grad
    assert model.wide_mix() == [0.0, 0.0, 0.0]
    assert all(
        p is not model.wide.weight for g in model.param_groups(1e-4, 0.0) for p in g["params"]
    )


def test_feature_matrix_matches_the_models_own_wide_logits(model_and_ids, tasks):
    model, ids = model_and_ids
    fit_wide(model, ids, _targets(tasks, len(ids)), tasks)
    idf = model.wide_idf.numpy().astype(np.float64)
    x = feature_matrix(model, ids, idf)
    expected = x @ model.wide.weight.detach().numpy().astype(np.float64)
    got = np.concatenate(wide_logits_of(model, ids), axis=1)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    # a bucket seen in every item has the lowest IDF, one never seen the highest
    assert idf.min() == pytest.approx(1.0) and idf.max() == pytest.approx(np.log(len(ids) + 1) + 1)
    assert np.allclose(smooth_idf(model, ids), idf, atol=1e-5)


FINDINGS = [
    "The police held information that was never passed on.",
    "No agency audited its records of supervision.",
    "Training had lapsed for most staff.",
] * 8


@pytest.fixture(scope="module")
def text_only_model(tasks):
    """A tiny model whose themes' wide logits read the recommendation text alone, and the
    token ids of text-finding pairs."""
    cfg = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "model" / "tiny.yaml"))
    cfg["wide"] = {"buckets": 4096, "ngrams": 2, "mode": "logreg", "C": 4.0}
    cfg["wide"]["text_only"] = ["themes"]
    model = build_model(cfg, tasks, max_length=64).eval()
    tokenizer = load_tokenizer(cfg)
    ids = tokenizer(TEXTS, FINDINGS[: len(TEXTS)])["input_ids"]
    fit_wide(model, ids, _targets(tasks, len(ids)), tasks)
    return model, tokenizer, ids


def test_first_segment_ends_at_the_first_separator():
    sep = 102
    ids = torch.tensor([[101, 7, 8, sep, 9, 10, sep, 0], [101, 7, sep, 0, 0, 0, 0, 0]])
    mask = (ids != 0).long()
    assert first_segment(ids, mask, sep).tolist() == [
        [1, 1, 1, 1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0, 0],
    ]


def test_build_model_takes_the_separator_from_the_tokenizer(text_only_model):
    model, tokenizer, _ = text_only_model
    assert model.config.wide["text_only"] == ["themes"]
    assert model.config.wide["sep_token_id"] == tokenizer.sep_token_id


def test_text_only_wide_logits_ignore_the_finding(text_only_model):
    model, tokenizer, ids = text_only_model
    themes, evidence, _ = wide_logits_of(model, ids)
    other = tokenizer(TEXTS, ["An unrelated finding about housing."] * len(TEXTS))["input_ids"]
    themes_other, evidence_other, _ = wide_logits_of(model, other)
    alone = wide_logits_of(model, tokenizer(TEXTS)["input_ids"])[0]
    np.testing.assert_allclose(themes_other, themes, atol=1e-5)
    np.testing.assert_allclose(alone, themes, atol=1e-5)
    assert np.abs(evidence_other - evidence).max() > 1e-3  # evidence reads the finding


def test_text_only_features_match_the_models_own_wide_logits(text_only_model, tasks):
    model, _, ids = text_only_model
    idf = model.wide_idf.numpy().astype(np.float64)
    weight = model.wide.weight.detach().numpy().astype(np.float64)
    themes = slice(0, tasks["themes"].num_labels)
    rest = slice(tasks["themes"].num_labels, None)
    got = np.concatenate(wide_logits_of(model, ids), axis=1)
    text = feature_matrix(model, ids, idf, text_only=True) @ weight
    whole = feature_matrix(model, ids, idf) @ weight
    np.testing.assert_allclose(got[:, themes], text[:, themes], atol=1e-4)
    np.testing.assert_allclose(got[:, rest], whole[:, rest], atol=1e-4)
    assert not np.allclose(text[:, themes], whole[:, themes], atol=1e-3)


@pytest.mark.parametrize(
    ("wide", "message"),
    [
        ({"text_only": "themes"}, "must be a list of task names"),
        ({"text_only": ["topics"], "sep_token_id": 102}, "unknown tasks"),
        ({"text_only": ["themes", "themes"], "sep_token_id": 102}, "names a task twice"),
        ({"text_only": ["themes"]}, "needs the tokenizer's separator"),
        ({"text_only": ["themes"], "sep_token_id": -1}, "must be a token id"),
    ],
)
def test_text_only_settings_are_checked(tasks, wide, message):
    from scrclf.errors import SettingsError
    from scrclf.modeling.model import ScrClfConfig

    with pytest.raises(SettingsError, match=message):
        ScrClfConfig(tasks=tasks.to_list(), wide={"buckets": 64, "mode": "logreg", **wide})


@pytest.mark.parametrize(
    ("wide", "message"),
    [
        ({"mode": "logreg", "intercept": "yes"}, "intercept must be true or false"),
        ({"mode": "joint", "intercept": True}, "intercept needs mode: logreg"),
    ],
)
def test_intercept_setting_is_checked(tasks, wide, message):
    from scrclf.errors import SettingsError
    from scrclf.modeling.model import ScrClfConfig

    with pytest.raises(SettingsError, match=message):
        ScrClfConfig(tasks=tasks.to_list(), wide={"buckets": 64, **wide})


@pytest.fixture(scope="module")
def intercept_model(tasks):
    cfg = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "model" / "tiny.yaml"))
    cfg["wide"] = {"buckets": 4096, "ngrams": 2, "mode": "logreg", "C": 4.0, "intercept": True}
    model = build_model(cfg, tasks, max_length=64).eval()
    ids = load_tokenizer(cfg)(TEXTS)["input_ids"]
    targets = _targets(tasks, len(ids))
    fit_wide(model, ids, targets, tasks)
    return model, ids, targets


def test_wide_logits_add_the_logistic_regressions_intercepts(intercept_model, tasks):
    from sklearn.linear_model import LogisticRegression

    model, ids, targets = intercept_model
    x = feature_matrix(model, ids, model.wide_idf.numpy().astype(np.float64))
    got = np.concatenate(wide_logits_of(model, ids), axis=1)
    bias = model.wide_bias.numpy()
    # audit_assurance (themes): the fitted model's own decision function, intercept included.
    audit = LogisticRegression(C=4.0, class_weight="balanced", max_iter=2000, random_state=0)
    audit.fit(x, targets["themes"][:, 6].astype(int))
    assert bias[6] == pytest.approx(audit.intercept_[0], abs=1e-4)
    np.testing.assert_allclose(got[:, 6], audit.decision_function(x), atol=1e-4)
    # A label the items never show keeps intercept 0, as its weights.
    assert bias[0] == 0.0 and not model.wide.weight[:, 0].any()
    # evidence, two classes seen: the second against the first, the first at 0.
    column = tasks["themes"].num_labels
    evidence = LogisticRegression(C=4.0, class_weight="balanced", max_iter=2000, random_state=0)
    evidence.fit(x, targets["evidence"])
    assert bias[column] == 0.0
    assert bias[column + 1] == pytest.approx(evidence.intercept_[0], abs=1e-4)
    np.testing.assert_allclose(got[:, column + 1], evidence.decision_function(x), atol=1e-4)


def test_a_wide_part_without_intercept_has_none(model_and_ids, tasks):
    model, ids = model_and_ids
    fit_wide(model, ids, _targets(tasks, len(ids)), tasks)
    assert not hasattr(model, "wide_bias") and "intercept" not in model.config.wide
    x = feature_matrix(model, ids, model.wide_idf.numpy().astype(np.float64))
    weight = model.wide.weight.detach().numpy().astype(np.float64)
    np.testing.assert_allclose(
        np.concatenate(wide_logits_of(model, ids), axis=1), x @ weight, atol=1e-4
    )


def test_out_of_fold_logits_add_each_folds_intercepts(intercept_model, tasks):
    from sklearn.linear_model import LogisticRegression

    from scrclf.modeling.wide import out_of_fold_wide_logits

    model, ids, targets = intercept_model
    folds = np.arange(len(ids)) // 6 % 3
    (themes,) = out_of_fold_wide_logits(model, ids, targets, TaskSet([tasks["themes"]]), folds)
    x = feature_matrix(model, ids, model.wide_idf.numpy().astype(np.float64))
    for fold in range(3):
        held, rest = folds == fold, folds != fold
        audit = LogisticRegression(C=4.0, class_weight="balanced", max_iter=2000, random_state=0)
        audit.fit(x[rest], targets["themes"][rest, 6].astype(int))
        np.testing.assert_allclose(themes[held, 6], audit.decision_function(x[held]), atol=1e-4)


def test_fitted_wide_part_separates_the_cued_labels(model_and_ids, tasks):
    model, ids = model_and_ids
    fit_wide(model, ids, _targets(tasks, len(ids)), tasks)
    themes = wide_logits_of(model, ids)[0]
    audit = np.array(["audit" in t.lower() for t in TEXTS])
    assert themes[audit, 6].min() > themes[~audit, 6].max()


def test_fit_mix_picks_the_weight_with_the_lowest_log_loss(tasks):
    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(0, 3, n)
    useful = np.eye(3)[y] * 3 + rng.normal(size=(n, 3))
    noise = rng.normal(size=(n, 3))
    single = TaskSet.from_config([{"name": "s", "type": "single_label", "labels": ["a", "b", "c"]}])
    assert fit_mix(single, [noise], [useful], [y])["s"] > 1.0  # the wide part carries the signal
    assert fit_mix(single, [useful], [noise], [y])["s"] <= 0.5


def one_epoch(corpus, run, wide: str, *extra: str):
    """The config of one epoch of the tiny model on ``corpus`` with ``model.wide=<wide>``."""
    return compose_train(
        [
            "model=tiny",
            f"data.dir={corpus}",
            f"paths.output_dir={run}",
            "trainer.max_epochs=1",
            "trainer.learning_rate=5e-3",
            "eval_splits=[validation]",
            f"model.wide={wide}",
            *extra,
        ]
    )


@pytest.mark.slow
def test_training_with_a_logreg_wide_part_saves_the_weights_and_exports(toy_corpus, tmp_path):
    from scrclf.export.onnx import export_onnx
    from scrclf.inference.classifier import load
    from scrclf.training import train

    run = tmp_path / "run"
    train(
        one_epoch(
            toy_corpus,
            run,
            "{buckets:2048,ngrams:2,mode:logreg,C:4.0,text_only:[themes],intercept:true}",
        )
    )
    metrics = json.loads((run / "metrics.json").read_text())
    mix = metrics["wide"]["mix"]
    saved = json.loads((run / "model" / "config.json").read_text())
    assert saved["wide"]["mix"] == mix and set(mix) == {"themes", "evidence", "action_strength"}
    clf = load(run / "model", backend="torch")
    assert clf.engine.model.wide_idf.max() > 1.0  # the fitted IDF came back
    assert saved["wide"]["intercept"] is True
    assert clf.engine.model.wide_bias.abs().max() > 0  # and the fitted intercepts
    assert saved["wide"]["text_only"] == ["themes"] and saved["wide"]["sep_token_id"] == 102
    texts = ["The board should audit supervision.", "Training for GPs on bruising."]
    findings = ["Supervision was rare.", None]
    logits = clf.logits(texts, findings)
    export_onnx(clf.engine.model, tmp_path / "model.onnx")
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "model.onnx"))
    enc = clf.encode(texts, findings)[0]
    outputs = session.run(None, clf.pad(enc, [0, 1]))
    for got, want in zip(outputs, logits, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-4)
    assert torch.is_tensor(clf.engine.model.wide.weight)


def test_model_card_names_the_tasks_that_read_the_text_alone():
    from scrclf.export.build import wide_text

    wide = {"buckets": 8, "ngrams": 2, "mode": "logreg", "C": 4.0, "mix": {"themes": 1.5}}
    assert "alone" not in wide_text(wide)
    text = wide_text({**wide, "text_only": ["themes"], "sep_token_id": 102})
    assert text.endswith(
        "(themes 1.5); for themes it reads the recommendation text alone, not the finding"
    )


def test_fit_on_filled_buckets_equals_the_fit_on_every_bucket(model_and_ids, tasks):
    from sklearn.linear_model import LogisticRegression

    model, ids = model_and_ids
    targets = _targets(tasks, len(ids))
    fit_wide(model, ids, targets, tasks)
    weight = model.wide.weight.detach().numpy()
    x = feature_matrix(model, ids, model.wide_idf.numpy().astype(np.float64))
    empty = np.asarray(x.getnnz(axis=0) == 0)
    assert empty.any() and not weight[empty].any()  # an unfilled bucket keeps weight 0
    # The same solver over all buckets: audit_assurance (themes) and evidence.
    audit = LogisticRegression(C=4.0, class_weight="balanced", max_iter=2000, random_state=0)
    audit.fit(x, targets["themes"][:, 6].astype(int))
    np.testing.assert_allclose(weight[:, 6], audit.coef_[0], atol=1e-4)
    evidence = LogisticRegression(C=4.0, class_weight="balanced", max_iter=2000, random_state=0)
    evidence.fit(x, targets["evidence"])
    column = tasks["themes"].num_labels + 1  # evidence's second class against its first
    np.testing.assert_allclose(weight[:, column], evidence.coef_[0], atol=1e-4)


def test_out_of_fold_logits_come_from_fits_without_the_fold(model_and_ids, tasks):
    from sklearn.linear_model import LogisticRegression

    from scrclf.modeling.wide import out_of_fold_wide_logits

    model, ids = model_and_ids
    targets = _targets(tasks, len(ids))
    fit_wide(model, ids, targets, tasks)
    folds = np.arange(len(ids)) // 6 % 3  # whole copies of the six texts per fold
    themes, evidence = out_of_fold_wide_logits(
        model, ids, targets, TaskSet([tasks["themes"], tasks["evidence"]]), folds
    )
    assert themes.shape == (len(ids), tasks["themes"].num_labels)
    assert evidence.shape == (len(ids), tasks["evidence"].num_labels)
    # Each fold's logits: its features (the full fit's IDF) times weights fitted on the others.
    x = feature_matrix(model, ids, model.wide_idf.numpy().astype(np.float64))
    for fold in range(3):
        held, rest = folds == fold, folds != fold
        audit = LogisticRegression(C=4.0, class_weight="balanced", max_iter=2000, random_state=0)
        audit.fit(x[rest], targets["themes"][rest, 6].astype(int))
        np.testing.assert_allclose(themes[held, 6], x[held] @ audit.coef_[0], atol=1e-4)
    # They differ from the full fit's, which has seen every item's labels.
    assert not np.allclose(themes, wide_logits_of(model, ids)[0], atol=1e-3)
    with pytest.raises(ValueError, match="fold ids"):
        out_of_fold_wide_logits(model, ids, targets, tasks, folds[:-1])


def test_residual_task_trains_on_the_encoder_plus_its_offsets(model_and_ids, tasks):
    model, ids = model_and_ids
    fit_wide(model, ids, _targets(tasks, len(ids)), tasks)
    batch = {
        "input_ids": torch.tensor([ids[0], ids[0]]),
        "attention_mask": torch.ones(2, len(ids[0]), dtype=torch.long),
    }
    saved = model.config.wide
    try:
        model.config.wide = {**saved, "mix": None}
        deep = model(**batch).logits
        model.config.wide = {**saved, "mix": {"themes": 1.0}}
        mixed = model(**batch).logits
        wide = torch.from_numpy(wide_logits_of(model, [ids[0], ids[0]])[0])
        torch.testing.assert_close(mixed[0], deep[0] + wide, atol=1e-5, rtol=0)
        offset = torch.randn(2, tasks["themes"].num_labels)
        target = torch.zeros(2, tasks["themes"].num_labels)
        out = model(**batch, themes=target, wide_offset_themes=offset)
        # The offsets take the wide part's place for themes; the other tasks are untouched.
        torch.testing.assert_close(out.logits[0], deep[0] + offset, atol=1e-5, rtol=0)
        torch.testing.assert_close(out.logits[1], deep[1])
        weight = model.class_weights_themes
        want = torch.nn.functional.binary_cross_entropy_with_logits(
            deep[0] + offset, target, pos_weight=weight if weight.numel() else None
        )
        torch.testing.assert_close(out.loss, want, atol=1e-5, rtol=0)
    finally:
        model.config.wide = saved


@pytest.mark.parametrize(
    ("wide", "message"),
    [
        ({"mode": "joint", "residual": ["themes"]}, "needs mode: logreg"),
        ({"mode": "logreg", "residual": ["topics"]}, "unknown tasks"),
        ({"mode": "logreg", "residual": ["themes"], "residual_folds": 1}, "integer >= 2"),
    ],
)
def test_residual_settings_are_checked(tasks, wide, message):
    from scrclf.errors import SettingsError
    from scrclf.modeling.model import ScrClfConfig

    with pytest.raises(SettingsError, match=message):
        ScrClfConfig(tasks=tasks.to_list(), wide={"buckets": 64, **wide})


@pytest.mark.slow
@pytest.mark.parametrize("loop", ["trainer", "lean"])
def test_training_themes_as_a_residual_of_the_wide_part(toy_corpus, tmp_path, loop, caplog):
    import logging

    from scrclf.training import train

    run = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="scrclf.modeling.wide"):
        wide = "{buckets:2048,ngrams:2,mode:logreg,C:4.0,residual:[themes],residual_folds:3}"
        train(one_epoch(toy_corpus, run, wide, f"trainer.loop={loop}"))
    assert "out-of-fold logits of 240 items over 3 folds for ['themes']" in caplog.text
    metrics = json.loads((run / "metrics.json").read_text())
    saved = json.loads((run / "model" / "config.json").read_text())
    assert saved["wide"]["residual"] == ["themes"] and saved["wide"]["residual_folds"] == 3
    # The weights are fitted on validation after training, from the encoder's logits alone.
    assert saved["wide"]["mix"] == metrics["wide"]["mix"]
    assert set(saved["wide"]["mix"]) == {"themes", "evidence", "action_strength"}
