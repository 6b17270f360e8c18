"""End-to-end training on a toy corpus whose labels are signalled by words."""

from __future__ import annotations

import json

import numpy as np
import torch
from transformers import AutoModel

import scrclf  # noqa: F401  (registers the model type)
from scrclf.data.records import read_records
from scrclf.modeling.encoders import load_tokenizer
from scrclf.tasks import TaskSet
from scrclf.training.run import class_weights, last_complete_checkpoint
from tests.helpers import compose_train


def _prior_macro_f1(labels_train: list, labels_test: list) -> float:
    """Macro-F1 of always predicting the most frequent training label."""
    from sklearn.metrics import f1_score

    values, counts = np.unique(labels_train, return_counts=True)
    majority = values[counts.argmax()]
    return f1_score(
        labels_test,
        [majority] * len(labels_test),
        average="macro",
        labels=sorted(set(labels_train) | set(labels_test)),
        zero_division=0,
    )


def _prior_micro_f1_multilabel(train: list, test: list) -> float:
    from collections import Counter

    top = Counter(label for labels in train for label in labels).most_common(1)[0][0]
    tp = sum(top in labels for labels in test)
    fp = len(test) - tp
    fn = sum(len(labels) for labels in test) - tp
    return 2 * tp / (2 * tp + fp + fn)


def test_tiny_model_learns_the_toy_signal_offline(toy_corpus, tmp_path, no_network):
    from scrclf.training import train

    run = tmp_path / "run"
    cfg = compose_train(
        [
            "model=tiny",
            f"data.dir={toy_corpus}",
            f"paths.output_dir={run}",
            "trainer.max_epochs=10",
            "trainer.learning_rate=5e-3",
            "trainer.early_stopping_patience=null",
            "model.dropout=0.0",
            "trainer.logging_steps=50",
        ]
    )
    summary = train(cfg)
    test = summary["test"]
    train_rows = [r.data for r in read_records(toy_corpus / "train.jsonl")]
    test_rows = [r.data for r in read_records(toy_corpus / "test.jsonl")]
    for task in ("evidence", "action_strength"):
        prior = _prior_macro_f1([r[task] for r in train_rows], [r[task] for r in test_rows])
        assert test[task]["macro_f1"] > prior + 0.4, (task, test[task]["macro_f1"], prior)
    # Themes: the prior predicts the most frequent training theme for every item.
    themes_prior = _prior_micro_f1_multilabel(
        [r["themes"] for r in train_rows], [r["themes"] for r in test_rows]
    )
    assert test["themes"]["micro_f1"] > themes_prior + 0.15, (
        test["themes"]["micro_f1"],
        themes_prior,
    )
    assert test["mean_macro_f1"] > 0.55

    # The run directory: model that loads alone, metrics per split and task, resolved config.
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) >= {"validation", "test", "at_default_decisions", "calibration", "training"}
    assert set(metrics["test"]) >= {"themes", "evidence", "action_strength", "mean_macro_f1"}
    assert metrics["test"]["themes"]["per_label"]["audit_assurance"]["support"] > 0
    assert (run / "config.yaml").read_text().count("action_strength") >= 1
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert last_complete_checkpoint(run / "checkpoints") is not None

    model = AutoModel.from_pretrained(run / "model").eval()
    tok = load_tokenizer({"tokenizer": str(run / "model")})
    themes = TaskSet.from_config(model.config.tasks)["themes"]
    assert themes.thresholds is not None and themes.temperature > 0  # calibrated on validation
    enc = tok(["studies show audit assurance redesign"], return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits
    assert [t.shape[-1] for t in logits] == [11, 5, 3]


def test_balanced_class_weights():
    tasks = TaskSet.from_config(
        [
            {"name": "s", "type": "single_label", "labels": ["a", "b"]},
            {"name": "m", "type": "multi_label", "labels": ["x", "y", "z"]},
        ]
    )
    rows = [
        {"s": "a", "m": ["x"]},
        {"s": "a", "m": ["x", "y"]},
        {"s": "a", "m": ["x"]},
        {"s": "b", "m": ["x"]},
    ]
    assert class_weights(tasks["s"], rows) == [4 / (2 * 3), 4 / (2 * 1)]
    assert class_weights(tasks["m"], rows) == [0.0, 3.0, 30.0]


def _evaluated_epochs_and_last_weights(corpus, run, eval_last_epochs: str) -> tuple[list, dict]:
    from safetensors.torch import load_file

    from scrclf.training import train

    train(
        compose_train(
            [
                "model=tiny",
                f"data.dir={corpus}",
                f"paths.output_dir={run}",
                "trainer.max_epochs=3",
                "trainer.learning_rate=5e-3",
                "trainer.logging_steps=50",
                f"trainer.eval_last_epochs={eval_last_epochs}",
                "eval_splits=[validation]",
            ]
        )
    )
    last = last_complete_checkpoint(run / "checkpoints")
    assert last is not None
    state = json.loads((last / "trainer_state.json").read_text())
    evaluated = [e["epoch"] for e in state["log_history"] if "eval_mean_macro_f1" in e]
    return evaluated, load_file(str(last / "model.safetensors"))


def test_eval_last_epochs_skips_early_evaluations_and_trains_the_same(toy_corpus, tmp_path):
    every, every_weights = _evaluated_epochs_and_last_weights(toy_corpus, tmp_path / "a", "null")
    last, last_weights = _evaluated_epochs_and_last_weights(toy_corpus, tmp_path / "b", "1")
    assert every == [1.0, 2.0, 3.0] and last == [3.0]
    # Evaluating is read-only: the weights after the last epoch are the same.
    assert every_weights.keys() == last_weights.keys()
    for name, tensor in every_weights.items():
        torch.testing.assert_close(last_weights[name], tensor, rtol=0, atol=0, msg=name)
