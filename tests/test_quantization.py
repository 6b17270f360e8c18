"""The int8 graph's steps on the tiny model: export, fusion, smoothing, quantization."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import scrclf
from scrclf.data.records import read_records
from scrclf.export import quantization
from scrclf.export.build import _agreement
from scrclf.export.quantization import (
    activation_ranges,
    build_int8_graph,
    calibration_batches,
    export_for_runtime,
    fuse,
    smooth,
)
from scrclf.settings import QuantizationSettings


@pytest.fixture(scope="module")
def tiny(tiny_export):
    clf = scrclf.load(tiny_export.run_dir / "model", backend="torch")
    rows = [r.data for r in read_records(tiny_export.corpus / "train.jsonl")]
    texts = [r["text"] for r in rows]
    findings = [r.get("finding") for r in rows]
    return clf, calibration_batches(clf, texts, findings, items=64)


@pytest.fixture(scope="module")
def runtime_graph(tiny, tmp_path_factory):
    clf, _ = tiny
    path = tmp_path_factory.mktemp("int8") / "export.onnx"
    export_for_runtime(clf.engine.model, path)
    return path


def _logits(path, batches):
    return quantization._logits(quantization._session(str(path)), batches)


def test_calibration_batches_are_a_fixed_sample_padded_per_batch(tiny, tiny_export):
    clf, batches = tiny
    assert sum(len(b["input_ids"]) for b in batches) == 64
    assert all(len(b["input_ids"]) <= 32 for b in batches)
    for batch in batches:
        assert batch["input_ids"].dtype == np.int64
        assert batch["attention_mask"].shape == batch["input_ids"].shape
    rows = [r.data for r in read_records(tiny_export.corpus / "train.jsonl")]
    again = calibration_batches(
        clf, [r["text"] for r in rows], [r.get("finding") for r in rows], items=64
    )
    assert all(
        np.array_equal(a["input_ids"], b["input_ids"]) for a, b in zip(batches, again, strict=True)
    )
    assert calibration_batches(clf, [], [], items=64) == []


def test_runtime_export_reproduces_torch_logits(tiny, runtime_graph):
    clf, batches = tiny
    got = _logits(runtime_graph, batches[:1])
    import torch

    with torch.no_grad():
        ref = clf.engine.model(**{k: torch.from_numpy(v) for k, v in batches[0].items()}).logits
    for a, b in zip(ref, got, strict=True):
        assert np.max(np.abs(a.numpy() - b)) < 1e-4


def test_smoothing_keeps_the_function_and_flattens_activation_ranges(tiny, runtime_graph, tmp_path):
    _, batches = tiny
    out = tmp_path / "smoothed.onnx"
    count = smooth(runtime_graph, out, batches, alpha=0.7)
    assert count > 0
    graph = onnx.load(str(out))
    muls = [n for n in graph.graph.node if n.op_type == "Mul" and n.name.startswith("smooth_")]
    assert len(muls) == count
    for a, b in zip(_logits(runtime_graph, batches), _logits(out, batches), strict=True):
        assert np.max(np.abs(a - b)) < 1e-4
    # What the weight matrices now see: per-channel peaks closer to one another.
    before = activation_ranges(runtime_graph, [m.input[0] for m in muls], batches)
    after = activation_ranges(out, [m.output[0] for m in muls], batches)
    spread = [np.max(r) / np.median(r) for r in before.values()]
    smoothed_spread = [np.max(after[m.output[0]]) / np.median(after[m.output[0]]) for m in muls]
    assert np.mean(smoothed_spread) < np.mean(spread)


def test_smoothing_rejects_an_alpha_outside_zero_to_one(runtime_graph, tiny, tmp_path):
    with pytest.raises(ValueError, match="smooth_alpha"):
        smooth(runtime_graph, tmp_path / "x.onnx", tiny[1], alpha=1.5)
    assert not (tmp_path / "x.onnx").exists()


def test_fusion_is_kept_only_when_the_logits_hold(tiny, runtime_graph, tmp_path, monkeypatch):
    clf, batches = tiny
    config = clf.engine.model.encoder.config
    counts = fuse(
        runtime_graph,
        tmp_path / "fused.onnx",
        config.num_attention_heads,
        config.hidden_size,
        batches[:1],
    )
    assert counts and counts.get("Attention", 0) == config.num_hidden_layers
    assert "SkipLayerNormalization" not in counts  # the slower CPU kernel stays out
    monkeypatch.setattr(quantization, "FUSION_TOLERANCE", -1.0)
    assert (
        fuse(
            runtime_graph,
            tmp_path / "refused.onnx",
            config.num_attention_heads,
            config.hidden_size,
            batches[:1],
        )
        is None
    )
    assert not (tmp_path / "refused.onnx").exists()


def test_int8_graph_with_and_without_calibration(tiny, tmp_path):
    clf, batches = tiny
    layers = clf.engine.model.encoder.config.num_hidden_layers
    info = build_int8_graph(clf.engine.model, tmp_path / "q.onnx", batches)
    assert info["smoothing"]["alpha"] == QuantizationSettings.defaults().smooth_alpha
    assert info["smoothing"]["calibration_items"] == 64
    assert info["batch_independent"] is True
    ops = [n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node]
    assert ops.count("MatMulIntegerToFloat") == info["quantized_matmuls"]
    assert not set(ops) & {"DynamicQuantizeLinear", "DynamicQuantizeMatMul", "MatMulInteger"}
    # Attention stays plain operators by default: query, key, value, output and the two
    # feed-forward projections of every layer are int8, and the query, key and value
    # projections share one quantized input.
    assert "Attention" not in ops
    assert info["quantized_matmuls"] == 6 * layers
    assert info["quantized_activations"] == 4 * layers
    # The feed-forward output projection's input (a GELU output) uses its row's own range.
    assert info["one_sided_activations"] == layers
    assert ops.count("QuantizeLinear") == info["quantized_activations"]
    ref = _logits(tmp_path / "q.onnx", batches[:1])
    assert all(np.isfinite(x).all() for x in ref)

    fused = build_int8_graph(clf.engine.model, tmp_path / "f.onnx", batches, fuse_attention=True)
    ops = [n.op_type for n in onnx.load(str(tmp_path / "f.onnx")).graph.node]
    assert ops.count("Attention") == layers and fused["quantized_matmuls"] == 3 * layers

    plain = build_int8_graph(clf.engine.model, tmp_path / "plain.onnx", None, fuse_operators=False)
    assert plain["smoothing"] is None and "fused_operators" not in plain
    ops = [n.op_type for n in onnx.load(str(tmp_path / "plain.onnx")).graph.node]
    assert "Attention" not in ops and not any(o.startswith("smooth_") for o in ops)
    assert plain["quantized_matmuls"] == 6 * layers


def test_per_token_int8_is_close_to_fp32(tiny, runtime_graph, tmp_path):
    clf, batches = tiny
    out = tmp_path / "int8.onnx"
    info = quantization.quantize_per_token(runtime_graph, out)
    ref = _logits(runtime_graph, batches[:2])
    got = _logits(out, batches[:2])
    for a, b in zip(ref, got, strict=True):
        assert np.max(np.abs(a - b)) < 0.1 * max(1.0, float(np.max(np.abs(a))))
    # Left in fp32, the chosen products give back the fp32 logits.
    kept = tmp_path / "kept.onnx"
    none = quantization.quantize_per_token(runtime_graph, kept, keep=lambda i: True)
    assert none["quantized_matmuls"] == 0 and info["quantized_matmuls"] > 0
    for a, b in zip(ref, _logits(kept, batches[:2]), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_int8_labels_do_not_depend_on_the_batch(tiny_export):
    """The same texts in batches of different sizes, orders and padded lengths: identical
    int8 logits, so identical labels (activation scales are fixed in the graph)."""
    rows = [r.data for r in read_records(tiny_export.corpus / "test.jsonl")]
    texts = [r["text"] for r in rows]
    findings = [r.get("finding") for r in rows]
    # One very long neighbour pads every batch it joins to many more tokens.
    long_text = " ".join(texts[:12])
    int8 = scrclf.load(tiny_export.export_dir, backend="onnx", quantized=True)
    alone = int8.logits(texts, findings, batch_size=1)
    runs = {
        "batch 32": int8.logits(texts, findings, batch_size=32),
        "batch 7, reversed": [
            x[::-1] for x in int8.logits(texts[::-1], findings[::-1], batch_size=7)
        ],
        "beside a long text": [
            x[1:] for x in int8.logits([long_text, *texts], [None, *findings], batch_size=64)
        ],
    }
    for got in runs.values():
        for a, b in zip(alone, got, strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)

    def labels(items):
        return [{task: v.get("labels", v.get("label")) for task, v in i.items()} for i in items]

    alone_labels = labels(int8.predict(texts, findings, batch_size=1))
    assert alone_labels == labels(int8.predict(texts, findings, batch_size=64))
    assert alone_labels == labels(
        int8.predict([long_text, *texts], [None, *findings], batch_size=64)[1:]
    )


def test_agreement_per_item_and_per_label(tiny):
    clf, _ = tiny
    tasks = clf.tasks
    # Every item: the first two labels of each multi-label task far above their thresholds,
    # the rest far below; single-label tasks: class 0 everywhere.
    ref = []
    for t in tasks:
        logits = np.full((10, len(t.labels)), -20.0, dtype=np.float32)
        logits[:, 0] = 20.0
        if t.is_multi_label:
            logits[:, 1] = 20.0
        ref.append(logits)
    other = [x.copy() for x in ref]
    multi = [i for i, t in enumerate(tasks) if t.is_multi_label][0]
    task = list(tasks)[multi]
    other[multi][3, 1] = -20.0  # one item loses one label: 1 item of 10, 1 decision of 10 x L
    per_item = _agreement(tasks, ref, other)
    per_label = _agreement(tasks, ref, other, per_label=True)
    assert per_item[task.name] == pytest.approx(0.9)
    assert per_label[task.name] == pytest.approx(1 - 1 / (10 * len(task.labels)))
    assert all(per_item[t.name] == 1.0 for t in tasks if not t.is_multi_label)
