"""Refit (``refit_from``): a finished run's recipe trained again on train + validation, for
that run's best epochs, with that run's decisions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from safetensors.numpy import load_file

from scrclf.errors import TrainingConfigError
from scrclf.training import train
from scrclf.training.refit import best_epoch, config_differences
from tests.helpers import compose_train

WIDE = "+model.wide={buckets: 4096, ngrams: 2, mode: logreg, C: 4.0}"


def _overrides(corpus: Path, out: Path, *extra: str) -> list[str]:
    return [
        "model=tiny",
        f"data.dir={corpus}",
        "trainer.max_epochs=2",
        "trainer.learning_rate=5e-3",
        "trainer.logging_steps=50",
        WIDE,
        *extra,
        f"paths.output_dir={out}",
    ]


def _lines(path: Path) -> int:
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


@pytest.fixture(scope="module")
def reference(toy_corpus, tmp_path_factory) -> Path:
    """A finished tiny run with a logreg wide part (trained on train, decisions fitted on
    validation)."""
    out = tmp_path_factory.mktemp("refit_reference") / "run"
    train(compose_train(_overrides(toy_corpus, out)))
    return out


def _config(run: Path) -> dict:
    return json.loads((run / "model" / "config.json").read_text(encoding="utf-8"))


def test_refit_trains_on_train_and_validation_with_the_reference_decisions(
    toy_corpus, reference, tmp_path
):
    out = tmp_path / "refit"
    summary = train(compose_train(_overrides(toy_corpus, out, f"refit_from={reference}")))
    ref_metrics = json.loads((reference / "metrics.json").read_text(encoding="utf-8"))
    n_train = _lines(toy_corpus / "train.jsonl") + _lines(toy_corpus / "validation.jsonl")

    # Trained on both splits, for the reference's best epoch, the last weights kept.
    assert summary["refit"]["train_items"] == n_train
    assert summary["training"]["n_items"]["train"] == n_train
    assert summary["refit"]["epochs"] == best_epoch(ref_metrics["training"], reference)
    assert summary["training"]["epochs_run"] == summary["refit"]["epochs"]
    assert summary["training"]["time_to_best_s"] is not None
    # Validation was trained on: not scored; test is.
    assert "validation" not in summary and "test" in summary
    assert "validation" not in summary["at_default_decisions"]

    # The decisions are the reference's, and the saved model carries them.
    ours, theirs = _config(out), _config(reference)
    assert ours["wide"]["mix"] == theirs["wide"]["mix"]
    for mine, ref in zip(ours["tasks"], theirs["tasks"], strict=True):
        assert mine["temperature"] == ref["temperature"]
        assert mine["thresholds"] == ref["thresholds"]
    assert summary["calibration"]["themes"]["source"] == "refit_from"

    # The wide part's regressions were fitted again, on more items.
    mine_w = load_file(str(out / "model" / "model.safetensors"))
    ref_w = load_file(str(reference / "model" / "model.safetensors"))
    wide_keys = [k for k in ref_w if k.startswith("wide")]
    assert wide_keys
    assert any((mine_w[k] != ref_w[k]).any() for k in wide_keys)

    # The written config says what was done.
    written = OmegaConf.load(out / "config.yaml")
    assert written.refit_from == str(reference)
    assert list(written.eval_splits) == ["test"]
    assert written.trainer.max_epochs == summary["refit"]["epochs"]


def test_refit_with_the_lean_loop_keeps_the_last_epoch(toy_corpus, tmp_path):
    lean = ["trainer=gpu_fast", "trainer.device=cpu", "trainer.num_threads=1"]
    ref = tmp_path / "ref"
    train(compose_train(_overrides(toy_corpus, ref, *lean)))
    summary = train(
        compose_train(_overrides(toy_corpus, tmp_path / "refit", *lean, f"refit_from={ref}"))
    )
    epochs = summary["refit"]["epochs"]
    assert summary["training"]["epochs_run"] == epochs
    assert summary["training"]["best_epoch"] == epochs
    assert "test" in summary and "validation" not in summary


def test_refit_refuses_another_recipe(toy_corpus, reference, tmp_path):
    cfg = compose_train(
        _overrides(
            toy_corpus,
            tmp_path / "refit",
            "trainer.learning_rate=1e-3",
            f"refit_from={reference}",
        )
    )
    with pytest.raises(TrainingConfigError, match=r"trainer\.learning_rate"):
        train(cfg)
    assert not (tmp_path / "refit" / "metrics.json").exists()


def test_refit_refuses_a_refit_and_a_folder_that_is_no_run(toy_corpus, reference, tmp_path):
    first = tmp_path / "first"
    train(compose_train(_overrides(toy_corpus, first, f"refit_from={reference}")))
    with pytest.raises(TrainingConfigError, match="itself a refit"):
        train(compose_train(_overrides(toy_corpus, tmp_path / "b", f"refit_from={first}")))
    with pytest.raises(TrainingConfigError, match="not a finished training run"):
        train(compose_train(_overrides(toy_corpus, tmp_path / "c", f"refit_from={tmp_path}")))


def test_best_epoch_from_either_loop():
    assert best_epoch({"best_epoch": 3}, Path("m.json")) == 3
    # The Trainer: checkpoint step over steps per epoch (15 steps per epoch here).
    trainer = {"best_checkpoint": "checkpoint-30", "global_steps": 60, "epochs_run": 4.0}
    assert best_epoch(trainer, Path("m.json")) == 2
    assert best_epoch({**trainer, "best_checkpoint": "checkpoint-60"}, Path("m.json")) == 4
    with pytest.raises(TrainingConfigError, match="which epoch was best"):
        best_epoch({"best_checkpoint": None}, Path("m.json"))


def test_config_differences_ignore_how_a_run_is_executed():
    base = {
        "model": {"name": "tiny"},
        "task": {"tasks": []},
        "data": {"dir": "a", "max_length": 64},
        "distill": {"teacher": None},
        "trainer": {"learning_rate": 5e-3, "num_threads": 1, "max_epochs": 4},
    }
    moved = {
        **base,
        "data": {"dir": "elsewhere", "max_length": 64},
        "trainer": {"learning_rate": 5e-3, "num_threads": 2, "max_epochs": 2},
    }
    assert config_differences(moved, base) == []
    other = {**base, "model": {"name": "tiny", "label_attention": ["themes"]}}
    assert config_differences(other, base) == ["model.label_attention: None there, ['themes'] here"]


def test_model_card_says_how_a_refit_was_trained(tasks):
    from scrclf.export.build import model_card

    specs = tasks.to_list()
    for task in specs:
        if task["type"] == "multi_label":
            task["thresholds"] = [0.5] * len(task["labels"])
    meta = {
        "tasks": specs,
        "parity": {"skipped": True, "note": "not measured"},
        "versions": {"scrclf": "0"},
        "tokenizer": {"max_length": 64},
    }
    refit = {"from": "run", "epochs": 4, "train_items": 5304, "decisions": "..."}
    card = model_card("scr-x", meta, {"calibration": {}, "refit": refit}, {})
    assert "trained on the train and validation splits together (5304 items, 4 epochs" in card
    plain = model_card("scr-x", meta, {"calibration": {"themes": {}}}, {})
    assert "tuned on the validation split; the test split" in plain
    assert "train and validation splits together" not in plain


def test_headline_of_a_refit_is_its_first_scored_split():
    import math

    from scrclf.training.main import headline_of

    assert headline_of({"headline": "x", "validation": {"mean_macro_f1": 0.8}}) == 0.8
    refit = {"headline": "x", "test": {"mean_macro_f1": 0.7}, "refit": {"epochs": 4}}
    assert headline_of(refit) == 0.7
    assert math.isnan(headline_of({"headline": "x", "training": {}}))
