"""Refit: the recipe of a finished run trained again on train + validation.

A normal run trains on the train split and uses validation twice: to pick the best
checkpoint and to fit the decisions (the wide part's weights, temperatures, theme
thresholds). The corpus is small and the learning curve still rises (docs/evaluation.md), so
the 1,135 validation items are worth training on once the recipe is settled. A refit
(``refit_from=RUN``) does that:

1. ``RUN`` is a finished run of the same recipe (same model, task, data, distillation and
   training settings, apart from the few in :data:`MAY_DIFFER`). Its best epoch becomes the
   refit's number of epochs, and the refit keeps its last weights: nothing held out is left
   to choose a checkpoint on;
2. the wide part's regressions and the encoder train on train + validation;
3. the decisions are ``RUN``'s, fitted on validation while validation was held out, and are
   stored with the refitted model. Validation is not scored (it was trained on).

The refit is scored like any run: its metrics.json holds the evaluation splits other than
validation, and the benchmark scores the saved model. For a fair comparison, fit the
baselines on the same items (docs/model_selection.md shows the command).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scrclf.atomic import shown_path
from scrclf.errors import TrainingConfigError
from scrclf.tasks import TaskSet

logger = logging.getLogger(__name__)

# Config sections that must be those of the reference run, and the trainer settings that
# may differ because they change how a run is executed or logged, not what it learns
# (fast_dropout draws the same dropout's masks from other random numbers).
# ``max_epochs`` is taken from the reference run's best epoch.
SAME_SECTIONS = ("model", "task", "data", "distill")
MAY_DIFFER = frozenset(
    {
        "name",
        "num_threads",
        "dataloader_workers",
        "eval_batch_size",
        "logging_steps",
        "save_total_limit",
        "max_epochs",
        "early_stopping_patience",
        "eval_last_epochs",
        "fast_dropout",
        "metric_for_best",
    }
)


@dataclass(frozen=True)
class RefitReference:
    """What a refit takes from its reference run."""

    run_dir: Path
    # The epoch of the reference run's best checkpoint: the refit trains this many epochs.
    epochs: int
    # The reference model's tasks with their fitted temperatures and thresholds.
    tasks: list[dict[str, Any]]
    # The wide part's weight per task (None when the model has no logreg wide part).
    wide_mix: dict[str, float] | None

    def describe(self, n_items: int) -> dict[str, Any]:
        return {
            "from": shown_path(self.run_dir),
            "epochs": self.epochs,
            "train_items": n_items,
            "decisions": "the reference run's, fitted on validation",
        }


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TrainingConfigError(
            f"refit_from: {path.parent} has no {path.name}; give a finished training run"
        ) from None
    except json.JSONDecodeError as err:
        raise TrainingConfigError(
            f"refit_from: {path}:{err.lineno}: not valid JSON ({err.msg})"
        ) from None


def best_epoch(training: Mapping[str, Any], where: Path) -> int:
    """The epoch of a run's best checkpoint, from its metrics.json ``training`` record:
    the lean loop writes it; the Trainer's is its checkpoint's step over the steps per epoch."""
    if training.get("best_epoch"):
        return int(training["best_epoch"])
    name = str(training.get("best_checkpoint") or "")
    steps, epochs = training.get("global_steps"), training.get("epochs_run")
    if not name.startswith("checkpoint-") or not steps or not epochs:
        raise TrainingConfigError(
            f"refit_from: {where} does not say which epoch was best "
            "(training.best_epoch, or best_checkpoint with global_steps and epochs_run)"
        )
    step = int(name.removeprefix("checkpoint-"))
    return max(1, math.ceil(step / (float(steps) / float(epochs)) - 1e-6))


def _differences(ours: Any, theirs: Any, prefix: str) -> list[str]:
    if isinstance(ours, Mapping) and isinstance(theirs, Mapping):
        out = []
        for key in sorted(set(ours) | set(theirs), key=str):
            out += _differences(ours.get(key), theirs.get(key), f"{prefix}.{key}")
        return out
    return [] if ours == theirs else [f"{prefix}: {theirs!r} there, {ours!r} here"]


def _without(section: Any, key: str) -> Any:
    return (
        {k: v for k, v in section.items() if k != key} if isinstance(section, Mapping) else section
    )


def config_differences(cfg: Mapping[str, Any], reference: Mapping[str, Any]) -> list[str]:
    """The settings that make this run another recipe than the reference run's."""
    out: list[str] = []
    for section in SAME_SECTIONS:
        ours, theirs = cfg.get(section), reference.get(section)
        if section == "data":  # the same files may lie in another checkout
            ours, theirs = _without(ours, "dir"), _without(theirs, "dir")
        out += _differences(ours, theirs, section)
    ours = {k: v for k, v in (cfg.get("trainer") or {}).items() if k not in MAY_DIFFER}
    theirs = {k: v for k, v in (reference.get("trainer") or {}).items() if k not in MAY_DIFFER}
    return out + _differences(ours, theirs, "trainer")


