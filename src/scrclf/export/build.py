"""Exporting a trained run as a self-contained, verifiable model folder.

``export_model(run_dir, "models/NAME")`` writes::

    models/NAME/
      config.json, model.safetensors     the model (labels, thresholds, temperatures inside)
      tokenizer.json, tokenizer_config.json
      onnx/model.onnx                    fp32 graph, one file (see docs/onnx_contract.md)
      onnx/model.int8.onnx               int8 graph for onnxruntime (scrclf.export.quantization)
      README.md                          model card (Hugging Face front matter)
      metrics.json                       the run's metrics, as written by training
      training_config.yaml               the run's resolved config
      data_fingerprint.json              SHA-256 and item counts of the run's data files
      scrclf.json                        export metadata: versions, ONNX contract, parity
      manifest.json                      SHA-256 and size of every other file
      dist/*.whl                         with wheel=True: the folder as a pip package

The folder is built in a temporary sibling and swapped in at the end
(:func:`scrclf.atomic.directory`): a failed export leaves nothing at the destination and an
earlier export there intact. Before the swap the ONNX graph is checked against the torch
model on held-out data; logits that differ by more than ``max_logit_diff`` fail the export.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import numpy as np

from scrclf import atomic
from scrclf.calibration import decide, probabilities
from scrclf.data.records import DataError, read_records
from scrclf.errors import ExportError  # noqa: F401 (re-exported)
from scrclf.export.onnx import export_onnx
from scrclf.export.wheel import build_wheel, check_version, module_name
from scrclf.inference.classifier import (
    CONFIG_FILE,
    EXPORT_META_FILE,
    MANIFEST_FILE,
    ONNX_FP32_FILE,
    ONNX_INT8_FILE,
    OUTPUT_PREFIX,
    WEIGHTS_FILE,
    Classifier,
    TorchBackend,
    build_manifest,
    check_inputs,
    file_sha256,
    load,
)
from scrclf.modeling.keys import DEFAULT_LABEL_ATTENTION_KEYS, saved_label_attention_keys
from scrclf.reporting.model_card import render_model_card
from scrclf.settings import ExportSettings, QuantizationSettings
from scrclf.tasks import TaskSet
from scrclf.version import __version__

logger = logging.getLogger(__name__)

PARITY_BATCH_SIZE = 32
MODEL_CARD_FILE = "README.md"
METRICS_FILE = "metrics.json"
TRAINING_CONFIG_FILE = "training_config.yaml"
FINGERPRINT_FILE = "data_fingerprint.json"
DIST_DIR = "dist"
DECISION_RULE = (
    "p = sigmoid(logit / temperature) for multi-label tasks, softmax(logit / temperature) for "
    "single-label tasks. Multi-label: a label is on when p >= its threshold, and the label "
    "with the highest p is always on (the primary, listed first); at most max_labels are "
    "kept, the primary and then the largest p - threshold. Single-label: the label with the "
    "highest p."
)


KEYS_TEXT = {
    "per_task": "each head projecting the tokens on its own",
    "shared": "over one projection of the tokens that they share",
    "tokens": "over the token states themselves",
}


def heads_text(
    tasks: Sequence[str],
    label_attention: Sequence[str] | None,
    keys: str = DEFAULT_LABEL_ATTENTION_KEYS,
    text_only: Sequence[str] | None = None,
) -> str:
    """The model card's words for the task heads."""
    attending = [t for t in tasks if t in set(label_attention or ())]
    if not attending:
        text = "masked mean pooling, one linear head per task"
    else:
        linear = [t for t in tasks if t not in attending]
        text = (
            f"one head per task: {_names(attending)} attend over the tokens once per label (a "
            f"query and a weight vector per label; {KEYS_TEXT[keys]})"
        )
        if linear:
            text += f", {_names(linear)} linear over the masked mean of the tokens"
    reading = [t for t in tasks if t in set(text_only or ())]
    if reading:
        verb = "reads" if len(reading) == 1 else "read"
        text += (
            f"; the head{'s' if len(reading) > 1 else ''} of {_names(reading)} {verb} the "
            "recommendation text's tokens alone, not the finding's"
        )
    return text


