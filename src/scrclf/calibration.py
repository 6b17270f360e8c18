"""How scores become decisions: temperatures, per-label thresholds, and tuning them.

Everything here is plain NumPy so that the torch path, the ONNX path and evaluation apply
exactly the same rule: ``p = sigmoid(logit / T)`` (multi-label) or ``softmax(logit / T)``
(single-label); a multi-label class is on when ``p >= threshold``, and the highest-scoring
label is always on: every recommendation has a primary theme (codebook), and the primary is
the top score. At most ``max_labels`` stay on, the highest margins over threshold first.

A single-label task takes its top class, or with ``class_offsets`` the top class of
``log p + offset``: one offset per class, fitted on held-out data for macro-F1.

Thresholds are tuned per label for F1 on held-out data, optionally only among thresholds that
keep each label's share of items within ``share_tolerance`` of its annotated share (a profile
that over-counts a theme would mislead its readers); with ``count_calibration`` a task's
thresholds are then moved together, by one shift in logit space, until the mean number of
labels predicted per item matches the annotated mean (F1-optimal thresholds over-predict).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from scrclf.tasks import TaskSet, TaskSpec

DEFAULT_THRESHOLD = 0.5
THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.025), 4)
# Finer, for thresholds that must also match a label's share of items.
SHARE_GRID = np.round(np.arange(0.02, 0.981, 0.005), 4)


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
    """A 0/1 matrix: on where ``p >= threshold``, and the top label always (the primary)."""
    probs = np.asarray(probs, dtype=np.float64)
    on = probs >= np.asarray(thresholds, dtype=np.float64)[None, :]
    if at_least_one and len(probs):
        on[np.arange(len(probs)), probs.argmax(axis=1)] = True
    if max_labels is not None and len(probs):
        # keep at most max_labels: the primary, then the highest margins over threshold
        margin = np.where(on, probs - np.asarray(thresholds)[None, :], -np.inf)
        margin[np.arange(len(probs)), probs.argmax(axis=1)] = np.inf
        order = np.argsort(-margin, axis=1)
        keep = np.zeros_like(on)
        rows = np.arange(len(probs))[:, None]
        keep[rows, order[:, :max_labels]] = True
        on &= keep
    return on.astype(np.int64)


def decide_single_label(probs: np.ndarray, offsets: Sequence[float] | None = None) -> np.ndarray:
    """Class indices: the top class of ``log p + offset`` (of ``p`` without offsets). With
    ``p = softmax(logit / T)`` that is the top class of ``logit / T + offset``."""
    probs = np.asarray(probs, dtype=np.float64)
    if offsets is None or not np.any(offsets):
        return probs.argmax(axis=-1)
    with np.errstate(divide="ignore"):
        return (np.log(probs) + np.asarray(offsets, dtype=np.float64)).argmax(axis=-1)


def decide(task: TaskSpec, probs: np.ndarray) -> np.ndarray:
    """Decisions for one task: a 0/1 matrix (multi-label) or class indices (single-label)."""
    if task.is_multi_label:
        return decide_multi_label(probs, task.decision_thresholds(), max_labels=task.max_labels)
    return decide_single_label(probs, task.offsets)


# Candidate offsets, in units of logit / temperature; coordinate ascent over the classes.
OFFSET_GRID = tuple(float(v) for v in np.round(np.arange(-2.0, 2.001, 0.1), 4))
OFFSET_ROUNDS = 3


def single_label_macro_f1(targets: np.ndarray, pred: np.ndarray, n: int) -> float:
    """Macro-F1 over ``n`` classes of class indices ``pred`` against ``targets``."""
    targets = np.asarray(targets, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    confusion = np.bincount(targets * n + pred, minlength=n * n).reshape(n, n)
    tp = np.diag(confusion).astype(np.float64)
    denom = confusion.sum(axis=0) + confusion.sum(axis=1)
    return float(np.mean(np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)))


def tune_offsets(
    probs: np.ndarray,
    targets: np.ndarray,
    grid: Sequence[float] = OFFSET_GRID,
    rounds: int = OFFSET_ROUNDS,
) -> tuple[list[float], float, float]:
    """One additive offset per class on ``log p`` that maximises macro-F1 on held-out data.

    The top class maximises accuracy, not macro-F1: rare classes lose items to frequent
    ones. Coordinate ascent: each class in turn takes the grid value with the best macro-F1
    given the others, for ``rounds`` passes; a value replaces the current one only when it
    scores strictly higher, so without a gain the offsets stay 0. Returns the offsets and
    the macro-F1 before and after.
    """
    log_p = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-300, None))
    y = np.asarray(targets, dtype=np.int64)
    n = log_p.shape[1]
    offsets = np.zeros(n)
    before = best = single_label_macro_f1(y, log_p.argmax(axis=1), n)
    for _ in range(rounds):
        changed = False
        for k in range(n):
            for value in grid:
                trial = offsets.copy()
                trial[k] = value
                f1 = single_label_macro_f1(y, (log_p + trial).argmax(axis=1), n)
                if f1 > best + 1e-12:
                    best, offsets, changed = f1, trial, True
        if not changed:
            break
    return [float(v) for v in offsets], before, best


def _f1(tp: float, fp: float, fn: float) -> float:
    denom = 2 * tp + fp + fn
    return 0.0 if denom == 0 else 2 * tp / denom


def tune_thresholds(
    probs: np.ndarray,
    targets: np.ndarray,
    min_positives: int = 5,
    grid: np.ndarray = THRESHOLD_GRID,
    default: float = DEFAULT_THRESHOLD,
    share_tolerance: float | None = None,
) -> tuple[list[float], list[str]]:
    """Per-label thresholds that maximise each label's F1 on held-out data.

    Labels with fewer than ``min_positives`` positives keep ``default`` (too few to tune
    without overfitting). Ties go to the threshold closest to ``default``. With
    ``share_tolerance``, only thresholds that give the label to a share of items within that
    distance of its annotated share compete (on the finer :data:`SHARE_GRID`); where none
    does, the threshold with the closest share is taken. Returns the thresholds and, per
    label, how each was chosen.
    """
    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets).astype(bool)
    if share_tolerance is not None:
        grid = SHARE_GRID
    thresholds, how = [], []
    for j in range(probs.shape[1]):
        pos = int(targets[:, j].sum())
        if pos < min_positives:
            thresholds.append(float(default))
            how.append(f"default: {pos} positives")
            continue
        gold_share = pos / len(targets)
        best, best_f1 = default, -1.0
        closest, closest_gap = default, np.inf
        for t in sorted(grid, key=lambda g: (abs(g - default), g)):
            pred = probs[:, j] >= t
            if share_tolerance is not None:
                gap = abs(float(pred.mean()) - gold_share)
                if gap < closest_gap - 1e-12:
                    closest, closest_gap = float(t), gap
                if gap > share_tolerance + 1e-12:
                    continue
            tp = float((pred & targets[:, j]).sum())
            fp = float((pred & ~targets[:, j]).sum())
            fn = float((~pred & targets[:, j]).sum())
            f1 = _f1(tp, fp, fn)
            if f1 > best_f1 + 1e-12:
                best, best_f1 = float(t), f1
        if best_f1 < 0:
            thresholds.append(closest)
            how.append(f"closest share: {closest_gap:.3f} from annotated")
        else:
            thresholds.append(best)
            how.append("tuned" if share_tolerance is None else "tuned within share tolerance")
    return thresholds, how


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


# Calibrated thresholds stay inside this range, so no label is switched fully on or off.
SHIFT_RANGE = (-4.0, 4.0)
THRESHOLD_RANGE = (0.01, 0.99)


def shift_thresholds(thresholds: Sequence[float], shift: float) -> list[float]:
    """Thresholds moved by ``shift`` in logit space (positive: fewer labels)."""
    moved = 1.0 / (1.0 + np.exp(-(_logit(np.asarray(thresholds)) + float(shift))))
    return [float(t) for t in np.clip(moved, *THRESHOLD_RANGE)]


def calibrate_label_count(
    probs: np.ndarray,
    targets: np.ndarray,
    thresholds: Sequence[float],
    max_labels: int | None = None,
    steps: int = 321,
) -> tuple[list[float], float, dict[str, float]]:
    """Shift all thresholds together until the mean labels per item match the annotations.

    Returns the shifted thresholds, the shift (logit units) and the mean counts before and
    after. The shift closest to zero wins among equally good ones.
    """
    probs = np.asarray(probs, dtype=np.float64)
    target = float(np.asarray(targets).astype(bool).sum(axis=1).mean())

    def mean_count(shift: float) -> float:
        moved = shift_thresholds(thresholds, shift)
        return float(decide_multi_label(probs, moved, max_labels=max_labels).sum(axis=1).mean())

    candidates = sorted(np.linspace(*SHIFT_RANGE, steps), key=lambda s: (abs(s), s))
    best = min(candidates, key=lambda s: abs(mean_count(s) - target))
    best = float(round(best, 6))
    summary = {
        "annotated_per_item": target,
        "predicted_per_item_before": mean_count(0.0),
        "predicted_per_item_after": mean_count(best),
    }
    return shift_thresholds(thresholds, best), best, summary


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
    """Fit a temperature per task, per-label thresholds (multi-label) and, for single-label
    tasks with ``class_offsets``, per-class offsets on held-out data.

    Updates ``tasks`` in place and returns a record of what was fitted.
    """
    report: dict[str, Any] = {}
    for task, task_logits, task_targets in zip(tasks, logits, targets, strict=True):
        temperature = fit_temperature(task, task_logits, task_targets)
        task.temperature = temperature
        entry: dict[str, Any] = {"temperature": temperature}
        if task.is_multi_label:
            probs = probabilities(task, task_logits)
            thresholds, how = tune_thresholds(
                probs,
                task_targets,
                min_positives=min_positives,
                share_tolerance=task.share_tolerance,
            )
            if task.count_calibration:
                thresholds, shift, counts = calibrate_label_count(
                    probs, task_targets, thresholds, max_labels=task.max_labels
                )
                entry["count_shift"] = shift
                entry["label_count"] = counts
            task.thresholds = thresholds
            entry["thresholds"] = dict(zip(task.labels, thresholds, strict=True))
            entry["threshold_source"] = dict(zip(task.labels, how, strict=True))
        elif task.class_offsets:
            offsets, before, after = tune_offsets(probabilities(task, task_logits), task_targets)
            task.offsets = offsets
            entry["offsets"] = dict(zip(task.labels, offsets, strict=True))
            entry["macro_f1_without_offsets"] = before
            entry["macro_f1_with_offsets"] = after
        report[task.name] = entry
    return report


# ------------------------------------------------------------- wide and deep weighting

# Candidate weights of the wide logits (the encoder's weigh 1; temperatures fix the scale).
# With the themes' wide part reading the text alone the default's seeds pick 4 and 6; 8 and
# 12 are there so that the largest pick is not the grid's edge.
MIX_GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0)


def macro_f1_at_decisions(task: TaskSpec, logits: np.ndarray, targets: np.ndarray) -> float:
    """Macro-F1 of ``task``'s decisions (its temperature and thresholds as they are)."""
    pred = decide(task, probabilities(task, logits))
    if not task.is_multi_label:
        return single_label_macro_f1(targets, pred, task.num_labels)
    y = np.asarray(targets).astype(bool)
    p = np.asarray(pred).astype(bool)
    tp = (p & y).sum(axis=0)
    fp = (p & ~y).sum(axis=0)
    fn = (~p & y).sum(axis=0)
    denom = 2 * tp + fp + fn
    return float(np.mean(np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)))


