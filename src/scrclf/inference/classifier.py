"""Loading a saved or exported model safely, and turning texts into decisions.

``scrclf.load(path)`` accepts an export folder (``models/NAME/``, see :mod:`scrclf.export.build`)
or the ``model/`` folder of a training run. Before any weights are read the folder is
checked:

* no pickle files (``*.bin``, ``*.pt``, ``*.pth``, ``*.pkl``, ``*.ckpt``) may be present in it
  or named by its metadata: loading a pickle can execute code;
* every path named by ``manifest.json``, ``scrclf.json`` or the Hugging Face config files
  must resolve inside the folder;
* when the folder has a ``manifest.json`` (every export has one), each listed file must have
  the recorded size and SHA-256, and every file the loader reads must be listed.

Two backends compute the same logits: ``torch`` (the Hugging Face model, safetensors
weights) and ``onnx`` (``onnx/model.onnx``, or ``onnx/model.int8.onnx`` with
``quantized=True``, run by onnxruntime). Both tokenize with :func:`scrclf.data.records.tokenize` and
turn logits into decisions with :mod:`scrclf.calibration`, so they apply one rule.
Nothing is downloaded: every file is read from the folder.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scrclf.calibration import decide, probabilities
from scrclf.data.records import has_visible_text, tokenize, unicode_problem
from scrclf.errors import (  # noqa: F401 (re-exported)
    DataError,
    ModelIntegrityError,
    ModelLoadError,
    SettingsError,
    UnsafeModelError,
)
from scrclf.inference.tokenizer import RuntimeTokenizer
from scrclf.tasks import TaskConfigError, TaskSet

MANIFEST_FILE = "manifest.json"
EXPORT_META_FILE = "scrclf.json"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
ONNX_FP32_FILE = "onnx/model.onnx"
ONNX_INT8_FILE = "onnx/model.int8.onnx"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "added_tokens.json",
)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
# Metadata files whose path-like values are checked before anything else is read.
REFERENCE_FILES = (
    CONFIG_FILE,
    "tokenizer_config.json",
    "special_tokens_map.json",
    EXPORT_META_FILE,
    WEIGHTS_INDEX_FILE,
)
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_PREFIX = "logits_"
BACKENDS = ("auto", "torch", "onnx")
CHUNK_BYTES = 1 << 20
# A safetensors header is JSON describing the tensors; far below this for any real model.
MAX_SAFETENSORS_HEADER = 100 << 20


class TruncationWarning(UserWarning):
    """Some inputs were longer than the model's ``max_seq_length`` and were cut."""

    def __init__(self, message: str, count: int, max_length: int):
        super().__init__(message)
        self.count = count
        self.max_length = max_length


# --------------------------------------------------------------------------- integrity


