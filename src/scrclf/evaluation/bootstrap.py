"""Cluster bootstrap over reviews: confidence intervals that respect how the data were made.

The recommendations of one review share a case, a panel and an author's habits, so they are
not independent draws. Resampling single items would treat them as if they were and give
intervals that are too narrow. Here every resample draws whole reviews with replacement (as
many draws as there are reviews) and keeps every item of each drawn review, once per draw.

A set of resamples is held as a weight matrix ``W`` of shape ``(resamples, items)``: entry
``W[b, i]`` says how many times item ``i`` is in resample ``b``. Every count a metric needs
(true positives, false positives, exact matches, ...) is then one matrix product over all
resamples at once, so 1000 resamples of a few thousand items take well under a second.

The same seed gives the same resamples for the same review layout, so two systems scored on
one dataset are compared on identical resamples (a paired bootstrap): the interval of their
difference is the spread of the per-resample differences.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scrclf.errors import DataError, SettingsError

DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95
DEFAULT_SEED = 0
# Resamples expanded to item weights at a time: bounds memory on large files.
CHUNK = 250
# Below this many reviews a cluster-bootstrap interval is too rough to rely on: reports warn.
MIN_REVIEWS = 10

MULTI_LABEL_METRICS = (
    "micro_f1",
    "macro_f1",
    "weighted_f1",
    "samples_f1",
    "subset_accuracy",
    "hamming_loss",
)
SINGLE_LABEL_METRICS = ("accuracy", "micro_f1", "macro_f1", "weighted_f1")


def cluster_ids(groups: Sequence[Hashable | None]) -> tuple[np.ndarray, int]:
    """Integer cluster ids (0..G-1) in order of first appearance, and how many items had none.

    An item without a group (``None`` or an empty string) becomes a cluster of its own.
    """
    index: dict[Any, int] = {}
    ids = np.empty(len(groups), dtype=np.int64)
    missing = 0
    for i, group in enumerate(groups):
        if group is None or (isinstance(group, str) and not group.strip()):
            key: Any = ("__item__", i)
            missing += 1
        else:
            key = str(group)
        ids[i] = index.setdefault(key, len(index))
    return ids, missing


@dataclass
class ClusterBootstrap:
    """Seeded resamples of whole clusters (reviews) for one dataset.

    Args:
        clusters: the cluster id of every item, integers ``0..G-1``.
        resamples: number of bootstrap resamples.
        seed: seed of the random generator; the same seed and clusters give the same
            resamples.
    """

    clusters: np.ndarray
    resamples: int = DEFAULT_RESAMPLES
    seed: int = DEFAULT_SEED
    draws: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.clusters = np.asarray(self.clusters, dtype=np.int64)
        if self.resamples < 1:
            raise SettingsError(f"resamples must be >= 1, got {self.resamples}")
        if len(self.clusters) == 0:
            raise DataError("cannot bootstrap an empty dataset")
        n_clusters = self.n_clusters
        rng = np.random.default_rng(self.seed)
        # Which clusters each resample draws: resamples x n_clusters indices.
        self.draws = rng.integers(0, n_clusters, size=(self.resamples, n_clusters))

    @classmethod
    def from_groups(
        cls,
        groups: Sequence[Hashable | None],
        resamples: int = DEFAULT_RESAMPLES,
        seed: int = DEFAULT_SEED,
    ) -> ClusterBootstrap:
        ids, _ = cluster_ids(groups)
        return cls(ids, resamples=resamples, seed=seed)

    @property
    def n_clusters(self) -> int:
        return int(self.clusters.max()) + 1

    @property
    def n_items(self) -> int:
        return len(self.clusters)

    def cluster_counts(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """How often each cluster is drawn, per resample: ``(resamples, n_clusters)``."""
        draws = self.draws[start:stop]
        g = self.n_clusters
        offsets = (draws + g * np.arange(len(draws))[:, None]).ravel()
        return np.bincount(offsets, minlength=len(draws) * g).reshape(len(draws), g)

    def weights(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Item weights ``(resamples, n_items)``: how often each item is in each resample."""
        return self.cluster_counts(start, stop)[:, self.clusters].astype(np.float64)

    def chunks(self, size: int = CHUNK) -> Iterator[np.ndarray]:
        """The weight matrix in blocks of at most ``size`` resamples, in order."""
        for start in range(0, self.resamples, size):
            yield self.weights(start, min(start + size, self.resamples))

    def subset(self, index: np.ndarray) -> ClusterBootstrap:
        """A bootstrap over the items ``index`` (e.g. a slice), with the same seed and size."""
        groups = self.clusters[np.asarray(index, dtype=np.int64)]
        _, relabelled = np.unique(groups, return_inverse=True)
        return ClusterBootstrap(relabelled, resamples=self.resamples, seed=self.seed)

    def describe(self, confidence: float) -> dict[str, Any]:
        return {
            "method": "cluster bootstrap (whole reviews drawn with replacement)",
            "resamples": self.resamples,
            "seed": self.seed,
            "confidence": confidence,
            "n_clusters": self.n_clusters,
            "n_items": self.n_items,
            "interval": "percentile",
            **({"warning": few_reviews_warning(self.n_clusters)} if self.few_clusters else {}),
        }

    @property
    def few_clusters(self) -> bool:
        return self.n_clusters < MIN_REVIEWS


