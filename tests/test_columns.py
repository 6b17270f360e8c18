"""Column maps and label normalisation for files in an evaluator's own schema."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from scrclf.data.columns import ColumnMap, apply_column_map, check_columns, normalise_labels
from scrclf.data.records import Record, closest_label, validate_records
from scrclf.errors import DataError, SettingsError
from scrclf.settings import data_columns, task_set
from tests.helpers import toy_rows

EVALUATOR_COLUMNS = {
    "id": "ref",
    "review_id": "review",
    "text": "recommendation",
    "finding": "rationale",
    "themes": "theme_codes",
    "evidence": "evidence_basis",
    "action_strength": "strength",
}
SPELLING = {"none_stated": "None Stated", "local_data": "local-data", "strong": "STRONG"}


def evaluator_rows(n_reviews: int = 4, per_review: int = 9, seed: int = 5) -> list[dict]:
    """Toy recommendations renamed into an evaluator's columns and label spellings."""
    out = []
    for row in toy_rows(n_reviews, per_review, seed, "EV"):
        mapped = {EVALUATOR_COLUMNS[k]: v for k, v in row.items() if k in EVALUATOR_COLUMNS}
        mapped["theme_codes"] = ";".join(row["themes"])
        mapped["evidence_basis"] = SPELLING.get(row["evidence"], row["evidence"])
        mapped["strength"] = SPELLING.get(row["action_strength"], row["action_strength"])
        out.append(mapped)
    return out


def write_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


EVALUATOR_MAP = {
    "id": "ref",
    "text": "recommendation",
    "finding": "rationale",
    "review": "review",
    "labels": {
        "themes": "theme_codes",
        "evidence": "evidence_basis",
        "action_strength": "strength",
    },
}


def test_map_from_options_file_and_config_agree(tmp_path):
    (tmp_path / "map.yaml").write_text(
        "id: ref\ntext: recommendation\nfinding: rationale\nreview: review\n"
        "labels:\n  themes: theme_codes\n  evidence: evidence_basis\n  action_strength: strength\n"
    )
    from_file = ColumnMap.from_file(tmp_path / "map.yaml")
    from_options = ColumnMap.from_options(
        None,
        [
            "id=ref",
            "text=recommendation",
            "finding=rationale",
            "review=review",
            "themes=theme_codes",
            "evidence=evidence_basis",
            "action_strength=strength",
        ],
    )
    from_config = ColumnMap.from_config(EVALUATOR_MAP)
    assert from_file == from_options == from_config
    # options override the file
    merged = ColumnMap.from_options(
        tmp_path / "map.yaml", ["id=other"], ["evidence:NS=none_stated"]
    )
    assert merged.id == "other" and merged.text == "recommendation"
    assert merged.label_map == {"evidence": {"NS": "none_stated"}}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ColumnMap.from_options(None, ["id"]), "KEY=NAME"),
        (lambda: ColumnMap.from_options(None, [], ["evidence=x"]), "TASK:CODE=LABEL"),
        (lambda: ColumnMap.from_config({"idd": "ref"}), "unknown setting columns.idd"),
    ],
)
def test_bad_maps_are_refused(make, message):
    with pytest.raises(SettingsError, match=message):
        make()


def test_unknown_task_in_a_map_gets_a_suggestion():
    cmap = ColumnMap.from_options(None, ["theme=theme_codes"])
    with pytest.raises(SettingsError, match="did you mean 'themes'"):
        cmap.renames(data_columns(), task_set())


def test_applied_map_renames_and_labels_are_normalised():
    tasks = task_set()
    rows = evaluator_rows()
    records = [Record(dict(r), "ev.csv", i + 2) for i, r in enumerate(rows)]
    mapped = apply_column_map(records, ColumnMap.from_config(EVALUATOR_MAP), data_columns(), tasks)
    assert set(mapped[0].data) == {
        "id", "review_id", "text", "finding", "themes", "evidence", "action_strength",
    }  # fmt: skip
    notes = normalise_labels(mapped, tasks, {})
    assert any("'None Stated' as 'none_stated'" in n for n in notes)
    assert any("'STRONG' as 'strong'" in n for n in notes)
    assert validate_records(mapped, tasks, require_group=False) == tasks.names
    # the original records are untouched
    assert "ref" in records[0].data