def file_sha256(path: str | Path) -> str:
    """The hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_manifest(root: str | Path) -> dict[str, Any]:
    """SHA-256 and size of every file under ``root`` except ``manifest.json`` itself."""
    root = Path(root)
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel == MANIFEST_FILE:
            continue
        files[rel] = {"sha256": file_sha256(path), "size": path.stat().st_size}
    return {"algorithm": "sha256", "files": files}


def inside(root: Path, rel: str, source: str | Path) -> Path:
    """``root / rel`` if it resolves inside ``root``; otherwise refuse, naming ``source``."""
    if not isinstance(rel, str) or not rel:
        raise UnsafeModelError(f"invalid path {rel!r}", source)
    candidate = Path(rel)
    resolved_root = root.resolve()
    target = (root / candidate).resolve()
    if candidate.is_absolute() or not target.is_relative_to(resolved_root):
        raise UnsafeModelError(f"path '{rel}' resolves outside the model folder {root}", source)
    return root / candidate


def _is_pickle(name: str) -> bool:
    return name.lower().endswith(PICKLE_SUFFIXES)


def refuse_outside_links(root: Path) -> None:
    """Refuse any symbolic link in the folder that resolves outside it (run folders and
    exports alike: ``config.json`` linked to a file elsewhere is refused like a path in the
    metadata that leaves the folder)."""
    resolved_root = root.resolve()
    for path in sorted(root.rglob("*")):
        if path.is_symlink() and not path.resolve().is_relative_to(resolved_root):
            raise UnsafeModelError(
                f"a symbolic link that resolves outside the model folder {root}", path
            )


def refuse_pickles(root: Path) -> None:
    """Refuse a folder holding any file with a pickle suffix."""
    for path in sorted(root.rglob("*")):
        if _is_pickle(path.name):
            raise UnsafeModelError(
                "pickle files can execute code when loaded and are refused; "
                "models load from safetensors or ONNX only",
                path,
            )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise ModelLoadError(f"cannot read: {err}", path) from None
    except json.JSONDecodeError as err:
        raise ModelLoadError(f"invalid JSON ({err.msg} at line {err.lineno})", path) from None


def _path_values(key: str, value: Any) -> Iterable[str]:
    """String values stored under a key that names files (``*file``, ``*path``, ``weight_map``)."""
    lowered = key.lower()
    names_files = lowered != "_name_or_path" and lowered.endswith(
        ("file", "files", "filename", "path", "paths", "weight_map")
    )
    if names_files:
        if isinstance(value, str):
            yield value
        elif isinstance(value, (list, tuple)):
            yield from (v for v in value if isinstance(v, str))
        elif isinstance(value, Mapping):
            yield from (v for v in value.values() if isinstance(v, str))
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _path_values(str(k), v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            if isinstance(v, (Mapping, list, tuple)):
                yield from _path_values("", v)


def check_references(root: Path) -> None:
    """Refuse metadata that names a pickle file or a path outside the folder."""
    for name in REFERENCE_FILES:
        path = root / name
        if not path.is_file():
            continue
        data = _read_json(path)
        if not isinstance(data, Mapping):
            continue
        for key, value in data.items():
            for ref in _path_values(str(key), value):
                if not ref:
                    continue
                if _is_pickle(ref):
                    raise UnsafeModelError(
                        f"'{key}' names the pickle file '{ref}'; pickle files are refused", path
                    )
                inside(root, ref, path)


def verify_manifest(root: Path) -> dict[str, Any] | None:
    """Check every file listed in ``manifest.json``; return the manifest (None if absent)."""
    path = root / MANIFEST_FILE
    if not path.is_file():
        return None
    manifest = _read_json(path)
    files = manifest.get("files") if isinstance(manifest, Mapping) else None
    if not isinstance(files, Mapping) or not files:
        raise ModelIntegrityError("expected {'files': {path: {'sha256', 'size'}}}", path)
    if manifest.get("algorithm", "sha256") != "sha256":
        raise ModelIntegrityError(f"unsupported algorithm {manifest.get('algorithm')!r}", path)
    for rel, entry in files.items():
        target = inside(root, rel, path)
        if _is_pickle(rel):
            raise UnsafeModelError(f"lists the pickle file '{rel}'; pickle files are refused", path)
        if not isinstance(entry, Mapping) or "sha256" not in entry or "size" not in entry:
            raise ModelIntegrityError(f"entry '{rel}' needs 'sha256' and 'size'", path)
        if not target.is_file():
            raise ModelIntegrityError(f"missing, but listed in {MANIFEST_FILE}", target)
        size = target.stat().st_size
        if size != entry["size"]:
            raise ModelIntegrityError(
                f"size {size} differs from {entry['size']} recorded in {MANIFEST_FILE}; "
                "the file was changed or truncated",
                target,
            )
        if file_sha256(target) != entry["sha256"]:
            raise ModelIntegrityError(
                f"SHA-256 differs from the one recorded in {MANIFEST_FILE}; the file was changed",
                target,
            )
    return manifest


def check_safetensors(path: Path) -> None:
    """Refuse a safetensors file that is cut short or whose header is damaged.

    Only the JSON header is read. The format requires the tensors to cover the data after
    the header exactly, so a truncated file is told apart from a complete one by its size.
    """
    size = path.stat().st_size
    fix = "re-save or re-export the model"
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ModelLoadError(
                f"truncated safetensors file ({size} bytes, no header); {fix}", path
            )
        n = int.from_bytes(head, "little")
        if n > min(size - 8, MAX_SAFETENSORS_HEADER):
            raise ModelLoadError(
                f"truncated or damaged safetensors file: its header claims {n} "
                f"bytes, the file has {size}; {fix}",
                path,
            )
        try:
            header = json.loads(fh.read(n))
        except (ValueError, RecursionError):
            header = None
    if not isinstance(header, Mapping):
        raise ModelLoadError(
            f"damaged safetensors file: the header is not a JSON object; {fix}", path
        )
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, Mapping) else None
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(o, int) and o >= 0 for o in offsets)
        ):
            raise ModelLoadError(
                f"damaged safetensors file: tensor '{name}' has no valid data_offsets; {fix}", path
            )
        end = max(end, offsets[1])
    expected = 8 + n + end
    if size != expected:
        raise ModelLoadError(
            f"truncated or damaged safetensors file: {size} bytes, its header "
            f"describes {expected}; {fix}",
            path,
        )


# ----------------------------------------------------------------------------- inputs


def text_problem(value: Any) -> str | None:
    """Why ``value`` cannot be classified as a recommendation text (None when it can).

    Control and format characters inside a text are accepted (the tokenizer drops them);
    a text with nothing else is refused, as is one holding a lone surrogate.
    """
    if value is None:
        return "is None; every item needs a text"
    if isinstance(value, float) and value != value:
        return "is NaN (a missing value); every item needs a text"
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__}"
    if not value.strip():
        return "is empty or whitespace only"
    problem = unicode_problem(value)
    if problem:
        return problem
    if not has_visible_text(value):
        return "has no visible characters (only whitespace, control or format characters)"
    return None


def finding_problem(value: Any) -> str | None:
    """Why ``value`` cannot be a finding (None and strings can)."""
    if value is not None and not isinstance(value, str):
        return f"must be a string or None, got {type(value).__name__}"
    if value is not None:
        return unicode_problem(value)
    return None


def check_inputs(texts: Any, findings: Any = None) -> tuple[list[str], list[str | None]]:
    """Validate a batch; raise ``ValueError`` naming the index of the first bad item."""
    if isinstance(texts, (str, bytes)):
        raise DataError("texts must be a list of strings, got a single string; pass [text]")
    if isinstance(texts, (set, frozenset, Mapping)) or isinstance(findings, (set, frozenset)):
        raise DataError(
            f"texts must be a list or tuple, got {type(texts).__name__}: it has no fixed "
            "order to give the results back in"
        )
    try:
        texts = list(texts)
    except TypeError:
        raise DataError(f"texts must be a list of strings, got {type(texts).__name__}") from None
    if findings is None:
        findings = [None] * len(texts)
    else:
        if isinstance(findings, (str, bytes)):
            raise DataError("findings must be a list (one per text, None where there is none)")
        findings = list(findings)
        if len(findings) != len(texts):
            raise DataError(f"findings has {len(findings)} items for {len(texts)} texts")
    for i, (text, finding) in enumerate(zip(texts, findings, strict=True)):
        problem = text_problem(text)
        if problem:
            raise DataError(f"texts[{i}]: {problem}")
        problem = finding_problem(finding)
        if problem:
            raise DataError(f"findings[{i}]: {problem}")
    return texts, findings


# --------------------------------------------------------------------------- backends


class TorchBackend:
    """The Hugging Face model, loaded from safetensors only."""

    name = "torch"

    def __init__(self, root: Path, tasks: TaskSet, device: str = "cpu"):
        import torch
        from safetensors import SafetensorError
        from transformers import AutoModel

        from scrclf.modeling.model import register_auto_classes

        register_auto_classes()  # AutoConfig and AutoModel must know the scrclf model type
        _quiet_transformers()
        self.torch = torch
        self.device = torch.device(device)
        try:
            model = AutoModel.from_pretrained(
                str(root), use_safetensors=True, local_files_only=True
            )
        except (OSError, ValueError, SafetensorError) as err:
            raise ModelLoadError(f"cannot load the torch model: {err}", root) from None
        except RuntimeError as err:  # weights whose shapes do not fit config.json
            first = " ".join(str(err).split())[:300]
            raise ModelLoadError(
                f"weights do not fit {CONFIG_FILE}: {first}", root / WEIGHTS_FILE
            ) from None
        names = list(getattr(model, "task_names", []))
        if names != tasks.names:
            raise ModelLoadError(
                f"model heads {names} differ from the tasks {tasks.names}", root / CONFIG_FILE
            )
        self.model = model.to(self.device).eval()
        self.on_cpu = self.device.type == "cpu"
        self.input_names = INPUT_NAMES

    def run(self, batch: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        torch = self.torch
        feed = {k: torch.from_numpy(v).to(self.device) for k, v in batch.items()}
        with torch.inference_mode():
            out = self.model(**feed, return_dict=True)
        return [t.float().cpu().numpy() for t in out.logits]


# onnxruntime rewrites Add + LayerNormalization into SkipLayerNormalization when it loads a
# graph; on CPU that kernel measured 6x slower than the two operators it replaces, and the
# whole int8 graph 16% slower (benchmarks/README.md). Outputs are the same either way.
DISABLED_ORT_OPTIMIZERS = ["SkipLayerNormFusion"]


class OnnxBackend:
    """An ONNX graph run by onnxruntime; its inputs and outputs are checked against the config."""

    name = "onnx"

    def __init__(self, file: Path, tasks: TaskSet, device: str = "cpu", threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = int(threads)
        providers: list[str | tuple[str, dict[str, Any]]]
        if device == "cpu":
            providers = ["CPUExecutionProvider"]
        elif device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ModelLoadError(
                    f"device={device}: this onnxruntime has no CUDA provider; "
                    "use device='cpu' or backend='torch'",
                    file,
                )
            index = int(device.split(":")[1]) if ":" in device else 0
            providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        else:
            raise ModelLoadError(f"unknown device '{device}'; use 'cpu' or 'cuda[:N]'", file)
        try:
            self.session = ort.InferenceSession(
                str(file), options, providers=providers, disabled_optimizers=DISABLED_ORT_OPTIMIZERS
            )
        except Exception as err:  # onnxruntime raises its own exception types
            raise ModelLoadError(f"onnxruntime cannot load the graph: {err}", file) from None
        self.input_names = check_onnx_signature(self.session, tasks, file)
        self.output_names = [OUTPUT_PREFIX + t.name for t in tasks]
        self.on_cpu = device == "cpu"

    def run(self, batch: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        feed = {}
        for name in self.input_names:
            value = batch.get(name)
            feed[name] = value if value is not None else np.zeros_like(batch["input_ids"])
        return [np.asarray(x, dtype=np.float32) for x in self.session.run(self.output_names, feed)]


def check_onnx_signature(session, tasks: TaskSet, file: Path) -> tuple[str, ...]:
    """Refuse a graph whose outputs do not match the tasks; return its input names."""
    inputs = {i.name: i for i in session.get_inputs()}
    unknown = sorted(set(inputs) - set(INPUT_NAMES))
    if "input_ids" not in inputs or unknown:
        raise ModelLoadError(
            f"graph inputs {sorted(inputs)} do not match the contract {list(INPUT_NAMES)}", file
        )
    for name, arg in inputs.items():
        if arg.type != "tensor(int64)":
            raise ModelLoadError(f"input '{name}' is {arg.type}, expected tensor(int64)", file)
    outputs = {o.name: o for o in session.get_outputs()}
    expected = {OUTPUT_PREFIX + t.name: t for t in tasks}
    if set(outputs) != set(expected):
        raise ModelLoadError(
            f"graph outputs {sorted(outputs)} do not match the tasks in "
            f"{CONFIG_FILE} (expected {sorted(expected)})",
            file,
        )
    for name, task in expected.items():
        shape = outputs[name].shape
        if len(shape) != 2 or shape[1] != task.num_labels:
            raise ModelLoadError(
                f"output '{name}' has shape {shape}; task '{task.name}' has "
                f"{task.num_labels} labels in {CONFIG_FILE}",
                file,
            )
        if outputs[name].type != "tensor(float)":
            raise ModelLoadError(
                f"output '{name}' is {outputs[name].type}, expected tensor(float)", file
            )
    return tuple(n for n in INPUT_NAMES if n in inputs)


# ----------------------------------------------------------------------------- output


def format_predictions(tasks: TaskSet, logits: Sequence[np.ndarray]) -> list[dict[str, Any]]:
    """One dict per item: labels, primary label (multi-label) or label, and scores per task.

    Multi-label ``labels`` are ordered by score, so ``labels[0]`` is the primary label.
    """
    columns = []
    for task, task_logits in zip(tasks, logits, strict=True):
        probs = probabilities(task, task_logits)
        columns.append((task, probs, decide(task, probs)))
    n = len(logits[0]) if len(logits) else 0
    items: list[dict[str, Any]] = []
    for i in range(n):
        item: dict[str, Any] = {}
        for task, probs, decisions in columns:
            scores = {label: float(p) for label, p in zip(task.labels, probs[i], strict=True)}
            if task.is_multi_label:
                on = [j for j in np.argsort(-probs[i], kind="stable") if decisions[i, j]]
                labels = [task.labels[j] for j in on]
                item[task.name] = {
                    "labels": labels,
                    "primary": labels[0] if labels else None,
                    "scores": scores,
                }
            else:
                item[task.name] = {"label": task.labels[int(decisions[i])], "scores": scores}
        items.append(item)
    return items


# ------------------------------------------------------------------------- classifier


# On CPU a batch also ends before an item that would make its padding more than this share of
# its real tokens: a call of items of mixed lengths then runs as several batches instead of
# one padded to its longest item (docs/performance.md, "Inference on CPU").
MAX_PADDING = 0.25


def length_batches(
    lengths: Sequence[int], batch_size: int, max_padding: float | None = None
) -> list[list[int]]:
    """The indices of ``lengths`` from shortest to longest, cut into batches of at most
    ``batch_size``; with ``max_padding``, also before any item whose length, times the batch's
    size with it, would exceed ``1 + max_padding`` times the batch's real tokens."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    tokens = 0
    for index in order:
        length = int(lengths[index])
        padded = length * (len(current) + 1)
        if current and (
            len(current) >= batch_size
            or (max_padding is not None and padded > (1.0 + max_padding) * (tokens + length))
        ):
            batches.append(current)
            current, tokens = [], 0
        current.append(index)
        tokens += length
    if current:
        batches.append(current)
    return batches


