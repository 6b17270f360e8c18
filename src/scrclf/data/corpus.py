"""The annotated corpus as a whole: splitting by review, validation, duplicates, statistics.

``scrclf data validate DIR`` checks a corpus directory (``train/validation/test.jsonl`` and
``reviews.jsonl``): schema and labels against the task config, splits grouped by review,
exact and near-duplicate texts, length statistics and label counts per split.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scrclf.data.records import DataError, Record, check_splits, read_records, validate_records
from scrclf.tasks import TaskSet

SPLITS = ("train", "validation", "test")
# Review types and the years each can carry: England's serious case reviews (to 2018) and
# local child safeguarding practice reviews and rapid reviews (from 2019); thematic and
# national reviews and public inquiries; Wales' child practice reviews (from 2013);
# Scotland's significant case reviews (to 2021) and learning reviews (from 2021); Northern
# Ireland's case management reviews; reviews joined with a domestic homicide review or a
# safeguarding adults review (from 2012).
REVIEW_YEARS = {
    "SCR": (1990, 2018),
    "LCSPR": (2019, 2100),
    "rapid_review": (2019, 2100),
    "thematic": (2000, 2100),
    "national_review": (2000, 2100),
    "inquiry": (1990, 2100),
    "CPR_concise": (2013, 2100),
    "CPR_extended": (2013, 2100),
    "SCR_scotland": (1990, 2021),
    "learning_review": (2021, 2100),
    "CMR": (1990, 2100),
    "joint_review": (2012, 2100),
}
REVIEW_TYPES = tuple(REVIEW_YEARS)
# How an item is written (optional; absent means standard): see docs/data_card.md.
FORMS = ("standard", "compound", "terse", "table_row", "damaged")
ADDRESSEES = (
    "board",
    "children_social_care",
    "health",
    "commissioners",
    "primary_care",
    "police",
    "education",
    "early_years",
    "probation",
    "housing",
    "adult_mental_health",
    "substance_misuse",
    "youth_justice",
    "voluntary_sector",
    "national",
    "all_agencies",
)
MIN_WORDS, MAX_WORDS = 4, 250
REVIEW_FIELDS = (
    "review_id",
    "review_type",
    "review_year",
    "area",
    "child",
    "harm",
    "synopsis",
    "agencies",
    "n_recommendations",
)


# ---------------------------------------------------------------------------- helpers


def label_counts(rows: Iterable[Mapping[str, Any]], tasks: TaskSet) -> dict[str, Counter]:
    counts: dict[str, Counter] = {t.name: Counter() for t in tasks}
    for row in rows:
        for task in tasks:
            value = row.get(task.column)
            if value is None:
                continue
            counts[task.name].update(value if task.is_multi_label else [value])
    return counts


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


# -------------------------------------------------------------------------- splitting


def assign_splits(
    rows: Sequence[Mapping[str, Any]],
    tasks: TaskSet,
    *,
    fractions: Mapping[str, float] | None = None,
    min_test: int = 8,
    min_validation: int = 5,
    strata: Mapping[str, str] | None = None,
    seed: int = 0,
    tries: int = 4000,
    fixed: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Assign whole reviews to splits.

    ``fixed`` (review -> split) keeps reviews where an earlier release put them, so that a
    grown corpus does not move an item from train into test; only the other reviews are
    assigned (``fractions`` then apply to each stratum of those).

    Searches seeded random assignments for one where every label of every task has at least
    ``min_test`` items in test and ``min_validation`` in validation, with item shares close to
    ``fractions``; ``strata`` (review -> group) keeps each group represented in every split.
    Returns review_id -> split.
    """
    fractions = dict(fractions or {"train": 0.7, "validation": 0.15, "test": 0.15})
    by_review: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        by_review[str(row["review_id"])].append(row)
    fixed = dict(fixed or {})
    reviews = sorted(rid for rid in by_review if rid not in fixed)
    groups: dict[str, list[str]] = defaultdict(list)
    for rid in reviews:
        groups[(strata or {}).get(rid, "all")].append(rid)
    n_total = len(rows)
    rng = random.Random(seed)
    best: dict[str, str] | None = None
    best_score, best_ok = -np.inf, False
    for _ in range(tries):
        assignment: dict[str, str] = {rid: fixed[rid] for rid in by_review if rid in fixed}
        for members in groups.values():
            members = members[:]
            rng.shuffle(members)
            k = len(members)
            # whole reviews: round each held-out share up or down at random, by its remainder
            n_val = max(1, int(k * fractions["validation"] + rng.random()))
            n_test = max(1, int(k * fractions["test"] + rng.random()))
            for i, rid in enumerate(members):
                assignment[rid] = (
                    "test" if i < n_test else "validation" if i < n_test + n_val else "train"
                )
        ok, score = _split_score(
            assignment, by_review, tasks, fractions, n_total, min_test, min_validation
        )
        if (ok, score) > (best_ok, best_score):
            best, best_score, best_ok = assignment, score, ok
    if not best_ok or best is None:
        raise DataError("no assignment of reviews met the label minimums; lower them or add items")
    return best


