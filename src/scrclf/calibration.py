"""How scores become decisions: temperatures, per-label thresholds, and tuning them.

Everything here is plain NumPy so that the torch path, the ONNX path and evaluation apply
exactly the same rule: ``p = sigmoid(logit / T)`` (multi-label) or ``softmax(logit / T)``
(single-label); a multi-label class is on when ``p >= threshold``; if none is on, the
highest-scoring label is taken (every recommendation has at least one theme).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from scrclf.tasks import TaskSet, TaskSpec

DEFAULT_THRESHOLD = 0.5
THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.025), 4)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def probabilities(
    task: TaskSpec, logits: np.ndarray, temperature: float | None = None
) -> np.ndarray:
    t = task.temperature if temperature is None else temperature
    scaled = np.asarray(logits, dtype=np.float64) / float(t)
    return sigmoid(scaled) if task.is_multi_label else softmax(scaled)


def decide_multi_label(
    probs: np.ndarray,
    thresholds: Sequence[float],
    at_least_one: bool = True,
    max_labels: int | None = None,
) -> np.ndarray:
    """A 0/1 matrix: on where ``p >= threshold``; the top label when nothing is on."""
    probs = np.asarray(probs, dtype=np.float64)
    on = probs >= np.asarray(thresholds, dtype=np.float64)[None, :]
    if at_least_one and len(probs):
        empty = ~on.any(axis=1)
        on[empty, probs[empty].argmax(axis=1)] = True
    if max_labels is not None and len(probs):
        # keep at most max_labels, the highest margins over threshold first
        margin = np.where(on, probs - np.asarray(thresholds)[None, :], -np.inf)
        order = np.argsort(-margin, axis=1)
        keep = np.zeros_like(on)
        rows = np.arange(len(probs))[:, None]
        keep[rows, order[:, :max_labels]] = True
        on &= keep
    return on.astype(np.int64)


def decide(task: TaskSpec, probs: np.ndarray) -> np.ndarray:
    """Decisions for one task: a 0/1 matrix (multi-label) or class indices (single-label)."""
    if task.is_multi_label:
        return decide_multi_label(probs, task.decision_thresholds(), max_labels=task.max_labels)
    return np.asarray(probs).argmax(axis=-1)


def _f1(tp: float, fp: float, fn: float) -> float:
    denom = 2 * tp + fp + fn
    return 0.0 if denom == 0 else 2 * tp / denom


def tune_thresholds(
    probs: np.ndarray,
    targets: np.ndarray,
    min_positives: int = 5,
    grid: np.ndarray = THRESHOLD_GRID,
    default: float = DEFAULT_THRESHOLD,
) -> tuple[list[float], list[str]]:
    """Per-label thresholds that maximise each label's F1 on held-out data.

    Labels with fewer than ``min_positives`` positives keep ``default`` (too few to tune
    without overfitting). Ties go to the threshold closest to ``default``. Returns the
    thresholds and, per label, how it was chosen ("tuned" or "default: n positives").
    """
    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets).astype(bool)
    thresholds, how = [], []
    for j in range(probs.shape[1]):
        pos = int(targets[:, j].sum())
        if pos < min_positives:
            thresholds.append(float(default))
            how.append(f"default: {pos} positives")
            continue
        best, best_f1 = default, -1.0
        for t in sorted(grid, key=lambda g: (abs(g - default), g)):
            pred = probs[:, j] >= t
            tp = float((pred & targets[:, j]).sum())
            fp = float((pred & ~targets[:, j]).sum())
            fn = float((~pred & targets[:, j]).sum())
            f1 = _f1(tp, fp, fn)
            if f1 > best_f1 + 1e-12:
                best, best_f1 = float(t), f1
        thresholds.append(best)
        how.append("tuned")
    return thresholds, how


def _nll(task: TaskSpec, logits: np.ndarray, targets: np.ndarray, temperature: float) -> float:
    probs = probabilities(task, logits, temperature)
    eps = 1e-12
    if task.is_multi_label:
        t = np.asarray(targets, dtype=np.float64)
        return float(-(t * np.log(probs + eps) + (1 - t) * np.log(1 - probs + eps)).mean())
    idx = np.asarray(targets, dtype=np.int64)
    return float(-np.log(probs[np.arange(len(idx)), idx] + eps).mean())


def fit_temperature(
    task: TaskSpec,
    logits: np.ndarray,
    targets: np.ndarray,
    bounds: tuple[float, float] = (0.05, 20.0),
) -> float:
    """The temperature minimising negative log-likelihood (golden-section search on log T)."""
    lo, hi = np.log(bounds[0]), np.log(bounds[1])
    ratio = (np.sqrt(5) - 1) / 2

    def loss(log_t: float) -> float:
        return _nll(task, logits, targets, float(np.exp(log_t)))

    a, b = lo, hi
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = loss(c), loss(d)
    for _ in range(60):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = loss(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = loss(d)
    return float(np.exp((a + b) / 2))


def calibrate(
    tasks: TaskSet,
    logits: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    min_positives: int = 5,
) -> dict[str, Any]:
    """Fit a temperature per task and per-label thresholds (multi-label) on held-out data.

    Updates ``tasks`` in place and returns a record of what was fitted.
    """
    report: dict[str, Any] = {}
    for task, task_logits, task_targets in zip(tasks, logits, targets, strict=True):
        temperature = fit_temperature(task, task_logits, task_targets)
        task.temperature = temperature
        entry: dict[str, Any] = {"temperature": temperature}
        if task.is_multi_label:
            probs = probabilities(task, task_logits)
            thresholds, how = tune_thresholds(probs, task_targets, min_positives=min_positives)
            task.thresholds = thresholds
            entry["thresholds"] = dict(zip(task.labels, thresholds, strict=True))
            entry["threshold_source"] = dict(zip(task.labels, how, strict=True))
        report[task.name] = entry
    return report
