"""Everything the review reader takes from the rest of scrclf, in one place.

The review pipeline sits on top of the package: it needs a loaded classifier and the
cluster bootstrap, nothing else. Keeping those imports here means a reorganisation of the
package below re-points one module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from scrclf.evaluation.bootstrap import ClusterBootstrap, interval
from scrclf.inference.classifier import load as _load

# Words whose removal moves a label's score at least this much are shown as drivers.
MIN_EFFECT = 0.02
TOP_WORDS = 5


def load_model(path: str, backend: str = "auto", quantized: bool = False):
    """A classifier from an export folder or a run's ``model/`` folder (any backend)."""
    return _load(path, backend=backend, quantized=quantized)


def predict(
    clf, texts: Sequence[str], findings: Sequence[str | None], batch_size: int = 32
) -> list[dict[str, Any]]:
    return clf.predict(list(texts), findings=list(findings), batch_size=batch_size)


def _chosen(task_pred: dict[str, Any]) -> str | None:
    return task_pred.get("primary") if "labels" in task_pred else task_pred.get("label")


def explain(
    clf,
    texts: Sequence[str],
    findings: Sequence[str | None],
    predictions: Sequence[dict[str, Any]],
    batch_size: int = 64,
    span: int = 3,
) -> list[dict[str, list[list]]]:
    """Per item and task, the words that drove the chosen label, by occlusion.

    Each window of ``span`` words of the recommendation is removed in turn and the drop in
    the chosen label's score is credited to its words: cheap enough to run on every item
    (about ``len(words) / span`` extra passes) and the same for torch and ONNX backends.
    Returns ``{task: [[word_index, effect], ...]}`` with the strongest words first.
    """
    variants: list[str] = []
    pairs: list[str | None] = []
    owners: list[tuple[int, int, int]] = []
    words_of = [t.split() for t in texts]
    for i, words in enumerate(words_of):
        for start in range(0, len(words), span):
            rest = words[:start] + words[start + span :]
            if not rest:
                continue
            variants.append(" ".join(rest))
            pairs.append(findings[i])
            owners.append((i, start, min(start + span, len(words))))
    out: list[dict[str, list[list]]] = [{} for _ in texts]
    if not variants:
        return out
    occluded = clf.predict(variants, findings=pairs, batch_size=batch_size)
    effects: list[dict[str, np.ndarray]] = (
        [{task: np.zeros(len(w)) for task in predictions[0]} for w in words_of]
        if predictions
        else []
    )
    for (i, lo, hi), pred in zip(owners, occluded, strict=True):
        for task, base in predictions[i].items():
            label = _chosen(base)
            if label is None:
                continue
            drop = base["scores"][label] - pred[task]["scores"][label]
            effects[i][task][lo:hi] = drop
    for i, per_task in enumerate(effects):
        for task, eff in per_task.items():
            order = np.argsort(-eff, kind="stable")
            out[i][task] = [
                [int(j), round(float(eff[j]), 4)]
                for j in order[: TOP_WORDS * 3]
                if eff[j] >= MIN_EFFECT
            ]
    return out


def bootstrap_share(
    values: Sequence[float], groups: Sequence[str], resamples: int = 1000, seed: int = 0
) -> list[float] | None:
    """95% interval of a mean over items, resampling whole reviews; None under 5 reviews."""
    if len(set(groups)) < 5 or not values:
        return None
    boot = ClusterBootstrap.from_groups(list(groups), resamples=resamples, seed=seed)
    x = np.asarray(values, dtype=np.float64)
    reps = []
    for w in boot.chunks():
        total = w.sum(axis=1)
        reps.append(np.divide(w @ x, total, out=np.zeros_like(total), where=total > 0))
    return [float(v) for v in interval(np.concatenate(reps))]


def bootstrap_review_share(
    flags: Sequence[float], resamples: int = 1000, seed: int = 0
) -> list[float] | None:
    """95% interval of a share of reviews (one value per review); None under 5 reviews."""
    if len(flags) < 5:
        return None
    return bootstrap_share(list(flags), [str(i) for i in range(len(flags))], resamples, seed)