def _split_score(
    assignment, by_review, tasks, fractions, n_total, min_test, min_validation
) -> tuple[bool, float]:
    rows_by_split: dict[str, list] = defaultdict(list)
    for rid, split in assignment.items():
        rows_by_split[split].extend(by_review[rid])
    penalty = 0.0
    slack = []
    for split, minimum in (("test", min_test), ("validation", min_validation), ("train", 1)):
        counts = label_counts(rows_by_split[split], tasks)
        for task in tasks:
            for label in task.labels:
                c = counts[task.name][label]
                if c < minimum:
                    penalty += minimum - c
                slack.append(c / max(1, minimum))
    share_error = sum(abs(len(rows_by_split[s]) / n_total - f) for s, f in fractions.items())
    if penalty:
        return False, -penalty - share_error
    return True, min(slack) * 0.05 - share_error * 10


def write_splits(
    rows: Sequence[Mapping[str, Any]], assignment: Mapping[str, str], out_dir: Path
) -> None:
    from scrclf import atomic

    for split in SPLITS:
        chosen = [r for r in rows if assignment[str(r["review_id"])] == split]
        atomic.write_text(
            out_dir / f"{split}.jsonl",
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in chosen),
        )


# ------------------------------------------------------------------------- validation


@dataclass
class CorpusReport:
    counts: dict[str, int] = field(default_factory=dict)
    reviews: dict[str, int] = field(default_factory=dict)
    labels: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    lengths: dict[str, float] = field(default_factory=dict)
    finding_share: float = 0.0
    evidence_by_finding: dict[str, dict[str, int]] = field(default_factory=dict)
    near_duplicates: list[dict[str, Any]] = field(default_factory=list)
    recs_per_review: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _check_corpus_fields(rec: Record) -> None:
    row = rec.data
    year = row.get("review_year")
    if not isinstance(year, int) or isinstance(year, bool) or not 1990 <= year <= 2100:
        raise DataError(
            f"must be a year as an integer, got {year!r}", rec.file, rec.line, "review_year"
        )
    rtype = row.get("review_type")
    if rtype not in REVIEW_TYPES:
        raise DataError(
            f"must be one of {REVIEW_TYPES}, got {rtype!r}", rec.file, rec.line, "review_type"
        )
    first, last = REVIEW_YEARS[rtype]
    if not first <= year <= last:
        raise DataError(
            f"{rtype} does not fit review_year {year} ({rtype} reviews are from "
            f"{first}{'' if last == 2100 else f' to {last}'})",
            rec.file,
            rec.line,
            "review_type",
        )
    form = row.get("form", "standard")
    if form not in FORMS:
        raise DataError(
            f"unknown form {form!r}; allowed: {', '.join(FORMS)}", rec.file, rec.line, "form"
        )
    if row.get("addressee") not in ADDRESSEES:
        from scrclf.data.records import closest_label

        close = closest_label(str(row.get("addressee")), ADDRESSEES)
        hint = f" (did you mean '{close}'?)" if close else ""
        raise DataError(
            f"unknown addressee {row.get('addressee')!r}{hint}; allowed: {', '.join(ADDRESSEES)}",
            rec.file,
            rec.line,
            "addressee",
        )
    n_words = len(row["text"].split())
    if not MIN_WORDS <= n_words <= MAX_WORDS:
        raise DataError(
            f"has {n_words} words; recommendations are {MIN_WORDS}-{MAX_WORDS} words",
            rec.file,
            rec.line,
            "text",
        )


def near_duplicates(
    rows: Sequence[Mapping[str, Any]], threshold: float = 0.6, ngram: int = 3
) -> list[dict[str, Any]]:
    """Pairs of texts whose word n-gram sets overlap (Jaccard) at or above ``threshold``."""
    shingles = []
    for row in rows:
        w = _words(row["text"])
        shingles.append({tuple(w[i : i + ngram]) for i in range(max(1, len(w) - ngram + 1))})
    index: dict[tuple, list[int]] = defaultdict(list)
    for i, sh in enumerate(shingles):
        for s in sh:
            index[s].append(i)
    shared: Counter = Counter()
    for members in index.values():
        if len(members) > 50:  # a stock phrase; it says nothing about copying
            continue
        for a in range(len(members)):
            for b in range(a + 1, len(members)):
                shared[(members[a], members[b])] += 1
    pairs = []
    for (i, j), inter in shared.items():
        union = len(shingles[i]) + len(shingles[j]) - inter
        score = inter / union if union else 0.0
        if score >= threshold:
            pairs.append({"a": rows[i]["id"], "b": rows[j]["id"], "jaccard": round(score, 3)})
    return sorted(pairs, key=lambda p: -p["jaccard"])


