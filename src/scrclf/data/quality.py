"""Corpus quality gates that a release of the corpus must pass, and tables per style.

- near-duplicates: pairs of items whose word sets overlap (Jaccard) at or above 0.85 must be
  under 1% of items: near-copies inflate scores and say nothing new;
- label floors: every label at least 80 items overall and 15 in test, so that per-label
  scores on test rest on enough items;
- styles: the review types (SCR, LCSPR, rapid review, Welsh, Scottish, Northern Irish,
  joint reviews ...) are present in every split, with their counts, recommendations per
  review and label shares side by side.

The bag-of-words ceiling (TF-IDF must not solve the test split) needs a fitted baseline and
lives in :mod:`scrclf.evaluation.corpus_checks`.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scrclf.tasks import TaskSet

NEAR_DUPLICATE_JACCARD = 0.85
MAX_NEAR_DUPLICATE_SHARE = 0.01
MIN_LABEL_ITEMS = 80
MIN_LABEL_TEST_ITEMS = 15
STYLE_COLUMN = "review_type"
_BLOCK = 512


@dataclass
class Gate:
    """One pass/fail check with the measured value and its limit."""

    name: str
    value: float
    limit: float
    passed: bool
    detail: str = ""
    items: list[Any] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "limit": self.limit,
            "passed": self.passed,
            "detail": self.detail,
            "items": self.items[:20],
        }


def _word_sets(texts: Sequence[str]) -> list[set[str]]:
    return [set(re.findall(r"[a-z0-9']+", t.lower())) for t in texts]


def word_set_near_duplicates(
    rows: Sequence[Mapping[str, Any]], threshold: float = NEAR_DUPLICATE_JACCARD
) -> list[dict[str, Any]]:
    """Pairs of items whose word sets have Jaccard similarity >= ``threshold``.

    Computed as a sparse incidence product in blocks, so a corpus of many thousand items
    takes seconds rather than a pairwise loop's minutes.
    """
    from scipy import sparse

    sets = _word_sets([str(r["text"]) for r in rows])
    vocab: dict[str, int] = {}
    indptr: list[int] = [0]
    indices: list[int] = []
    for words in sets:
        indices.extend(vocab.setdefault(w, len(vocab)) for w in sorted(words))
        indptr.append(len(indices))
    n = len(sets)
    if n < 2:
        return []
    x = sparse.csr_matrix(
        (np.ones(len(indices), dtype=np.float32), indices, indptr), shape=(n, len(vocab))
    )
    sizes = np.asarray(x.sum(axis=1)).ravel()
    xt = x.T.tocsc()
    pairs = []
    for start in range(0, n, _BLOCK):
        stop = min(n, start + _BLOCK)
        inter = (x[start:stop] @ xt).toarray()
        union = sizes[start:stop, None] + sizes[None, :] - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            jac = np.where(union > 0, inter / union, 0.0)
        for i, j in zip(*np.nonzero(jac >= threshold), strict=True):
            a, b = start + int(i), int(j)
            if a < b:
                pairs.append(
                    {
                        "a": str(rows[a].get("id")),
                        "b": str(rows[b].get("id")),
                        "jaccard": round(float(jac[i, j]), 3),
                    }
                )
    return pairs


def _labels(row: Mapping[str, Any], task) -> list[str]:
    value = row.get(task.column)
    if value is None:
        return []
    return list(value) if task.is_multi_label else [value]


def label_floor_problems(
    splits: Mapping[str, Sequence[Mapping[str, Any]]],
    tasks: TaskSet,
    min_items: int = MIN_LABEL_ITEMS,
    min_test: int = MIN_LABEL_TEST_ITEMS,
) -> list[str]:
    """Labels below the floors: ``task/label: N items (< min)``."""
    problems = []
    for task in tasks:
        total: Counter = Counter()
        test: Counter = Counter()
        for split, rows in splits.items():
            for row in rows:
                labels = _labels(row, task)
                total.update(labels)
                if split == "test":
                    test.update(labels)
        for label in task.labels:
            if total[label] < min_items:
                problems.append(f"{task.name}/{label}: {total[label]} items (< {min_items})")
            if test[label] < min_test:
                problems.append(f"{task.name}/{label}: {test[label]} in test (< {min_test})")
    return problems


def style_table(
    splits: Mapping[str, Sequence[Mapping[str, Any]]], tasks: TaskSet, column: str = STYLE_COLUMN
) -> dict[str, dict[str, Any]]:
    """Per style: reviews and items per split, recommendations per review, label shares."""
    by_style: dict[str, list[tuple[str, Mapping[str, Any]]]] = defaultdict(list)
    for split, rows in splits.items():
        for row in rows:
            by_style[str(row.get(column) or "unknown")].append((split, row))
    table: dict[str, dict[str, Any]] = {}
    for style in sorted(by_style):
        entries = by_style[style]
        per_review = Counter(str(r["review_id"]) for _, r in entries)
        counts = np.asarray(sorted(per_review.values()))
        entry: dict[str, Any] = {
            "items": len(entries),
            "reviews": len(per_review),
            "items_per_split": {s: sum(1 for sp, _ in entries if sp == s) for s in splits},
            "reviews_per_split": {
                s: len({str(r["review_id"]) for sp, r in entries if sp == s}) for s in splits
            },
            "recs_per_review": {
                "mean": round(float(counts.mean()), 1),
                "median": float(np.median(counts)),
                "max": int(counts.max()),
            },
            "with_finding": round(sum(1 for _, r in entries if r.get("finding")) / len(entries), 3),
        }
        for task in tasks:
            c: Counter = Counter()
            for _, r in entries:
                labels = _labels(r, task)
                c.update(labels[:1] if task.is_multi_label else labels)
            entry[f"{task.name}_shares"] = {
                label: round(c[label] / len(entries), 3) for label in task.labels
            }
        table[style] = entry
    return table


def data_gates(
    splits: Mapping[str, Sequence[Mapping[str, Any]]], tasks: TaskSet, column: str = STYLE_COLUMN
) -> list[Gate]:
    """The gates that need no fitted model: near-duplicates, label floors, styles per split."""
    rows = [r for split_rows in splits.values() for r in split_rows]
    pairs = word_set_near_duplicates(rows)
    share = len(pairs) / max(1, len(rows))
    gates = [
        Gate(
            "near_duplicate_share",
            round(share, 4),
            MAX_NEAR_DUPLICATE_SHARE,
            share < MAX_NEAR_DUPLICATE_SHARE,
            f"{len(pairs)} pairs with word-set Jaccard >= {NEAR_DUPLICATE_JACCARD} "
            f"among {len(rows)} items",
            pairs,
        )
    ]
    floors = label_floor_problems(splits, tasks)
    gates.append(
        Gate(
            "label_floors",
            len(floors),
            0,
            not floors,
            f"every label >= {MIN_LABEL_ITEMS} items and >= {MIN_LABEL_TEST_ITEMS} in test",
            floors,
        )
    )
    reviews_per_style: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        reviews_per_style[str(r.get(column) or "unknown")].add(str(r["review_id"]))
    # A style with fewer reviews than there are splits cannot be in every split.
    styles = sorted(s for s, ids in reviews_per_style.items() if len(ids) >= len(splits))
    missing = sorted(
        f"{style} not in {split}"
        for style in styles
        for split, split_rows in splits.items()
        if not any(str(r.get(column) or "unknown") == style for r in split_rows)
    )
    gates.append(
        Gate(
            "styles_in_every_split",
            len(missing),
            0,
            not missing,
            f"{len(styles)} styles with >= {len(splits)} reviews, each in every split",
            missing,
        )
    )
    return gates
