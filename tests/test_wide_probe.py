"""Probing the wide part's settings beside a trained encoder: the run's own setting refitted
gives back the run's scores, runs with the same token ids share one fit, and runs without a
fitted wide part are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from scrclf.errors import SettingsError
from scrclf.tasks import HEADLINE
from scrclf.training import wide_probe
from scrclf.training.selection import read_study
from scrclf.training.wide_probe import WideSetting, format_probe, probe_wide
from tests.helpers import load_benchmark, train_tiny


@pytest.fixture(scope="module")
def wide_run(toy_corpus, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("wide_run") / "wide-s42"
    train_tiny(toy_corpus, run, "trainer", "model.wide={buckets:2048,ngrams:2,mode:logreg,C:4.0}")
    return run


@pytest.fixture
def study(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text("bootstrap: {resamples: 20}\nvariants: [{name: a}]\n", encoding="utf-8")
    return read_study(path)


def test_the_runs_own_setting_refitted_gives_its_scores_and_fits_are_shared(
    wide_run, toy_corpus, study, tmp_path, monkeypatch
):
    twin = tmp_path / "twin-s43"
    shutil.copytree(wide_run, twin)
    fits = []
    fit = wide_probe._wide_logits
    monkeypatch.setattr(
        wide_probe, "_wide_logits", lambda *a, **k: fits.append(a[3]) or fit(*a, **k)
    )
    settings = [
        WideSetting(2, 4.0),
        WideSetting(1, 0.5),
        WideSetting(2, 4.0, ("themes",)),
        WideSetting(2, 4.0, (), True),
    ]
    result = probe_wide([wide_run, twin], settings, study, data_dir=toy_corpus)

    rows = result["rows"]
    assert [(r["run"], r["setting"], r["as_trained"]) for r in rows] == [
        (run, setting, trained)
        for run in ("wide-s42", "twin-s43")
        for setting, trained in (
            ("ngrams 2, C 4", True),
            ("ngrams 2, C 4", False),
            ("ngrams 1, C 0.5", False),
            ("ngrams 2, C 4, text alone: themes", False),
            ("ngrams 2, C 4, intercepts", False),
        )
    ]
    # The same token ids and buckets: one fit per setting serves both runs.
    assert fits == settings
    own, refit, other, text_only, intercepts = rows[:5]
    # Fitting the run's own setting again reproduces the wide part it was trained with.
    for split in ("validation", "test"):
        assert refit[split][HEADLINE] == pytest.approx(own[split][HEADLINE], abs=1e-9)
    assert refit["wide_mix"] == own["wide_mix"]
    assert set(other["wide_mix"]) == {"themes", "evidence", "action_strength"}
    assert result["settings"] == [
        {"ngrams": 2, "C": 4.0, "text_only": [], "intercept": False},
        {"ngrams": 1, "C": 0.5, "text_only": [], "intercept": False},
        {"ngrams": 2, "C": 4.0, "text_only": ["themes"], "intercept": False},
        {"ngrams": 2, "C": 4.0, "text_only": [], "intercept": True},
    ]
    # The same weights plus the intercepts: the wide logits, and so the scores, move.
    assert intercepts["validation"]["tasks"] != refit["validation"]["tasks"]
    # Themes read the text alone: only their scores can move; the other tasks' wide part is
    # the run's own.
    for split in ("validation", "test"):
        for task in ("evidence", "action_strength"):
            assert text_only[split]["tasks"][task] == refit[split]["tasks"][task]

    table = format_probe(result)
    assert table.count("(as trained)") == 2 and "ngrams 1, C 0.5" in table
    assert len([line for line in table.splitlines() if line.startswith("| wide-s42")]) == 5


def test_a_run_without_a_fitted_wide_part_is_refused(tiny_run, toy_corpus, study):
    with pytest.raises(SettingsError, match="no wide part fitted in logreg mode") as err:
        probe_wide([tiny_run], [WideSetting(2, 4.0)], study, data_dir=toy_corpus)
    assert str(tiny_run) in str(err.value)


@pytest.mark.parametrize(("ngrams", "c"), [(3, 4.0), (2, 0.0)])
def test_bad_settings_are_refused(ngrams, c):
    with pytest.raises(SettingsError, match="wide"):
        WideSetting(ngrams, c)


def test_the_script_writes_its_table(wide_run, toy_corpus, tmp_path):
    script = load_benchmark("wide_probe")
    study = tmp_path / "study.yaml"
    study.write_text("bootstrap: {resamples: 10}\nvariants: [{name: a}]\n", encoding="utf-8")
    args = [str(wide_run), "--ngrams", "2", "--C", "1", "--study", str(study)]
    args += ["--data", str(toy_corpus), "--out", str(tmp_path / "out")]
    assert script.main([*args, "--intercept", "false,true", "--tag", "icpt"]) == 0
    result = json.loads((tmp_path / "out" / "wide_probe_icpt.json").read_text())
    assert [r["setting"] for r in result["rows"]] == [
        "ngrams 2, C 4",
        "ngrams 2, C 1",
        "ngrams 2, C 1, intercepts",
    ]
    assert (tmp_path / "out" / "wide_probe_icpt.md").read_text().startswith("# The wide part")
    assert script.main([str(wide_run), "--ngrams", "3", "--study", str(study)]) == 2
    assert script.main([*args, "--intercept", "yes"]) == 2
