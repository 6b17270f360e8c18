"""A model as a third coder: its agreement with each human coder beside theirs.

The double-coding file holds two blind human codings of the same items (``coder_a``,
``coder_b``) and, optionally, the ``adjudicated`` labels. A model's decisions on those
items are compared with each of them by the same statistics as the two humans are
compared with each other (:mod:`scrclf.data.agreement`): Cohen's kappa for single-label
tasks; for multi-label tasks kappa on the primary (first) label, the mean over labels
of the per-label kappa and the micro-F1 of the label sets (the evaluation's headline
statistic for such a task, so the coders' agreement is a ceiling to read model scores
against). Every statistic carries a percentile interval from a cluster
bootstrap over reviews (the items of one review are drawn together), and all pairs share
the same resamples, so human-vs-human and model-vs-human are measured on the same draws.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scrclf.atomic import shown_path
from scrclf.data.records import Record, label_list, read_records
from scrclf.errors import DataError
from scrclf.evaluation.bootstrap import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    ClusterBootstrap,
    cluster_ids,
    few_reviews_warning,
    interval,
)
from scrclf.reporting.markdown import STAT_TITLES
from scrclf.tasks import TaskSet

HUMAN_A, HUMAN_B, ADJUDICATED = "coder_a", "coder_b", "adjudicated"
MODEL = "model"


def read_double_coding(path: str | Path) -> dict[str, dict[str, Mapping[str, Any]]]:
    """Coder -> item id -> labels (``coder_a``, ``coder_b`` and, where every line has
    them, the ``adjudicated`` labels)."""
    records = read_records(path)
    if not records:
        raise DataError("no double-coded items", path)
    out: dict[str, dict[str, Mapping[str, Any]]] = {HUMAN_A: {}, HUMAN_B: {}, ADJUDICATED: {}}
    for rec in records:
        for key in ("id", HUMAN_A, HUMAN_B):
            if key not in rec.data:
                raise DataError("missing field", rec.file, rec.line, key)
        item = str(rec.data["id"])
        for coder in (HUMAN_A, HUMAN_B, ADJUDICATED):
            value = rec.data.get(coder)
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise DataError("must be an object of labels", rec.file, rec.line, coder)
            out[coder][item] = value
    if len(out[ADJUDICATED]) != len(out[HUMAN_A]):
        del out[ADJUDICATED]
    return out


def _prediction_labels(entry: Any, multi: bool) -> Any:
    """A task's labels from a line of ``scrclf predict`` (``labels``/``label``), of
    ``evaluate``'s predictions.jsonl (``predicted``), or a plain value/CSV cell."""
    if isinstance(entry, Mapping):
        for key in ("labels", "label", "predicted"):
            if key in entry:
                entry = entry[key]
                break
    if multi and isinstance(entry, str):
        return label_list(entry)
    return entry


