"""Metrics for every task type, computed locally with scikit-learn (no hub, no network)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    hamming_loss,
    precision_recall_fscore_support,
)

from scrclf.calibration import decide, probabilities
from scrclf.tasks import HEADLINE, TaskSet, TaskSpec


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, n_bins: int = 10
) -> tuple[float, list[dict[str, float]]]:
    """ECE over equal-width confidence bins, and the bins for a reliability diagram."""
    confidence = np.asarray(confidence, dtype=np.float64).ravel()
    correct = np.asarray(correct, dtype=np.float64).ravel()
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ece, bins = 0.0, []
    n = len(confidence)
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        mask = (
            (confidence > lo) & (confidence <= hi)
            if lo > 0
            else (confidence >= lo) & (confidence <= hi)
        )
        count = int(mask.sum())
        if count:
            conf, acc = float(confidence[mask].mean()), float(correct[mask].mean())
            ece += count / n * abs(acc - conf)
        else:
            conf, acc = float("nan"), float("nan")
        bins.append(
            {
                "lower": float(lo),
                "upper": float(hi),
                "count": count,
                "confidence": conf,
                "accuracy": acc,
            }
        )
    return float(ece), bins


def _per_label(
    task: TaskSpec, y_true: np.ndarray, y_pred: np.ndarray
) -> dict[str, dict[str, float]]:
    labels = list(range(task.num_labels)) if not task.is_multi_label else None
    p, r, f, s = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=0
    )
    return {
        name: {
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "support": int(s[i]),
        }
        for i, name in enumerate(task.labels)
    }


def _pr_auc(y_onehot: np.ndarray, probs: np.ndarray) -> float:
    scores = [
        average_precision_score(y_onehot[:, j], probs[:, j])
        for j in range(y_onehot.shape[1])
        if y_onehot[:, j].any()
    ]
    return float(np.mean(scores)) if scores else float("nan")


def task_metrics(
    task: TaskSpec,
    logits: np.ndarray,
    targets: np.ndarray | Sequence[Any],
    detailed: bool = False,
) -> dict[str, Any]:
    """Scores of one task at the model's stored temperature and thresholds."""
    logits = np.asarray(logits, dtype=np.float64)
    targets = np.asarray(targets)
    probs = probabilities(task, logits)
    pred = decide(task, probs)
    out: dict[str, Any] = {"n": int(len(targets))}
    if task.is_multi_label:
        y = targets.astype(np.int64)
        for avg in ("micro", "macro", "weighted", "samples"):
            out[f"{avg}_f1"] = float(f1_score(y, pred, average=avg, zero_division=0))
        out["subset_accuracy"] = float(accuracy_score(y, pred))
        out["hamming_loss"] = float(hamming_loss(y, pred))
        out["pr_auc"] = _pr_auc(y, probs)
        # calibration of every (item, label) decision
        ece, bins = expected_calibration_error(probs.ravel(), y.ravel())
        onehot = y
    else:
        y = targets.astype(np.int64)
        labels = list(range(task.num_labels))
        out["accuracy"] = float(accuracy_score(y, pred))
        for avg in ("micro", "macro", "weighted"):
            out[f"{avg}_f1"] = float(f1_score(y, pred, labels=labels, average=avg, zero_division=0))
        onehot = np.eye(task.num_labels, dtype=np.int64)[y]
        out["pr_auc"] = _pr_auc(onehot, probs)
        conf = probs.max(axis=1)
        ece, bins = expected_calibration_error(conf, (pred == y))
    out["ece"] = ece
    if detailed:
        out["per_label"] = _per_label(task, y, pred)
        out["reliability"] = bins
        if task.is_multi_label:
            out["confusion"] = {
                name: confusion_matrix(y[:, j], pred[:, j], labels=[0, 1]).tolist()
                for j, name in enumerate(task.labels)
            }
        else:
            out["confusion"] = confusion_matrix(
                y, pred, labels=list(range(task.num_labels))
            ).tolist()
    return out


def compute_metrics(
    tasks: TaskSet,
    logits: Sequence[np.ndarray],
    targets: Sequence[np.ndarray | Sequence[Any]],
    detailed: bool = False,
    names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Metrics per task plus the headline ``mean_macro_f1`` (mean over tasks of macro-F1)."""
    names = list(names) if names is not None else tasks.names
    result: dict[str, Any] = {}
    for name, task_logits, task_targets in zip(names, logits, targets, strict=True):
        result[name] = task_metrics(tasks[name], task_logits, task_targets, detailed=detailed)
    result[HEADLINE] = float(np.mean([result[n]["macro_f1"] for n in names]))
    return result


def flatten(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Scalar metrics as ``task/metric`` keys (for loggers and the Trainer)."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[f"{prefix}{key}"] = float(value)
    return flat
