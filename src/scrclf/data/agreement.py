"""Inter-annotator agreement between two codings of the same items.

Single-label tasks: Cohen's kappa and raw agreement. Multi-label tasks: per-label F1 of
coder B against coder A (symmetric for F1), per-label Cohen's kappa on the binary
decisions, kappa on the primary (first) label, and exact set agreement.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import cohen_kappa_score, f1_score

from scrclf.errors import DataError
from scrclf.tasks import TaskSet


def agreement(
    coder_a: Mapping[str, Mapping[str, Any]],
    coder_b: Mapping[str, Mapping[str, Any]],
    tasks: TaskSet,
) -> dict[str, Any]:
    """Agreement per task over the ids both coders labelled."""
    ids = sorted(set(coder_a) & set(coder_b))
    if not ids:
        raise DataError("the two codings share no item ids")
    out: dict[str, Any] = {"n_items": len(ids)}
    for task in tasks:
        a = [coder_a[i][task.column] for i in ids]
        b = [coder_b[i][task.column] for i in ids]
        if task.is_multi_label:
            ya = _multi_hot(a, task.labels)
            yb = _multi_hot(b, task.labels)
            per_label = {}
            for j, label in enumerate(task.labels):
                per_label[label] = {
                    "f1": float(f1_score(ya[:, j], yb[:, j], zero_division=0)),
                    "kappa": _kappa(ya[:, j], yb[:, j]),
                    "n_a": int(ya[:, j].sum()),
                    "n_b": int(yb[:, j].sum()),
                }
            out[task.name] = {
                "primary_kappa": _kappa([x[0] for x in a], [x[0] for x in b]),
                "primary_agreement": float(
                    np.mean([x[0] == y[0] for x, y in zip(a, b, strict=True)])
                ),
                "exact_set_agreement": float(
                    np.mean([set(x) == set(y) for x, y in zip(a, b, strict=True)])
                ),
                "micro_f1": float(f1_score(ya, yb, average="micro", zero_division=0)),
                "macro_f1": float(f1_score(ya, yb, average="macro", zero_division=0)),
                "mean_label_kappa": float(np.mean([v["kappa"] for v in per_label.values()])),
                "per_label": per_label,
            }
        else:
            out[task.name] = {
                "kappa": _kappa(a, b),
                "agreement": float(np.mean([x == y for x, y in zip(a, b, strict=True)])),
                "confusion": _confusion(a, b, task.labels),
            }
    return out


def _multi_hot(values: Sequence[Sequence[str]], labels: Sequence[str]) -> np.ndarray:
    index = {label: i for i, label in enumerate(labels)}
    out = np.zeros((len(values), len(labels)), dtype=np.int64)
    for r, row in enumerate(values):
        for label in row:
            out[r, index[label]] = 1
    return out


def _kappa(a: Sequence | np.ndarray, b: Sequence | np.ndarray) -> float:
    if len(set(a) | set(b)) < 2:
        return 1.0
    return float(cohen_kappa_score(a, b))


def _confusion(
    a: Sequence[str], b: Sequence[str], labels: Sequence[str]
) -> dict[str, dict[str, int]]:
    return {
        la: {lb: sum(1 for x, y in zip(a, b, strict=True) if x == la and y == lb) for lb in labels}
        for la in labels
    }
