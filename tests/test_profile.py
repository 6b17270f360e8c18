"""The domain profile on a constructed set whose shares are known."""

from __future__ import annotations

import json

import pytest

from scrclf.evaluation.domain_profile import infer_tasks, profile, write_profile
from scrclf.reporting.markdown import render_profile
from scrclf.tasks import TaskSet
from tests.helpers import write_jsonl

TASKS = TaskSet.from_config(
    [
        {
            "name": "themes",
            "type": "multi_label",
            "labels": ["procedures_policy", "training_learning", "supervision_support"],
        },
        {
            "name": "evidence",
            "type": "single_label",
            "labels": ["research", "single_case", "none_stated"],
        },
    ]
)

# Three reviews with 1, 2 and 5 recommendations.
ROWS = [
    {
        "id": "1",
        "review_id": "A",
        "text": "t",
        "themes": ["procedures_policy"],
        "evidence": "single_case",
    },
    {
        "id": "2",
        "review_id": "B",
        "text": "t",
        "themes": ["training_learning", "procedures_policy"],
        "evidence": "none_stated",
    },
    {
        "id": "3",
        "review_id": "B",
        "text": "t",
        "themes": ["procedures_policy"],
        "evidence": "none_stated",
    },
    {
        "id": "4",
        "review_id": "C",
        "text": "t",
        "themes": ["procedures_policy", "training_learning"],
        "evidence": "single_case",
    },
    {
        "id": "5",
        "review_id": "C",
        "text": "t",
        "themes": ["training_learning"],
        "evidence": "none_stated",
    },
    {
        "id": "6",
        "review_id": "C",
        "text": "t",
        "themes": ["supervision_support"],
        "evidence": "research",
    },
    {
        "id": "7",
        "review_id": "C",
        "text": "t",
        "themes": ["procedures_policy"],
        "evidence": "none_stated",
    },
    {
        "id": "8",
        "review_id": "C",
        "text": "t",
        "themes": ["training_learning"],
        "evidence": "single_case",
    },
]
# Predictions: one as Classifier.predict gives them, the rest as plain labels.
PREDICTIONS = [
    {
        "themes": {"labels": ["procedures_policy"], "primary": "procedures_policy", "scores": {}},
        "evidence": {"label": "single_case", "scores": {}},
    },
    *[{"themes": ["procedures_policy"], "evidence": "none_stated"} for _ in range(7)],
]


def test_recommendations_per_review():
    per = profile(ROWS, tasks=TASKS)["per_review"]
    assert per["n_reviews"] == 3
    assert per["mean"] == pytest.approx(8 / 3)
    assert per["median"] == 2.0 and per["min"] == 1 and per["max"] == 5
    assert per["histogram"][0] == {"bin": "1-5", "reviews": 3}
    assert sum(h["reviews"] for h in per["histogram"]) == 3
    assert per["largest_reviews"][0] == {"review_id": "C", "recommendations": 5}


def test_theme_shares_primary_and_any_position():
    themes = profile(ROWS, tasks=TASKS)["tasks"]["themes"]["annotated"]
    assert themes["n"] == 8
    # primary: procedures 4 (items 1, 3, 4, 7), training 3 (2, 5, 8), supervision 1
    assert themes["primary"] == {
        "procedures_policy": 0.5,
        "training_learning": 3 / 8,
        "supervision_support": 1 / 8,
    }
    # any position: procedures 5 (adds item 2), training 4 (adds item 4), supervision 1
    assert themes["any"] == {
        "procedures_policy": 5 / 8,
        "training_learning": 0.5,
        "supervision_support": 1 / 8,
    }
    assert themes["labels_per_item"] == pytest.approx(10 / 8)


def test_single_label_shares_and_predicted_beside_annotated():
    result = profile(ROWS, PREDICTIONS, tasks=TASKS)
    evidence = result["tasks"]["evidence"]
    assert evidence["annotated"]["share"] == {
        "research": 1 / 8,
        "single_case": 3 / 8,
        "none_stated": 0.5,
    }
    assert evidence["predicted"]["share"] == {
        "research": 0.0,
        "single_case": 1 / 8,
        "none_stated": 7 / 8,
    }
    assert result["tasks"]["themes"]["predicted"]["primary"]["procedures_policy"] == 1.0
    assert result["sources"] == ["annotated", "predicted"]


def test_profile_without_labels_or_tasks():
    plain = [{"id": r["id"], "review_id": r["review_id"], "text": "t"} for r in ROWS]
    result = profile(plain)
    assert result["tasks"] == {} and result["per_review"]["n_reviews"] == 3
    # Labels only in predictions: shown as predicted.
    only_predicted = profile(plain, PREDICTIONS, tasks=TASKS)
    assert only_predicted["sources"] == ["predicted"]
    assert "annotated" not in only_predicted["tasks"]["evidence"]
    with pytest.raises(ValueError, match="8 records"):
        profile(plain, PREDICTIONS[:3], tasks=TASKS)


def test_tasks_inferred_from_the_codebook_columns():
    inferred = infer_tasks(ROWS)
    assert inferred.names == ["themes", "evidence"]
    assert inferred["themes"].is_multi_label
    assert inferred["themes"].labels[0] == "procedures_policy"  # most frequent first
    result = profile(ROWS)
    assert result["tasks"]["evidence"]["annotated"]["share"]["none_stated"] == 0.5


def test_unknown_labels_are_flagged():
    rows = [dict(ROWS[0], evidence="hearsay")]
    result = profile(rows, tasks=TASKS)
    assert result["tasks"]["evidence"]["annotated"]["unknown_labels"] == ["hearsay"]


def test_written_profile_has_tables_and_chart(tmp_path):
    result = profile(ROWS, PREDICTIONS, tasks=TASKS)
    write_profile(result, tmp_path)
    assert json.loads((tmp_path / "profile.json").read_text()) == result
    assert (tmp_path / "profile.png").read_bytes()[:4] == b"\x89PNG"
    md = (tmp_path / "profile.md").read_text()
    assert md == render_profile(result, chart="profile.png")
    assert "| procedures_policy | 50.0% | 62.5% | 100.0% | 100.0% |" in md
    assert "| none_stated | 50.0% | 87.5% |" in md
    assert "931 recommendations in 20 reviews" in md


def test_cli_profile(tmp_path, capsys):
    from scrclf.cli import app as cli

    path = write_jsonl(tmp_path / "recs.jsonl", ROWS)
    assert cli.main(["profile", "--file", str(path)]) == 0
    out = capsys.readouterr().out
    assert "# Profile of the recommendations" in out and "8 recommendations from 3" in out
    folder = tmp_path / "profile_out"
    assert cli.main(["profile", "--file", str(path), "--out", str(folder)]) == 0
    assert {p.name for p in folder.iterdir()} == {"profile.json", "profile.md", "profile.png"}

    bad = write_jsonl(
        tmp_path / "bad.jsonl",
        [ROWS[0], {"id": "2", "review_id": "B", "themes": ["training_learning"]}],
    )
    assert cli.main(["profile", "--file", str(bad)]) == 2
    assert "bad.jsonl:2: field 'text'" in capsys.readouterr().err


def test_cli_profile_with_a_model(toy_corpus, tiny_run, capsys):
    from scrclf.cli import app as cli

    assert (
        cli.main(["profile", "--file", str(toy_corpus / "test.jsonl"), "--model", str(tiny_run)])
        == 0
    )
    out = capsys.readouterr().out
    assert "primary (annotated)" in out and "primary (predicted)" in out
