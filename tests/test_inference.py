"""The Python API: ``scrclf.load`` on export and run folders, predictions, and refusals."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

import scrclf
from scrclf.calibration import decide, probabilities
from scrclf.inference.classifier import (
    ModelIntegrityError,
    ModelLoadError,
    TruncationWarning,
    UnsafeModelError,
)
from tests.helpers import rewrite_manifest

TEXTS = [
    "The board should commission training and a briefing on the new procedure protocol.",
    "All agencies should redesign the referral strategy and information sharing audit.",
    "Managers should remind staff of supervision and reflective practice.",
]
FINDINGS = ["Studies show that training alone rarely changes practice.", None, "panel"]


def _edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2))


# ----------------------------------------------------------------------- predictions


@pytest.mark.parametrize(
    "kwargs", [{"backend": "torch"}, {"backend": "onnx"}, {"backend": "onnx", "quantized": True}]
)
def test_predict_returns_decisions_per_task(tiny_export, kwargs, no_network):
    clf = scrclf.load(tiny_export.export_dir, **kwargs)
    assert clf.backend == kwargs["backend"]
    assert clf.tasks.names == ["themes", "evidence", "action_strength"]
    out = clf.predict(TEXTS, FINDINGS, batch_size=2)
    assert len(out) == len(TEXTS)
    for item in out:
        assert set(item) == {"themes", "evidence", "action_strength"}
        themes = item["themes"]
        assert set(themes) == {"labels", "primary", "scores"}
        assert 1 <= len(themes["labels"]) <= 3
        assert themes["primary"] == themes["labels"][0]
        scores = themes["scores"]
        assert list(scores) == clf.tasks["themes"].labels
        assert [scores[lab] for lab in themes["labels"]] == sorted(
            (scores[lab] for lab in themes["labels"]), reverse=True
        )
        for name in ("evidence", "action_strength"):
            entry = item[name]
            assert set(entry) == {"label", "scores"}
            assert entry["label"] == max(entry["scores"], key=entry["scores"].get)
            assert sum(entry["scores"].values()) == pytest.approx(1.0)


def test_predictions_apply_the_calibration_decision_rule(tiny_export):
    clf = scrclf.load(tiny_export.export_dir, backend="onnx")
    logits = clf.logits(TEXTS, FINDINGS)
    out = clf.predict(TEXTS, FINDINGS)
    themes = clf.tasks["themes"]
    on = decide(themes, probabilities(themes, logits[0]))
    for row, item in zip(on, out, strict=True):
        assert set(item["themes"]["labels"]) == {themes.labels[j] for j in np.flatnonzero(row)}
    evidence = clf.tasks["evidence"]
    picked = decide(evidence, probabilities(evidence, logits[1]))
    assert [item["evidence"]["label"] for item in out] == [evidence.labels[i] for i in picked]


def test_auto_backend_prefers_onnx_and_torch_agrees(tiny_export):
    auto = scrclf.load(tiny_export.export_dir)
    assert auto.backend == "onnx" and not auto.quantized
    torch_clf = scrclf.load(tiny_export.export_dir, backend="torch")
    a, b = auto.predict(TEXTS, FINDINGS), torch_clf.predict(TEXTS, FINDINGS)
    assert [x["themes"]["labels"] for x in a] == [x["themes"]["labels"] for x in b]
    assert [x["evidence"]["label"] for x in a] == [x["evidence"]["label"] for x in b]


def test_run_model_folder_loads_with_torch(tiny_export, no_network):
    clf = scrclf.load(tiny_export.run_dir / "model")
    assert clf.backend == "torch" and clf.manifest is None
    exported = scrclf.load(tiny_export.export_dir, backend="torch")
    for a, b in zip(clf.logits(TEXTS, FINDINGS), exported.logits(TEXTS, FINDINGS), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    with pytest.raises(ModelLoadError, match="ONNX graph not found"):
        scrclf.load(tiny_export.run_dir / "model", backend="onnx")


def test_findings_become_the_second_segment(tiny_export):
    clf = scrclf.load(tiny_export.export_dir, backend="onnx")
    enc, truncated = clf.encode(["a recommendation", "a recommendation"], ["a finding", None])
    assert truncated == 0
    assert 1 in enc["token_type_ids"][0] and 1 not in enc["token_type_ids"][1]
    assert len(enc["input_ids"][0]) > len(enc["input_ids"][1])


def test_batch_size_and_order_do_not_change_results(tiny_export):
    clf = scrclf.load(tiny_export.export_dir, backend="onnx")
    texts = TEXTS + ["short", "a much longer recommendation " * 10]
    one = clf.logits(texts, batch_size=1)
    many = clf.logits(texts, batch_size=32)
    for a, b in zip(one, many, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert clf.predict([]) == []


def test_length_batches_cut_at_the_batch_size_and_before_too_much_padding():
    from scrclf.inference.classifier import length_batches

    lengths = [30, 10, 10, 12, 40, 11, 100, 10]
    fixed = length_batches(lengths, 3)
    assert fixed == [[1, 2, 7], [5, 3, 0], [4, 6]]
    split = length_batches(lengths, 32, max_padding=0.25)
    assert sorted(i for rows in split for i in rows) == list(range(len(lengths)))
    assert split == [[1, 2, 7, 5, 3], [0, 4], [6]]  # 2 x 40 <= 1.25 x 70; 3 x 100 is not
    for rows in split:
        longest, real = max(lengths[i] for i in rows), sum(lengths[i] for i in rows)
        assert longest * len(rows) <= 1.25 * real
    # Items of one length fill whole batches whatever the limit.
    assert [len(rows) for rows in length_batches([7] * 70, 32, max_padding=0.0)] == [32, 32, 6]
    assert length_batches([], 32, max_padding=0.25) == []


def test_a_call_of_mixed_lengths_runs_as_several_batches_on_cpu(tiny_export, monkeypatch):
    clf = scrclf.load(tiny_export.export_dir, backend="onnx")
    texts = ["short", "brief", "a much longer recommendation " * 10, "tiny"]
    alone = clf.logits(texts, batch_size=1)
    sizes: list[int] = []
    run = clf.engine.run

    def counted(batch):
        sizes.append(len(batch["input_ids"]))
        return run(batch)

    monkeypatch.setattr(clf.engine, "run", counted)
    together = clf.logits(texts, batch_size=32)
    assert sorted(sizes) == [1, 3]
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


# ----------------------------------------------------------------------------- inputs


@pytest.mark.parametrize(
    ("texts", "findings", "match"),
    [
        (["ok", None], None, r"texts\[1\]: is None"),
        (["ok", 3], None, r"texts\[1\]: must be a string, got int"),
        (["", "ok"], None, r"texts\[0\]: is empty"),
        (["ok", " \n\t"], None, r"texts\[1\]: is empty or whitespace only"),
        (["ok", "fine"], ["x", 5], r"findings\[1\]: must be a string or None"),
        (["ok", "fine"], ["x"], "findings has 1 items for 2 texts"),
        ("a single string", None, "single string"),
    ],
)
def test_invalid_inputs_name_the_item(tiny_export, texts, findings, match):
    clf = scrclf.load(tiny_export.export_dir, backend="onnx")
    with pytest.raises(ValueError, match=match):
        clf.predict(texts, findings)


def test_long_text_is_truncated_with_one_warning_per_call(tiny_export):
    clf = scrclf.load(tiny_export.export_dir, backend="onnx")
    long_text = "recommendation " * 2000
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = clf.predict([long_text, "short", long_text], batch_size=1)
    truncation = [w for w in caught if issubclass(w.category, TruncationWarning)]
    assert len(truncation) == 1
    assert truncation[0].message.count == 2 and "256" in str(truncation[0].message)
    assert len(out) == 3
    enc, truncated = clf.encode([long_text], [None])
    assert truncated == 1 and len(enc["input_ids"][0]) == clf.max_seq_length
    # A text of exactly max_seq_length tokens is not reported as truncated.
    exact = clf.tokenizer.decode(enc["input_ids"][0], skip_special_tokens=True)
    assert clf.encode([exact], [None])[1] == 0


# ---------------------------------------------------------------------------- refusals


def test_tampered_file_is_refused_before_weights_are_read(export_copy):
    weights = export_copy / "onnx" / "model.onnx"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match=r"model\.onnx: SHA-256 differs"):
        scrclf.load(export_copy)
    with pytest.raises(ModelIntegrityError, match="model.onnx"):
        scrclf.load(export_copy, backend="torch")  # every listed file is verified


def test_truncated_or_missing_file_is_refused(export_copy):
    config = export_copy / "config.json"
    config.write_text(config.read_text()[:-20])
    with pytest.raises(ModelIntegrityError, match=r"config\.json: size"):
        scrclf.load(export_copy)
    config.unlink()
    with pytest.raises(ModelIntegrityError, match=r"config\.json: missing"):
        scrclf.load(export_copy)


def test_export_without_manifest_is_refused(export_copy):
    (export_copy / "manifest.json").unlink()
    with pytest.raises(ModelIntegrityError, match="must have manifest.json"):
        scrclf.load(export_copy)


def test_unlisted_weights_are_refused(export_copy):
    _edit_json(export_copy / "manifest.json", lambda m: m["files"].pop("model.safetensors"))
    with pytest.raises(ModelIntegrityError, match=r"model\.safetensors: not listed"):
        scrclf.load(export_copy, backend="torch")


@pytest.mark.parametrize(
    "name", ["pytorch_model.bin", "extra/head.pkl", "model.pt", "state.pth", "last.ckpt"]
)
def test_pickle_files_are_refused(export_copy, run_model_copy, name):
    for root in (export_copy, run_model_copy):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x80\x04not really a pickle")
        with pytest.raises(UnsafeModelError, match="pickle"):
            scrclf.load(root)


def test_pickle_named_in_config_is_refused(run_model_copy):
    _edit_json(
        run_model_copy / "tokenizer_config.json", lambda c: c.__setitem__("vocab_file", "vocab.pkl")
    )
    with pytest.raises(UnsafeModelError, match=r"tokenizer_config\.json: 'vocab_file' names"):
        scrclf.load(run_model_copy)


def test_paths_outside_the_model_folder_are_refused(export_copy, tmp_path):
    shutil.copy(export_copy / "onnx" / "model.onnx", tmp_path / "outside.onnx")
    _edit_json(
        export_copy / "scrclf.json",
        lambda m: m["onnx"]["files"].__setitem__("fp32", "../outside.onnx"),
    )
    rewrite_manifest(export_copy)
    with pytest.raises(UnsafeModelError, match="resolves outside the model folder"):
        scrclf.load(export_copy, backend="onnx")


def test_manifest_entry_outside_the_folder_is_refused(export_copy):
    _edit_json(
        export_copy / "manifest.json",
        lambda m: m["files"].__setitem__("/etc/hostname", {"sha256": "0", "size": 1}),
    )
    with pytest.raises(UnsafeModelError, match="'/etc/hostname' resolves outside"):
        scrclf.load(export_copy)


def test_symlink_out_of_the_folder_is_refused(run_model_copy, tmp_path):
    weights = run_model_copy / "model.safetensors"
    outside = tmp_path / "elsewhere.safetensors"
    shutil.move(weights, outside)
    weights.symlink_to(outside)
    with pytest.raises(UnsafeModelError, match="resolves outside"):
        scrclf.load(run_model_copy)


def test_onnx_not_matching_the_config_is_refused(export_copy):
    def drop_label(config):
        config["tasks"][2]["labels"] = ["weak", "strong"]
        config["tasks"][2]["class_weights"] = None

    _edit_json(export_copy / "config.json", drop_label)
    rewrite_manifest(export_copy)
    with pytest.raises(ModelLoadError, match=r"model\.onnx: output 'logits_action_strength'"):
        scrclf.load(export_copy, backend="onnx")

    def rename_task(config):
        config["tasks"][1]["name"] = "basis"

    _edit_json(export_copy / "config.json", rename_task)
    rewrite_manifest(export_copy)
    with pytest.raises(ModelLoadError, match="do not match the tasks"):
        scrclf.load(export_copy, backend="onnx", quantized=True)


def test_missing_folder_and_folder_without_weights_give_clear_errors(run_model_copy, tmp_path):
    with pytest.raises(ModelLoadError, match="model folder not found"):
        scrclf.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        scrclf.load(tmp_path / "empty")
    (run_model_copy / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="no weights"):
        scrclf.load(run_model_copy)
    with pytest.raises(ModelLoadError, match="quantized=True needs the ONNX backend"):
        scrclf.load(run_model_copy, backend="torch", quantized=True)
    with pytest.raises(ValueError, match="backend must be one of"):
        scrclf.load(run_model_copy, backend="tensorflow")


def test_wrong_model_type_is_refused(run_model_copy):
    _edit_json(run_model_copy / "config.json", lambda c: c.__setitem__("model_type", "bert"))
    with pytest.raises(ModelLoadError, match=r"config\.json: model_type is 'bert'"):
        scrclf.load(run_model_copy)
