"""Fitting the wide part in logreg mode: a logistic regression over the model's own n-gram
features, and the weight of its logits beside the encoder's.

The features are exactly those the model computes from token ids
(:func:`scrclf.modeling.model.wide_features`), so the fitted weights mean the same inside the
exported graph. Before training, :func:`fit_wide` sets the IDF of every bucket and fits one
logistic regression per task (one-vs-rest for multi-label tasks; balanced class weights, as
the TF-IDF baseline), with its intercepts where ``wide.intercept`` is set. After training,
``fit_mix`` picks per task the weight of the wide logits that gives the best validation
macro-F1 of ``encoder + weight x wide`` (:func:`scrclf.calibration.fit_mix`).

The tasks in ``wide.text_only`` (themes, by default) are fitted on the n-grams of the
recommendation text alone, the first segment of the text-finding pair: what a
recommendation asks for is in its own words, and a finding's words describe the case. On
validation it lifted the mean macro-F1 of every trained encoder it was tried with
(docs/model_selection.md).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from scrclf.tasks import TaskSet

logger = logging.getLogger(__name__)


Items = list[tuple[np.ndarray, np.ndarray]]


def item_features(model, input_ids: Sequence[Sequence[int]], text_only: bool = False) -> Items:
    """Per item, the bucket ids of its n-grams and their 0/1 weights, as the model computes
    them (:func:`scrclf.modeling.model.wide_features`); with ``text_only``, those of the
    first segment alone, as the model computes them for the tasks in ``wide.text_only``."""
    import torch

    from scrclf.modeling.model import first_segment, wide_features

    wide = model.config.wide
    items = []
    for ids in input_ids:
        tensor = torch.as_tensor([list(ids)], dtype=torch.long)
        mask = torch.ones_like(tensor)
        if text_only:
            mask = first_segment(tensor, mask, wide["sep_token_id"])
        features, weight = wide_features(tensor, mask, wide["buckets"], wide["ngrams"])
        items.append((features[0].numpy(), weight[0].numpy().astype(np.float64)))
    return items


def _matrix(items: Items, buckets: int, idf: np.ndarray | None = None):
    from scipy import sparse

    rows, cols, vals = [], [], []
    for i, (f, w) in enumerate(items):
        if idf is not None:
            w = w * idf[f]
        norm = max(float(np.sqrt((w * w).sum())), 1.0)
        rows.append(np.full(len(f), i))
        cols.append(f)
        vals.append(w / norm)
    matrix = sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(len(items), buckets),
    )
    matrix.sum_duplicates()
    return matrix


def _idf(items: Items, buckets: int) -> np.ndarray:
    df = np.zeros(buckets, dtype=np.int64)
    for f, w in items:
        df[np.unique(f[w > 0])] += 1
    return np.log((1.0 + len(items)) / (1.0 + df)) + 1.0


def feature_matrix(
    model,
    input_ids: Sequence[Sequence[int]],
    idf: np.ndarray | None = None,
    text_only: bool = False,
):
    """The wide features of token-id lists as a sparse ``[items, buckets]`` matrix, weighted
    by ``idf`` (or 1) and normalised as in :meth:`ScrClfModel.wide_logits` (``text_only``:
    of the first segment alone)."""
    return _matrix(item_features(model, input_ids, text_only), model.config.wide["buckets"], idf)


def smooth_idf(model, input_ids: Sequence[Sequence[int]]) -> np.ndarray:
    """``log((1 + n) / (1 + df)) + 1`` per bucket (scikit-learn's smooth IDF)."""
    return _idf(item_features(model, input_ids), model.config.wide["buckets"])


def _active_columns(x) -> tuple[Any, np.ndarray]:
    """``x`` restricted to the columns with a non-zero entry, and those columns' indices."""
    used = np.unique(x.indices)
    return x[:, used], used


def _bags(model, input_ids: Sequence[Sequence[int]], idf: np.ndarray | None = None):
    """The IDF (the given one, else the smooth IDF of these items) and the weighted feature
    matrices of the items: ``all`` n-grams, and ``text`` (the first segment's) when a task
    reads the text alone."""
    wide = model.config.wide
    items = item_features(model, input_ids)
    if idf is None:
        idf = _idf(items, wide["buckets"])
    bags = {"all": _matrix(items, wide["buckets"], idf)}
    if wide.get("text_only"):
        text_items = item_features(model, input_ids, text_only=True)
        bags["text"] = _matrix(text_items, wide["buckets"], idf)
    return idf, bags


def _bag_of(task_name: str, wide: Mapping[str, Any], bags: Mapping[str, Any]) -> str:
    """The bag a task's wide logits read: the text alone for the tasks in ``text_only``."""
    return "text" if task_name in (wide.get("text_only") or ()) and "text" in bags else "all"


def _fit_weights(
    wide: Mapping[str, Any],
    bags: Mapping[str, Any],
    rows: np.ndarray | None,
    targets: Mapping[str, Sequence[Any] | np.ndarray],
    tasks: TaskSet,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The wide part's weights ``[buckets, sum of labels]`` and intercepts ``[sum of labels]``:
    per task a logistic regression (one-vs-rest for multi-label tasks; C ``wide["C"]``,
    balanced class weights) on the items ``rows`` (all when None) of the task's bag. The
    intercepts are the fits' own with ``wide["intercept"]``, all 0 without it. A label the
    items never (or always) show, and the first class of a two-class fit, get weights and
    intercept 0."""
    from sklearn.linear_model import LogisticRegression

    c = float(wide["C"])
    buckets = bags["all"].shape[1]
    width = sum(t.num_labels for t in tasks)
    weight = np.zeros((buckets, width), dtype=np.float32)
    bias = np.zeros(width, dtype=np.float32)
    # Fitted on the buckets some item fills: an empty bucket's weight stays 0 under the L2
    # penalty, so leaving it out gives the same solution, and the solver's work scales with
    # the number of columns (a few percent of the buckets are filled).
    active = {}
    for name, x in bags.items():
        active[name] = _active_columns(x if rows is None else x[rows])
    offset = 0
    for task in tasks:
        x, used = active[_bag_of(task.name, wide, bags)]
        y = np.asarray(targets[task.name])
        y = y if rows is None else y[rows]
        block = np.zeros((buckets, task.num_labels), dtype=np.float32)
        # A view of the task's intercepts, filled in place; a scratch row when they are off.
        intercepts = (
            bias[offset : offset + task.num_labels]
            if wide.get("intercept")
            else np.zeros(task.num_labels, dtype=np.float32)
        )
        if task.is_multi_label:
            for j in range(task.num_labels):
                column = y[:, j].astype(int)
                if column.min() == column.max():
                    continue  # a label never (or always) seen: no evidence either way
                reg = LogisticRegression(
                    C=c, class_weight="balanced", max_iter=2000, random_state=seed
                ).fit(x, column)
                block[used, j] = reg.coef_[0]
                intercepts[j] = reg.intercept_[0]
        else:
            labels = y.astype(int)
            if len(np.unique(labels)) > 1:
                reg = LogisticRegression(
                    C=c, class_weight="balanced", max_iter=2000, random_state=seed
                ).fit(x, labels)
                coef = reg.coef_
                if coef.shape[0] == 1:  # two classes: one row for the second against the first
                    block[used, reg.classes_[1]] = coef[0]
                    intercepts[reg.classes_[1]] = reg.intercept_[0]
                else:
                    block[np.ix_(used, reg.classes_)] = coef.T
                    intercepts[reg.classes_] = reg.intercept_
        weight[:, offset : offset + task.num_labels] = block
        offset += task.num_labels
    return weight, bias


def fit_wide(
    model,
    input_ids: Sequence[Sequence[int]],
    targets: Mapping[str, Sequence[Any] | np.ndarray],
    tasks: TaskSet,
    seed: int = 0,
) -> dict[str, Any]:
    """Fit the wide part of ``model`` (logreg mode) on training token ids and targets."""
    import torch

    wide = model.config.wide
    # The n-grams of every item, computed once for the IDF and the weighted matrix. One IDF
    # (of whole items) weighs both bags; the tasks in text_only are fitted on the bag of the
    # first segment's n-grams, as the model computes it for them.
    idf, bags = _bags(model, input_ids)
    weight, bias = _fit_weights(wide, bags, None, targets, tasks, seed)
    report: dict[str, Any] = {
        "C": float(wide["C"]),
        "items": bags["all"].shape[0],
        "buckets_used": int((idf < idf.max()).sum()),
        "intercept": bool(wide.get("intercept")),
    }
    if "text" in bags:
        report["text_only"] = sorted(wide["text_only"])
    with torch.no_grad():
        model.wide.weight.copy_(torch.from_numpy(weight))
        model.wide_idf.copy_(torch.from_numpy(idf.astype(np.float32)))
        # The intercepts' buffer follows the setting, which a probe may change on a copy of
        # a model built without it (scrclf.training.wide_probe).
        if wide.get("intercept"):
            if getattr(model, "wide_bias", None) is None:
                model.register_buffer("wide_bias", torch.zeros(len(bias)))
            model.wide_bias.copy_(torch.from_numpy(bias))
        elif hasattr(model, "wide_bias"):
            del model.wide_bias
    logger.info(
        "wide part fitted: logistic regression (C=%g) on %d items", report["C"], report["items"]
    )
    return report


def out_of_fold_wide_logits(
    model,
    input_ids: Sequence[Sequence[int]],
    targets: Mapping[str, Sequence[Any] | np.ndarray],
    tasks: TaskSet,
    folds: Sequence[int] | np.ndarray,
    seed: int = 0,
) -> list[np.ndarray]:
    """Per task, the wide logits of every item from a wide part fitted without its fold.

    ``model``'s wide part must be fitted (:func:`fit_wide`): its IDF weighs every fold's
    features. For each fold the logistic regressions of :func:`fit_wide` are fitted on the
    other folds' items, and the fold's items get ``features @ weights`` (plus the intercepts
    with ``intercept``), the logits :meth:`ScrClfModel.wide_logits` computes with those
    weights. ``tasks`` may be a subset of the model's tasks; the arrays follow its order.
    """
    wide = model.config.wide
    folds = np.asarray(folds)
    if len(folds) != len(input_ids):
        raise ValueError(f"{len(folds)} fold ids for {len(input_ids)} items")
    idf = model.wide_idf.detach().float().cpu().numpy().astype(np.float64)
    _, bags = _bags(model, input_ids, idf)
    width = sum(t.num_labels for t in tasks)
    out = np.zeros((len(folds), width), dtype=np.float32)
    fold_ids = np.unique(folds)
    for fold in fold_ids:
        held = np.flatnonzero(folds == fold)
        rest = np.flatnonzero(folds != fold)
        weight, bias = _fit_weights(wide, bags, rest, targets, tasks, seed)
        offset = 0
        for task in tasks:
            x = bags[_bag_of(task.name, wide, bags)][held]
            columns = slice(offset, offset + task.num_labels)
            out[held, columns] = np.asarray(x @ weight[:, columns]) + bias[columns]
            offset += task.num_labels
    logger.info(
        "wide part: out-of-fold logits of %d items over %d folds for %s",
        len(folds),
        len(fold_ids),
        [t.name for t in tasks],
    )
    return np.split(out, np.cumsum([t.num_labels for t in tasks])[:-1], axis=1)


def wide_logits_of(
    model, input_ids: Sequence[Sequence[int]], batch_size: int = 256
) -> list[np.ndarray]:
    """The wide logits of token-id lists, split per task (numpy, in input order)."""
    import torch

    device = model.wide.weight.device
    out = []
    with torch.no_grad():
        for start in range(0, len(input_ids), batch_size):
            chunk = input_ids[start : start + batch_size]
            width = max(len(ids) for ids in chunk)
            ids = torch.zeros((len(chunk), width), dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, seq in enumerate(chunk):
                ids[r, : len(seq)] = torch.as_tensor(list(seq))
                mask[r, : len(seq)] = 1
            out.append(model.wide_logits(ids.to(device), mask.to(device)).float().cpu().numpy())
    full = np.concatenate(out) if out else np.zeros((0, sum(model._label_counts)))
    return np.split(full, np.cumsum(model._label_counts)[:-1], axis=1)