def validate_corpus(
    corpus_dir: str | Path,
    tasks: TaskSet,
    *,
    near_dup_threshold: float = 0.6,
    max_near_duplicates: int = 0,
) -> CorpusReport:
    """Validate a corpus directory; raise :class:`DataError` on the first hard problem."""
    corpus_dir = Path(corpus_dir)
    splits: dict[str, list[Record]] = {}
    for split in SPLITS:
        records = read_records(corpus_dir / f"{split}.jsonl")
        validate_records(records, tasks)
        for rec in records:
            _check_corpus_fields(rec)
        splits[split] = records
    check_splits(splits)
    rows = [r.data for split in SPLITS for r in splits[split]]
    report = CorpusReport()

    reviews_file = corpus_dir / "reviews.jsonl"
    review_ids = {str(r["review_id"]) for r in rows}
    if reviews_file.exists():
        synopses = read_records(reviews_file)
        seen = set()
        per_review = Counter(str(r["review_id"]) for r in rows)
        for rec in synopses:
            for key in REVIEW_FIELDS:
                if key not in rec.data:
                    raise DataError("missing field", rec.file, rec.line, key)
            rid = str(rec.data["review_id"])
            if rid in seen:
                raise DataError(f"review '{rid}' listed twice", rec.file, rec.line, "review_id")
            seen.add(rid)
            if rid not in review_ids:
                raise DataError(
                    f"review '{rid}' has no recommendations in any split",
                    rec.file,
                    rec.line,
                    "review_id",
                )
            if rec.data["n_recommendations"] != per_review[rid]:
                raise DataError(
                    f"says {rec.data['n_recommendations']} recommendations, the splits "
                    f"hold {per_review[rid]}",
                    rec.file,
                    rec.line,
                    "n_recommendations",
                )
        missing = review_ids - seen
        if missing:
            raise DataError(f"no synopsis for reviews {sorted(missing)[:5]}", reviews_file)
    else:
        report.warnings.append("no reviews.jsonl: review synopses not checked")

    # Items that share a review must agree on its year and type.
    meta: dict[str, tuple] = {}
    for split in SPLITS:
        for rec in splits[split]:
            year_type = (rec.data["review_year"], rec.data["review_type"])
            rid = str(rec.data["review_id"])
            if meta.setdefault(rid, year_type) != year_type:
                raise DataError(
                    f"review '{rid}' has items with different year/type {meta[rid]} vs {year_type}",
                    rec.file,
                    rec.line,
                    "review_year",
                )

    texts: dict[str, Record] = {}
    for split in SPLITS:
        for rec in splits[split]:
            norm = " ".join(_words(rec.data["text"]))
            if norm in texts:
                first = texts[norm]
                raise DataError(
                    f"exact duplicate of the text at {first.file}:{first.line}",
                    rec.file,
                    rec.line,
                    "text",
                )
            texts[norm] = rec

    for split in SPLITS:
        counts = label_counts([r.data for r in splits[split]], tasks)
        for task in tasks:
            absent = [label for label in task.labels if not counts[task.name][label]]
            if absent:
                report.warnings.append(
                    f"split '{split}' has no item labelled {', '.join(absent)} "
                    f"({task.name}): those labels cannot be scored there"
                )
    report.near_duplicates = near_duplicates(rows, threshold=near_dup_threshold)
    if len(report.near_duplicates) > max_near_duplicates:
        report.warnings.append(
            f"{len(report.near_duplicates)} near-duplicate pairs at Jaccard >= {near_dup_threshold}"
        )
    report.counts = {s: len(splits[s]) for s in SPLITS} | {"all": len(rows)}
    report.reviews = {s: len({r.data["review_id"] for r in splits[s]}) for s in SPLITS} | {
        "all": len(review_ids)
    }
    for split in (*SPLITS, "all"):
        data = rows if split == "all" else [r.data for r in splits[split]]
        counts = label_counts(data, tasks)
        report.labels[split] = {
            t.name: {label: counts[t.name][label] for label in t.labels} for t in tasks
        }
        if split == "all":
            primary = Counter(r["themes"][0] for r in data if "themes" in r)
            report.labels["all_primary_theme"] = {"themes": dict(primary)}
    words = np.array([len(r["text"].split()) for r in rows])
    report.lengths = {
        "min": int(words.min()),
        "median": float(np.median(words)),
        "mean": round(float(words.mean()), 1),
        "p95": float(np.percentile(words, 95)),
        "max": int(words.max()),
    }
    with_finding = [r for r in rows if r.get("finding")]
    report.finding_share = round(len(with_finding) / len(rows), 3)
    if "evidence" in tasks.names:
        ev = tasks["evidence"]
        report.evidence_by_finding = {
            label: {
                "with_finding": sum(1 for r in rows if r["evidence"] == label and r.get("finding")),
                "without_finding": sum(
                    1 for r in rows if r["evidence"] == label and not r.get("finding")
                ),
            }
            for label in ev.labels
        }
    review_sizes = np.array(list(Counter(r["review_id"] for r in rows).values()))
    report.recs_per_review = {
        "mean": round(float(review_sizes.mean()), 1),
        "median": float(np.median(review_sizes)),
        "min": int(review_sizes.min()),
        "max": int(review_sizes.max()),
    }
    return report


