"""An evaluator's own file: column maps through the commands, per-item predictions, the
worst errors, and warnings on small samples."""

from __future__ import annotations

import csv
import json

from scrclf.cli.app import main
from tests.test_columns import EVALUATOR_MAP, evaluator_rows, write_csv

MAP_OPTIONS = [
    "--column", "id=ref", "--column", "text=recommendation", "--column", "finding=rationale",
    "--column", "review=review", "--column", "themes=theme_codes",
    "--column", "evidence=evidence_basis", "--column", "action_strength=strength",
]  # fmt: skip


def test_evaluate_an_evaluators_file(tiny_run, tmp_path, capsys, no_network):
    rows = evaluator_rows()  # 36 recommendations from four reviews
    data = write_csv(tmp_path / "mine.csv", rows)
    assert main(["evaluate", "--model", str(tiny_run), "--file", str(data)]) == 2
    assert "no 'id' column" in capsys.readouterr().err

    out = tmp_path / "report"
    argv = ["evaluate", "--model", str(tiny_run), "--file", str(data), "--out", str(out)]
    assert main([*argv, "--resamples", "50", "--no-plots", *MAP_OPTIONS]) == 0
    err = capsys.readouterr().err
    assert "fewer than 10" in err and "'None Stated' as 'none_stated'" in err

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["bootstrap"]["warning"].startswith("intervals rest on 4 reviews")
    with open(out / "predictions.csv", newline="", encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    assert [r["id"] for r in table] == [r["ref"] for r in rows]
    assert [r["review"] for r in table] == [r["review"] for r in rows]
    assert [r["text"] for r in table] == [r["recommendation"] for r in rows]
    items = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    for item, row in zip(items, table, strict=True):
        ev = item["evidence"]
        assert ev["correct"] == (ev["gold"] == ev["predicted"])
        assert row["evidence_correct"] == str(ev["correct"])
        assert abs(sum(ev["scores"].values()) - 1) < 1e-6
        th = item["themes"]
        assert th["correct"] == (set(th["gold"]) == set(th["predicted"]))
        assert (th["error_confidence"] is None) == th["correct"]
    # the worst errors are the wrong items the model was surest of, surest first
    errors = (out / "errors.md").read_text()
    wrong = sorted(
        (it for it in items if not it["evidence"]["correct"]),
        key=lambda it: -it["evidence"]["error_confidence"],
    )
    n_wrong = len(wrong)
    assert f"## evidence: {n_wrong} of {len(items)} items wrong" in errors
    if wrong:
        section = errors.split("## evidence")[1].split("## ")[0]
        assert f"{wrong[0]['evidence']['error_confidence']:.3f} | {wrong[0]['id']} |" in section
    report = (out / "report.md").read_text()
    assert "predictions.csv" in report and "fewer than 10" in report


def test_map_file_works_for_profile_and_evaluate(tiny_run, tmp_path, capsys, no_network):
    data = write_csv(tmp_path / "mine.csv", evaluator_rows())
    cmap = tmp_path / "columns.json"
    cmap.write_text(json.dumps(EVALUATOR_MAP))
    assert main(["profile", "--file", str(data), "--columns", str(cmap)]) == 0
    printed = capsys.readouterr().out
    assert "none_stated" in printed and "None Stated" not in printed
    out = tmp_path / "r"
    argv = ["evaluate", "--model", str(tiny_run), "--file", str(data), "--columns", str(cmap)]
    assert main([*argv, "--out", str(out), "--resamples", "20", "--no-plots"]) == 0
    assert (out / "errors.md").is_file()


# ----------------------------------------------------------------------------- predict


def _predict(capsys, model, *argv):
    code = main(["predict", "--model", str(model), "--no-progress", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_predict_with_a_column_map_keeps_id_review_and_text(tiny_export, tmp_path, capsys):
    rows = evaluator_rows(1, 3, 2)
    data = write_csv(tmp_path / "mine.csv", rows)
    code, out, err = _predict(capsys, tiny_export.export_dir, "--input", str(data))
    assert code == 2 and "no 'text' column" in err and "--column text=NAME" in err
    code, out, err = _predict(
        capsys, tiny_export.export_dir, "--input", str(data), *MAP_OPTIONS[:8]
    )
    assert code == 0, err
    got = [json.loads(line) for line in out.splitlines()]
    assert [(g["id"], g["review"], g["text"]) for g in got] == [
        (r["ref"], r["review"], r["recommendation"]) for r in rows
    ]
    # the same rows as TSV, written as CSV
    tsv = tmp_path / "mine.tsv"
    tsv.write_text(
        "ref\treview\trecommendation\n"
        + "".join(f"{r['ref']}\t{r['review']}\t{r['recommendation']}\n" for r in rows)
    )
    code, out, err = _predict(
        capsys, tiny_export.export_dir, "--input", str(tsv), "--output-format", "csv",
        "--column", "id=ref", "--column", "review=review", "--column", "text=recommendation",
    )  # fmt: skip
    assert code == 0, err
    table = list(csv.DictReader(out.splitlines()))
    assert [(t["id"], t["review"], t["text"]) for t in table] == [
        (g["id"], g["review"], g["text"]) for g in got
    ]


def test_predict_refuses_headers_unknown_formats_and_empty_input(
    tiny_export, tmp_path, capsys, monkeypatch
):
    import io
    import sys

    model = tiny_export.export_dir
    monkeypatch.setattr(sys, "stdin", io.StringIO("id,text\n1,Train the staff well.\n"))
    code, out, err = _predict(capsys, model)
    assert code == 2 and out == ""
    assert "<stdin>:1: the first line looks like a CSV header" in err and "--format csv" in err
    monkeypatch.setattr(sys, "stdin", io.StringIO("id,text\n1,Train the staff well.\n"))
    code, out, err = _predict(capsys, model, "--format", "csv")
    assert code == 0 and json.loads(out)["id"] == "1"

    odd = tmp_path / "recs.dat"
    odd.write_text("Train the staff well.\n")
    code, _, err = _predict(capsys, model, "--input", str(odd))
    assert code == 2 and "unknown input format (suffix '.dat')" in err
    assert _predict(capsys, model, "--input", str(odd), "--format", "lines")[0] == 0

    text_with_header = tmp_path / "recs.txt"
    text_with_header.write_text("text\nTrain the staff well.\n")
    code, _, err = _predict(capsys, model, "--input", str(text_with_header))
    assert code == 2 and "looks like a CSV header" in err

    for name, content in (("empty.txt", ""), ("blank.jsonl", "\n\n"), ("header.csv", "id,text\n")):
        (tmp_path / name).write_text(content)
        code, _, err = _predict(capsys, model, "--input", str(tmp_path / name))
        assert code == 2 and "no recommendations in the input" in err, name
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, _, err = _predict(capsys, model)
    assert code == 2 and "<stdin>: no recommendations" in err


# ------------------------------------------------------------------ evaluate metric


def test_the_evaluate_metric_module_scores_the_project_way(tiny_run, toy_corpus, no_network):
    import evaluate
    import numpy as np
    import pytest

    import scrclf
    from scrclf.evaluation.evaluate import load_eval_data, score
    from scrclf.evaluation.metrics import compute_metrics, flatten
    from scrclf.inference.classifier import read_tasks

    model_dir = tiny_run / "model"
    clf = scrclf.load(model_dir)
    tasks = clf.tasks
    data = load_eval_data(toy_corpus / "test.jsonl", tasks)
    logits = dict(zip(tasks.names, clf.logits(data.texts, data.findings), strict=True))
    predictions = [
        {n: np.asarray(logits[n][i]).tolist() for n in tasks.names} for i in range(len(data.rows))
    ]
    references = [{t.name: row[t.column] for t in tasks} for row in data.rows]

    metric = evaluate.load(scrclf.metric_path())
    got = metric.compute(predictions=predictions, references=references, model=str(tiny_run))
    internal, _ = score(read_tasks(model_dir)[1], logits, data, detailed=False)
    assert got["mean_macro_f1"] == pytest.approx(internal["mean_macro_f1"], abs=1e-12)
    for key, value in flatten(internal).items():
        assert got[key] == pytest.approx(value, abs=1e-9), key

    # without a model: the codebook at temperature 1 and threshold 0.5
    plain = metric.compute(predictions=predictions, references=references)
    from scrclf.evaluation.evaluate import default_decisions

    expected = flatten(
        compute_metrics(
            default_decisions(read_tasks(model_dir)[1]),
            [np.asarray(logits[n]) for n in tasks.names],
            [data.targets(tasks)[n] for n in tasks.names],
        )
    )
    assert plain == pytest.approx(expected)


def test_the_metric_module_is_package_data():
    import fnmatch
    from pathlib import Path

    import tomllib

    import scrclf

    root = Path(__file__).resolve().parents[1]
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = config["package-data"]["scrclf.evaluation"]
    script = Path(scrclf.metric_path()) / "scrclf_multitask.py"
    assert script.is_file()
    relative = script.relative_to(root / "src" / "scrclf" / "evaluation").as_posix()
    assert any(fnmatch.fnmatch(relative, p) for p in patterns)
    assert "scrclf.evaluation" in config["packages"]