def load_reference(run_dir: str | Path, cfg: Mapping[str, Any]) -> RefitReference:
    """Read and check the reference run of a refit with config ``cfg``."""
    from omegaconf import OmegaConf

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise TrainingConfigError(
            f"refit_from: {run_dir} is not a finished training run (no config.yaml)"
        )
    loaded = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=True)
    if not isinstance(loaded, dict):
        raise TrainingConfigError(f"refit_from: {run_dir / 'config.yaml'} is not a mapping")
    reference: dict[str, Any] = {str(k): v for k, v in loaded.items()}
    if reference.get("refit_from"):
        raise TrainingConfigError(
            f"refit_from: {run_dir} is itself a refit; give the run trained on train alone"
        )
    if not reference.get("calibrate", True):
        raise TrainingConfigError(
            f"refit_from: {run_dir} fitted no decisions (calibrate=false); nothing to take"
        )
    differences = config_differences(cfg, reference)
    if differences:
        shown = "; ".join(differences[:5]) + ("; ..." if len(differences) > 5 else "")
        raise TrainingConfigError(
            f"refit_from: {run_dir} was trained with another recipe ({len(differences)} "
            f"setting(s) differ: {shown}). Give the same overrides as that run"
        )
    metrics = _read_json(run_dir / "metrics.json")
    model_config = _read_json(run_dir / "model" / "config.json")
    wide = model_config.get("wide") or None
    return RefitReference(
        run_dir=run_dir.resolve(),
        epochs=best_epoch(metrics.get("training") or {}, run_dir / "metrics.json"),
        tasks=list(model_config["tasks"]),
        wide_mix=dict(wide["mix"]) if wide and wide.get("mix") is not None else None,
    )


def take_decisions(tasks: TaskSet, reference: RefitReference) -> dict[str, Any]:
    """Give ``tasks`` the reference model's temperatures, thresholds and class offsets (in
    place); returns them in the form :func:`scrclf.calibration.calibrate` reports its fit."""
    theirs = {t.name: t for t in TaskSet.from_config(reference.tasks)}
    report: dict[str, Any] = {}
    for task in tasks:
        ref = theirs.get(task.name)
        if ref is None or ref.labels != task.labels:
            raise TrainingConfigError(
                f"refit_from: {reference.run_dir}'s model has other labels for task "
                f"'{task.name}' than this run"
            )
        task.temperature = ref.temperature
        task.thresholds = list(ref.thresholds) if ref.thresholds is not None else None
        task.offsets = list(ref.offsets) if ref.offsets is not None else None
        entry: dict[str, Any] = {"temperature": ref.temperature, "source": "refit_from"}
        if ref.thresholds is not None:
            entry["thresholds"] = dict(zip(ref.labels, ref.thresholds, strict=True))
        if ref.offsets is not None:
            entry["offsets"] = dict(zip(ref.labels, ref.offsets, strict=True))
        report[task.name] = entry
    return report