@dataclass
class FileReport:
    """What ``scrclf data validate FILE`` found in one annotated file."""

    file: str
    n_items: int
    n_reviews: int
    tasks: list[str]
    labels: dict[str, dict[str, int]]
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def validate_file(
    path: str | Path,
    tasks: TaskSet,
    columns: Any = None,
    settings: Mapping[str, Any] | None = None,
) -> FileReport:
    """Check one annotated file as ``evaluate`` reads it: the column map applied, labels
    normalised, every row validated (a task whose column is absent is skipped with a
    note); labels with no item are warned about. Corpus-only fields (review type, year,
    addressee) are not checked."""
    from scrclf.data.columns import ColumnMap, apply_column_map, check_columns, normalise_labels
    from scrclf.settings import data_columns

    settings = dict(settings or data_columns())
    cmap = columns or ColumnMap()
    records = read_records(path)
    if not records:
        raise DataError("no records in the file", path)
    records = apply_column_map(records, cmap, settings, tasks, path)
    check_columns(records, settings, path)
    notes = normalise_labels(records, tasks, cmap.label_map)
    present = validate_records(
        records,
        tasks,
        require_labels=False,
        require_group=False,
        id_column=settings["id_column"],
        text_column=settings["text_column"],
        pair_column=settings["pair_column"],
        group_column=settings["group_column"],
        max_chars=int(settings["max_chars"]),
    )
    notes += [
        f"no '{t.column}' column: task '{t.name}' not checked"
        for t in tasks
        if t.name not in present
    ]
    group = settings["group_column"]
    reviews = {str(r.data.get(group)) for r in records if group and r.data.get(group) is not None}
    counts = label_counts([r.data for r in records], tasks)
    report = FileReport(
        str(path),
        len(records),
        len(reviews),
        list(present),
        {n: {label: counts[n][label] for label in tasks[n].labels} for n in present},
        notes,
    )
    for name in present:
        absent = [label for label, n in report.labels[name].items() if not n]
        if absent:
            report.warnings.append(
                f"no item labelled {', '.join(absent)} ({name}): those labels cannot be scored"
            )
    missing_review = sum(1 for r in records if not group or r.data.get(group) is None)
    if missing_review:
        report.warnings.append(
            f"{missing_review} items have no review id: intervals will ignore review clustering"
        )
    if len(reviews) < 10:
        report.warnings.append(
            f"{len(reviews)} reviews: intervals from fewer than 10 reviews are rough"
        )
    return report


def format_file_report(report: FileReport) -> str:
    lines = [f"{report.file}: {report.n_items} items from {report.n_reviews} reviews"]
    for task, per_label in report.labels.items():
        lines.append(f"{task}:")
        lines += [f"  {label:<26} {n:>5}" for label, n in per_label.items()]
    lines += [f"note: {n}" for n in report.notes]
    lines += [f"warning: {w}" for w in report.warnings]
    return "\n".join(lines)