def read_predictions(
    path: str | Path, tasks: TaskSet
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """A model's predictions as a coder (item id -> {task column: labels}) and the review
    of each item where the file names it. Reads the JSONL or CSV output of
    ``scrclf predict`` and the predictions.jsonl/.csv of an evaluation report."""
    records: list[Record] = read_records(path)
    coder: dict[str, dict[str, Any]] = {}
    reviews: dict[str, Any] = {}
    for rec in records:
        row = rec.data
        if row.get("id") in (None, ""):
            raise DataError(
                "missing id (predict the items with their ids)", rec.file, rec.line, "id"
            )
        labels = {}
        for task in tasks:
            key = task.name if task.name in row else f"{task.name}_predicted"
            if key not in row:
                raise DataError(f"no prediction of task '{task.name}'", rec.file, rec.line, key)
            value = _prediction_labels(row[key], task.is_multi_label)
            allowed = set(task.labels)
            given = value if task.is_multi_label else [value]
            if not isinstance(given, list) or not given or not set(map(str, given)) <= allowed:
                raise DataError(
                    f"not labels of task '{task.name}': {value!r}", rec.file, rec.line, key
                )
            labels[task.column] = value
        item = str(row["id"])
        coder[item] = labels
        if row.get("review") not in (None, ""):
            reviews[item] = row["review"]
    return coder, reviews


def _codes(values: Sequence[Any], labels: Sequence[str]) -> np.ndarray:
    index = {label: i for i, label in enumerate(labels)}
    return np.asarray([index[str(v)] for v in values], dtype=np.int64)


def kappa_replicates(
    a: np.ndarray, b: np.ndarray, n_categories: int, weights: np.ndarray
) -> np.ndarray:
    """Cohen's kappa of codes ``a`` and ``b`` under each row of item ``weights``
    (``(resamples, n_items)``); 1 where both coders use one category only."""
    one_a = np.eye(n_categories)[a]
    one_b = np.eye(n_categories)[b]
    table = np.einsum("ri,ia,ib->rab", weights, one_a, one_b)
    n = table.sum(axis=(1, 2))
    observed = np.trace(table, axis1=1, axis2=2) / n
    expected = (table.sum(axis=2) * table.sum(axis=1)).sum(axis=1) / n**2
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = (observed - expected) / (1 - expected)
    return np.where(expected >= 1 - 1e-12, 1.0, kappa)


def _task_replicates(
    first: Sequence[Any], second: Sequence[Any], task, weights: np.ndarray
) -> dict[str, np.ndarray]:
    if not task.is_multi_label:
        k = task.num_labels
        return {
            "kappa": kappa_replicates(
                _codes(first, task.labels), _codes(second, task.labels), k, weights
            )
        }
    primary = kappa_replicates(
        _codes([x[0] for x in first], task.labels),
        _codes([x[0] for x in second], task.labels),
        task.num_labels,
        weights,
    )
    per_label = []
    for label in task.labels:
        ya = np.asarray([int(label in x) for x in first], dtype=np.int64)
        yb = np.asarray([int(label in x) for x in second], dtype=np.int64)
        per_label.append(kappa_replicates(ya, yb, 2, weights))
    return {
        "primary_kappa": primary,
        "mean_label_kappa": np.mean(per_label, axis=0),
        "micro_f1": micro_f1_replicates(first, second, weights),
    }


def micro_f1_replicates(
    first: Sequence[Sequence[Any]], second: Sequence[Sequence[Any]], weights: np.ndarray
) -> np.ndarray:
    """Micro-F1 of one coding's label sets against the other's under each row of item
    ``weights``: twice the labels both gave over all labels either gave, summed over items.
    Symmetric, and the statistic the evaluation reports for a multi-label task, so a model's
    score against the adjudicated labels reads against the coders' score with each other."""
    both = np.asarray([len(set(a) & set(b)) for a, b in zip(first, second, strict=True)])
    given = np.asarray([len(set(a)) + len(set(b)) for a, b in zip(first, second, strict=True)])
    total = weights @ given
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = 2 * (weights @ both) / total
    return np.where(total > 0, f1, 1.0)


def coder_agreement(
    coders: Mapping[str, Mapping[str, Mapping[str, Any]]],
    tasks: TaskSet,
    reviews: Mapping[str, Any] | None = None,
    pairs: Sequence[tuple[str, str]] | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    confidence: float = DEFAULT_CONFIDENCE,
) -> dict[str, Any]:
    """Kappa per task for each pair of coders over the items all of them coded, with
    review-bootstrap intervals (shared resamples). ``pairs`` defaults to the humans
    against each other, then the model against each human coding."""
    names = list(coders)
    if pairs is None:
        pairs = [(HUMAN_A, HUMAN_B)] if {HUMAN_A, HUMAN_B} <= set(names) else []
        pairs += [
            (MODEL, c) for c in (HUMAN_A, HUMAN_B, ADJUDICATED) if MODEL in names and c in names
        ]
    ids = sorted(set.intersection(*(set(coders[c]) for c in names)))
    if not ids:
        raise DataError(f"the codings ({', '.join(names)}) share no item ids")
    reviews = reviews or {}
    groups = [reviews.get(i) for i in ids]
    clusters, missing = cluster_ids(groups)
    boot = ClusterBootstrap(clusters, resamples=resamples, seed=seed)
    notes = []
    if missing:
        notes.append(f"{missing} items without a review are resampled on their own")
    if boot.few_clusters:
        notes.append(few_reviews_warning(boot.n_clusters))
    ones = np.ones((1, len(ids)))
    out: dict[str, Any] = {
        "n_items": len(ids),
        "n_reviews": boot.n_clusters - missing,
        "bootstrap": boot.describe(confidence),
        "notes": notes,
        "pairs": [],
    }
    for first, second in pairs:
        entry: dict[str, Any] = {"coders": [first, second], "tasks": {}}
        for task in tasks:
            a = [coders[first][i][task.column] for i in ids]
            b = [coders[second][i][task.column] for i in ids]
            point = _task_replicates(a, b, task, ones)
            reps: dict[str, list[np.ndarray]] = {k: [] for k in point}
            for weights in boot.chunks():
                for key, values in _task_replicates(a, b, task, weights).items():
                    reps[key].append(values)
            entry["tasks"][task.name] = {
                key: {
                    "value": float(point[key][0]),
                    "interval": interval(np.concatenate(reps[key]), confidence),
                }
                for key in point
            }
        out["pairs"].append(entry)
    return out


def model_agreement(
    double_coding: str | Path,
    predictions: Mapping[str, Mapping[str, Any]],
    tasks: TaskSet,
    reviews: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """:func:`coder_agreement` of the model's ``predictions`` and the double-coding file,
    on the double-coded items the model predicted."""
    coders: dict[str, Mapping[str, Mapping[str, Any]]] = dict(read_double_coding(double_coding))
    coders[MODEL] = predictions
    result = coder_agreement(coders, tasks, reviews, **kwargs)
    result["file"] = shown_path(double_coding)
    return result


def predictions_as_coder(
    ids: Iterable[Any], tasks: TaskSet, predictions: Sequence[Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Item id -> labels from :func:`scrclf.inference.classifier.format_predictions`."""
    out = {}
    for item, pred in zip(ids, predictions, strict=True):
        out[str(item)] = {
            t.column: (pred[t.name]["labels"] if t.is_multi_label else pred[t.name]["label"])
            for t in tasks
        }
    return out


PAIR_TITLES = {
    (HUMAN_A, HUMAN_B): "coder A vs coder B (human)",
    (MODEL, HUMAN_A): "model vs coder A",
    (MODEL, HUMAN_B): "model vs coder B",
    (MODEL, ADJUDICATED): "model vs adjudicated",
}


def _pair_title(coders: Sequence[str]) -> str:
    return PAIR_TITLES.get((coders[0], coders[1]), f"{coders[0]} vs {coders[1]}")


def agreement_rows(result: Mapping[str, Any], tasks: TaskSet) -> tuple[list[str], list[list[str]]]:
    """A table: one row per pair of coders, one column per task statistic."""
    conf = int(round(100 * result["bootstrap"]["confidence"]))
    head = ["coders"]
    keys = []
    first = result["pairs"][0]["tasks"] if result["pairs"] else {}
    for task in tasks:
        for stat in first.get(task.name, ()):
            head.append(f"{task.name} {STAT_TITLES.get(stat, stat)} [{conf}% CI]")
            keys.append((task.name, stat))
    rows = []
    for pair in result["pairs"]:
        row = [_pair_title(pair["coders"])]
        for task_name, stat in keys:
            v = pair["tasks"][task_name][stat]
            lo, hi = v["interval"]
            row.append(f"{v['value']:.3f} [{lo:.3f}, {hi:.3f}]")
        rows.append(row)
    return head, rows


def format_model_agreement(result: Mapping[str, Any], tasks: TaskSet) -> str:
    head, rows = agreement_rows(result, tasks)
    lines = [
        f"items coded by all: {result['n_items']} from {result['n_reviews']} reviews; "
        f"intervals: {result['bootstrap']['method']}, {result['bootstrap']['resamples']} "
        f"resamples",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += [f"note: {n}" for n in result.get("notes", [])]
    return "\n".join(lines)


def to_json(result: Mapping[str, Any]) -> str:
    return json.dumps(result, indent=2)
