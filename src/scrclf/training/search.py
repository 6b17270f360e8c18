"""Bayesian hyperparameter search: Optuna trials over the Hydra training config.

Each trial samples values from a search space, composes the training config with Hydra's
Compose API (the same ``configs/`` and overrides as ``scripts/train.py``), trains one full
run in its own directory and returns a metric read from that run's ``metrics.json``. The
study (TPE sampler, seeded) can live in an SQLite file so that it resumes and can be
inspected; at the end a results table is written beside the trials.

A search config (``configs/search/*.yaml``)::

    study_name: scrclf
    n_trials: 20
    direction: maximize
    metric: at_default_decisions.validation.mean_macro_f1   # a dotted path into metrics.json
    seed: 0
    storage: null            # or a path such as outputs/search/study.db (SQLite)
    pruning: false           # median pruning on the per-epoch validation metric (trials
                             # then evaluate after every epoch)
    timeout_s: null
    overrides: [eval_splits=[validation]]   # applied to every trial
    params:
      trainer.learning_rate: {type: float, low: 2.0e-5, high: 3.0e-4, log: true}
      trainer.max_epochs: {type: int, low: 2, high: 6}
      trainer.batch_size: {type: categorical, choices: [16, 32]}

The search does not use the hydra-optuna-sweeper plugin (it pins optuna<3).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, cast

from scrclf import atomic, settings
from scrclf.errors import SearchConfigError  # noqa: F401 (re-exported)

logger = logging.getLogger(__name__)

PARAM_TYPES = ("float", "int", "categorical")
DIRECTIONS = settings.DIRECTIONS


# ------------------------------------------------------------------------- the space


def check_space(params: Mapping[str, Mapping[str, Any]]) -> None:
    """Raise :class:`SearchConfigError` naming the first malformed parameter."""
    if not params:
        raise SearchConfigError("search.params is empty: give at least one parameter to search")
    for name, spec in params.items():
        where = f"search.params.{name}"
        if not isinstance(spec, Mapping) or "type" not in spec:
            raise SearchConfigError(
                f"{where}: needs a mapping with a 'type' ({', '.join(PARAM_TYPES)})"
            )
        kind = spec["type"]
        if kind not in PARAM_TYPES:
            raise SearchConfigError(f"{where}: type must be one of {PARAM_TYPES}, got {kind!r}")
        if kind == "categorical":
            if not spec.get("choices"):
                raise SearchConfigError(f"{where}: a categorical parameter needs 'choices'")
            continue
        if "low" not in spec or "high" not in spec:
            raise SearchConfigError(f"{where}: a {kind} parameter needs 'low' and 'high'")
        if float(spec["low"]) > float(spec["high"]):
            raise SearchConfigError(f"{where}: low is greater than high")
        if spec.get("log") and float(spec["low"]) <= 0:
            raise SearchConfigError(f"{where}: a log-scale range needs low > 0")


def suggest(trial, params: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """One value per parameter, drawn by the trial's sampler."""
    values: dict[str, Any] = {}
    for name, spec in params.items():
        kind = spec["type"]
        if kind == "float":
            step = spec.get("step")
            values[name] = trial.suggest_float(
                name,
                float(spec["low"]),
                float(spec["high"]),
                log=bool(spec.get("log", False)),
                step=float(step) if step else None,
            )
        elif kind == "int":
            values[name] = trial.suggest_int(
                name,
                int(spec["low"]),
                int(spec["high"]),
                step=int(spec.get("step", 1)),
                log=bool(spec.get("log", False)),
            )
        else:
            values[name] = trial.suggest_categorical(name, list(spec["choices"]))
    return values


def as_override(name: str, value: Any) -> str:
    """A Hydra command-line override for one value (lists and strings quoted safely)."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = repr(value)
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, (list, tuple)):
        text = "[" + ",".join(as_override("x", v).split("=", 1)[1] for v in value) + "]"
    elif value is None:
        text = "null"
    else:
        text = json.dumps(str(value))
    return f"{name}={text}"


def metric_value(metrics: Mapping[str, Any], path: str) -> float:
    """The number at a dotted path of a run's metrics (``validation.mean_macro_f1``)."""
    node: Any = metrics
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise SearchConfigError(
                f"search.metric={path!r}: '{part}' not found in the run's "
                "metrics (is the split in eval_splits?)"
            )
        node = node[part]
    if not isinstance(node, (int, float)) or isinstance(node, bool):
        raise SearchConfigError(f"search.metric={path!r} is not a number")
    return float(node)


# ------------------------------------------------------------------------ composing