class Classifier:
    """A loaded model: ``predict(texts)`` gives decisions, ``logits(texts)`` the raw outputs."""

    def __init__(
        self,
        path: Path,
        config: dict[str, Any],
        tasks: TaskSet,
        tokenizer,
        backend: TorchBackend | OnnxBackend,
        quantized: bool,
        meta: dict[str, Any] | None,
        manifest: dict[str, Any] | None,
    ):
        self.path = path
        self.config = config
        self.tasks = tasks
        self.tokenizer = tokenizer
        self.engine = backend
        self.backend = backend.name
        self.quantized = quantized
        self.meta = meta
        self.manifest = manifest
        self.max_seq_length = int(config.get("max_seq_length", 256))
        self.text_pair = bool(config.get("text_pair", True))

    def __repr__(self) -> str:
        kind = f"{self.backend}{' int8' if self.quantized else ''}"
        return f"Classifier({str(self.path)!r}, backend={kind!r}, tasks={self.tasks.names})"

    # -- encoding
    def encode(
        self, texts: Sequence[str], findings: Sequence[str | None] | None
    ) -> tuple[dict[str, list[list[int]]], int]:
        """Token ids for valid inputs, and how many were cut to ``max_seq_length``."""
        pairs = findings if self.text_pair else None
        enc = tokenize(self.tokenizer, texts, pairs, self.max_seq_length)
        full = [i for i, ids in enumerate(enc["input_ids"]) if len(ids) >= self.max_seq_length]
        truncated = 0
        if full:
            # One token more than allowed tells a text that fits exactly from one that was cut.
            probe = tokenize(
                self.tokenizer,
                [texts[i] for i in full],
                [pairs[i] for i in full] if pairs is not None else None,
                self.max_seq_length + 1,
            )
            truncated = sum(len(ids) > self.max_seq_length for ids in probe["input_ids"])
        return {k: list(v) for k, v in enc.items()}, truncated

    def pad(self, enc: Mapping[str, list[list[int]]], rows: Sequence[int]) -> dict[str, np.ndarray]:
        """The ``rows`` of ``enc`` as int64 arrays padded to their longest member."""
        width = max(len(enc["input_ids"][i]) for i in rows)
        pad_values = {
            "input_ids": self.tokenizer.pad_token_id or 0,
            "attention_mask": 0,
            "token_type_ids": getattr(self.tokenizer, "pad_token_type_id", 0) or 0,
        }
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        batch = {}
        for name in INPUT_NAMES:
            if name not in enc:
                continue
            out = np.full((len(rows), width), pad_values[name], dtype=np.int64)
            for r, i in enumerate(rows):
                seq = enc[name][i]
                if left:
                    out[r, width - len(seq) :] = seq
                else:
                    out[r, : len(seq)] = seq
            batch[name] = out
        return batch

    def _run(self, texts: Any, findings: Any, batch_size: int) -> list[np.ndarray]:
        if int(batch_size) < 1:
            raise SettingsError(f"batch_size must be >= 1, got {batch_size}")
        texts, findings = check_inputs(texts, findings)
        if not texts:
            return [np.zeros((0, t.num_labels), dtype=np.float32) for t in self.tasks]
        enc, truncated = self.encode(texts, findings)
        if truncated:
            warnings.warn(
                TruncationWarning(
                    f"{truncated} of {len(texts)} inputs were longer than {self.max_seq_length} "
                    "tokens (max_seq_length) and were truncated",
                    truncated,
                    self.max_seq_length,
                ),
                stacklevel=3,
            )
        # Batches of similar length waste less compute on padding; order is restored below.
        batches = length_batches(
            [len(ids) for ids in enc["input_ids"]],
            int(batch_size),
            MAX_PADDING if self.engine.on_cpu else None,
        )
        outputs: list[list[np.ndarray]] = [[] for _ in self.tasks]
        for rows in batches:
            logits = self.engine.run(self.pad(enc, rows))
            for task_out, value in zip(outputs, logits, strict=True):
                task_out.append(value)
        order = [index for rows in batches for index in rows]
        inverse = np.argsort(np.asarray(order))
        return [np.concatenate(parts)[inverse] for parts in outputs]

    # -- public
    def logits(
        self,
        texts: Sequence[str],
        findings: Sequence[str | None] | None = None,
        batch_size: int = 32,
    ) -> list[np.ndarray]:
        """Raw logits, one ``(n, labels)`` float32 array per task in config order."""
        return self._run(texts, findings, batch_size)

    def predict(
        self,
        texts: Sequence[str],
        findings: Sequence[str | None] | None = None,
        batch_size: int = 32,
    ) -> list[dict[str, Any]]:
        """Decisions per text: see :func:`format_predictions` for the shape of each item.

        ``findings`` (optional) pairs each text with the finding that precedes it, ``None``
        where there is none. Invalid items raise ``ValueError`` naming their index; texts
        longer than ``max_seq_length`` tokens are truncated with one warning per call.
        """
        return format_predictions(self.tasks, self._run(texts, findings, batch_size))