def few_reviews_warning(n_reviews: int) -> str:
    """The warning for intervals drawn from fewer than :data:`MIN_REVIEWS` reviews."""
    return (
        f"intervals rest on {n_reviews} reviews (fewer than {MIN_REVIEWS}): with so few "
        "clusters the bootstrap understates the uncertainty; read them as rough"
    )


# ---------------------------------------------------------------- vectorised metrics


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """F1 from counts; 0 where a label has no true and no predicted items (as scikit-learn
    with ``zero_division=0``)."""
    denom = 2 * tp + fp + fn
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 0.0)


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)


def _from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> dict[str, np.ndarray]:
    per_label = _f1(tp, fp, fn)
    support = tp + fn
    return {
        "micro_f1": _f1(tp.sum(axis=1), fp.sum(axis=1), fn.sum(axis=1)),
        "macro_f1": per_label.mean(axis=1),
        "weighted_f1": _safe_ratio((per_label * support).sum(axis=1), support.sum(axis=1)),
        "per_label_f1": per_label,
    }


def multi_label_replicates(
    weights: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray
) -> dict[str, np.ndarray]:
    """Metrics of a multi-label task for every row of ``weights`` (one row per resample).

    ``y_true`` and ``y_pred`` are 0/1 matrices ``(items, labels)``. With a row of ones the
    values equal scikit-learn's (``zero_division=0``).
    """
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    y = np.asarray(y_true).astype(bool)
    p = np.asarray(y_pred).astype(bool)
    tp = w @ (y & p).astype(np.float64)
    fp = w @ (~y & p).astype(np.float64)
    fn = w @ (y & ~p).astype(np.float64)
    out = _from_counts(tp, fp, fn)
    total = w.sum(axis=1)
    inter = (y & p).sum(axis=1).astype(np.float64)
    sizes = (y.sum(axis=1) + p.sum(axis=1)).astype(np.float64)
    item_f1 = _safe_ratio(2 * inter, sizes)
    out["samples_f1"] = _safe_ratio(w @ item_f1, total)
    out["subset_accuracy"] = _safe_ratio(w @ (y == p).all(axis=1).astype(np.float64), total)
    out["hamming_loss"] = _safe_ratio(w @ (y != p).mean(axis=1), total)
    return out


def single_label_replicates(
    weights: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, n_labels: int
) -> dict[str, np.ndarray]:
    """Metrics of a single-label task for every row of ``weights``; classes are indices.

    Every one of the ``n_labels`` classes counts in the macro average, as in
    :func:`scrclf.evaluation.metrics.task_metrics`.
    """
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    eye = np.eye(n_labels, dtype=bool)
    yt, yp = eye[y], eye[p]
    tp = w @ (yt & yp).astype(np.float64)
    fp = w @ (~yt & yp).astype(np.float64)
    fn = w @ (yt & ~yp).astype(np.float64)
    out = _from_counts(tp, fp, fn)
    out["accuracy"] = _safe_ratio(w @ (y == p).astype(np.float64), w.sum(axis=1))
    return out


def replicates(
    boot: ClusterBootstrap, multi_label: bool, y_true: np.ndarray, y_pred: np.ndarray, n_labels: int
) -> dict[str, np.ndarray]:
    """Every resample's metrics of one task, computed block by block over the resamples."""
    parts: list[dict[str, np.ndarray]] = []
    for w in boot.chunks():
        if multi_label:
            parts.append(multi_label_replicates(w, y_true, y_pred))
        else:
            parts.append(single_label_replicates(w, y_true, y_pred, n_labels))
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def interval(values: np.ndarray, confidence: float = DEFAULT_CONFIDENCE) -> list[Any]:
    """The percentile interval ``[low, high]`` of bootstrap replicates (along axis 0).

    Floats for one value per resample; lists (one entry per column) for 2-D replicates.
    """
    if not 0 < confidence < 1:
        raise SettingsError(f"confidence must be between 0 and 1, got {confidence}")
    alpha = (1 - confidence) / 2
    values = np.asarray(values, dtype=np.float64)
    low, high = np.nanquantile(values, [alpha, 1 - alpha], axis=0)
    if np.ndim(low) == 0:
        return [float(low), float(high)]
    return [np.asarray(low).tolist(), np.asarray(high).tolist()]


def intervals(
    reps: Mapping[str, np.ndarray],
    confidence: float = DEFAULT_CONFIDENCE,
    keys: Sequence[str] | None = None,
) -> dict[str, list[float]]:
    """Percentile intervals of scalar metrics (one value per resample)."""
    keys = [k for k in (keys or reps) if k in reps and np.ndim(reps[k]) == 1]
    return {k: interval(reps[k], confidence) for k in keys}


def review_halves(
    groups: Sequence[Hashable | None], repeats: int, seed: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``2 x repeats`` pairs of item masks ``(fit, held)``: the reviews split in two at random,
    ``repeats`` times, each half fitted on once and held out once. For deciding on held-out
    data whether a rule fitted on validation generalises, without touching test."""
    reviews = np.asarray([str(g) for g in groups])
    names = np.unique(reviews)
    rng = np.random.default_rng(seed)
    for _ in range(repeats):
        first = np.isin(reviews, rng.permutation(names)[: len(names) // 2])
        yield first, ~first
        yield ~first, first
