"""Exporting a trained run: folder contents, manifest, atomicity, ONNX parity, the wheel.

A tiny_export model is trained once per session on the toy corpus and exported once (with a
wheel); :func:`tiny_export` is shared with the inference and CLI tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

import scrclf
from scrclf.export import build as export_mod
from scrclf.export.build import (
    ExportError,
    check_name,
    data_fingerprint,
    export_model,
    parity_inputs,
)
from scrclf.inference.classifier import TruncationWarning, build_manifest
from scrclf.settings import ExportSettings
from tests.helpers import ROOT, rewrite_manifest, run_script

EXPECTED_FILES = {
    "README.md",
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "onnx/model.onnx",
    "onnx/model.int8.onnx",
    "metrics.json",
    "training_config.yaml",
    "data_fingerprint.json",
    "scrclf.json",
    "manifest.json",
}
PROBE_TEXTS = [
    "The board should commission training and a briefing on the new procedure protocol.",
    "All agencies should redesign the referral strategy and information sharing audit.",
    "Managers should remind staff of supervision and reflective practice.",
    "word " * 400,
]
PROBE_FINDINGS = ["Studies show that training alone rarely changes practice.", None, "", "panel"]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------- contents


def test_export_folder_holds_every_artifact_and_manifest_lists_them(tiny_export):
    root = tiny_export.export_dir
    files = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    wheels = {f for f in files if f.startswith("dist/")}
    assert files - wheels == EXPECTED_FILES
    assert [Path(w).name for w in wheels] == ["scrclf_model_tiny-1.0.0-py3-none-any.whl"]
    assert not any(name.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt")) for name in files)

    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["algorithm"] == "sha256"
    assert set(manifest["files"]) == files - {"manifest.json"}
    for rel, entry in manifest["files"].items():
        assert entry == {"sha256": _sha256(root / rel), "size": (root / rel).stat().st_size}
    # Nothing of the temporary build folder is left next to the export.
    assert sorted(p.name for p in root.parent.iterdir()) == ["tiny"]


def test_export_copies_run_metadata_and_keeps_calibration(tiny_export):
    root, run = tiny_export.export_dir, tiny_export.run_dir
    assert (root / "metrics.json").read_bytes() == (run / "metrics.json").read_bytes()
    assert (root / "training_config.yaml").read_bytes() == (run / "config.yaml").read_bytes()
    exported = json.loads((root / "config.json").read_text())
    trained = json.loads((run / "model" / "config.json").read_text())
    assert exported["tasks"] == trained["tasks"]
    themes = exported["tasks"][0]
    assert themes["name"] == "themes" and len(themes["thresholds"]) == 11
    assert all(task["temperature"] > 0 for task in exported["tasks"])


def test_data_fingerprint_hashes_and_counts_each_split(tiny_export):
    fingerprint = json.loads((tiny_export.export_dir / "data_fingerprint.json").read_text())
    assert set(fingerprint["splits"]) == {"train", "validation", "test"}
    for split, entry in fingerprint["splits"].items():
        path = tiny_export.corpus / f"{split}.jsonl"
        assert entry["status"] == "ok"
        assert entry["file"] == path.name
        assert entry["sha256"] == _sha256(path)
        assert entry["n_items"] == len(path.read_text().splitlines())
    assert fingerprint["splits"]["train"]["n_reviews"] == 12
    # No machine paths in what gets published.
    assert str(tiny_export.corpus) not in json.dumps(fingerprint)


def test_export_meta_records_versions_contract_and_parity(tiny_export):
    meta = json.loads((tiny_export.export_dir / "scrclf.json").read_text())
    assert meta["versions"]["scrclf"] == scrclf.__version__
    assert meta["onnx"]["opset"] == ExportSettings.defaults().onnx.opset
    assert meta["onnx"]["quantization"]["smoothing"]["alpha"] == (
        ExportSettings.defaults().quantization.smooth_alpha
    )
    assert meta["label_order"]["evidence"] == [
        "research",
        "guidance",
        "local_data",
        "single_case",
        "none_stated",
    ]
    contract = meta["onnx"]["contract"]
    assert [i["name"] for i in contract["inputs"]] == [
        "input_ids",
        "attention_mask",
        "token_type_ids",
    ]
    assert all(
        i["dtype"] == "int64" and i["shape"] == ["batch", "sequence"] for i in contract["inputs"]
    )
    assert [(o["name"], o["shape"]) for o in contract["outputs"]] == [
        ("logits_themes", ["batch", 11]),
        ("logits_evidence", ["batch", 5]),
        ("logits_action_strength", ["batch", 3]),
    ]
    parity = meta["parity"]
    assert parity["skipped"] is False and parity["split"] == "test" and parity["n_items"] == 60
    assert parity["onnx_fp32"]["max_abs_logit_diff"] < 1e-4
    assert set(parity["onnx_int8"]["label_agreement"]) == {"themes", "evidence", "action_strength"}
    assert all(0.0 <= v <= 1.0 for v in parity["onnx_int8"]["label_agreement"].values())
    assert parity["onnx_fp32"]["label_agreement"] == {
        "themes": 1.0,
        "evidence": 1.0,
        "action_strength": 1.0,
    }


def test_model_card_has_front_matter_results_and_sections(tiny_export):
    card = (tiny_export.export_dir / "README.md").read_text()
    match = re.match(r"^---\n(.*?)\n---\n", card, re.S)
    assert match, "model card must start with YAML front matter"
    front = yaml.safe_load(match.group(1))
    assert front["language"] == ["en"] and front["pipeline_tag"] == "text-classification"
    assert front["license"] == "apache-2.0" and "onnx" in front["tags"]
    metrics = json.loads((tiny_export.export_dir / "metrics.json").read_text())
    results = front["model-index"][0]["results"]
    test_themes = next(
        r
        for r in results
        if r["dataset"]["split"] == "test" and r["task"]["name"].startswith("themes")
    )
    macro = next(m for m in test_themes["metrics"] if m["name"].startswith("macro"))
    assert macro["value"] == pytest.approx(metrics["test"]["themes"]["macro_f1"], abs=1e-4)
    for heading in (
        "## Intended use",
        "## Out-of-scope use",
        "## Training data provenance",
        "## Labels",
        "## Limitations",
        "## How to load",
    ):
        assert heading in card
    assert "docs/data_card.md" in card and "fictional" in card
    parity = json.loads((tiny_export.export_dir / "scrclf.json").read_text())["parity"]
    themes = parity["onnx_int8"]["decision_agreement"]["themes"]
    assert f"single label decisions: themes {themes:.3f}" in card


def test_model_card_snippets_run_as_written(tiny_export, tmp_path):
    """Each Python block of the card's "How to load" runs from the folder above models/."""
    card = (tiny_export.export_dir / "README.md").read_text()
    section = card[card.index("## How to load") :]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 3 and any("scrclf-classification" in b for b in blocks)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny").symlink_to(tiny_export.export_dir)
    outputs = []
    for block in blocks:
        proc = subprocess.run(
            [sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, f"{block}\n{proc.stderr}"
        outputs.append(proc.stdout.strip().splitlines()[-1])
    # scrclf.load and the pipeline print the same labels for the same item.
    assert outputs[0] == outputs[1]


# ----------------------------------------------------------------------------- onnx


def test_onnx_graphs_are_single_files_with_dynamic_axes(tiny_export):
    import onnx

    onnx_dir = tiny_export.export_dir / "onnx"
    assert sorted(p.name for p in onnx_dir.iterdir()) == ["model.int8.onnx", "model.onnx"]
    for name in ("model.onnx", "model.int8.onnx"):
        graph = onnx.load(str(onnx_dir / name), load_external_data=False)
        assert not any(
            t.data_location == onnx.TensorProto.EXTERNAL for t in graph.graph.initializer
        )
        for value in graph.graph.input:
            assert value.type.tensor_type.elem_type == onnx.TensorProto.INT64
            assert [d.dim_param for d in value.type.tensor_type.shape.dim] == ["batch", "sequence"]
    int8 = onnx.load(str(onnx_dir / "model.int8.onnx"))
    ops = {node.op_type for node in int8.graph.node}
    assert "MatMulIntegerToFloat" in ops  # per-token scales: no scale spans the batch
    assert not ops & {"DynamicQuantizeLinear", "DynamicQuantizeMatMul"}
    assert (onnx_dir / "model.int8.onnx").stat().st_size < (onnx_dir / "model.onnx").stat().st_size


def test_fp32_onnx_logits_match_torch_and_int8_labels_mostly_agree(tiny_export):
    from scrclf.data.records import read_records

    rows = [r.data for r in read_records(tiny_export.corpus / "test.jsonl")]
    texts, findings = (
        [r["text"] for r in rows] + PROBE_TEXTS,
        [r["finding"] for r in rows] + PROBE_FINDINGS,
    )
    torch_clf = scrclf.load(tiny_export.export_dir, backend="torch")
    onnx_clf = scrclf.load(tiny_export.export_dir, backend="onnx")
    int8_clf = scrclf.load(tiny_export.export_dir, backend="onnx", quantized=True)
    with pytest.warns(UserWarning, match="truncated"):
        reference = torch_clf.logits(texts, findings, batch_size=7)
    with pytest.warns(UserWarning, match="truncated"):
        fp32 = onnx_clf.logits(texts, findings, batch_size=32)
    for ref, got in zip(reference, fp32, strict=True):
        assert np.max(np.abs(ref - got)) < 1e-4
    with pytest.warns(UserWarning, match="truncated"):
        int8 = int8_clf.predict(texts, findings)
    with pytest.warns(UserWarning, match="truncated"):
        labels = torch_clf.predict(texts, findings)
    agree = np.mean(
        [
            a["evidence"]["label"] == b["evidence"]["label"]
            for a, b in zip(labels, int8, strict=True)
        ]
    )
    assert agree >= 0.8


def _example_block() -> str:
    doc = (ROOT / "docs" / "onnx_contract.md").read_text()
    marker = doc.index("<!-- onnx-only example")
    return re.search(r"```python\n(.*?)```", doc[marker:], re.S).group(1)


def _contract_consumer(export_dir: Path, texts, findings, tmp_path: Path) -> list[dict]:
    """The documented example, run with onnxruntime, tokenizers and numpy alone."""
    code = _example_block().replace('"models/NAME"', repr(str(export_dir)))
    script = tmp_path / "consumer.py"
    script.write_text(
        "import sys\n"
        "for blocked in ('torch', 'transformers', 'scrclf'):\n"
        "    sys.modules[blocked] = None  # any import of these now fails\n"
        + code
        + f"\nimport json\nprint(json.dumps(classify({str(export_dir)!r}, "
        f"{texts!r}, {findings!r})))\n"
        + "assert not any(m.split('.')[0] in ('torch', 'transformers', 'scrclf')\n"
        "               for m, v in sys.modules.items() if v is not None)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-I", str(script)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _same_labels(expected, got) -> None:
    for mine, theirs in zip(expected, got, strict=True):
        assert theirs["themes"] == mine["themes"]["labels"]
        assert theirs["evidence"] == mine["evidence"]["label"]
        assert theirs["action_strength"] == mine["action_strength"]["label"]


def test_onnx_only_consumer_from_the_contract_gets_the_same_labels(tiny_export, tmp_path):
    texts, findings = PROBE_TEXTS[:3], PROBE_FINDINGS[:3]
    got = _contract_consumer(tiny_export.export_dir, texts, findings, tmp_path)
    expected = scrclf.load(tiny_export.export_dir, backend="torch").predict(texts, findings)
    _same_labels(expected, got)


def test_class_offsets_steer_both_the_package_and_the_contract_consumer(export_copy, tmp_path):
    """A large offset on one evidence class makes it every item's label, read from
    ``config.json`` by the package and from ``scrclf.json`` by a consumer of the contract."""
    meta = json.loads((export_copy / "scrclf.json").read_text())
    assert meta["format_version"] == 2
    config = json.loads((export_copy / "config.json").read_text())
    evidence = next(t for t in meta["tasks"] if t["name"] == "evidence")
    assert evidence["offsets"] == [0.0] * 5  # class_offsets is off by default
    for tasks in (meta["tasks"], config["tasks"]):
        evidence = next(t for t in tasks if t["name"] == "evidence")
        evidence["offsets"] = [0.0, 0.0, 0.0, 50.0, 0.0]  # single_case
    (export_copy / "scrclf.json").write_text(json.dumps(meta))
    (export_copy / "config.json").write_text(json.dumps(config))
    rewrite_manifest(export_copy)
    texts, findings = PROBE_TEXTS, PROBE_FINDINGS  # one probe is past the length limit
    with pytest.warns(TruncationWarning):
        expected = scrclf.load(export_copy, backend="onnx").predict(texts, findings)
    assert {p["evidence"]["label"] for p in expected} == {"single_case"}
    _same_labels(expected, _contract_consumer(export_copy, texts, findings, tmp_path))


def test_transformers_automodel_loads_the_export(tiny_export):
    import torch
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(tiny_export.export_dir, use_safetensors=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_export.export_dir)
    assert type(model).__name__ == "ScrClfModel"
    batch = tokenizer(PROBE_TEXTS[:2], padding=True, return_tensors="pt")
    with torch.inference_mode():
        logits = model(**batch).logits
    expected = scrclf.load(tiny_export.export_dir, backend="onnx").logits(PROBE_TEXTS[:2])
    for got, ref in zip(logits, expected, strict=True):
        assert np.max(np.abs(got.numpy() - ref)) < 1e-4


# ------------------------------------------------------------------------ atomicity


def _boom(*args, **kwargs):
    raise RuntimeError("ONNX step failed")


def test_failed_export_leaves_nothing_at_the_destination(tiny_export, tmp_path, monkeypatch):
    monkeypatch.setattr(export_mod, "export_onnx", _boom)
    dest = tmp_path / "models" / "broken"
    with pytest.raises(RuntimeError, match="ONNX step failed"):
        export_model(tiny_export.run_dir, dest)
    assert not dest.exists()
    assert list((tmp_path / "models").iterdir()) == []


def test_failed_export_keeps_the_earlier_export_intact(tiny_export, tmp_path, monkeypatch):
    dest = tmp_path / "models" / "tiny"
    shutil.copytree(tiny_export.export_dir, dest)
    before = build_manifest(dest)
    monkeypatch.setattr(export_mod, "export_onnx", _boom)
    with pytest.raises(RuntimeError):
        export_model(tiny_export.run_dir, dest)
    assert build_manifest(dest) == before
    assert sorted(p.name for p in dest.parent.iterdir()) == ["tiny"]


def _reuse_graph(tiny_export):
    """Stand-in for the ONNX step: the graph exported by the fixture (the same model)."""

    def export_onnx(model, path, opset):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tiny_export.export_dir / "onnx" / "model.onnx", path)
        meta = json.loads((tiny_export.export_dir / "scrclf.json").read_text())
        return {"opset": opset, **{k: meta["onnx"]["contract"][k] for k in ("inputs", "outputs")}}

    return export_onnx


def test_export_refuses_a_graph_that_is_not_faithful(tiny_export, tmp_path, monkeypatch):
    monkeypatch.setattr(export_mod, "export_onnx", _reuse_graph(tiny_export))
    real = export_mod.measure_parity

    def skewed(*args, **kwargs):
        result = real(*args, **kwargs)
        result["onnx_fp32"]["max_abs_logit_diff"] = 0.5
        return result

    monkeypatch.setattr(export_mod, "measure_parity", skewed)
    dest = tmp_path / "models" / "skewed"
    with pytest.raises(ExportError, match="max_logit_diff"):
        export_model(tiny_export.run_dir, dest)
    assert not dest.exists()


@pytest.mark.parametrize("name", ["has space", "-dash", "bad!", "trailing."])
def test_export_refuses_bad_names(tiny_export, tmp_path, name):
    with pytest.raises(ExportError, match="name="):
        export_model(tiny_export.run_dir, tmp_path / "models" / name)
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize("name", ["../escape", "a/b", ""])
def test_check_name_refuses_paths(name):
    with pytest.raises(ExportError, match="name="):
        check_name(name)


def test_export_names_the_missing_run_file(tiny_export, tmp_path):
    with pytest.raises(ExportError, match="not a directory"):
        export_model(tmp_path / "no_run", tmp_path / "models" / "x")
    partial = tmp_path / "partial"
    shutil.copytree(tiny_export.run_dir / "model", partial / "model")
    with pytest.raises(ExportError, match=r"metrics\.json: missing"):
        export_model(partial, tmp_path / "models" / "x")


def test_parity_split_falls_back_to_validation_then_skips(tiny_export, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(tiny_export.corpus / "validation.jsonl", corpus)
    config = {
        "data": {
            "dir": str(corpus),
            "text_column": "text",
            "pair_column": "finding",
            "group_column": "review_id",
            "splits": {
                "train": "train.jsonl",
                "validation": "validation.jsonl",
                "test": "test.jsonl",
            },
        }
    }
    split, texts, findings, notes = parity_inputs(config, "test")
    assert split == "validation" and len(texts) == len(findings) == 60
    assert notes and notes[0].startswith("test (test.jsonl)")
    (corpus / "validation.jsonl").write_text('{"id": "x", "text": 5}\n')
    split, texts, _, notes = parity_inputs(config, "test")
    assert split is None and texts == [] and len(notes) == 2
    fingerprint = data_fingerprint(config)
    assert fingerprint["splits"]["test"]["status"] == "missing"
    assert fingerprint["splits"]["validation"]["n_items"] == 1


# ---------------------------------------------------------------------------- wheel


def test_wheel_has_consistent_record_and_metadata(tiny_export):
    wheel = next((tiny_export.export_dir / "dist").glob("*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        record = zf.read("scrclf_model_tiny-1.0.0.dist-info/RECORD").decode()
        metadata = zf.read("scrclf_model_tiny-1.0.0.dist-info/METADATA").decode()
        for line in record.splitlines():
            arc, digest, size = line.rsplit(",", 2)
            if arc.endswith("RECORD"):
                continue
            data = zf.read(arc)
            import base64

            expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            assert digest == "sha256=" + expected.decode() and int(size) == len(data)
    assert "Name: scrclf-model-tiny" in metadata and "Version: 1.0.0" in metadata
    assert "scrclf_model_tiny/model/onnx/model.onnx" in names
    assert "scrclf_model_tiny/model/manifest.json" in names
    assert not any("/dist/" in n for n in names)


def test_wheel_installs_offline_and_loads(tiny_export, tmp_path):
    wheel = next((tiny_export.export_dir / "dist").glob("*.whl"))
    target = tmp_path / "site"
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        env=env,
        timeout=300,
    )
    code = (
        "import sys, json; sys.path.insert(0, sys.argv[1])\n"
        "import scrclf_model_tiny as bundled\n"
        "clf = bundled.load(backend='onnx')\n"
        "print(json.dumps({'path': bundled.get_model_path(),\n"
        "                  'pred': clf.predict(['The board should audit the procedure.'])}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(target)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(out["path"]).is_relative_to(target)
    expected = scrclf.load(tiny_export.export_dir, backend="onnx").predict(
        ["The board should audit the procedure."]
    )
    assert out["pred"][0]["themes"]["labels"] == expected[0]["themes"]["labels"]


# ---------------------------------------------------------------------------- script


def test_export_script_writes_the_folder(tiny_export, tmp_path):
    env = {**os.environ, "PROJECT_ROOT": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    proc = run_script(
        "scripts/export.py",
        f"run_dir={tiny_export.run_dir}",
        "name=scripted",
        f"out_dir={tmp_path / 'models'}",
        "parity_split=validation",
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    dest = tmp_path / "models" / "scripted"
    meta = json.loads((dest / "scrclf.json").read_text())
    assert meta["name"] == "scripted" and meta["parity"]["split"] == "validation"
    assert not (dest / "dist").exists()
    scrclf.load(dest)  # verifies every checksum