def _names(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def wide_text(wide: Mapping[str, Any] | None) -> str:
    """The model card's words for the wide part (empty when the model has none)."""
    if not wide:
        return ""
    grams = "unigrams and bigrams" if wide.get("ngrams", 2) == 2 else "unigrams"
    text_only = wide.get("text_only") or []
    reads = (
        f"; for {_names(text_only)} it reads the recommendation text alone, not the finding"
        if text_only
        else ""
    )
    if wide.get("mode") == "logreg":
        mix = wide.get("mix") or {}
        weights = ", ".join(f"{task} {weight:g}" for task, weight in mix.items())
        return (
            f", plus a wide part: a logistic regression over IDF-weighted hashed token {grams} "
            f"({wide['buckets']} buckets), fitted on the training split and added to the heads' "
            f"logits with weights fitted on validation ({weights}){reads}"
        )
    return (
        f", plus a wide part: a linear model over hashed token {grams} ({wide['buckets']} "
        f"buckets) trained with the encoder and added to the heads' logits{reads}"
    )


# ------------------------------------------------------------------------------- run


def _run_files(run_dir: Path) -> dict[str, Path]:
    """The files of a training run that an export needs, or an error naming the missing one."""
    if not run_dir.is_dir():
        raise ExportError(
            f"run_dir={run_dir}: not a directory (expected a training run "
            "with model/, metrics.json and config.yaml)"
        )
    files = {
        "model": run_dir / "model",
        "metrics": run_dir / "metrics.json",
        "config": run_dir / "config.yaml",
    }
    for kind, path in files.items():
        exists = path.is_dir() if kind == "model" else path.is_file()
        if not exists:
            raise ExportError(f"{path}: missing; run_dir={run_dir} is not a finished training run")
    return files


def _read_run_config(path: Path) -> dict[str, Any]:
    from omegaconf import OmegaConf

    try:
        cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as err:  # omegaconf and yaml raise several types
        raise ExportError(f"{path}: cannot read the run config: {err}") from None
    if not isinstance(cfg, dict):
        raise ExportError(f"{path}: expected a mapping")
    return cast(dict[str, Any], cfg)


def _read_metrics(path: Path) -> dict[str, Any]:
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ExportError(f"{path}: cannot read metrics: {err}") from None
    if not isinstance(metrics, dict):
        raise ExportError(f"{path}: expected a JSON object")
    return metrics


def check_name(name: str) -> str:
    """The export name becomes a folder and a Python package: refuse anything else."""
    try:
        module_name(name)
    except ValueError as err:
        raise ExportError(str(err)) from None
    return name


# ------------------------------------------------------------------------------ data


def split_files(run_config: Mapping[str, Any]) -> dict[str, Path]:
    """The run's data files per split, as its config names them."""
    data = run_config.get("data") or {}
    root = Path(str(data.get("dir", ".")))
    return {str(split): root / str(name) for split, name in (data.get("splits") or {}).items()}


def data_fingerprint(run_config: Mapping[str, Any]) -> dict[str, Any]:
    """SHA-256, size and item counts of every data split file named in the run config."""
    data = run_config.get("data") or {}
    group = data.get("group_column")
    splits: dict[str, Any] = {}
    for split, path in split_files(run_config).items():
        entry: dict[str, Any] = {"file": path.name}
        if not path.is_file():
            entry.update(status="missing", note="file not readable at export time")
            splits[split] = entry
            continue
        entry.update(status="ok", sha256=file_sha256(path), size=path.stat().st_size)
        try:
            records = read_records(path)
        except DataError as err:
            entry.update(n_items=None, note=f"cannot count items: {err.problem}")
        else:
            entry["n_items"] = len(records)
            if group:
                entry["n_reviews"] = len({str(r.data.get(group)) for r in records})
        splits[split] = entry
    return {"data": data.get("name"), "hub_name": data.get("hub_name"), "splits": splits}


def parity_inputs(
    run_config: Mapping[str, Any], preferred: str
) -> tuple[str | None, list[str], list[str | None], list[str]]:
    """Texts and findings of the first readable split: ``preferred``, then validation."""
    data = run_config.get("data") or {}
    text_col = data.get("text_column", "text")
    pair_col = data.get("pair_column")
    files = split_files(run_config)
    notes = []
    for split in dict.fromkeys([preferred, "validation"]):
        path = files.get(split)
        if path is None:
            notes.append(f"{split}: not a split of the run config")
            continue
        try:
            records = read_records(path)
            raw_texts = [r.data.get(text_col) for r in records]
            raw_findings = [r.data.get(pair_col) for r in records] if pair_col else None
            texts, findings = check_inputs(raw_texts, raw_findings)
        except DataError as err:
            notes.append(f"{split} ({path.name}): {err.problem}")
            continue
        except ValueError as err:
            notes.append(f"{split} ({path.name}): {err}")
            continue
        if not texts:
            notes.append(f"{split} ({path.name}): no items")
            continue
        return split, texts, findings, notes
    return None, [], [], notes


def _agreement(
    tasks: TaskSet,
    reference: Sequence[np.ndarray],
    other: Sequence[np.ndarray],
    per_label: bool = False,
) -> dict[str, float]:
    """Per task, the share of items whose decisions are identical; with ``per_label``, the
    share of single label decisions (item x label for multi-label tasks; the same as per
    item for single-label ones)."""
    out = {}
    for task, ref, oth in zip(tasks, reference, other, strict=True):
        a = decide(task, probabilities(task, ref))
        b = decide(task, probabilities(task, oth))
        if task.is_multi_label and not per_label:
            same = (a == b).all(axis=1)
        else:
            same = a == b
        out[task.name] = float(np.mean(same))
    return out


def _max_diff(
    tasks: TaskSet, reference: Sequence[np.ndarray], other: Sequence[np.ndarray]
) -> dict[str, float]:
    return {
        t.name: float(np.max(np.abs(r.astype(np.float64) - o.astype(np.float64))))
        for t, r, o in zip(tasks, reference, other, strict=True)
    }


def measure_parity(
    reference: Classifier,
    candidates: Mapping[str, Classifier],
    texts: Sequence[str],
    findings: Sequence[str | None] | None,
    batch_size: int = PARITY_BATCH_SIZE,
) -> dict[str, Any]:
    """Max |logit difference| and decision agreement of each candidate against ``reference``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # truncation is the same for every backend
        ref = reference.logits(texts, findings, batch_size)
        results: dict[str, Any] = {"n_items": len(texts)}
        for name, clf in candidates.items():
            got = clf.logits(texts, findings, batch_size)
            per_task = _max_diff(reference.tasks, ref, got)
            results[name] = {
                "max_abs_logit_diff": max(per_task.values()),
                "max_abs_logit_diff_per_task": per_task,
                "label_agreement": _agreement(reference.tasks, ref, got),
                "decision_agreement": _agreement(reference.tasks, ref, got, per_label=True),
            }
    return results


def quantization_settings(
    options: QuantizationSettings | Mapping[str, Any] | None,
) -> QuantizationSettings:
    """``options`` as settings: given whole, or as a mapping of some settings put over the
    shipped defaults (``quantization`` in ``configs/export.yaml``)."""
    if isinstance(options, QuantizationSettings):
        return options
    return QuantizationSettings.with_options(options)


def quantize_onnx(
    model,
    dst: str | Path,
    run_config: Mapping[str, Any],
    clf: Classifier,
    options: QuantizationSettings | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The int8 graph of ``model`` (see ``scrclf.export.quantization``), calibrated on the run's
    ``calibration_split`` as ``clf`` tokenizes it; without readable data it is quantized
    without smoothing. ``options`` (a mapping of some settings) override the defaults of
    ``quantization`` in the shipped ``configs/export.yaml``."""
    from scrclf.export.quantization import build_int8_graph, calibration_batches

    settings = quantization_settings(options)
    split, texts, findings, notes = parity_inputs(run_config, settings.calibration_split)
    if split is None:
        logger.warning("int8 graph not smoothed: no calibration data (%s)", "; ".join(notes))
        batches = []
    else:
        batches = calibration_batches(clf, texts, findings, settings.calibration_items)
    info = build_int8_graph(
        model,
        dst,
        batches,
        smooth_alpha=settings.smooth_alpha,
        fuse_operators=settings.fuse,
        fuse_attention=settings.fuse_attention,
    )
    if info.get("smoothing"):
        info["smoothing"]["calibration_split"] = split
    return info


# ---------------------------------------------------------------------------- writing


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch
    import transformers

    return {
        "scrclf": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def _tokenizer_meta(clf: Classifier) -> dict[str, Any]:
    tok = clf.tokenizer
    return {
        "file": "tokenizer.json",
        "max_length": clf.max_seq_length,
        "truncation": "longest_first",
        "text_pair": clf.text_pair,
        "pad_token": tok.pad_token,
        "pad_token_id": tok.pad_token_id,
        "pad_token_type_id": getattr(tok, "pad_token_type_id", 0) or 0,
        "padding_side": getattr(tok, "padding_side", "right"),
    }


def export_meta(
    name: str,
    clf: Classifier,
    onnx_info: Mapping[str, Any],
    quantization: Mapping[str, Any],
    parity: Mapping[str, Any],
    run_dir: Path,
    metrics: Mapping[str, Any],
) -> dict[str, Any]:
    """The content of ``scrclf.json``."""
    tasks = [
        {
            "name": t.name,
            "type": t.type,
            "labels": t.labels,
            "thresholds": t.decision_thresholds() if t.is_multi_label else None,
            "offsets": None if t.is_multi_label else t.decision_offsets(),
            "temperature": t.temperature,
            "max_labels": t.max_labels,
            "output": OUTPUT_PREFIX + t.name,
        }
        for t in clf.tasks
    ]
    training = metrics.get("training") or {}
    return {
        "format": "scrclf-export",
        # 2: single-label tasks carry per-class decision offsets.
        "format_version": 2,
        "name": name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
        "source": {
            "run": run_dir.name,
            "best_checkpoint": training.get("best_checkpoint"),
            "epochs_run": training.get("epochs_run"),
            "n_items": training.get("n_items"),
        },
        "label_order": {t.name: t.labels for t in clf.tasks},
        "tasks": tasks,
        "tokenizer": _tokenizer_meta(clf),
        "onnx": {
            "opset": onnx_info["opset"],
            "exporter": "torch.onnx.export (dynamo=True, external_data=False)",
            "files": {"fp32": ONNX_FP32_FILE, "int8": ONNX_INT8_FILE},
            "quantization": dict(quantization),
            "contract": {
                "inputs": onnx_info["inputs"],
                "outputs": onnx_info["outputs"],
                "outputs_are": "raw logits, before temperature",
                "decision_rule": DECISION_RULE,
                "documentation": "docs/onnx_contract.md in the scrclf repository",
            },
        },
        "parity": dict(parity),
        "provenance": {
            "data": "authored fictional corpus of serious case review "
            "recommendations; see docs/data_card.md",
            "fingerprint": FINGERPRINT_FILE,
            "metrics": METRICS_FILE,
            "training_config": TRAINING_CONFIG_FILE,
            "model_card": MODEL_CARD_FILE,
        },
    }


def _metric(value: Any) -> float | None:
    return round(float(value), 4) if isinstance(value, (int, float)) else None


def _model_index(
    name: str,
    metrics: Mapping[str, Any],
    fingerprint: Mapping[str, Any],
    tasks: Sequence[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """``model-index`` results: macro- and micro-F1 per task on each evaluated split."""
    dataset = str(fingerprint.get("data") or "scr_recs")
    results = []
    for split in ("test", "validation"):
        per_split = metrics.get(split)
        if not isinstance(per_split, Mapping):
            continue
        for task in tasks:
            task_metrics = per_split.get(task["name"]) or {}
            values = [
                {"type": "f1", "name": f"{label} ({split})", "value": v}
                for label, v in (
                    ("macro-F1", _metric(task_metrics.get("macro_f1"))),
                    ("micro-F1", _metric(task_metrics.get("micro_f1"))),
                )
                if v is not None
            ]
            if not values:
                continue
            kind = "multi-label" if task["type"] == "multi_label" else "single-label"
            results.append(
                {
                    "task": {"type": "text-classification", "name": f"{task['name']} ({kind})"},
                    "dataset": {
                        "name": f"{dataset} (authored fictional corpus)",
                        "type": dataset,
                        "split": split,
                    },
                    "metrics": values,
                }
            )
    return [{"name": name, "results": results}]


def _fmt(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "n/a"


def model_card(
    name: str,
    meta: Mapping[str, Any],
    metrics: Mapping[str, Any],
    fingerprint: Mapping[str, Any],
    license: str = "apache-2.0",
    wide: Mapping[str, Any] | None = None,
    label_attention: Sequence[str] | None = None,
    label_attention_keys: str = DEFAULT_LABEL_ATTENTION_KEYS,
    text_only_heads: Sequence[str] | None = None,
) -> str:
    """``README.md`` of an export: a Hugging Face model card with front matter."""
    import yaml

    tasks = meta["tasks"]
    front = {
        "language": ["en"],
        "license": license,
        # Loaded by scrclf (ONNX runtime) or by transformers after `import scrclf`; the
        # Hub's transformers widget would call a pipeline this three-head model does not fit.
        "library_name": "scrclf",
        "pipeline_tag": "text-classification",
        "tags": [
            "scrclf",
            "text-classification",
            "multi-label-classification",
            "child-protection",
            "serious-case-reviews",
            "onnx",
            "safetensors",
        ],
        "model-index": _model_index(name, metrics, fingerprint, tasks),
    }
    data_lines = []
    for split, entry in (fingerprint.get("splits") or {}).items():
        count = entry.get("n_items")
        digest = (entry.get("sha256") or "")[:12]
        state = (
            f"{count} items, sha256 {digest}…"
            if entry.get("status") == "ok"
            else entry.get("status", "unknown")
        )
        data_lines.append(f"- `{split}`: `{entry.get('file')}` ({state})")

    label_rows = []
    for task in tasks:
        if task["type"] == "multi_label":
            labels = ", ".join(
                f"`{lab}` ({thr:.3f})"
                for lab, thr in zip(task["labels"], task["thresholds"], strict=True)
            )
            kind = (
                f"multi-label, at most {task['max_labels']}"
                if task["max_labels"]
                else "multi-label"
            )
        else:
            offsets = task.get("offsets") or [0.0] * len(task["labels"])
            labels = ", ".join(
                f"`{lab}` ({off:+.2f})" if any(offsets) else f"`{lab}`"
                for lab, off in zip(task["labels"], offsets, strict=True)
            )
            kind = "single-label"
        label_rows.append(f"| `{task['name']}` | {kind} | {labels} | {task['temperature']:.3f} |")

    evaluation_rows = []
    for split in ("validation", "test"):
        per_split = metrics.get(split) or {}
        for task in tasks:
            m = per_split.get(task["name"]) or {}
            if m:
                evaluation_rows.append(
                    f"| {split} | `{task['name']}` | {_fmt(m.get('macro_f1'))} | "
                    f"{_fmt(m.get('micro_f1'))} |"
                )
        if per_split.get("mean_macro_f1") is not None:
            evaluation_rows.append(
                f"| {split} | mean macro-F1 | {_fmt(per_split['mean_macro_f1'])} | |"
            )
    parity = meta["parity"]
    if parity.get("skipped"):
        parity_text = f"Parity of the ONNX graphs was not measured: {parity.get('note')}."
    else:
        agreement = ", ".join(
            f"{t} {v:.3f}" for t, v in parity["onnx_int8"]["label_agreement"].items()
        )
        parity_text = (
            f"On the {parity['split']} split ({parity['n_items']} items) the fp32 "
            "ONNX logits differ from torch by at most "
            f"{parity['onnx_fp32']['max_abs_logit_diff']:.2e}; the int8 graph "
            f"agrees with torch's decisions on this share of items: {agreement}"
        )
        per_label = parity["onnx_int8"].get("decision_agreement") or {}
        multi = [t["name"] for t in tasks if t.get("type") == "multi_label"]
        if per_label and multi:
            parity_text += "; and on this share of single label decisions: " + ", ".join(
                f"{t} {per_label[t]:.3f}" for t in multi if t in per_label
            )
        parity_text += "."
    refit = metrics.get("refit")
    if refit:
        tuning = (
            f"The model was trained on the train and validation splits together "
            f"({refit['train_items']} items, {refit['epochs']} epochs, the last weights kept). "
            "Its thresholds, temperatures and wide-part weights are those of the same recipe "
            "trained on the train split alone, tuned on the validation split while it was "
            "held out; the test split was not used for tuning."
        )
    elif metrics.get("calibration"):
        tuning = (
            "Thresholds and temperatures were tuned on the validation split; the test "
            "split was not used for tuning."
        )
    else:
        tuning = "The run was not calibrated: temperatures are 1 and thresholds 0.5."
    return render_model_card(
        {
            "front_matter": yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip(),
            "name": name,
            "scrclf_version": str(meta["versions"]["scrclf"]),
            "data_lines": "\n".join(data_lines),
            "label_rows": "\n".join(label_rows),
            "decision_rule": DECISION_RULE,
            "heads": heads_text(
                [t["name"] for t in tasks], label_attention, label_attention_keys, text_only_heads
            ),
            "wide": wide_text(wide),
            "evaluation_rows": "\n".join(evaluation_rows),
            "tuning": tuning,
            "parity": parity_text,
            "max_length": str(meta["tokenizer"]["max_length"]),
            "package": module_name(name),
        }
    )


def export_model(
    run_dir: str | Path,
    dest: str | Path,
    *,
    wheel: bool = False,
    parity_split: str | None = None,
    opset: int | None = None,
    max_logit_diff: float | None = None,
    license: str | None = None,
    wheel_version: str | None = None,
    quantization_options: QuantizationSettings | Mapping[str, Any] | None = None,
) -> Path:
    """Export the training run at ``run_dir`` to the folder ``dest`` (its name is the model's).

    A setting left out (None) takes its default from the shipped ``configs/export.yaml``.

    Args:
        run_dir: a finished training run (``model/``, ``metrics.json``, ``config.yaml``).
        dest: the export folder, e.g. ``models/NAME``; replaced atomically if it exists.
        wheel: also build ``dest/dist/scrclf_model_<name>-<wheel_version>-py3-none-any.whl``.
        parity_split: the split whose texts compare torch and ONNX outputs (validation is
            used when its file is unreadable; with neither, parity is skipped with a note).
        opset: ONNX opset of the exported graph.
        max_logit_diff: fail when fp32 ONNX and torch logits differ by more than this.
        license: the license named in the model card.
        wheel_version: the wheel's version (PEP 440).
        quantization_options: for the int8 graph, :class:`scrclf.settings.QuantizationSettings`
            or a mapping of some of ``smooth_alpha`` (None: no smoothing),
            ``calibration_split``, ``calibration_items``, ``fuse``, put over the defaults.
    """
    defaults = ExportSettings.defaults()
    parity_split = defaults.parity_split if parity_split is None else parity_split
    opset = defaults.onnx.opset if opset is None else opset
    max_logit_diff = defaults.onnx.max_logit_diff if max_logit_diff is None else max_logit_diff
    license = defaults.license if license is None else license
    wheel_version = defaults.wheel_version if wheel_version is None else wheel_version
    int8 = quantization_settings(quantization_options)  # checked before any work
    run_dir, dest = Path(run_dir), Path(dest)
    name = check_name(dest.name)
    if wheel:
        wheel_version = check_version(wheel_version)
    atomic.check_replaceable(dest)  # before any work: never replace someone's folder
    files = _run_files(run_dir)
    run_config = _read_run_config(files["config"])
    metrics = _read_metrics(files["metrics"])
    source = load(files["model"], backend="torch")

    with atomic.directory(dest) as tmp:
        model = cast(TorchBackend, source.engine).model  # loaded with backend="torch"
        model.save_pretrained(tmp)
        # The tokenizer's own limit is the model's: AutoTokenizer(truncation=True) cuts there.
        source.tokenizer.model_max_length = source.max_seq_length
        source.tokenizer.save_pretrained(tmp)
        onnx_info = export_onnx(model, tmp / ONNX_FP32_FILE, opset)
        quantization = quantize_onnx(model, tmp / ONNX_INT8_FILE, run_config, source, int8)

        split, texts, findings, notes = parity_inputs(run_config, parity_split)
        if split is None:
            parity: dict[str, Any] = {
                "skipped": True,
                "note": "no readable data split; " + "; ".join(notes),
            }
            logger.warning("parity check skipped: %s", parity["note"])
        else:
            candidates = {
                "onnx_fp32": load(tmp, backend="onnx"),
                "onnx_int8": load(tmp, backend="onnx", quantized=True),
            }
            parity = {
                "skipped": False,
                "split": split,
                "reference": "torch fp32",
                **measure_parity(source, candidates, texts, findings),
            }
            if notes:
                parity["note"] = "; ".join(notes)
            diff = parity["onnx_fp32"]["max_abs_logit_diff"]
            if not diff <= max_logit_diff:
                raise ExportError(
                    f"ONNX fp32 logits differ from torch by {diff:.3g} on the {split} split, "
                    f"more than max_logit_diff={max_logit_diff:g}; the graph is not faithful"
                )

        shutil.copyfile(files["metrics"], tmp / METRICS_FILE)
        shutil.copyfile(files["config"], tmp / TRAINING_CONFIG_FILE)
        fingerprint = data_fingerprint(run_config)
        atomic.write_json(tmp / FINGERPRINT_FILE, fingerprint)
        meta = export_meta(name, source, onnx_info, quantization, parity, run_dir, metrics)
        atomic.write_json(tmp / EXPORT_META_FILE, meta)
        card = model_card(
            name,
            meta,
            metrics,
            fingerprint,
            license=license,
            wide=source.config.get("wide"),
            label_attention=source.config.get("label_attention"),
            label_attention_keys=saved_label_attention_keys(source.config),
            text_only_heads=source.config.get("text_only_heads"),
        )
        atomic.write_text(tmp / MODEL_CARD_FILE, card)
        atomic.write_json(tmp / MANIFEST_FILE, build_manifest(tmp))
        if wheel:
            build_wheel(tmp, tmp / DIST_DIR, name, wheel_version)
            atomic.write_json(tmp / MANIFEST_FILE, build_manifest(tmp))
        # The finished folder must load and verify before it replaces anything.
        for required in (CONFIG_FILE, WEIGHTS_FILE):
            if not (tmp / required).is_file():
                raise ExportError(f"{dest / required}: not written by save_pretrained")
        for quantized in (False, True):
            load(tmp, backend="onnx", quantized=quantized)
    logger.info("exported %s to %s", run_dir, dest)
    return dest
