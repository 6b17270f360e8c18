"""Loading a model someone sent you: safetensors and ONNX only, checksums first, no network.

* Weights are read from safetensors (torch) or ONNX; ``torch.load`` and ``pickle`` are never
  used. A folder holding a pickle file (``.bin``, ``.pt``, ``.pth``, ``.pkl``, ``.ckpt``), or
  whose metadata names one, is refused before anything is read.
* With a ``manifest.json`` (every export has one), every file's size and SHA-256 are
  verified before any weight is read; a mismatch stops the load.
* Importing scrclf, loading and predicting open no network connection.
* Code shipped in a model folder (``auto_map`` with a ``.py`` file) is never run.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

import scrclf
from scrclf.inference import classifier as inference
from scrclf.inference.classifier import ModelIntegrityError, UnsafeModelError
from tests.helpers import rewrite_manifest

TEXTS = [
    "The board should commission training on the new procedure protocol.",
    "All agencies should redesign the referral strategy.",
]
PICKLE_SUFFIXES = [".bin", ".pt", ".pth", ".pkl", ".ckpt"]


def _edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2))


class WeightReads:
    """Records every read of weights (safetensors or ONNX) and every file checksum, in order."""

    def __init__(self, monkeypatch):
        import onnxruntime
        import transformers.modeling_utils as modeling_utils

        self.events: list[tuple[str, str]] = []
        self._wrap(monkeypatch, modeling_utils, "safe_open", "weights")
        self._wrap(monkeypatch, onnxruntime, "InferenceSession", "weights")
        self._wrap(monkeypatch, inference, "file_sha256", "checksum")

    def _wrap(self, monkeypatch, module, name: str, kind: str) -> None:
        real = getattr(module, name)

        def recorded(path, *args, **kwargs):
            self.events.append((kind, Path(str(path)).name))
            return real(path, *args, **kwargs)

        monkeypatch.setattr(module, name, recorded)

    def of(self, kind: str) -> list[str]:
        return [name for k, name in self.events if k == kind]


@pytest.fixture
def weight_reads(monkeypatch) -> WeightReads:
    return WeightReads(monkeypatch)


@pytest.fixture
def no_pickle(monkeypatch):
    """torch.load and pickle fail the test if anything calls them."""
    import torch

    def refuse(*args, **kwargs):
        raise AssertionError("a pickle loader was called")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)


# ------------------------------------------------------------------ safetensors and ONNX


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_weights_come_from_safetensors_or_onnx_only(tiny_export, backend, weight_reads, no_pickle):
    clf = scrclf.load(tiny_export.export_dir, backend=backend)
    assert len(clf.predict(TEXTS)) == 2
    expected = "model.safetensors" if backend == "torch" else "model.onnx"
    assert weight_reads.of("weights") == [expected]


def test_a_run_model_folder_loads_from_safetensors_without_pickle(
    tiny_export, weight_reads, no_pickle
):
    clf = scrclf.load(tiny_export.run_dir / "model")
    assert clf.backend == "torch" and len(clf.predict(TEXTS)) == 2
    assert weight_reads.of("weights") == ["model.safetensors"]


@pytest.mark.parametrize(
    "name",
    [
        "pytorch_model.bin",
        "extra/model.pt",
        "extra/MODEL.PT",
        "rng_state.pth",
        "head.pkl",
        "last.ckpt",
    ],
)
@pytest.mark.parametrize("folder", ["export", "run_model"])
def test_a_pickle_file_in_the_folder_is_refused_before_reading(
    export_copy, run_model_copy, folder, name, weight_reads
):
    root = export_copy if folder == "export" else run_model_copy
    bad = root / name
    bad.parent.mkdir(exist_ok=True)
    bad.write_bytes(pickle.dumps({"not": "weights"}))
    if folder == "export":
        rewrite_manifest(root)  # even when the manifest vouches for it
        weight_reads.events.clear()
    with pytest.raises(UnsafeModelError, match="pickle files can execute code") as info:
        scrclf.load(root)
    assert info.value.file == str(bad)
    assert weight_reads.events == []


@pytest.mark.parametrize(
    ("file", "key", "value"),
    [
        ("config.json", "checkpoint_path", "last.ckpt"),
        ("config.json", "weights_file", "pytorch_model.bin"),
        ("tokenizer_config.json", "vocab_file", "vocab.pkl"),
        ("scrclf.json", "onnx", {"files": {"fp32": "onnx/model.pth"}}),
    ],
)
def test_a_pickle_named_only_in_metadata_is_refused(export_copy, weight_reads, file, key, value):
    _edit_json(export_copy / file, lambda data: data.__setitem__(key, value))
    rewrite_manifest(export_copy)
    with pytest.raises(UnsafeModelError, match="pickle") as info:
        scrclf.load(export_copy)
    assert Path(info.value.file).name == file
    assert weight_reads.of("weights") == []


def test_a_weight_index_naming_pickle_shards_is_refused(run_model_copy, weight_reads):
    (run_model_copy / "model.safetensors.index.json").write_text(
        json.dumps(
            {"metadata": {}, "weight_map": {"heads.0.weight": "pytorch_model-00001-of-00001.bin"}}
        )
    )
    with pytest.raises(UnsafeModelError, match="'weight_map' names the pickle file"):
        scrclf.load(run_model_copy)
    assert weight_reads.events == []


def test_training_checkpoints_are_refused(tiny_export, weight_reads):
    """Checkpoints hold optimizer, scheduler and RNG state pickled by torch: never loaded."""
    checkpoints = sorted((tiny_export.run_dir / "checkpoints").glob("checkpoint-*"))
    assert checkpoints
    with pytest.raises(UnsafeModelError, match="pickle files can execute code") as info:
        scrclf.load(checkpoints[-1])
    assert Path(info.value.file).suffix in PICKLE_SUFFIXES
    assert weight_reads.events == []


def test_code_shipped_in_a_model_folder_never_runs(run_model_copy, tmp_path, no_pickle):
    marker = tmp_path / "code_ran"
    (run_model_copy / "modeling_evil.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from scrclf.modeling.model import ScrClfConfig as EvilConfig, ScrClfModel as EvilModel\n"
    )
    _edit_json(
        run_model_copy / "config.json",
        lambda c: c.__setitem__(
            "auto_map",
            {"AutoConfig": "modeling_evil.EvilConfig", "AutoModel": "modeling_evil.EvilModel"},
        ),
    )
    clf = scrclf.load(run_model_copy, backend="torch")
    clf.predict(TEXTS)
    assert not marker.exists()
    assert "modeling_evil" not in sys.modules


# -------------------------------------------------------------------------- checksums


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_checksums_are_verified_before_any_weight_is_read(tiny_export, weight_reads, backend):
    scrclf.load(tiny_export.export_dir, backend=backend)
    manifest = json.loads((tiny_export.export_dir / "manifest.json").read_text())
    every_file = [("checksum", Path(rel).name) for rel in manifest["files"]]
    weights = "model.safetensors" if backend == "torch" else "model.onnx"
    assert weight_reads.events == [*every_file, ("weights", weights)]


@pytest.mark.parametrize("backend", ["torch", "onnx"])
@pytest.mark.parametrize("tamper", ["weights_changed", "manifest_changed", "size_changed"])
def test_a_tampered_export_fails_before_any_weight_is_read(
    export_copy, weight_reads, backend, tamper
):
    weights = "model.safetensors" if backend == "torch" else "onnx/model.onnx"
    if tamper == "weights_changed":
        data = bytearray((export_copy / weights).read_bytes())
        data[len(data) // 3] ^= 0x80
        (export_copy / weights).write_bytes(bytes(data))
        match = "SHA-256 differs"
    elif tamper == "manifest_changed":
        _edit_json(
            export_copy / "manifest.json",
            lambda m: m["files"][weights].__setitem__("sha256", "0" * 64),
        )
        match = "SHA-256 differs"
    else:
        with open(export_copy / weights, "ab") as fh:
            fh.write(b"\x00" * 16)
        match = "the file was changed or truncated"
    with pytest.raises(ModelIntegrityError, match=match) as info:
        scrclf.load(export_copy, backend=backend)
    assert info.value.file == str(export_copy / weights)
    assert weight_reads.of("weights") == []


# ---------------------------------------------------------------------------- network


def test_load_and_predict_open_no_connection(tiny_export, no_network):
    for kwargs in (
        {"backend": "torch"},
        {"backend": "onnx"},
        {"backend": "onnx", "quantized": True},
    ):
        assert len(scrclf.load(tiny_export.export_dir, **kwargs).predict(TEXTS)) == 2
    assert len(scrclf.load(tiny_export.run_dir / "model").predict(TEXTS)) == 2


NO_NETWORK_PREAMBLE = """
import json, socket, sys
attempts = []
def refuse(*args, **kwargs):
    attempts.append(repr(args[:2]))
    raise OSError("network access refused by the test")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
"""

NO_NETWORK_BODY = """
import scrclf
model = sys.argv[1]
for kwargs in ({"backend": "torch"}, {"backend": "onnx"}, {"backend": "onnx", "quantized": True}):
    items = scrclf.load(model, **kwargs).predict(["The board should audit supervision."])
    assert len(items) == 1
during_use = list(attempts)
try:  # the guard itself works: a deliberate connection is caught
    socket.create_connection(("127.0.0.1", 9), timeout=1)
except OSError:
    pass
print(json.dumps({"attempts": during_use, "probe_caught": len(attempts) == 1 + len(during_use)}))
"""


def test_import_load_and_predict_in_a_fresh_process_open_no_connection(tiny_export, tmp_path):
    """Sockets are refused from the start, and nothing tells the libraries to stay offline."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
    }
    env["HF_HOME"] = str(tmp_path / "empty_hf_home")  # nothing cached to fall back on
    proc = subprocess.run(
        [sys.executable, "-c", NO_NETWORK_PREAMBLE + NO_NETWORK_BODY, str(tiny_export.export_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == {"attempts": [], "probe_caught": True}
