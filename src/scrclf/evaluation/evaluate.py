"""Evaluating a trained or exported model on annotated recommendations.

``evaluate(model_path, data, out_dir)`` runs a model over an annotated file (or a split of
the data the model was trained on), scores every task whose label column is present, and
writes one report folder:

    metrics.json                 everything below, as data
    report.md                    readable tables
    confusion_<task>.png         confusion matrices
    reliability_<task>.png       reliability diagrams (stored vs default decisions)
    per_label_f1_<task>.png      F1 per label with bootstrap intervals
    profile/                     with ``profile=True``: the domain profile (scrclf.evaluation.domain_profile)

Scores are computed at three decision settings:

* ``calibrated``: the temperatures and per-label thresholds stored in the model (tuned on
  validation when the model was trained), applied by :mod:`scrclf.calibration` exactly as
  in prediction. These are the model's real decisions.
* ``default``: temperature 1 and threshold 0.5, for comparison.
* ``recalibrated`` (only with ``recalibrate=True``): temperatures and thresholds re-fitted
  on a validation file, reported beside the stored ones with what changed. The evaluation
  data are never used for fitting: a validation file that is, or overlaps, the evaluated
  data is refused.

Every scalar metric carries a 95% interval from a cluster bootstrap over reviews
(:mod:`scrclf.evaluation.bootstrap`). The folder is built aside and moved into place at the end
(:func:`scrclf.atomic.directory`): it appears complete or not at all.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from scrclf import atomic
from scrclf.atomic import shown_path
from scrclf.calibration import decide, probabilities
from scrclf.data.columns import ColumnMap, apply_column_map, check_columns, normalise_labels
from scrclf.data.records import DataError, Record, encode_targets, read_records, validate_records
from scrclf.errors import SettingsError
from scrclf.evaluation.bootstrap import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    MULTI_LABEL_METRICS,
    SINGLE_LABEL_METRICS,
    ClusterBootstrap,
    cluster_ids,
    few_reviews_warning,
    interval,
    intervals,
    replicates,
)
from scrclf.evaluation.items import (
    ERRORS_MD,
    ITEMS_CSV,
    ITEMS_JSONL,
    item_predictions,
    write_items,
)
from scrclf.inference.classifier import quiet_libraries
from scrclf.settings import EvaluateSettings, data_columns
from scrclf.tasks import HEADLINE, TaskSet
from scrclf.version import __version__

CALIBRATED = "calibrated"
DEFAULT = "default"
RECALIBRATED = "recalibrated"
SETTING_DESCRIPTIONS = {
    CALIBRATED: "temperatures and thresholds stored in the model (tuned on validation)",
    DEFAULT: "temperature 1, threshold 0.5 for every label",
    RECALIBRATED: "temperatures and thresholds re-fitted on the given validation file",
}
PREDICT_CHUNK = 256


# ----------------------------------------------------------------------------- models


@dataclass
class ModelSource:
    """Where a model lives and what is known about its training data.

    ``kind``: ``run`` (a training run directory), ``run-model`` (the ``model/`` folder of a
    run), ``export`` (``models/NAME/``) or ``model`` (a bare saved model folder).
    """

    path: Path
    model_dir: Path
    kind: str
    train_config: dict[str, Any] | None
    config_file: Path | None

    @property
    def name(self) -> str:
        return (self.path.parent if self.kind == "run-model" else self.path).resolve().name

    @property
    def data_config(self) -> dict[str, Any] | None:
        cfg = self.train_config or {}
        return cfg.get("data") if isinstance(cfg.get("data"), dict) else None


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise DataError(f"cannot read the training config: {err}", path) from None
    if not isinstance(data, dict):
        raise DataError("the training config is not a mapping", path)
    return data


def resolve_model(path: str | Path) -> ModelSource:
    """Recognise a run directory, a run's ``model/`` folder, an export or a bare model."""
    from scrclf.inference.classifier import ModelLoadError

    path = Path(path)
    if not path.exists():
        raise ModelLoadError("model path not found", path)
    if (path / "model" / "config.json").is_file():
        cfg_file = path / "config.yaml"
        cfg = _read_yaml(cfg_file) if cfg_file.is_file() else None
        return ModelSource(path, path / "model", "run", cfg, cfg_file if cfg else None)
    if (path / "config.json").is_file():
        if (path / "training_config.yaml").is_file():
            cfg_file = path / "training_config.yaml"
            return ModelSource(path, path, "export", _read_yaml(cfg_file), cfg_file)
        parent_cfg = path.parent / "config.yaml"
        if path.name == "model" and parent_cfg.is_file():
            return ModelSource(path, path, "run-model", _read_yaml(parent_cfg), parent_cfg)
        return ModelSource(path, path, "model", None, None)
    raise ModelLoadError(
        "not a training run (model/ and config.yaml) or a model folder (config.json)", path
    )