def fit_mix(
    tasks: TaskSet,
    deep: Sequence[np.ndarray],
    wide: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    grid: Sequence[float] = MIX_GRID,
    min_positives: int = 5,
) -> dict[str, float]:
    """Per task, the weight of the wide logits with the best validation macro-F1 once the
    task's decisions (temperature, thresholds) are fitted to each candidate; ties go to the
    smaller weight.

    Log-loss is not the criterion: the wide part's logistic regressions are fitted with
    balanced class weights, so their logits are shifted towards the rare labels, and a
    temperature cannot undo a shift, while decisions can.
    """
    import copy

    mix = {}
    for task, d, w, t in zip(tasks, deep, wide, targets, strict=True):
        scores = {}
        for m in grid:
            candidate = copy.deepcopy(task)
            logits = np.asarray(d) + m * np.asarray(w)
            calibrate(TaskSet([candidate]), [logits], [t], min_positives=min_positives)
            scores[m] = macro_f1_at_decisions(candidate, logits, t)
        mix[task.name] = float(max(grid, key=lambda m: (scores[m], -m)))
    return mix


def weigh_wide(
    tasks: TaskSet,
    deep: Mapping[str, Sequence[np.ndarray]],
    wide: Mapping[str, Sequence[np.ndarray]],
    targets: Sequence[np.ndarray],
    fit_on: str = "validation",
) -> tuple[dict[str, float], dict[str, list[np.ndarray]]]:
    """Fit the wide weights on the ``fit_on`` split (:func:`fit_mix`) and combine the encoder's
    and the wide part's logits of every split: ``deep + weight x wide``, per task in order."""
    mix = fit_mix(tasks, deep[fit_on], wide[fit_on], targets)
    return mix, combine_wide(tasks, mix, deep, wide)


def combine_wide(
    tasks: TaskSet,
    mix: Mapping[str, float],
    deep: Mapping[str, Sequence[np.ndarray]],
    wide: Mapping[str, Sequence[np.ndarray]],
) -> dict[str, list[np.ndarray]]:
    """The encoder's and the wide part's logits of every split combined with the weights
    ``mix``: ``deep + weight x wide``, per task in order."""
    return {
        split: [
            np.asarray(d) + mix[t.name] * np.asarray(w)
            for d, w, t in zip(logits, wide[split], tasks, strict=True)
        ]
        for split, logits in deep.items()
    }