# ----------------------------------------------------------------------------- loading


def _onnx_file(root: Path, meta: Mapping[str, Any] | None, quantized: bool) -> Path:
    key = "int8" if quantized else "fp32"
    default = ONNX_INT8_FILE if quantized else ONNX_FP32_FILE
    rel = default
    if meta is not None:
        files = (meta.get("onnx") or {}).get("files") or {}
        rel = files.get(key, default)
    return inside(root, rel, root / EXPORT_META_FILE if meta is not None else root)


def _onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def _require_listed(root: Path, manifest: Mapping[str, Any] | None, files: Iterable[Path]) -> None:
    if manifest is None:
        return
    listed = set(manifest["files"])
    for path in files:
        rel = path.relative_to(root).as_posix()
        if rel not in listed:
            raise ModelIntegrityError(
                f"not listed in {MANIFEST_FILE}; refusing to read an unverified file", path
            )


def _load_tokenizer(root: Path, backend: str = "torch"):
    """The ONNX backend reads ``tokenizer.json`` with the ``tokenizers`` library alone (no
    transformers); the torch backend loads the transformers tokenizer. Both encode alike."""
    if backend == "onnx":
        return RuntimeTokenizer.from_folder(root)
    from transformers import AutoTokenizer

    from scrclf.modeling.model import register_auto_classes

    register_auto_classes()  # AutoConfig and AutoModel must know the scrclf model type
    _quiet_transformers()
    try:
        return AutoTokenizer.from_pretrained(str(root), local_files_only=True)
    except (OSError, ValueError, TypeError) as err:
        raise ModelLoadError(f"cannot load the tokenizer: {err}", root) from None