def load_classifier(source: ModelSource, backend: str = "auto"):
    """The model as a :class:`scrclf.inference.classifier.Classifier`."""
    from scrclf.inference.classifier import load

    return load(source.model_dir, backend=backend)


def model_logits(
    classifier,
    texts: Sequence[str],
    findings: Sequence[str | None] | None,
    batch_size: int = 32,
    desc: str = "predicting",
) -> tuple[dict[str, np.ndarray], int]:
    """Raw logits per task name, and how many inputs were truncated to ``max_seq_length``.

    The one place where evaluation runs a model: it goes through ``Classifier.logits`` so
    the torch and ONNX paths tokenize exactly as in prediction.
    """
    from tqdm.auto import tqdm

    from scrclf.inference.classifier import TruncationWarning

    names = classifier.tasks.names
    parts: list[list[np.ndarray]] = [[] for _ in names]
    truncated = 0
    findings = list(findings) if findings is not None else [None] * len(texts)
    with (
        tqdm(total=len(texts), desc=desc, unit="item", disable=None, leave=False) as bar,
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always", TruncationWarning)
        for start in range(0, len(texts), PREDICT_CHUNK):
            stop = start + PREDICT_CHUNK
            out = classifier.logits(
                list(texts[start:stop]), findings[start:stop], batch_size=batch_size
            )
            for store, value in zip(parts, out, strict=True):
                store.append(np.asarray(value, dtype=np.float64))
            bar.update(len(out[0]))
    for w in caught:
        if isinstance(w.message, TruncationWarning):
            truncated += w.message.count
        else:
            warnings.warn(w.message, stacklevel=2)
    logits = {
        name: (np.concatenate(p) if p else np.zeros((0, classifier.tasks[name].num_labels)))
        for name, p in zip(names, parts, strict=True)
    }
    return logits, truncated


# ------------------------------------------------------------------------------- data


@dataclass
class EvalData:
    """Annotated recommendations ready to score: records, label columns present, notes."""

    name: str
    records: list[Record]
    present: list[str]
    settings: dict[str, Any]
    file: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def rows(self) -> list[dict[str, Any]]:
        return [r.data for r in self.records]

    @property
    def texts(self) -> list[str]:
        return [r.data[self.settings["text_column"]] for r in self.records]

    @property
    def findings(self) -> list[str | None] | None:
        pair = self.settings.get("pair_column")
        return [r.data.get(pair) or None for r in self.records] if pair else None

    @property
    def groups(self) -> list[Any]:
        column = self.settings.get("group_column")
        return [r.data.get(column) if column else None for r in self.records]

    def clusters(self) -> tuple[np.ndarray, int]:
        return cluster_ids(self.groups)

    def targets(self, tasks: TaskSet) -> dict[str, np.ndarray]:
        present = [n for n in self.present if n in tasks.names]
        raw = encode_targets(self.rows, tasks, present)
        return {
            name: (
                np.asarray(values, dtype=np.int64).reshape(len(self.records), -1)
                if tasks[name].is_multi_label
                else np.asarray(values, dtype=np.int64)
            )
            for name, values in raw.items()
        }

    def with_records(self, name: str, records: list[Record]) -> EvalData:
        """The same data settings and notes over other records (a variant or a slice)."""
        return EvalData(
            name, records, list(self.present), dict(self.settings), self.file, list(self.notes)
        )

    def describe(self) -> dict[str, Any]:
        ids, missing = self.clusters()
        n_clusters = int(ids.max()) + 1 if len(ids) else 0
        return {
            "name": self.name,
            "file": shown_path(self.file),
            "sha256": file_sha256(self.file) if self.file else None,
            "n_items": len(self.records),
            "n_reviews": n_clusters - missing,
            "items_without_review": missing,
            "tasks": list(self.present),
            "notes": list(self.notes),
        }


def file_sha256(path: str | Path) -> str:
    from scrclf.inference.classifier import file_sha256 as _sha

    return _sha(path)


def data_settings(data_config: Mapping[str, Any] | None) -> dict[str, Any]:
    """Column names and limits from a training config's ``data`` section; a key it lacks
    takes its value from the shipped corpus config (``configs/data/scr_recs.yaml``)."""
    out = data_columns()
    for key in out:
        if not data_config or key not in data_config:
            continue
        # pair_column / group_column may be set to null on purpose (no finding, no review).
        if data_config[key] is not None or key in ("pair_column", "group_column"):
            out[key] = data_config[key]
    out["max_chars"] = int(out["max_chars"])
    return out


def load_eval_data(
    data: str | Path | Sequence[Record | Mapping[str, Any]],
    tasks: TaskSet,
    settings: Mapping[str, Any] | None = None,
    name: str | None = None,
    require_labels: bool = False,
    columns: ColumnMap | None = None,
) -> EvalData:
    """Read and validate a file (or take records) for scoring.

    ``columns`` renames the file's columns into ours and translates its label codes
    (:mod:`scrclf.data.columns`); label spellings that differ only in case, spaces, hyphens
    or underscores are read as the codebook's labels, with a note. A task whose label
    column is absent from every row is skipped with a note; a row with a bad value raises
    :class:`DataError` naming file, line and field. Items without a review id are allowed
    (each is then its own bootstrap cluster, with a note).
    """
    settings = data_settings(settings)
    columns = columns or ColumnMap()
    file = None
    if isinstance(data, (str, Path)):
        file = Path(data)
        records = read_records(file)
        name = name or file.stem
    else:
        records = [
            r if isinstance(r, Record) else Record(dict(r), "<records>", i)
            for i, r in enumerate(data, start=1)
        ]
        name = name or "records"
    if not records:
        raise DataError("no records to evaluate", file)
    records = apply_column_map(records, columns, settings, tasks, file)
    check_columns(records, settings, file)
    label_notes = normalise_labels(records, tasks, columns.label_map)
    kwargs = {
        k: settings[k]
        for k in ("id_column", "text_column", "pair_column", "group_column", "max_chars")
    }
    present = validate_records(
        records, tasks, require_labels=require_labels, require_group=False, **kwargs
    )
    notes = [
        f"task '{t.name}' skipped: no '{t.column}' column" for t in tasks if t.name not in present
    ] + label_notes
    result = EvalData(name, records, present, settings, file, notes)
    _, missing = result.clusters()
    group = settings["group_column"]
    if missing and group:
        result.notes.append(
            f"{missing} items have no {group}: each is resampled on its own in the bootstrap"
        )
    elif missing:
        result.notes.append(
            "no review column configured (group_column): the bootstrap "
            "resamples single items, so intervals ignore review clustering"
        )
    return result


def labelled_logits(
    classifier, files: Mapping[str, str | Path], batch_size: int = 32
) -> dict[str, tuple[EvalData, dict[str, np.ndarray]]]:
    """Each labelled file of ``files`` (name to path) read for the classifier's tasks, with
    the classifier's logits on it per task name (:func:`model_logits`)."""
    out = {}
    for name, path in files.items():
        data = load_eval_data(path, classifier.tasks, require_labels=True)
        out[name] = (data, model_logits(classifier, data.texts, data.findings, batch_size, name)[0])
    return out


def resolve_dir(path: str | Path) -> Path:
    """A data directory: as given, or relative to ``$PROJECT_ROOT`` when only found there."""
    path = Path(str(path))
    if path.is_absolute() or path.exists():
        return path
    root = os.environ.get("PROJECT_ROOT")
    if root and (Path(root) / path).exists():
        return Path(root) / path
    return path


def split_file(source: ModelSource, split: str, data_dir: str | Path | None = None) -> Path:
    """The file of ``split`` named by the model's training config (``data.dir``/``splits``)."""
    cfg = source.data_config
    if cfg is None:
        raise DataError(
            f"{source.path} carries no training config, so split '{split}' is "
            "unknown; give file=PATH instead",
            source.path,
        )
    splits = dict(cfg.get("splits") or {})
    if split not in splits:
        raise DataError(
            f"unknown split '{split}'; the training config names {sorted(splits)}",
            source.config_file,
        )
    root = resolve_dir(data_dir if data_dir is not None else cfg.get("dir", "."))
    path = root / str(splits[split])
    if not path.is_file():
        raise DataError(
            f"split '{split}' not found (data.dir={root}); pass data_dir=DIR or file=PATH", path
        )
    return path


# ---------------------------------------------------------------------------- scoring


def default_decisions(tasks: TaskSet) -> TaskSet:
    """The same tasks at temperature 1 and thresholds 0.5."""
    from scrclf.evaluation.baselines import plain_decisions

    return plain_decisions(tasks)


def _metric_keys(task) -> tuple[str, ...]:
    return MULTI_LABEL_METRICS if task.is_multi_label else SINGLE_LABEL_METRICS


def score(
    tasks: TaskSet,
    logits: Mapping[str, np.ndarray],
    data: EvalData,
    boot: ClusterBootstrap | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
    detailed: bool = True,
    index: np.ndarray | None = None,
) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """Metrics per task (``scrclf.evaluation.metrics``) with bootstrap intervals, and the replicates.

    ``logits`` may cover more items than ``data`` when ``index`` picks the rows (a slice).
    Returns the metrics dict (tasks, ``mean_macro_f1`` and its ``mean_macro_f1_interval``)
    and the per-resample values, for paired comparisons.
    """
    from scrclf.evaluation.metrics import compute_metrics

    targets = data.targets(tasks)
    names = [n for n in data.present if n in logits and n in tasks.names]
    if not names:
        raise DataError(
            f"no task to score on '{data.name}': the data have label columns "
            f"for {data.present}, the system predicts {sorted(logits)}"
        )
    chosen = {
        n: (np.asarray(logits[n])[index] if index is not None else np.asarray(logits[n]))
        for n in names
    }
    metrics = compute_metrics(
        tasks,
        [chosen[n] for n in names],
        [targets[n] for n in names],
        detailed=detailed,
        names=names,
    )
    reps: dict[str, dict[str, np.ndarray]] = {}
    if boot is not None:
        for name in names:
            task = tasks[name]
            pred = decide(task, probabilities(task, chosen[name]))
            reps[name] = replicates(boot, task.is_multi_label, targets[name], pred, task.num_labels)
            metrics[name]["intervals"] = intervals(reps[name], confidence, _metric_keys(task))
            if detailed:
                lows, highs = interval(reps[name]["per_label_f1"], confidence)
                for j, label in enumerate(task.labels):
                    metrics[name]["per_label"][label]["f1_interval"] = [lows[j], highs[j]]
        headline = np.mean([reps[n]["macro_f1"] for n in names], axis=0)
        reps[HEADLINE] = {"macro_f1": headline}
        metrics[f"{HEADLINE}_interval"] = interval(headline, confidence)
    return metrics, reps


def finite(obj: Any) -> Any:
    """JSON has no NaN or infinity: write null instead (recursively)."""
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.ndarray):
        return finite(obj.tolist())
    if isinstance(obj, Mapping):
        return {str(k): finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def _decision_summary(tasks: TaskSet) -> list[dict[str, Any]]:
    return [
        {
            "name": t.name,
            "type": t.type,
            "labels": list(t.labels),
            "temperature": t.temperature,
            "thresholds": dict(zip(t.labels, t.decision_thresholds(), strict=True))
            if t.is_multi_label
            else None,
            "offsets": dict(zip(t.labels, t.offsets, strict=True))
            if t.offsets is not None
            else None,
        }
        for t in tasks
    ]


# ----------------------------------------------------------------------- recalibration


def _check_not_evaluated_data(validation: EvalData, evaluated: EvalData) -> None:
    """Refuse to fit decisions on the data being scored (or on data sharing its reviews)."""
    if validation.file is not None and evaluated.file is not None:
        if validation.file.resolve() == evaluated.file.resolve() or file_sha256(
            validation.file
        ) == file_sha256(evaluated.file):
            raise DataError(
                "the recalibration file is the evaluated file; thresholds and "
                "temperatures are never tuned on the data they are scored on",
                validation.file,
            )
    group = validation.settings.get("group_column")
    id_col = validation.settings["id_column"]
    shared_reviews = {str(g) for g in validation.groups if g is not None} & {
        str(g) for g in evaluated.groups if g is not None
    }
    shared_ids = {str(r.data[id_col]) for r in validation.records} & {
        str(r.data[id_col]) for r in evaluated.records
    }
    if shared_reviews or shared_ids:
        what = (
            f"{len(shared_reviews)} reviews ({group})"
            if shared_reviews
            else f"{len(shared_ids)} items ({id_col})"
        )
        example = sorted(shared_reviews or shared_ids)[:3]
        raise DataError(
            f"the recalibration file shares {what} with the evaluated data, e.g. "
            f"{example}; fit on a held-out validation split only",
            validation.file,
        )


def recalibrate_on(
    tasks: TaskSet, classifier, validation: EvalData, batch_size: int = 32, min_positives: int = 5
) -> tuple[TaskSet, dict[str, Any]]:
    """Re-fit temperatures, thresholds and class offsets on ``validation``; returns the new
    tasks and a log.

    Tasks without labels in the validation data keep their stored settings.
    """
    from scrclf.calibration import calibrate

    logits, _ = model_logits(
        classifier, validation.texts, validation.findings, batch_size, desc="recalibrating"
    )
    targets = validation.targets(tasks)
    names = [n for n in validation.present if n in tasks.names]
    if not names:
        raise DataError("the recalibration file has no label column of any task", validation.file)
    subset = TaskSet.from_config([tasks[n].to_dict() for n in names])
    fitted = calibrate(
        subset, [logits[n] for n in names], [targets[n] for n in names], min_positives=min_positives
    )
    merged = TaskSet.from_config(
        [(subset[t.name] if t.name in names else t).to_dict() for t in tasks]
    )
    return merged, fitted


def _changes(old: TaskSet, new: TaskSet, fitted: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for task in old:
        if task.name not in fitted:
            out[task.name] = {"refit": False}
            continue
        entry: dict[str, Any] = {
            "refit": True,
            "temperature": {"stored": task.temperature, "refit": new[task.name].temperature},
        }
        if task.is_multi_label:
            how = fitted[task.name].get("threshold_source", {})
            entry["thresholds"] = {
                label: {"stored": s, "refit": r, "how": how.get(label)}
                for label, s, r in zip(
                    task.labels,
                    task.decision_thresholds(),
                    new[task.name].decision_thresholds(),
                    strict=True,
                )
            }
        else:
            entry["offsets"] = {
                label: {"stored": s, "refit": r}
                for label, s, r in zip(
                    task.labels,
                    task.decision_offsets(),
                    new[task.name].decision_offsets(),
                    strict=True,
                )
            }
        out[task.name] = entry
    return out


# ------------------------------------------------------------------------- evaluation


def _timestamp() -> str:
    return _dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


def evaluate(
    model_path: str | Path,
    data: str | Path | Sequence[Record | Mapping[str, Any]] | None = None,
    out_dir: str | Path | None = None,
    *,
    split: str = "test",
    data_dir: str | Path | None = None,
    recalibrate: bool = False,
    validation_file: str | Path | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    confidence: float = DEFAULT_CONFIDENCE,
    profile: bool = False,
    plots: bool = True,
    backend: str = "auto",
    batch_size: int = 32,
    columns: ColumnMap | None = None,
) -> dict[str, Any]:
    """Evaluate a model and (with ``out_dir``) write the report folder; returns metrics.json.

    Args:
        model_path: a training run directory, its ``model/`` folder, or an export folder.
        data: an annotated file (JSONL, CSV, JSON or Parquet) or records; by default the
            ``split`` file named by the model's training config.
        out_dir: the report folder to create (replaced atomically); None writes nothing.
        split: which split to evaluate when ``data`` is not given.
        data_dir: where the split files are, when not where the training config says.
        recalibrate: also re-fit temperatures and thresholds on ``validation_file`` (default:
            the training config's validation split) and report what changes.
        resamples, seed, confidence: the cluster bootstrap.
        profile: also write the domain profile (annotated beside predicted) to ``profile/``.
        plots: write PNG charts.
        backend: ``auto``, ``torch`` or ``onnx`` (see :func:`scrclf.load`).
        columns: how the columns and labels of ``data`` and ``validation_file`` map onto
            the corpus schema (:class:`scrclf.data.columns.ColumnMap`); never applied to
            the model's own splits.
    """
    from scrclf.inference.classifier import read_tasks

    source = resolve_model(model_path)
    settings = data_settings(source.data_config)
    data_columns_map = columns
    if data is None:
        data = split_file(source, split, data_dir)
        name = split
        data_columns_map = None
    else:
        name = None
    # The data are read and checked before any weights are loaded.
    _, model_tasks = read_tasks(source.model_dir)
    dataset = load_eval_data(data, model_tasks, settings, name=name, columns=data_columns_map)
    if not dataset.present:
        raise DataError(
            "no label column of any task ("
            + ", ".join(t.column for t in model_tasks)
            + "): nothing to evaluate; "
            "use `scrclf profile` to describe unlabelled recommendations",
            dataset.file,
        )
    validation = None
    if recalibrate:
        vsource = (
            validation_file
            if validation_file is not None
            else split_file(source, "validation", data_dir)
        )
        validation = load_eval_data(
            vsource,
            model_tasks,
            settings,
            name="validation",
            columns=columns if validation_file is not None else None,
        )
        _check_not_evaluated_data(validation, dataset)
    classifier = load_classifier(source, backend)
    tasks = classifier.tasks
    logits, truncated = model_logits(classifier, dataset.texts, dataset.findings, batch_size)
    if truncated:
        dataset.notes.append(
            f"{truncated} inputs were longer than "
            f"{classifier.max_seq_length} tokens and were truncated"
        )
    ids, _ = dataset.clusters()
    boot = ClusterBootstrap(ids, resamples=resamples, seed=seed)
    if boot.few_clusters:
        dataset.notes.append(few_reviews_warning(boot.n_clusters))

    settings_tasks = {CALIBRATED: tasks, DEFAULT: default_decisions(tasks)}
    recal_log = None
    if validation is not None:
        refit, fitted = recalibrate_on(tasks, classifier, validation, batch_size)
        settings_tasks[RECALIBRATED] = refit
        recal_log = {"validation": validation.describe(), "changes": _changes(tasks, refit, fitted)}

    decisions = score_decisions(settings_tasks, logits, dataset, boot, confidence)
    if recal_log is not None:
        stored, refit = decisions[CALIBRATED]["metrics"], decisions[RECALIBRATED]["metrics"]
        recal_log["delta"] = {
            name: {
                k: refit[name][k] - stored[name][k]
                for k in ("macro_f1", "micro_f1", "ece")
                if k in stored[name]
            }
            for name in dataset.present
        }
        recal_log["delta"][HEADLINE] = refit[HEADLINE] - stored[HEADLINE]

    model_info = {
        "path": str(source.path),
        "model_dir": str(source.model_dir),
        "kind": source.kind,
        "name": source.name,
        "backend": classifier.backend,
    }
    result = report_result(model_info, dataset, boot, confidence, decisions)
    if recal_log is not None:
        result["recalibration"] = recal_log
    result = finite(result)

    profile_result = None
    if profile:
        from scrclf.evaluation.domain_profile import profile as build_profile
        from scrclf.inference.classifier import format_predictions

        predictions = format_predictions(tasks, [logits[n] for n in tasks.names])
        profile_result = build_profile(
            dataset.records,
            predictions,
            tasks,
            group_column=settings["group_column"] or "review_id",
        )
        result["profile"] = "profile/profile.md"
    items = item_predictions(dataset.rows, tasks, logits, dataset.present, settings)
    result["items"] = {"jsonl": ITEMS_JSONL, "csv": ITEMS_CSV, "errors": ERRORS_MD}
    if out_dir is not None:
        write_report(
            result, out_dir, tasks, plots=plots, profile_result=profile_result, items=items
        )
    return result


def score_decisions(
    settings_tasks: Mapping[str, TaskSet],
    logits: Mapping[str, np.ndarray],
    dataset: EvalData,
    boot: ClusterBootstrap,
    confidence: float = DEFAULT_CONFIDENCE,
) -> dict[str, Any]:
    """Detailed metrics with intervals at each decision setting (``calibrated``, ...)."""
    decisions: dict[str, Any] = {}
    for setting, setting_tasks in settings_tasks.items():
        metrics, _ = score(setting_tasks, logits, dataset, boot, confidence)
        decisions[setting] = {
            "description": SETTING_DESCRIPTIONS[setting],
            "tasks": _decision_summary(setting_tasks),
            "metrics": metrics,
        }
    return decisions


def report_result(
    model: Mapping[str, Any],
    dataset: EvalData,
    boot: ClusterBootstrap,
    confidence: float,
    decisions: Mapping[str, Any],
) -> dict[str, Any]:
    """The ``metrics.json`` of a report folder (without recalibration and profile)."""
    return {
        "scrclf_version": __version__,
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "model": dict(model),
        "data": dataset.describe(),
        "headline": HEADLINE,
        "bootstrap": boot.describe(confidence),
        "decisions": dict(decisions),
    }


def write_report(
    result: Mapping[str, Any],
    out_dir: str | Path,
    tasks: TaskSet,
    plots: bool = True,
    profile_result: Mapping[str, Any] | None = None,
    items: Sequence[Mapping[str, Any]] | None = None,
) -> Path:
    """Write metrics.json, report.md, charts, the per-item predictions and the profile
    into ``out_dir`` atomically."""
    with atomic.directory(out_dir, stamp="evaluation report") as tmp:
        write_report_files(result, tmp, tasks, plots, profile_result, items)
    return Path(out_dir)


def write_report_files(
    result: Mapping[str, Any],
    tmp: Path,
    tasks: TaskSet,
    plots: bool = True,
    profile_result: Mapping[str, Any] | None = None,
    items: Sequence[Mapping[str, Any]] | None = None,
) -> None:
    """The files of :func:`write_report`, into an existing folder ``tmp``."""
    from scrclf.reporting import plots as charts
    from scrclf.reporting.markdown import render_evaluation

    tmp.mkdir(parents=True, exist_ok=True)
    atomic.write_json(tmp / "metrics.json", result)
    if items is not None:
        write_items(tmp, items, tasks, result["data"]["tasks"], result["data"]["name"])
    images: dict[str, dict[str, str]] = {}
    if plots:
        decisions = result["decisions"]
        stored = decisions[CALIBRATED]["metrics"]
        for name in result["data"]["tasks"]:
            task = tasks[name]
            files = {
                "confusion": f"confusion_{name}.png",
                "reliability": f"reliability_{name}.png",
                "per_label_f1": f"per_label_f1_{name}.png",
            }
            charts.confusion_chart(
                name, task.labels, stored[name]["confusion"], tmp / files["confusion"]
            )
            charts.reliability_chart(
                name,
                {s: decisions[s]["metrics"][name]["reliability"] for s in decisions},
                tmp / files["reliability"],
            )
            charts.per_label_f1_chart(
                name,
                task.labels,
                {s: decisions[s]["metrics"][name]["per_label"] for s in decisions},
                tmp / files["per_label_f1"],
            )
            images[name] = files
    atomic.write_text(tmp / "report.md", render_evaluation(result, images))
    if profile_result is not None:
        from scrclf.evaluation.domain_profile import write_profile

        write_profile(profile_result, tmp / "profile", chart=plots)


def default_report_dir(root: str | Path, source: ModelSource, data_name: str) -> Path:
    return Path(root) / f"{source.name}-{data_name}-{_timestamp()}"


def evaluate_from_config(cfg: Any) -> Path:
    """Run :func:`evaluate` from the ``configs/evaluate.yaml`` config; returns the report dir."""
    from omegaconf import OmegaConf

    c = (
        cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
        if OmegaConf.is_config(cfg)
        else dict(cfg)
    )
    e = EvaluateSettings.from_config(c)
    if e.file and e.split != EvaluateSettings.default_split():
        raise SettingsError("give either file=PATH or split=NAME, not both")
    source = resolve_model(e.model_path)
    data_name = Path(e.file).stem if e.file else e.split
    out = e.report_dir or default_report_dir(e.report_root, source, data_name)
    evaluate(
        source.path,
        e.file,
        out,
        split=e.split,
        data_dir=e.data_dir,
        recalibrate=e.recalibrate,
        validation_file=e.validation_file,
        resamples=e.bootstrap.resamples,
        seed=e.bootstrap.seed,
        confidence=e.bootstrap.confidence,
        profile=e.profile,
        plots=e.plots,
        backend=e.backend,
        batch_size=e.batch_size,
        columns=ColumnMap.from_config(e.columns, "columns"),
    )
    return Path(out)


def headline_line(result: Mapping[str, Any]) -> str:
    """One line: the headline at stored and default decisions, with intervals."""
    parts = []
    for setting in (CALIBRATED, DEFAULT, RECALIBRATED):
        m = result["decisions"].get(setting, {}).get("metrics")
        if m:
            lo, hi = m.get(f"{HEADLINE}_interval") or (None, None)
            ci = f" [{lo:.3f}, {hi:.3f}]" if lo is not None else ""
            parts.append(f"{setting} {m[HEADLINE]:.3f}{ci}")
    return f"{HEADLINE}: " + "; ".join(parts)


def profile_file(
    file: str | Path,
    model: str | Path | None = None,
    backend: str = "auto",
    batch_size: int = 32,
    columns: ColumnMap | None = None,
) -> dict[str, Any]:
    """The domain profile of a file of recommendations: annotated shares, and with ``model``
    the predicted shares beside them. ``columns`` maps the file's columns and labels."""
    from scrclf.evaluation.domain_profile import infer_tasks
    from scrclf.evaluation.domain_profile import profile as build_profile

    predictions, tasks, settings = None, None, data_settings(None)
    if model:
        from scrclf.inference.classifier import format_predictions, read_tasks

        quiet_libraries()
        source = resolve_model(model)
        settings = data_settings(source.data_config)
        data = load_eval_data(file, read_tasks(source.model_dir)[1], settings, columns=columns)
        classifier = load_classifier(source, backend)
        tasks = classifier.tasks
        logits, _ = model_logits(classifier, data.texts, data.findings, batch_size)
        predictions = format_predictions(tasks, [logits[n] for n in tasks.names])
        records = data.records
    else:
        records = read_records(file)
        if not records:
            raise DataError("no records to profile", file)
        from scrclf.settings import task_set

        columns = columns or ColumnMap()
        codebook = task_set()
        records = apply_column_map(records, columns, settings, codebook, file)
        normalise_labels(records, codebook, columns.label_map)
        tasks = infer_tasks([r.data for r in records])
        if tasks is not None:
            validate_records(
                records,
                tasks,
                require_labels=False,
                require_group=False,
                **{
                    k: settings[k]
                    for k in (
                        "id_column",
                        "text_column",
                        "pair_column",
                        "group_column",
                        "max_chars",
                    )
                },
            )
    return build_profile(
        records, predictions, tasks, group_column=settings["group_column"] or "review_id"
    )
