"""Regularisation of the training loss: label smoothing and R-drop (trainer settings)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from scrclf.errors import SettingsError
from scrclf.modeling.encoders import build_model, load_tokenizer
from scrclf.modeling.model import consistency_loss
from scrclf.settings import TrainerSettings
from scrclf.tasks import TaskSet
from tests.helpers import CONFIG_DIR, compose_train, train_tiny


@pytest.fixture(scope="module")
def tasks():
    return TaskSet.from_config(OmegaConf.load(CONFIG_DIR / "task" / "codebook.yaml").tasks)


def _tiny_cfg():
    return OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "model" / "tiny.yaml"))


def _batch(tasks):
    ids = load_tokenizer(_tiny_cfg())(
        ["Audit supervision records.", "Training for health visitors.", "Share information."],
        padding=True,
    )
    n = 3
    targets = {
        "themes": torch.zeros(n, tasks["themes"].num_labels),
        "evidence": torch.tensor([0, 1, 4]),
        "action_strength": torch.tensor([2, 1, 0]),
    }
    targets["themes"][:, 1] = 1.0
    return {k: torch.tensor(v) for k, v in ids.items()}, targets


def test_consistency_loss_is_the_symmetric_kl_divergence():
    torch.manual_seed(0)
    a, b = torch.randn(6, 4), torch.randn(6, 4)
    pa, pb = a.softmax(-1), b.softmax(-1)
    kl = (pa * (pa / pb).log()).sum(-1) + (pb * (pb / pa).log()).sum(-1)
    assert float(consistency_loss(a, b, False)) == pytest.approx(float(kl.mean() / 2), rel=1e-5)
    qa, qb = a.sigmoid(), b.sigmoid()
    bern = (qa * (qa / qb).log() + (1 - qa) * ((1 - qa) / (1 - qb)).log()).mean()
    bern_back = (qb * (qb / qa).log() + (1 - qb) * ((1 - qb) / (1 - qa)).log()).mean()
    assert float(consistency_loss(a, b, True)) == pytest.approx(
        float(bern + bern_back) / 2, rel=1e-5
    )
    for multi_label in (True, False):
        assert float(consistency_loss(a, a.clone(), multi_label)) == pytest.approx(0.0, abs=1e-7)
        assert consistency_loss(a, b, multi_label) == pytest.approx(
            float(consistency_loss(b, a, multi_label))
        )


def test_label_smoothing_softens_every_tasks_targets(tasks):
    torch.manual_seed(0)
    model = build_model(_tiny_cfg(), tasks, max_length=64).eval()
    inputs, targets = _batch(tasks)
    with torch.no_grad():
        logits = dict(zip(model.task_names, model(**inputs).logits, strict=True))
    for task in tasks:
        # The loss of one task alone (loss weights are 1).
        assert task.loss_weight == 1.0
        one = {task.name: targets[task.name]}
        with torch.no_grad():
            model.label_smoothing = 0.0
            plain = model(**inputs, **one).loss
            model.label_smoothing = 0.2
            smooth = model(**inputs, **one).loss
        weight = getattr(model, f"class_weights_{task.name}")
        weight = weight if weight.numel() else None
        if task.is_multi_label:
            expected = torch.nn.functional.binary_cross_entropy_with_logits(
                logits[task.name], targets[task.name] * 0.8 + 0.1, pos_weight=weight
            )
        else:
            expected = torch.nn.functional.cross_entropy(
                logits[task.name], targets[task.name], weight=weight, label_smoothing=0.2
            )
        assert float(smooth) == pytest.approx(float(expected), rel=1e-5)
        assert abs(float(smooth) - float(plain)) > 1e-5


def test_rdrop_runs_the_batch_twice_only_while_training(tasks):
    torch.manual_seed(0)
    model = build_model(_tiny_cfg(), tasks, max_length=64)
    inputs, targets = _batch(tasks)
    model.rdrop = 1.0
    # Evaluation: one pass, the same loss as without R-drop.
    model.eval()
    with torch.no_grad():
        evaluated = model(**inputs, **targets)
        model.rdrop = 0.0
        assert torch.allclose(model(**inputs, **targets).loss, evaluated.loss)
    model.rdrop = 1.0
    seen = []
    hook = model.encoder.register_forward_hook(lambda m, args, kw_out: seen.append(1))
    model.train()
    out = model(**inputs, **targets)
    hook.remove()
    # One encoder call on twice the items; logits and embeddings of the batch's own size.
    assert len(seen) == 1
    assert all(t.shape[0] == 3 for t in out.logits)
    assert out.sentence_embedding.shape[0] == 3
    out.loss.backward()
    assert all(
        p.grad is not None for n, p in model.named_parameters() if p.requires_grad and "heads" in n
    )
    # With dropout off both passes agree: the consistency term is zero and the loss is the
    # plain one.
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    with torch.no_grad():
        both = model(**inputs, **targets).loss
        model.rdrop = 0.0
        single = model(**inputs, **targets).loss
    assert float(both) == pytest.approx(float(single), rel=1e-5)


def test_rdrop_without_targets_is_one_pass(tasks):
    model = build_model(_tiny_cfg(), tasks, max_length=64).train()
    model.rdrop = 1.0
    inputs, _ = _batch(tasks)
    out = model(**inputs)
    assert out.loss is None
    assert all(t.shape[0] == 3 for t in out.logits)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("label_smoothing", 1.0, "label_smoothing must be in"),
        ("label_smoothing", -0.1, "label_smoothing must be at least"),
        ("rdrop", -1.0, "rdrop must be at least"),
    ],
)
def test_regularisation_settings_are_checked(key, value, message):
    raw = OmegaConf.to_container(compose_train([]).trainer)
    with pytest.raises(SettingsError, match=message):
        TrainerSettings.from_config({**raw, key: value})


def test_shipped_defaults_are_off():
    t = TrainerSettings.from_config(compose_train([]).trainer)
    assert (t.label_smoothing, t.rdrop) == (0.0, 0.0)


@pytest.mark.parametrize("loop", ["trainer", "lean"])
def test_training_with_label_smoothing_and_rdrop(toy_corpus, tmp_path, loop):
    run = tmp_path / "run"
    summary = train_tiny(toy_corpus, run, loop, "trainer.label_smoothing=0.1", "trainer.rdrop=1.0")
    assert np.isfinite(summary["validation"]["mean_macro_f1"])
    config = (run / "config.yaml").read_text()
    assert "rdrop: 1.0" in config and "label_smoothing: 0.1" in config
    # The saved model carries nothing of the training loss's regularisation.
    assert "rdrop" not in (run / "model" / "config.json").read_text()
