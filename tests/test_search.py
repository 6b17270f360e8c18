"""Optuna search through the Compose API: trials are full runs in their own folders."""

from __future__ import annotations

import json
import os
import re

import pytest

from scrclf.training.search import (
    SearchConfigError,
    as_override,
    check_space,
    metric_value,
    run_search,
)
from tests.helpers import CONFIG_DIR, run_script

TINY = [
    "model=tiny",
    "trainer.batch_size=16",
    "trainer.logging_steps=50",
    "trainer.early_stopping_patience=null",
]


def _study(tmp_path, name: str, **changes) -> dict:
    """A search config over the tiny model, its study kept in ``tmp_path/study.db``."""
    return {
        "study_name": name,
        "n_trials": 2,
        "direction": "maximize",
        "metric": "at_default_decisions.validation.mean_macro_f1",
        "seed": 0,
        "storage": str(tmp_path / "study.db"),
        "pruning": False,
        "overrides": ["eval_splits=[validation]"],
        **changes,
    }


def test_two_trial_search_on_the_tiny_model(toy_corpus, tmp_path, no_network):
    search = _study(
        tmp_path,
        "toy",
        params={
            "trainer.learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
            "trainer.max_epochs": {"type": "int", "low": 1, "high": 2},
            "model.dropout": {"type": "categorical", "choices": [0.0, 0.1]},
        },
    )
    out = tmp_path / "search"
    summary = run_search(
        search, [*TINY, f"data.dir={toy_corpus}"], config_dir=CONFIG_DIR, out_dir=out
    )
    assert summary["n_complete"] == 2
    run_dirs = {t["run_dir"] for t in summary["trials"]}
    assert len(run_dirs) == 2
    for t in summary["trials"]:
        run = out / f"trial_{t['number']:03d}"
        assert str(run) == t["run_dir"]
        metrics = json.loads((run / "metrics.json").read_text())
        assert "test" not in metrics  # the search never evaluates on test
        assert t["value"] == pytest.approx(
            metrics["at_default_decisions"]["validation"]["mean_macro_f1"]
        )
        assert (run / "model" / "model.safetensors").exists()
        assert 1e-3 <= t["params"]["trainer.learning_rate"] <= 1e-2
    best = summary["best"]
    assert best["value"] == max(t["value"] for t in summary["trials"])
    assert any(o.startswith("trainer.learning_rate=") for o in best["overrides"])
    assert not any(o.startswith("eval_splits") for o in best["overrides"])
    table = (out / "trials.md").read_text()
    assert table.count("| COMPLETE |") == 2 and "trainer.learning_rate" in table
    assert (out / "trials.csv").read_text().count("\n") == 3
    assert (tmp_path / "study.db").exists()


def test_pruned_searches_report_every_epoch(toy_corpus, tmp_path, no_network):
    import optuna

    search = _study(
        tmp_path,
        "pruned",
        n_trials=1,
        pruning=True,
        overrides=["eval_splits=[validation]", "trainer.max_epochs=3"],
        params={"trainer.learning_rate": {"type": "categorical", "choices": [5e-3]}},
    )
    out = tmp_path / "search"
    run_search(search, [*TINY, f"data.dir={toy_corpus}"], config_dir=CONFIG_DIR, out_dir=out)
    # The shipped CPU trainer validates after its last two epochs only; the pruner needs all.
    assert "eval_last_epochs: null" in (out / "trial_000" / "config.yaml").read_text()
    study = optuna.load_study(study_name="pruned", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert sorted(study.trials[0].intermediate_values) == [1, 2, 3]


def test_search_space_errors_name_the_parameter():
    with pytest.raises(SearchConfigError, match="trainer.learning_rate"):
        check_space(
            {"trainer.learning_rate": {"type": "float", "low": 0.0, "high": 1.0, "log": True}}
        )
    with pytest.raises(SearchConfigError, match="model.dropout: type"):
        check_space({"model.dropout": {"type": "uniform", "low": 0, "high": 1}})
    with pytest.raises(SearchConfigError, match="choices"):
        check_space({"trainer.batch_size": {"type": "categorical"}})
    with pytest.raises(SearchConfigError, match="not found"):
        metric_value({"validation": {"mean_macro_f1": 0.5}}, "test.mean_macro_f1")


def test_a_bad_key_fails_before_any_training(tmp_path):
    search = {
        "n_trials": 1,
        "params": {"trainer.not_a_setting": {"type": "int", "low": 1, "high": 2}},
    }
    with pytest.raises(Exception, match="not_a_setting"):
        run_search(search, ["model=tiny"], config_dir=CONFIG_DIR, out_dir=tmp_path / "s")
    assert not list((tmp_path / "s").glob("trial_*"))


def test_overrides_are_valid_hydra_syntax():
    assert as_override("trainer.learning_rate", 1e-4) == "trainer.learning_rate=0.0001"
    assert as_override("trainer.batch_size", 32) == "trainer.batch_size=32"
    assert as_override("trainer.lr_scheduler", "cosine") == 'trainer.lr_scheduler="cosine"'
    assert as_override("eval_splits", ["validation"]) == 'eval_splits=["validation"]'
    assert as_override("trainer.group_by_length", False) == "trainer.group_by_length=false"


def test_search_script_runs_one_trial(toy_corpus, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("SCRCLF_RUN_ID", None)
    out = run_script(
        "scripts/search.py",
        "search.n_trials=1",
        f"search.out_dir={tmp_path / 'cli'}",
        "search.params.trainer.max_epochs.high=1",
        "search.params.trainer.max_epochs.low=1",
        *TINY,
        f"data.dir={toy_corpus}",
        env=env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| 0 | COMPLETE |" in out.stdout
    assert (tmp_path / "cli" / "trial_000" / "metrics.json").exists()


def test_search_settings_come_from_the_shipped_yaml_and_name_faults():
    from omegaconf import OmegaConf

    from scrclf.settings import SearchSettings

    shipped = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "search" / "default.yaml"))
    got = SearchSettings.with_options({"n_trials": 3})
    assert got.n_trials == 3
    assert (got.seed, got.metric, got.direction) == (
        shipped["seed"],
        shipped["metric"],
        shipped["direction"],
    )
    assert list(got.overrides) == shipped["overrides"]
    assert got.params == shipped["params"]
    only = {"model.dropout": {"type": "float", "low": 0.0, "high": 0.2}}
    assert SearchSettings.with_options({"params": only}).params == only
    for options, message in [
        ({"n_trials": "many"}, "search.n_trials must be int"),
        ({"direction": "up"}, "search.direction must be one of"),
        ({"timeout_s": -1}, "search.timeout_s must be at least 0"),
        ({"trials": 3}, "unknown setting search.trials"),
    ]:
        with pytest.raises(SearchConfigError, match=re.escape(message)):
            SearchSettings.with_options(options)