def test_label_map_translates_codes_and_checks_targets():
    tasks = task_set()
    recs = [Record({"evidence": "NS"}, "f", 1), Record({"evidence": "res"}, "f", 2)]
    notes = normalise_labels(recs, tasks, {"evidence": {"NS": "none_stated", "RES": "research"}})
    assert [r.data["evidence"] for r in recs] == ["none_stated", "research"]
    assert notes
    with pytest.raises(SettingsError, match="did you mean 'none_stated'"):
        normalise_labels(recs, tasks, {"evidence": {"NS": "none stated!"}})


def test_unknown_label_says_did_you_mean():
    assert closest_label("None Stated", ["research", "none_stated"]) == "none_stated"
    tasks = task_set()
    rec = Record({"id": "1", "text": "Do the thing well.", "evidence": "nonestatd"}, "f.csv", 2)
    with pytest.raises(DataError, match="did you mean 'none_stated'"):
        validate_records([rec], tasks, require_labels=False, require_group=False)


def test_missing_id_column_names_the_columns_and_the_option(tmp_path):
    records = [Record({"ref": "a", "text": "x y z"}, "ev.csv", 2)]
    with pytest.raises(
        DataError, match=r"no 'id' column; the file has \['ref', 'text'\].*--column id=NAME"
    ):
        check_columns(records, data_columns(), "ev.csv")
    with pytest.raises(DataError, match="no column 'reference'"):
        apply_column_map(records, ColumnMap(id="reference"), data_columns(), task_set(), "ev.csv")


def test_map_file_in_json(tmp_path):
    path = tmp_path / "map.json"
    path.write_text(json.dumps(EVALUATOR_MAP | {"label_map": {"evidence": {"NS": "none_stated"}}}))
    cmap = ColumnMap.from_file(path)
    assert cmap.labels["evidence"] == "evidence_basis"
    assert cmap.label_map == {"evidence": {"NS": "none_stated"}}
    (tmp_path / "bad.yaml").write_text("- a\n- b\n")
    with pytest.raises(DataError, match="must hold a mapping"):
        ColumnMap.from_file(tmp_path / "bad.yaml")


