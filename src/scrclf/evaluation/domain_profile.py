"""The domain profile of a set of recommendations: what they ask for, how strongly, on what.

For any set of recommendations (one review or hundreds) :func:`profile` draws the picture
the 2011 study of serious case reviews drew by hand: how many recommendations each review
makes, the share of each theme (as the primary theme and in any position), of each evidence
basis and of each action strength. Where the items carry annotations and a model's
predictions are given, both are shown side by side, so a reader sees whether the model
reproduces the distribution as well as the individual labels.

:func:`write_profile` writes ``profile.json``, ``profile.md`` and ``profile.png``.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from scrclf.data.records import Record
from scrclf.errors import DataError
from scrclf.tasks import MULTI_LABEL, SINGLE_LABEL, TaskSet

ANNOTATED = "annotated"
PREDICTED = "predicted"
# Recommendations per review: histogram bins (lower bound inclusive, upper inclusive).
PER_REVIEW_BINS: tuple[tuple[int, int | None], ...] = (
    (1, 5),
    (6, 10),
    (11, 20),
    (21, 30),
    (31, 50),
    (51, 100),
    (101, None),
)
# Task columns looked for when no task specification is given (the codebook's tasks).
DEFAULT_TASK_COLUMNS = {
    "themes": MULTI_LABEL,
    "evidence": SINGLE_LABEL,
    "action_strength": SINGLE_LABEL,
}
# The 2011 study (Brandon et al., DFE-RR157) for comparison: 931 recommendations in 20
# reviews completed in 2009-10, one review with more than 100.
REFERENCE_2011 = {
    "source": "Brandon, Sidebotham, Bailey and Belderson (2011), DFE-RR157",
    "reviews": 20,
    "recommendations": 931,
    "mean_per_review": 931 / 20,
    "max_per_review": "over 100",
}


def _rows(records: Sequence[Record | Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r.data if isinstance(r, Record) else r for r in records]


def _bin_name(lo: int, hi: int | None) -> str:
    return f"{lo}+" if hi is None else (f"{lo}" if lo == hi else f"{lo}-{hi}")


def per_review_counts(
    rows: Sequence[Mapping[str, Any]], group_column: str = "review_id"
) -> dict[str, Any]:
    """Recommendations per review: mean, median, min, max and a histogram."""
    counts = Counter(str(r[group_column]) for r in rows if r.get(group_column) not in (None, ""))
    without = sum(1 for r in rows if r.get(group_column) in (None, ""))
    values = sorted(counts.values())
    histogram = []
    for lo, hi in PER_REVIEW_BINS:
        n = sum(1 for v in values if v >= lo and (hi is None or v <= hi))
        histogram.append({"bin": _bin_name(lo, hi), "reviews": n})
    out: dict[str, Any] = {
        "n_reviews": len(counts),
        "items_without_review": without,
        "histogram": histogram,
    }
    if values:
        out.update(
            mean=statistics.fmean(values),
            median=float(statistics.median(values)),
            min=values[0],
            max=values[-1],
            largest_reviews=[
                {"review_id": k, "recommendations": v} for k, v in counts.most_common(3)
            ],
        )
    else:
        out.update(mean=None, median=None, min=None, max=None, largest_reviews=[])
    return out


def infer_tasks(rows: Sequence[Mapping[str, Any]]) -> TaskSet | None:
    """Tasks for the codebook columns present in ``rows``, labels ordered by frequency.

    None when no such column is present (the profile then shows review sizes only).
    """
    specs = []
    for column, kind in DEFAULT_TASK_COLUMNS.items():
        values = [r[column] for r in rows if r.get(column) not in (None, "", [])]
        if not values:
            continue
        multi = kind == MULTI_LABEL
        counts: Counter[str] = Counter()
        for v in values:
            labels = _as_labels(v, multi)  # never None: empty values are filtered out above
            if isinstance(labels, list):
                counts.update(labels)
            elif labels is not None:
                counts.update([labels])
        labels = [label for label, _ in counts.most_common()]
        if not multi and len(labels) < 2:
            labels.append("(none)")
        specs.append({"name": column, "column": column, "type": kind, "labels": labels})
    return TaskSet.from_config(specs) if specs else None


def _as_labels(value: Any, multi: bool) -> list[str] | str | None:
    """Normalise an annotation or a prediction entry to a label list (multi) or a label."""
    if value is None:
        return None
    if isinstance(value, Mapping):  # a prediction entry of scrclf.inference.classifier
        value = value.get("labels") if multi else value.get("label")
    if multi:
        if isinstance(value, str):
            return [v.strip() for v in value.split(";") if v.strip()]
        if isinstance(value, (list, tuple)):
            return [str(v) for v in value]
        return [str(value)]
    return str(value)


def _shares(task, values: Sequence[Any]) -> dict[str, Any]:
    """Counts and shares of each label among ``values`` (items without a value ignored)."""
    multi = task.is_multi_label
    present = [v for v in (_as_labels(x, multi) for x in values) if v]
    n = len(present)
    out: dict[str, Any] = {"n": n}
    if multi:
        primary = Counter(v[0] for v in present)
        anywhere = Counter(label for v in present for label in dict.fromkeys(v))
        out["primary"] = {lab: primary.get(lab, 0) / n if n else None for lab in task.labels}
        out["any"] = {lab: anywhere.get(lab, 0) / n if n else None for lab in task.labels}
        out["primary_count"] = {lab: primary.get(lab, 0) for lab in task.labels}
        out["any_count"] = {lab: anywhere.get(lab, 0) for lab in task.labels}
        out["labels_per_item"] = sum(len(v) for v in present) / n if n else None
    else:
        counts = Counter(present)
        out["share"] = {lab: counts.get(lab, 0) / n if n else None for lab in task.labels}
        out["count"] = {lab: counts.get(lab, 0) for lab in task.labels}
    unknown = sorted({lab for v in present for lab in (v if multi else [v])} - set(task.labels))
    if unknown:
        out["unknown_labels"] = unknown
    return out


def profile(
    records: Sequence[Record | Mapping[str, Any]],
    predictions: Sequence[Mapping[str, Any]] | None = None,
    tasks: TaskSet | None = None,
    group_column: str = "review_id",
) -> dict[str, Any]:
    """The profile of ``records``, with predicted beside annotated shares where both exist.

    Args:
        records: recommendations (``Record`` objects or row dicts); label columns optional.
        predictions: one mapping per record, task name -> a label (single-label), a list of
            labels with the primary first (multi-label), or an entry as returned by
            ``Classifier.predict``.
        tasks: the task specifications (label lists and order). Without it, the codebook
            columns present in the records are used, labels ordered by frequency.
        group_column: the column naming each item's review.
    """
    rows = _rows(records)
    if predictions is not None and len(predictions) != len(rows):
        raise DataError(f"{len(predictions)} predictions for {len(rows)} records")
    if tasks is None:
        tasks = infer_tasks(rows)
    result: dict[str, Any] = {
        "n_items": len(rows),
        "per_review": per_review_counts(rows, group_column),
        "reference_2011": REFERENCE_2011,
        "sources": [],
        "tasks": {},
    }
    sources = set()
    for task in tasks or []:
        entry: dict[str, Any] = {"type": task.type, "labels": list(task.labels)}
        if any(r.get(task.column) not in (None, "", []) for r in rows):
            entry[ANNOTATED] = _shares(task, [r.get(task.column) for r in rows])
            sources.add(ANNOTATED)
        if predictions is not None and any(task.name in p for p in predictions):
            entry[PREDICTED] = _shares(task, [p.get(task.name) for p in predictions])
            sources.add(PREDICTED)
        if ANNOTATED in entry or PREDICTED in entry:
            result["tasks"][task.name] = entry
    result["sources"] = [s for s in (ANNOTATED, PREDICTED) if s in sources]
    return result


def write_profile(result: Mapping[str, Any], out_dir: str | Path, chart: bool = True) -> None:
    """Write ``profile.json``, ``profile.md`` and (optionally) ``profile.png`` into ``out_dir``.

    ``out_dir`` is written file by file; callers that need the whole folder to appear at once
    pass a folder inside :func:`scrclf.atomic.directory`.
    """
    from scrclf import atomic
    from scrclf.reporting.markdown import render_profile
    from scrclf.reporting.plots import profile_chart

    out_dir = Path(out_dir)
    atomic.write_json(out_dir / "profile.json", result)
    atomic.write_text(
        out_dir / "profile.md", render_profile(result, chart="profile.png" if chart else None)
    )
    if chart:
        profile_chart(result, out_dir / "profile.png")
