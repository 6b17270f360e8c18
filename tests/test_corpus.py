"""The shipped corpus passes validation and meets the label minimums; corpus tools work."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from scrclf.data.agreement import agreement
from scrclf.data.corpus import assign_splits, label_counts, near_duplicates, validate_corpus
from scrclf.data.records import DataError
from tests.helpers import ROOT, toy_rows

CORPUS = ROOT / "data" / "scr_recs"


@pytest.fixture(scope="module")
def report(tasks):
    return validate_corpus(CORPUS, tasks)


def test_shipped_corpus_size_and_shape(report):
    assert report.counts["all"] >= 6500
    assert report.reviews["all"] >= 200
    assert report.reviews["test"] >= 40 and report.reviews["validation"] >= 30
    # The published pattern: 30-60 recommendations in older reviews, with a long tail.
    assert report.recs_per_review["max"] > 100
    assert 25 <= report.recs_per_review["mean"] <= 60
    total = report.counts["all"]
    for split, share in (("train", 0.61), ("validation", 0.17), ("test", 0.22)):
        assert abs(report.counts[split] / total - share) < 0.05
    assert 0.6 <= report.finding_share <= 0.8
    assert report.lengths["min"] >= 4 and report.lengths["max"] <= 250


def test_every_label_has_enough_items(report, tasks):
    for task in tasks:
        for label in task.labels:
            assert report.labels["all"][task.name][label] >= 80, (task.name, label)
            assert report.labels["test"][task.name][label] >= 15, (task.name, label)
            assert report.labels["validation"][task.name][label] >= 5, (task.name, label)


def test_corpus_passes_its_data_gates(tasks):
    from scrclf.data.quality import data_gates
    from scrclf.data.records import read_records

    splits = {
        s: [r.data for r in read_records(CORPUS / f"{s}.jsonl")]
        for s in ("train", "validation", "test")
    }
    for gate in data_gates(splits, tasks):
        assert gate.passed, (gate.name, gate.detail, gate.items[:5])


def test_procedures_and_training_lead_and_supervision_is_rare(report):
    """The pattern the 2011 study found: most asks are procedures and training, few are
    supervision and staff support."""
    primary = {}
    from scrclf.data.records import read_records

    for s in ("train", "validation", "test"):
        for r in read_records(CORPUS / f"{s}.jsonl"):
            primary[r.data["themes"][0]] = primary.get(r.data["themes"][0], 0) + 1
    ranked = sorted(primary, key=primary.get, reverse=True)
    assert ranked[:2] == ["procedures_policy", "training_learning"]
    assert primary["supervision_support"] / sum(primary.values()) < 0.05


def test_evidence_labels_not_given_away_by_layout(report):
    for label, counts in report.evidence_by_finding.items():
        assert counts["with_finding"] > 0 and counts["without_finding"] > 0, label


def test_other_theme_stays_rare(report):
    total = report.counts["all"]
    assert report.labels["all"]["themes"]["other"] / total <= 0.05


def test_cli_validates_the_corpus():
    out = subprocess.run(
        [sys.executable, "-m", "scrclf.cli", "data", "validate", str(CORPUS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "corpus OK" in out.stdout


def _copy_corpus(tmp_path):
    for name in ("train.jsonl", "validation.jsonl", "test.jsonl", "reviews.jsonl"):
        (tmp_path / name).write_bytes((CORPUS / name).read_bytes())
    return tmp_path


def _edit_line(path, line_no, **changes):
    lines = path.read_text(encoding="utf-8").splitlines()
    row = json.loads(lines[line_no - 1])
    row.update(changes)
    lines[line_no - 1] = json.dumps(row)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.parametrize(
    "split,changes,field,match",
    [
        ("test", {"review_type": "LCSPR", "review_year": 2010}, "review_type", "does not fit"),
        ("train", {"addressee": "the council"}, "addressee", "unknown addressee"),
        ("validation", {"text": "Too short."}, "text", "words"),
        ("train", {"review_year": "2010"}, "review_year", "integer"),
    ],
)
def test_corpus_field_errors_name_file_line_and_field(
    tasks, tmp_path, split, changes, field, match
):
    corpus = _copy_corpus(tmp_path)
    _edit_line(corpus / f"{split}.jsonl", 3, **changes)
    with pytest.raises(DataError, match=match) as err:
        validate_corpus(corpus, tasks)
    assert (
        err.value.file.endswith(f"{split}.jsonl")
        and err.value.line == 3
        and err.value.field == field
    )


def test_exact_duplicate_text_is_an_error(tasks, tmp_path):
    corpus = _copy_corpus(tmp_path)
    first = json.loads((corpus / "train.jsonl").read_text(encoding="utf-8").splitlines()[0])
    _edit_line(corpus / "test.jsonl", 5, text=first["text"].upper())
    with pytest.raises(DataError, match="exact duplicate"):
        validate_corpus(corpus, tasks)


def test_review_count_mismatch_is_an_error(tasks, tmp_path):
    corpus = _copy_corpus(tmp_path)
    _edit_line(corpus / "reviews.jsonl", 2, n_recommendations=999)
    with pytest.raises(DataError, match="n_recommendations|999") as err:
        validate_corpus(corpus, tasks)
    assert err.value.line == 2


def test_near_duplicates_found_and_ranked():
    rows = [
        {
            "id": "a",
            "text": "The board should ask every agency to report on supervision each quarter.",
        },
        {
            "id": "b",
            "text": "The board should ask every agency to report on supervision each year.",
        },
        {
            "id": "c",
            "text": "Police to review the handling of missing episodes for looked-after children.",
        },
    ]
    pairs = near_duplicates(rows, threshold=0.5)
    assert [(p["a"], p["b"]) for p in pairs] == [("a", "b")]
    assert 0.5 <= pairs[0]["jaccard"] < 1.0


def test_assign_splits_keeps_fixed_reviews_where_they_were(tasks):
    rows = toy_rows(40, 15, 7, "RV")
    fixed = {"RV000": "test", "RV001": "train", "RV002": "validation"}
    assignment = assign_splits(
        rows, tasks, min_test=3, min_validation=2, seed=2, tries=200, fixed=fixed
    )
    assert {rid: assignment[rid] for rid in fixed} == fixed
    assert set(assignment.values()) == {"train", "validation", "test"}


def test_assign_splits_keeps_reviews_whole_and_meets_minimums(tasks):
    rows = toy_rows(40, 15, 7, "RV")
    assignment = assign_splits(rows, tasks, min_test=3, min_validation=2, seed=1, tries=300)
    assert set(assignment) == {r["review_id"] for r in rows}
    assert set(assignment.values()) == {"train", "validation", "test"}
    test_rows = [r for r in rows if assignment[r["review_id"]] == "test"]
    counts = label_counts(test_rows, tasks)
    assert min(counts["evidence"].values()) >= 3
    again = assign_splits(rows, tasks, min_test=3, min_validation=2, seed=1, tries=300)
    assert again == assignment


def test_agreement_on_a_hand_computed_case(tasks):
    a = {
        "1": {"themes": ["audit_assurance"], "evidence": "research", "action_strength": "weak"},
        "2": {"themes": ["other"], "evidence": "guidance", "action_strength": "weak"},
        "3": {
            "themes": ["audit_assurance", "other"],
            "evidence": "research",
            "action_strength": "strong",
        },
        "4": {"themes": ["other"], "evidence": "guidance", "action_strength": "strong"},
    }
    b = {
        "1": {"themes": ["audit_assurance"], "evidence": "research", "action_strength": "weak"},
        "2": {"themes": ["other"], "evidence": "guidance", "action_strength": "weak"},
        "3": {"themes": ["other"], "evidence": "guidance", "action_strength": "strong"},
        "4": {"themes": ["other"], "evidence": "guidance", "action_strength": "strong"},
    }
    res = agreement(a, b, tasks)
    # evidence: observed 3/4; expected (2/4*1/4 + 2/4*3/4) = 1/2 -> kappa = (0.75-0.5)/(1-0.5)
    assert res["evidence"]["kappa"] == pytest.approx(0.5)
    assert res["action_strength"]["kappa"] == pytest.approx(1.0)
    # audit_assurance: A has 2 positives, B has 1, both agree on one -> F1 = 2*1/(2+1)
    assert res["themes"]["per_label"]["audit_assurance"]["f1"] == pytest.approx(2 / 3)
    assert res["themes"]["exact_set_agreement"] == pytest.approx(0.75)


def test_double_coding_covers_fifteen_percent_and_matches_the_corpus(report, tasks):
    from scrclf.data.corpus import double_coding_agreement
    from scrclf.data.records import read_records

    path = CORPUS / "annotation" / "double_coding.jsonl"
    result = double_coding_agreement(path, tasks)
    assert result["n_items"] >= 0.15 * report.counts["all"]
    gold = {
        r.data["id"]: r.data
        for s in ("train", "validation", "test")
        for r in read_records(CORPUS / f"{s}.jsonl")
    }
    for rec in read_records(path):
        final = rec.data["adjudicated"]
        for key, value in final.items():
            assert gold[rec.data["id"]][key] == value, (rec.data["id"], key)
    for name in ("evidence", "action_strength"):
        assert -1.0 <= result[name]["kappa"] <= 1.0


def test_bag_of_words_does_not_solve_the_corpus(tasks):
    """A near-perfect TF-IDF score would mean templated items."""
    from scrclf.evaluation.difficulty import difficulty

    result = difficulty(CORPUS, tasks)
    for name in tasks.names:
        assert result["tfidf_logreg"][name]["macro_f1"] < 0.9, name
        assert result["tfidf_logreg"][name]["macro_f1"] > result["prior"][name]["macro_f1"]
    assert result["tfidf_logreg"]["themes"]["micro_f1"] <= 0.80