def compose_config(config_dir: Path, overrides: Sequence[str], config_name: str = "train"):
    """The training config composed like ``scripts/train.py`` would with these overrides."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


def _first_values(params: Mapping[str, Mapping[str, Any]]) -> list[str]:
    out = []
    for name, spec in params.items():
        value = spec["choices"][0] if spec["type"] == "categorical" else spec["low"]
        if spec["type"] == "int":
            value = int(value)
        elif spec["type"] == "float":
            value = float(value)
        out.append(as_override(name, value))
    return out


# ---------------------------------------------------------------------------- search


def _storage_url(storage: str | None) -> str | None:
    if not storage:
        return None
    storage = str(storage)
    if "://" in storage:
        return storage
    path = Path(storage).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def run_search(
    search_cfg: Mapping[str, Any] | settings.SearchSettings,
    train_overrides: Sequence[str] = (),
    config_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Run a study; each trial is a full training run in ``<out_dir>/trial_NNN``.

    ``search_cfg`` is a search config: settings it leaves out come from the shipped
    ``configs/search/default.yaml`` (a ``params`` given is the whole space).
    ``train_overrides`` apply to every trial (before ``search_cfg.overrides`` and the
    sampled values). ``out_dir`` defaults to ``<paths.log_dir>/search/<study_name>/<time>``.
    Returns the summary also written to ``<out_dir>/search.json``.
    """
    import optuna

    from scrclf.training import train

    config_dir = Path(config_dir) if config_dir else settings.config_dir()
    search = (
        search_cfg
        if isinstance(search_cfg, settings.SearchSettings)
        else settings.SearchSettings.with_options(search_cfg)
    )
    params = dict(search.params)
    check_space(params)
    direction = search.direction
    metric = search.metric
    n_trials = search.n_trials
    study_name = search.study_name
    base = [*train_overrides, *search.overrides]
    if search.pruning:  # the pruner compares trials after every epoch
        base.append("trainer.eval_last_epochs=null")

    # Fail on a bad key or value before the first trial trains.
    probe = compose_config(config_dir, [*base, *_first_values(params)])
    if out_dir is None:
        from omegaconf import OmegaConf

        log_dir = OmegaConf.select(probe, "paths.log_dir")
        stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        out_dir = Path(str(log_dir)) / "search" / study_name / stamp
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
        if search.pruning
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(
        study_name=study_name,
        storage=_storage_url(search.storage),
        load_if_exists=True,
        direction=cast(Literal["maximize", "minimize"], direction),  # checked above
        pruner=pruner,
        sampler=optuna.samplers.TPESampler(seed=search.seed),
    )

    def objective(trial) -> float:
        values = suggest(trial, params)
        run_dir = out_dir / f"trial_{trial.number:03d}"
        overrides = [
            *base,
            *(as_override(k, v) for k, v in values.items()),
            as_override("paths.output_dir", str(run_dir)),
        ]
        trial.set_user_attr("run_dir", str(run_dir))
        # What reproduces the trial with scripts/train.py (search-only overrides left out).
        trial.set_user_attr("train_overrides", [*train_overrides, *overrides[len(base) : -1]])
        cfg = compose_config(config_dir, overrides)
        logger.info("trial %d: %s", trial.number, " ".join(overrides))

        def report(epoch: int, value: float) -> None:
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")

        started = time.time()
        summary = train(cfg, run_dir=run_dir, report=report if search.pruning else None)
        trial.set_user_attr("train_s", time.time() - started)
        return metric_value(summary, metric)

    study.optimize(
        objective,
        n_trials=n_trials,
        timeout=search.timeout_s or None,
        catch=(RuntimeError, MemoryError),
    )
    summary = summarize(study, metric, params)
    summary["out_dir"] = str(out_dir)
    atomic.write_json(out_dir / "search.json", summary)
    atomic.write_text(out_dir / "trials.csv", trials_csv(summary))
    atomic.write_text(out_dir / "trials.md", trials_markdown(summary))
    return summary


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def summarize(study, metric: str, params: Mapping[str, Any]) -> dict[str, Any]:
    trials = []
    for t in study.trials:
        duration = (
            (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start
            else None
        )
        trials.append(
            {
                "number": t.number,
                "state": t.state.name,
                "value": _clean(t.value),
                "params": dict(t.params),
                "run_dir": t.user_attrs.get("run_dir"),
                "duration_s": duration,
            }
        )
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    best = None
    if complete:
        b = study.best_trial
        best = {
            "number": b.number,
            "value": b.value,
            "params": dict(b.params),
            "run_dir": b.user_attrs.get("run_dir"),
            "overrides": list(b.user_attrs.get("train_overrides", [])),
        }
    return {
        "study_name": study.study_name,
        "direction": study.direction.name.lower(),
        "metric": metric,
        "params": list(params),
        "n_complete": len(complete),
        "best": best,
        "trials": trials,
    }


def trials_csv(summary: Mapping[str, Any]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    names = list(summary["params"])
    writer.writerow(["trial", "state", summary["metric"], *names, "duration_s", "run_dir"])
    for t in summary["trials"]:
        writer.writerow(
            [
                t["number"],
                t["state"],
                t["value"],
                *(t["params"].get(n) for n in names),
                t["duration_s"],
                t["run_dir"],
            ]
        )
    return buf.getvalue()


def trials_markdown(summary: Mapping[str, Any]) -> str:
    names = list(summary["params"])

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v)

    lines = [
        f"# Search `{summary['study_name']}` ({summary['direction']} {summary['metric']})",
        "",
        "| trial | state | value | " + " | ".join(names) + " | minutes |",
        "|---:|---|---:|" + "---:|" * len(names) + "---:|",
    ]
    sign = -1.0 if summary["direction"] == "maximize" else 1.0
    done = sorted(
        (t for t in summary["trials"] if t["value"] is not None), key=lambda t: sign * t["value"]
    )
    for t in done + [t for t in summary["trials"] if t["value"] is None]:
        minutes = f"{t['duration_s'] / 60:.1f}" if t["duration_s"] else ""
        lines.append(
            f"| {t['number']} | {t['state']} | {fmt(t['value'])} | "
            + " | ".join(fmt(t["params"].get(n)) for n in names)
            + f" | {minutes} |"
        )
    if summary["best"]:
        lines += [
            "",
            "Best: `python scripts/train.py " + " ".join(summary["best"]["overrides"]) + "`",
        ]
    return "\n".join(lines) + "\n"
