"""benchmarks/train_speed.py --heads: a training step timed with each head setting."""

from __future__ import annotations

import json

from tests.helpers import load_benchmark


def _module():
    return load_benchmark("train_speed")


def test_heads_are_timed_on_the_same_items_and_reported(toy_corpus, tmp_path, monkeypatch):
    bench = _module()
    real = bench.measure_heads
    monkeypatch.setattr(
        bench,
        "measure_heads",
        lambda data, repeats: real(data, repeats, items=32, overrides=["model=tiny"]),
    )
    bench.main(["--heads", "--repeats", "2", "--data", str(toy_corpus), "--out", str(tmp_path)])
    report = json.loads((tmp_path / "train_speed_heads.json").read_text())
    heads = report["heads"]
    names = [name for name, _, _ in bench.HEAD_SETTINGS]
    assert list(heads["seconds"]) == names and heads["items"] == 32
    assert all(len(heads["all"][n]) == 2 and heads["seconds"][n] > 0 for n in names)
    assert heads["relative_to_linear"]["linear"] == 1.0
    params = heads["parameters"]
    # own projections > one shared > none, all above the linear heads' count
    assert params[names[1]] > params[names[2]] > params[names[3]] > params[names[0]]
    assert isinstance(report["machine"]["native_bf16"], bool)
    text = (tmp_path / "train_speed_heads.md").read_text()
    assert "| attending, one shared projection |" in text and "relative to linear" in text