def read_tasks(root: Path) -> tuple[dict[str, Any], TaskSet]:
    """The model config and its tasks, with errors naming ``config.json``."""
    path = root / CONFIG_FILE
    if not path.is_file():
        raise ModelLoadError(f"no {CONFIG_FILE}: not a saved or exported scrclf model", root)
    config = _read_json(path)
    if not isinstance(config, dict) or config.get("model_type") != "scrclf":
        found = config.get("model_type") if isinstance(config, dict) else None
        raise ModelLoadError(f"model_type is {found!r}, expected 'scrclf'", path)
    try:
        tasks = TaskSet.from_config(config.get("tasks") or [])
    except TaskConfigError as err:
        raise ModelLoadError(f"tasks: {err}", path) from None
    return config, tasks


def inspect_model_dir(
    path: str | Path,
) -> tuple[Path, dict[str, Any] | None, dict[str, Any] | None]:
    """All safety and integrity checks that precede loading; returns (root, manifest, meta)."""
    root = Path(path)
    if not root.exists():
        raise ModelLoadError("model folder not found", root)
    if not root.is_dir():
        raise ModelLoadError("expected a model folder, got a file", root)
    if not (root / CONFIG_FILE).is_file() and (root / "model" / CONFIG_FILE).is_file():
        raise ModelLoadError(
            f"a training run folder, not a model folder; load {root / 'model'} "
            "or export the run with scripts/export.py",
            root,
        )
    refuse_pickles(root)
    refuse_outside_links(root)
    manifest = verify_manifest(root)
    meta = None
    if (root / EXPORT_META_FILE).is_file():
        if manifest is None:
            raise ModelIntegrityError(
                f"an export folder must have {MANIFEST_FILE}; without it "
                "the files cannot be verified",
                root / MANIFEST_FILE,
            )
        meta = _read_json(root / EXPORT_META_FILE)
        if not isinstance(meta, dict):
            raise ModelLoadError("expected a JSON object", root / EXPORT_META_FILE)
    check_references(root)
    return root, manifest, meta