def test_data_validate_a_single_file_with_a_map(tmp_path, capsys):
    from scrclf.cli.app import main

    rows = evaluator_rows()
    rows[0]["addressee"] = "childrens_social_care"  # corpus-only fields are not checked
    for row in rows:
        if row["strength"] == "STRONG":
            row["strength"] = "intermediate"
    data = write_csv(tmp_path / "mine.csv", rows)
    assert main(["data", "validate", str(data)]) == 2
    assert "no 'id' column" in capsys.readouterr().err
    argv = ["data", "validate", str(data), "--column", "id=ref", "--column", "text=recommendation"]
    argv += ["--column", "review=review", "--column", "evidence=evidence_basis"]
    argv += ["--column", "action_strength=strength", "--column", "themes=theme_codes"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"{data}: 36 items from 4 reviews" in out
    assert "'None Stated' as 'none_stated'" in out
    assert "no item labelled strong (action_strength)" in out
    assert "fewer than 10 reviews" in out
    assert out.rstrip().endswith("file OK (with the warnings above)")
    assert main([*argv, "--strict"]) == 1
    capsys.readouterr()
    rows[3]["evidence_basis"] = "Nun Stated"
    write_csv(data, rows)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{data}:5: field 'evidence': unknown label 'Nun Stated'" in err
    assert "did you mean 'none_stated'" in err


def test_corpus_validation_warns_on_labels_missing_from_a_split(tmp_path, capsys):
    import shutil

    from scrclf.cli.app import main

    corpus = tmp_path / "corpus"
    shutil.copytree(Path(__file__).resolve().parents[1] / "data" / "scr_recs", corpus)
    test = [json.loads(line) for line in (corpus / "test.jsonl").read_text().splitlines()]
    for row in test:
        if row["action_strength"] == "strong":
            row["action_strength"] = "intermediate"
    (corpus / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
    assert main(["data", "validate", str(corpus)]) == 0
    out = capsys.readouterr().out
    assert "split 'test' has no item labelled strong (action_strength)" in out
    assert out.rstrip().endswith("corpus OK (with the warnings above)")


# ------------------------------------------------------------------ model as a coder


def test_predictions_as_a_coder_beside_the_humans(tmp_path, capsys):
    from scrclf.cli.app import main
    from scrclf.data.agreement import agreement
    from scrclf.evaluation.human_agreement import read_double_coding

    root = Path(__file__).resolve().parents[1] / "data" / "scr_recs"
    lines = (root / "annotation" / "double_coding.jsonl").read_text().splitlines()[:120]
    double = tmp_path / "double.jsonl"
    double.write_text("\n".join(lines) + "\n")
    tasks = task_set()
    coders = read_double_coding(double)
    # a "model" that codes exactly as coder B, written as `scrclf predict` JSONL
    preds = tmp_path / "preds.jsonl"
    with preds.open("w") as fh:
        for item, labels in coders["coder_b"].items():
            row = {"id": item, "review": item.split("-")[0], "line": 1, "text": "x"}
            row["themes"] = {"labels": labels["themes"], "primary": labels["themes"][0]}
            row["evidence"] = {"label": labels["evidence"]}
            row["action_strength"] = {"label": labels["action_strength"]}
            fh.write(json.dumps(row) + "\n")
    argv = ["data", "agreement", str(double), "--predictions", str(preds), "--json"]
    assert main([*argv, "--resamples", "200"]) == 0
    result = json.loads(capsys.readouterr().out)
    pairs = {tuple(p["coders"]): p["tasks"] for p in result["pairs"]}
    assert list(pairs) == [
        ("coder_a", "coder_b"), ("model", "coder_a"), ("model", "coder_b"), ("model", "adjudicated"),
    ]  # fmt: skip
    humans = agreement(coders["coder_a"], coders["coder_b"], tasks)
    assert pairs[("coder_a", "coder_b")]["evidence"]["kappa"]["value"] == pytest.approx(
        humans["evidence"]["kappa"]
    )
    assert pairs[("coder_a", "coder_b")]["themes"]["primary_kappa"]["value"] == pytest.approx(
        humans["themes"]["primary_kappa"]
    )
    assert pairs[("coder_a", "coder_b")]["themes"]["mean_label_kappa"]["value"] == pytest.approx(
        humans["themes"]["mean_label_kappa"]
    )
    assert pairs[("coder_a", "coder_b")]["themes"]["micro_f1"]["value"] == pytest.approx(
        humans["themes"]["micro_f1"]
    )
    assert pairs[("model", "coder_b")]["themes"]["micro_f1"]["value"] == pytest.approx(1)
    assert pairs[("model", "coder_b")]["action_strength"]["kappa"]["value"] == pytest.approx(1)
    model_a = pairs[("model", "coder_a")]["action_strength"]["kappa"]
    assert model_a["value"] == pytest.approx(humans["action_strength"]["kappa"])
    lo, hi = model_a["interval"]
    assert lo < model_a["value"] < hi  # reviews resampled: a real interval
    assert result["n_reviews"] == len({i.split("-")[0] for i in coders["coder_b"]})
    # the readable table
    assert main([*argv[:-1], "--resamples", "50"]) == 0
    table = capsys.readouterr().out
    assert "| model vs coder A |" in table and "| coder A vs coder B (human) |" in table
    assert "themes micro-F1 [95% CI]" in table


def test_micro_f1_of_label_sets_under_resample_weights():
    from scrclf.evaluation.human_agreement import micro_f1_replicates

    first = [["a", "b"], ["c"], ["d"]]
    second = [["a"], ["e"], ["d"]]
    weights = np.array([[1, 1, 1], [2, 1, 0], [0, 1, 0]], dtype=float)
    # both coders gave 1, 0, 1 labels; either gave 3, 2, 2
    assert micro_f1_replicates(first, second, weights) == pytest.approx([2 * 2 / 7, 2 * 2 / 8, 0.0])
    assert micro_f1_replicates(first, first, weights) == pytest.approx([1, 1, 1])


def test_tsv_files_are_read_like_csv(tmp_path):
    from scrclf.data.records import read_records

    rows = evaluator_rows(1, 3, 4)
    path = tmp_path / "mine.tsv"
    path.write_text(
        "ref\trecommendation\tstrength\n"
        + "".join(f"{r['ref']}\t{r['recommendation']}\t{r['strength']}\n" for r in rows)
    )
    records = read_records(path)
    assert [r.data["ref"] for r in records] == [r["ref"] for r in rows]
    assert [r.line for r in records] == [2, 3, 4]


def test_small_reliability_bins_are_marked():
    from scrclf.reporting.markdown import _reliability_rows

    bins = [
        {"lower": 0.0, "upper": 0.5, "count": 3, "confidence": 0.3, "accuracy": 0.0},
        {"lower": 0.5, "upper": 1.0, "count": 40, "confidence": 0.8, "accuracy": 0.75},
    ]
    rows = _reliability_rows({"stored": bins})
    assert rows[0][1] == "3 *" and rows[1][1] == 40