def format_report(report: CorpusReport) -> str:
    lines = [
        f"items: {report.counts}",
        f"reviews: {report.reviews}",
        f"recommendations per review: {report.recs_per_review}",
        f"text words: {report.lengths}",
        f"share with a finding: {report.finding_share}",
    ]
    for task, per_label in report.labels["all"].items():
        lines.append(f"{task}:")
        for label, n in per_label.items():
            cells = "  ".join(f"{s}={report.labels[s][task][label]}" for s in SPLITS)
            lines.append(f"  {label:<26} {n:>5}   {cells}")
    if report.near_duplicates:
        lines.append(f"near-duplicate pairs: {len(report.near_duplicates)}")
        for pair in report.near_duplicates[:10]:
            lines.append(f"  {pair['a']} ~ {pair['b']} (Jaccard {pair['jaccard']})")
    lines += [f"warning: {w}" for w in report.warnings]
    return "\n".join(lines)


def double_coding_agreement(path: str | Path, tasks: TaskSet) -> dict[str, Any]:
    """Agreement of the two blind codings stored in a double-coding file.

    Each line holds ``id``, ``coder_a`` and ``coder_b`` (label mappings), and optionally the
    ``adjudicated`` labels; agreement is measured before adjudication.
    """
    from scrclf.data.agreement import agreement

    records = read_records(path)
    coder_a, coder_b = {}, {}
    for rec in records:
        for key in ("id", "coder_a", "coder_b"):
            if key not in rec.data:
                raise DataError("missing field", rec.file, rec.line, key)
        coder_a[str(rec.data["id"])] = rec.data["coder_a"]
        coder_b[str(rec.data["id"])] = rec.data["coder_b"]
    result = agreement(coder_a, coder_b, tasks)
    winners = Counter(rec.data.get("winner", "unknown") for rec in records)
    result["adjudication"] = dict(winners)
    return result


def agreement_by_group(
    path: str | Path, corpus_dir: str | Path, tasks: TaskSet, column: str = "review_type"
) -> dict[str, dict[str, Any]]:
    """Double-coding agreement per value of an item field of the corpus (by default the
    review type, i.e. the style), looked up by id; groups of fewer than 10 items are pooled
    as ``other (< 10 items)``."""
    from scrclf.data.agreement import agreement

    group_of = {
        str(r.data["id"]): str(r.data.get(column) or "unknown")
        for split in SPLITS
        for r in read_records(Path(corpus_dir) / f"{split}.jsonl")
    }
    codings: dict[str, tuple[dict[str, Any], dict[str, Any]]] = defaultdict(lambda: ({}, {}))
    for rec in read_records(path):
        item = str(rec.data.get("id"))
        if item not in group_of:
            raise DataError(
                f"id {item!r} is not in the corpus at {corpus_dir}", rec.file, rec.line, "id"
            )
        a, b = codings[group_of[item]]
        a[item], b[item] = rec.data["coder_a"], rec.data["coder_b"]
    pooled: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for group, (a, b) in sorted(codings.items()):
        key = group if len(a) >= 10 else "other (< 10 items)"
        pa, pb = pooled.setdefault(key, ({}, {}))
        pa.update(a)
        pb.update(b)
    return {group: agreement(a, b, tasks) for group, (a, b) in pooled.items()}


def format_agreement_by_group(result: Mapping[str, Mapping[str, Any]], tasks: TaskSet) -> str:
    """One row per group: items, then kappa (single-label) or primary kappa and micro-F1."""
    head = ["group", "items"]
    for task in tasks:
        head += (
            [f"{task.name} primary kappa", f"{task.name} micro-F1"]
            if task.is_multi_label
            else [f"{task.name} kappa"]
        )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for group, r in result.items():
        cells = [group, str(r["n_items"])]
        for task in tasks:
            t = r[task.name]
            cells += (
                [f"{t['primary_kappa']:.3f}", f"{t['micro_f1']:.3f}"]
                if task.is_multi_label
                else [f"{t['kappa']:.3f}"]
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_agreement(result: Mapping[str, Any], tasks: TaskSet) -> str:
    lines = [f"items double-coded: {result['n_items']}"]
    for task in tasks:
        r = result[task.name]
        if task.is_multi_label:
            lines.append(
                f"{task.name}: primary-label kappa {r['primary_kappa']:.3f}, "
                f"micro-F1 {r['micro_f1']:.3f}, macro-F1 {r['macro_f1']:.3f}, "
                f"exact set agreement {r['exact_set_agreement']:.3f}"
            )
            for label, v in r["per_label"].items():
                lines.append(
                    f"  {label:<26} F1 {v['f1']:.3f}  kappa {v['kappa']:.3f}  "
                    f"(A {v['n_a']}, B {v['n_b']})"
                )
        else:
            lines.append(
                f"{task.name}: Cohen's kappa {r['kappa']:.3f}, agreement {r['agreement']:.3f}"
            )
    if "adjudication" in result:
        lines.append(f"adjudication: {result['adjudication']}")
    return "\n".join(lines)
