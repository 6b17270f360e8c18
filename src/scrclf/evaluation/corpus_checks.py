"""``scrclf data check``: every quality gate of a corpus release in one report.

Runs the schema and split validation (:func:`scrclf.data.corpus.validate_corpus`), the data
gates of :mod:`scrclf.data.quality` (near-duplicates, label floors, styles in every split)
and the bag-of-words ceiling: TF-IDF + logistic regression, fitted on train, must stay at or
below 0.80 themes micro-F1 on test, otherwise the items are templated and a model's score on
them says little about real reviews.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scrclf.data.corpus import SPLITS, validate_corpus
from scrclf.data.quality import STYLE_COLUMN, Gate, data_gates, style_table
from scrclf.data.records import read_records
from scrclf.evaluation.difficulty import difficulty
from scrclf.tasks import TaskSet

TFIDF_THEMES_MICRO_F1_CEILING = 0.80


@dataclass
class CorpusChecks:
    gates: list[Gate]
    styles: dict[str, dict[str, Any]]
    difficulty: dict[str, Any]
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "counts": self.counts,
            "gates": [g.to_dict() for g in self.gates],
            "styles": self.styles,
            "difficulty": self.difficulty,
        }


def check_corpus(
    corpus_dir: str | Path, tasks: TaskSet, column: str = STYLE_COLUMN
) -> CorpusChecks:
    """Validate ``corpus_dir`` (hard errors raise :class:`~scrclf.errors.DataError`) and
    measure every gate."""
    corpus_dir = Path(corpus_dir)
    report = validate_corpus(corpus_dir, tasks)
    splits = {s: [r.data for r in read_records(corpus_dir / f"{s}.jsonl")] for s in SPLITS}
    gates = data_gates(splits, tasks, column)
    diff = difficulty(corpus_dir, tasks, split="test")
    micro = float(diff["tfidf_logreg"]["themes"]["micro_f1"])
    gates.append(
        Gate(
            "tfidf_themes_micro_f1_on_test",
            round(micro, 3),
            TFIDF_THEMES_MICRO_F1_CEILING,
            micro <= TFIDF_THEMES_MICRO_F1_CEILING,
            "TF-IDF + logistic regression fitted on train; above the ceiling the text is templated",
        )
    )
    return CorpusChecks(gates, style_table(splits, tasks, column), diff, dict(report.counts))


def format_checks(checks: CorpusChecks, tasks: TaskSet) -> str:
    lines = ["gate                              value     limit  result"]
    for g in checks.gates:
        lines.append(
            f"{g.name:<32} {g.value:>7} {g.limit:>9}  {'pass' if g.passed else 'FAIL'}"
            f"  ({g.detail})"
        )
        for item in g.items[:5] if not g.passed else []:
            lines.append(f"    {item}")
    lines += [
        "",
        "style                 reviews (train/val/test)     items  recs/review "
        "(mean, median, max)  with finding",
    ]
    for style, e in checks.styles.items():
        r, i = e["reviews_per_split"], e["items"]
        per = "/".join(str(r.get(s, 0)) for s in SPLITS)
        rr = e["recs_per_review"]
        lines.append(
            f"{style:<21} {e['reviews']:>4} ({per:>11}) {i:>12}  "
            f"{rr['mean']:>6} {rr['median']:>6} {rr['max']:>5}  {e['with_finding']:>14}"
        )
    return "\n".join(lines)