def load(
    path: str | Path,
    backend: str = "auto",
    quantized: bool = False,
    device: str = "cpu",
    threads: int | None = None,
) -> Classifier:
    """Load a model folder for prediction.

    Args:
        path: an export folder or a training run's ``model/`` folder.
        backend: ``"onnx"``, ``"torch"``, or ``"auto"`` (ONNX when the folder has the ONNX
            graph and onnxruntime is installed, torch otherwise).
        quantized: use the int8 ONNX graph (ONNX backend only).
        device: ``"cpu"`` or ``"cuda[:N]"``.
        threads: onnxruntime intra-op threads (torch uses ``torch.set_num_threads``).
    """
    if backend not in BACKENDS:
        raise SettingsError(f"backend must be one of {BACKENDS}, got {backend!r}")
    check_device(device)
    root, manifest, meta = inspect_model_dir(path)
    config, tasks = read_tasks(root)
    if backend == "auto":
        onnx_file = _onnx_file(root, meta, quantized)
        backend = "onnx" if onnx_file.is_file() and _onnxruntime_available() else "torch"
    if backend == "torch" and quantized:
        raise ModelLoadError(
            "quantized=True needs the ONNX backend (the int8 graph); use backend='onnx' or 'auto'",
            root,
        )

    tokenizer_files = [root / n for n in TOKENIZER_FILES if (root / n).is_file()]
    if not tokenizer_files:
        raise ModelLoadError("no tokenizer files (tokenizer.json, tokenizer_config.json)", root)
    if backend == "onnx":
        weights = [_onnx_file(root, meta, quantized)]
        if not weights[0].is_file():
            raise ModelLoadError(
                "ONNX graph not found; export the model with "
                "scripts/export.py or use backend='torch'",
                weights[0],
            )
    else:
        if (root / WEIGHTS_FILE).is_file():
            weights = [root / WEIGHTS_FILE]
        elif (root / WEIGHTS_INDEX_FILE).is_file():
            index = _read_json(root / WEIGHTS_INDEX_FILE)
            shards = sorted(set((index.get("weight_map") or {}).values()))
            weights = [root / WEIGHTS_INDEX_FILE] + [
                inside(root, s, root / WEIGHTS_INDEX_FILE) for s in shards
            ]
        else:
            raise ModelLoadError(
                f"no weights: {WEIGHTS_FILE} not found (only safetensors weights are loaded)", root
            )
    _require_listed(root, manifest, [root / CONFIG_FILE, *tokenizer_files, *weights])
    for path_ in [*tokenizer_files, *weights]:
        inside(root, path_.relative_to(root).as_posix(), root)
    for path_ in weights:
        if path_.suffix == ".safetensors":
            if not path_.is_file():
                raise ModelLoadError(f"missing, but named in {WEIGHTS_INDEX_FILE}", path_)
            check_safetensors(path_)

    tokenizer = _load_tokenizer(root, backend)
    if backend == "onnx":
        engine: TorchBackend | OnnxBackend = OnnxBackend(weights[0], tasks, device, threads)
    else:
        engine = TorchBackend(root, tasks, device)
    return Classifier(root, config, tasks, tokenizer, engine, quantized, meta, manifest)


def check_device(device: str) -> None:
    """Refuse a device that this machine does not have, naming the setting."""
    if not isinstance(device, str) or not (device == "cpu" or device.startswith("cuda")):
        raise SettingsError(f"device must be cpu or cuda[:N], got {device!r}")
    if device.startswith("cuda"):
        if importlib.util.find_spec("torch") is None:
            return  # a runtime install: onnxruntime checks its CUDA provider when it loads
        import torch

        if not torch.cuda.is_available():
            raise SettingsError(f"device={device} but no CUDA GPU is visible; use device=cpu")
        index = device.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise SettingsError(
                f"device={device}: this machine has {torch.cuda.device_count()} CUDA GPU(s)"
            )


_QUIET = {"transformers": False}


def quiet_libraries() -> None:
    """Keep library logging and weight-loading bars off stderr: a command owns its output.

    transformers is not imported for this: the ONNX backend never loads it. When it is (or
    once it is, by the torch backend) its logging is set quiet."""
    _QUIET["transformers"] = True
    if "transformers" in sys.modules:
        _quiet_transformers()


def _quiet_transformers() -> None:
    if not _QUIET["transformers"]:
        return
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
