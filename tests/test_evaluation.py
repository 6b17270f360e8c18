"""Evaluation of a tiny trained model: report folder, stored decisions, bootstrap, CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from scrclf.data.records import DataError
from scrclf.evaluation import evaluate as evaluation
from scrclf.evaluation.bootstrap import ClusterBootstrap, cluster_ids, interval, replicates
from tests.helpers import ROOT, compose_train, run_script, toy_rows, write_jsonl

FAST = {"resamples": 200, "plots": False}


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# -------------------------------------------------------------------------- bootstrap


def test_bootstrap_is_deterministic_under_a_seed():
    clusters, _ = cluster_ids(["a", "a", "b", "c", "c", "c", "d"])
    one = ClusterBootstrap(clusters, resamples=50, seed=3).weights()
    two = ClusterBootstrap(clusters, resamples=50, seed=3).weights()
    other = ClusterBootstrap(clusters, resamples=50, seed=4).weights()
    np.testing.assert_array_equal(one, two)
    assert not np.array_equal(one, other)
    # chunked expansion gives the same matrix
    boot = ClusterBootstrap(clusters, resamples=50, seed=3)
    np.testing.assert_array_equal(np.concatenate(list(boot.chunks(size=7))), one)


def test_bootstrap_draws_whole_reviews():
    groups = ["r1"] * 3 + ["r2"] * 5 + ["r3"] * 2 + [None]
    clusters, missing = cluster_ids(groups)
    assert missing == 1 and clusters.max() + 1 == 4  # the item without review: own cluster
    boot = ClusterBootstrap(clusters, resamples=300, seed=0)
    w = boot.weights()
    # every item of one review has the same weight in every resample
    for members in (slice(0, 3), slice(3, 8), slice(8, 10)):
        assert (w[:, members] == w[:, members][:, :1]).all()
    # each resample draws as many reviews as there are
    np.testing.assert_array_equal(boot.cluster_counts().sum(axis=1), np.full(300, 4))


def test_identical_items_of_a_review_move_together():
    """Three reviews of ten identical items: two all right, one all wrong.

    A cluster bootstrap can only produce accuracies k/3; an item bootstrap would give
    almost every multiple of 1/30.
    """
    groups = np.repeat(["A", "B", "C"], 10)
    y = np.zeros(30, dtype=int)
    pred = np.where(groups == "C", 1, 0)
    boot = ClusterBootstrap.from_groups(list(groups), resamples=1000, seed=1)
    reps = replicates(boot, False, y, pred, 2)
    assert set(np.round(reps["accuracy"], 6)) <= {0.0, round(1 / 3, 6), round(2 / 3, 6), 1.0}
    low, high = interval(reps["accuracy"])
    assert low <= 1 / 3 and high == 1.0  # wide: only three independent units


def test_subset_bootstrap_keeps_reviews_together():
    boot = ClusterBootstrap.from_groups(["a", "b", "a", "c", "b"], resamples=20, seed=0)
    sub = boot.subset(np.array([0, 2, 4]))
    w = sub.weights()
    assert sub.n_clusters == 2 and (w[:, 0] == w[:, 1]).all()


# ------------------------------------------------------------------------- evaluation


def test_evaluate_a_run_writes_a_complete_report(tiny_run, tmp_path, no_network):
    out = tmp_path / "report"
    result = evaluation.evaluate(tiny_run, out_dir=out, resamples=200, profile=True)
    names = {p.name for p in out.iterdir()}
    assert {"metrics.json", "report.md", "profile"} <= names
    for task in ("themes", "evidence", "action_strength"):
        assert {
            f"confusion_{task}.png",
            f"reliability_{task}.png",
            f"per_label_f1_{task}.png",
        } <= names
    assert (out / "confusion_themes.png").read_bytes()[:4] == b"\x89PNG"
    assert {p.name for p in (out / "profile").iterdir()} == {
        "profile.json",
        "profile.md",
        "profile.png",
    }
    assert json.loads((out / "metrics.json").read_text()) == result
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left

    assert result["data"]["name"] == "test" and result["data"]["n_reviews"] == 4
    stored = result["decisions"]["calibrated"]["metrics"]
    themes = stored["themes"]
    for key in ("micro_f1", "macro_f1", "weighted_f1", "subset_accuracy", "hamming_loss"):
        low, high = themes["intervals"][key]
        assert low <= themes[key] + 1e-9 and themes[key] <= high + 1e-9
    assert set(themes["per_label"]["other"]) >= {
        "precision",
        "recall",
        "f1",
        "support",
        "f1_interval",
    }
    assert "accuracy" in stored["evidence"]["intervals"]
    assert len(stored["evidence"]["confusion"]) == 5
    assert len(stored["themes"]["reliability"]) == 10
    low, high = stored["mean_macro_f1_interval"]
    assert low <= stored["mean_macro_f1"] <= high

    report = (out / "report.md").read_text()
    assert "## Headline" in report and "| procedures_policy |" in report
    assert "![themes confusion](confusion_themes.png)" in report


def test_stored_decisions_are_applied_exactly(tiny_run, no_network):
    """The scores at stored and default decisions equal those training wrote for test."""
    result = evaluation.evaluate(tiny_run, **FAST)
    trained = json.loads((tiny_run / "metrics.json").read_text())
    stored = result["decisions"]["calibrated"]["metrics"]
    default = result["decisions"]["default"]["metrics"]
    for task in ("themes", "evidence", "action_strength"):
        for key in ("macro_f1", "micro_f1", "ece"):
            assert stored[task][key] == pytest.approx(trained["test"][task][key], abs=1e-6)
            assert default[task][key] == pytest.approx(
                trained["at_default_decisions"]["test"][task][key], abs=1e-6
            )
    config = json.loads((tiny_run / "model" / "config.json").read_text())
    themes_cfg = next(t for t in config["tasks"] if t["name"] == "themes")
    summary = next(t for t in result["decisions"]["calibrated"]["tasks"] if t["name"] == "themes")
    assert list(summary["thresholds"].values()) == themes_cfg["thresholds"]
    assert summary["temperature"] == themes_cfg["temperature"]


def test_run_model_folder_and_bare_model_folder(tiny_run, toy_corpus, tmp_path):
    inner = evaluation.resolve_model(tiny_run / "model")
    assert inner.kind == "run-model" and inner.name == tiny_run.name
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(tiny_run / "model", bare)
    with pytest.raises(DataError, match="give file=PATH"):
        evaluation.evaluate(bare, **FAST)
    result = evaluation.evaluate(bare, toy_corpus / "test.jsonl", **FAST)
    assert result["model"]["kind"] == "model" and result["data"]["n_items"] == 60

    # An export folder carries the run's config as training_config.yaml: splits resolve.
    exported = tmp_path / "exported"
    shutil.copytree(tiny_run / "model", exported)
    shutil.copy(tiny_run / "config.yaml", exported / "training_config.yaml")
    result = evaluation.evaluate(exported, split="validation", **FAST)
    assert result["model"]["kind"] == "export"
    assert result["data"]["file"] == str(toy_corpus / "validation.jsonl")


def test_a_missing_task_column_is_skipped_with_a_note(tiny_run, toy_corpus, tmp_path):
    rows = _rows(toy_corpus / "test.jsonl")
    for row in rows:
        del row["evidence"]
    path = write_jsonl(tmp_path / "no_evidence.jsonl", rows)
    result = evaluation.evaluate(tiny_run, path, **FAST)
    assert result["data"]["tasks"] == ["themes", "action_strength"]
    assert any("evidence" in note for note in result["data"]["notes"])
    metrics = result["decisions"]["calibrated"]["metrics"]
    assert "evidence" not in metrics
    assert metrics["mean_macro_f1"] == pytest.approx(
        (metrics["themes"]["macro_f1"] + metrics["action_strength"]["macro_f1"]) / 2
    )


def test_a_bad_row_names_file_line_and_field(tiny_run, toy_corpus, tmp_path):
    rows = _rows(toy_corpus / "test.jsonl")[:5]
    rows[2]["evidence"] = "resarch"
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    out = tmp_path / "report"
    with pytest.raises(DataError) as err:
        evaluation.evaluate(tiny_run, path, out, **FAST)
    assert (err.value.line, err.value.field) == (3, "evidence")
    assert "did you mean 'research'" in str(err.value)
    assert not out.exists()


def test_unlabelled_data_cannot_be_evaluated(tiny_run, toy_corpus, tmp_path):
    rows = [
        {"id": r["id"], "review_id": r["review_id"], "text": r["text"]}
        for r in _rows(toy_corpus / "test.jsonl")[:4]
    ]
    path = write_jsonl(tmp_path / "plain.jsonl", rows)
    with pytest.raises(DataError, match="no label column"):
        evaluation.evaluate(tiny_run, path, **FAST)


def test_recalibration_reports_changes_and_never_fits_on_the_evaluated_data(
    tiny_run, toy_corpus, tmp_path
):
    test_file = toy_corpus / "test.jsonl"
    with pytest.raises(DataError, match="never tuned on the data they are scored on"):
        evaluation.evaluate(
            tiny_run, test_file, recalibrate=True, validation_file=test_file, **FAST
        )
    overlapping = write_jsonl(tmp_path / "overlap.jsonl", _rows(test_file)[:20])
    with pytest.raises(DataError, match="shares 2 reviews"):
        evaluation.evaluate(
            tiny_run, test_file, recalibrate=True, validation_file=overlapping, **FAST
        )
    # Re-fitting on the validation split the model was calibrated on changes nothing.
    same = evaluation.evaluate(tiny_run, recalibrate=True, **FAST)
    changes = same["recalibration"]["changes"]
    assert changes["evidence"]["temperature"]["stored"] == pytest.approx(
        changes["evidence"]["temperature"]["refit"]
    )
    assert same["recalibration"]["delta"]["mean_macro_f1"] == pytest.approx(0.0)
    # A different held-out file gives new settings, reported beside the stored ones.
    other = write_jsonl(tmp_path / "other_validation.jsonl", toy_rows(5, 12, 99, "OV"))
    result = evaluation.evaluate(tiny_run, recalibrate=True, validation_file=other, **FAST)
    change = result["recalibration"]["changes"]["themes"]
    assert change["refit"] and set(change["thresholds"]) >= {"procedures_policy", "other"}
    assert "recalibrated" in result["decisions"]
    assert result["recalibration"]["validation"]["n_items"] == 60


def test_a_failure_mid_report_leaves_nothing(tiny_run, tmp_path, monkeypatch):
    from scrclf.reporting import plots

    def broken(*args, **kwargs):
        raise RuntimeError("disk trouble while drawing")

    out = tmp_path / "report"
    monkeypatch.setattr(plots, "per_label_f1_chart", broken)
    with pytest.raises(RuntimeError, match="disk trouble"):
        evaluation.evaluate(tiny_run, out_dir=out, resamples=50)
    assert list(tmp_path.iterdir()) == []

    # An earlier report at the destination survives a failed rewrite.
    monkeypatch.undo()
    evaluation.evaluate(tiny_run, out_dir=out, resamples=50, plots=False)
    before = (out / "metrics.json").read_bytes()
    monkeypatch.setattr(plots, "per_label_f1_chart", broken)
    with pytest.raises(RuntimeError):
        evaluation.evaluate(tiny_run, out_dir=out, resamples=50)
    assert (out / "metrics.json").read_bytes() == before
    assert not (out / "confusion_themes.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


# --------------------------------------------------------------------- configs and CLI


def test_evaluate_config_runs_through_hydra_compose(tiny_run, toy_corpus, tmp_path):
    cfg = compose_train(
        [
            f"model_path={tiny_run}",
            f"file={toy_corpus / 'validation.jsonl'}",
            f"report_dir={tmp_path / 'r'}",
            "plots=false",
            "bootstrap.resamples=50",
        ],
        config_name="evaluate",
    )
    out = evaluation.evaluate_from_config(cfg)
    result = json.loads((out / "metrics.json").read_text())
    assert result["data"]["name"] == "validation" and result["bootstrap"]["resamples"] == 50


def test_cli_evaluate_and_its_errors(tiny_run, toy_corpus, tmp_path, capsys):
    from scrclf.cli import app as cli

    out = tmp_path / "cli_report"
    code = cli.main(
        [
            "evaluate",
            "--model",
            str(tiny_run),
            "--file",
            str(toy_corpus / "test.jsonl"),
            "--out",
            str(out),
            "--resamples",
            "50",
            "--no-plots",
        ]
    )
    assert code == 0 and (out / "report.md").is_file()
    assert "mean_macro_f1: calibrated" in capsys.readouterr().out

    bad = write_jsonl(
        tmp_path / "bad.jsonl", [{"id": "x1", "review_id": "R", "text": "", "themes": ["other"]}]
    )
    code = cli.main(["evaluate", "--model", str(tiny_run), "--file", str(bad)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("scrclf: error: ") and "bad.jsonl:1: field 'text'" in err
    assert "Traceback" not in err
    # The handler raises scrclf's own error rather than exiting.
    parser = cli.build_parser()
    args = parser.parse_args(["evaluate", "--model", str(tiny_run), "--file", str(bad)])
    with pytest.raises(DataError):
        args.func(args)


def test_evaluate_script_accepts_model_equals_path(tiny_run, tmp_path):
    out = tmp_path / "script_report"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    done = run_script(
        "scripts/evaluate.py",
        f"model={tiny_run}",
        "split=validation",
        f"report_dir={out}",
        "plots=false",
        "bootstrap.resamples=50",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"report written to {out}" in done.stdout
    assert json.loads((out / "metrics.json").read_text())["data"]["name"] == "validation"


def test_evaluate_settings_hold_the_yaml_defaults_and_name_faults():
    import re

    from omegaconf import OmegaConf

    from scrclf.errors import SettingsError
    from scrclf.settings import EvaluateSettings, data_columns

    def settings(*overrides):
        cfg = compose_train(["model_path=m", *overrides], config_name="evaluate")
        return EvaluateSettings.from_config(OmegaConf.to_container(cfg, resolve=True))

    shipped = OmegaConf.load(ROOT / "configs" / "evaluate.yaml")
    got = settings()
    assert got.split == shipped.split == EvaluateSettings.default_split()
    assert (got.backend, got.batch_size, got.plots) == (
        shipped.backend,
        shipped.batch_size,
        shipped.plots,
    )
    assert got.bootstrap.resamples == shipped.bootstrap.resamples
    corpus = OmegaConf.load(ROOT / "configs" / "data" / "scr_recs.yaml")
    assert evaluation.data_settings(None) == {k: corpus[k] for k in data_columns()}
    for overrides, message in [
        (["bootstrap.resamples=none"], "evaluate.bootstrap.resamples must be int"),
        (["batch_size=0"], "evaluate.batch_size must be at least 1"),
        (["backend=gpu"], "evaluate.backend must be one of"),
        (["+colour=red"], "unknown setting evaluate.colour"),
    ]:
        with pytest.raises(SettingsError, match=re.escape(message)):
            settings(*overrides)
