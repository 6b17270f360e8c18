"""``train(cfg)``: from a composed config to a finished run directory.

``trainer.loop`` picks the loop: ``trainer`` (:mod:`scrclf.training.hf_loop`, the Hugging
Face Trainer with checkpoints, resume and DDP) or ``lean`` (:mod:`scrclf.training.hand_loop`,
the hand-written loop for large corpora on a GPU).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from scrclf.evaluation.metrics import HEADLINE
from scrclf.modeling.dropout import fast_dropout
from scrclf.settings import TrainerSettings
from scrclf.training.hand_loop import train_lean
from scrclf.training.hf_loop import train_with_trainer
from scrclf.training.refit import load_reference
from scrclf.training.run import (
    RUN_CONFIG_FILE,
    ReportFn,
    TrainingConfigError,
    _container,
    configure_threads,
    last_complete_checkpoint,
    load_inputs,
)

logger = logging.getLogger(__name__)

# Hydra writes these into the run folder before training starts.
HYDRA_ENTRIES = (".hydra",)
# Settings that may change when a run is resumed: they do not change what is learnt.
RESUME_MAY_CHANGE = {
    "resume",
    "paths",
    "run_name",
    "eval_splits",
    "trainer.num_threads",
    "trainer.dataloader_workers",
    "trainer.eval_batch_size",
    "trainer.logging_steps",
    "trainer.name",
    "data.dir",
}


def check_run_dir(run_dir: Path, resume: bool) -> None:
    """A new run needs an empty folder (apart from Hydra's own files): training into a
    folder that holds another run would mix its checkpoints and replace its results."""
    if run_dir.exists() and not run_dir.is_dir():
        raise TrainingConfigError(f"paths.output_dir={run_dir} is a file, not a folder")
    if resume or not run_dir.is_dir():
        return
    held = sorted(
        entry.name
        for entry in run_dir.iterdir()
        if entry.name not in HYDRA_ENTRIES and not entry.name.endswith(".log")
    )
    if held:
        shown = ", ".join(held[:4]) + (f" and {len(held) - 4} more" if len(held) > 4 else "")
        raise TrainingConfigError(
            f"paths.output_dir={run_dir} is not empty (it holds {shown}); train into a new "
            "folder, or pass resume=true to continue the run that is there"
        )


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: obj}


def _may_change(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in RESUME_MAY_CHANGE)


def check_resumable(checkpoint: Path, cfg_dict: dict[str, Any], model_config: Any) -> None:
    """Resume only from a checkpoint of this run: same labels, same model, same settings.

    The labels and the model's shape are compared with the checkpoint's ``config.json``; the
    settings with the run config stored beside each checkpoint.
    """
    import json

    saved_path = checkpoint / "config.json"
    try:
        saved = json.loads(saved_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise TrainingConfigError(
            f"{saved_path}: cannot read the checkpoint's config ({err})"
        ) from None

    def heads(tasks: Any) -> list[tuple[Any, ...]]:
        return [(t.get("name"), t.get("type"), list(t.get("labels") or [])) for t in tasks or []]

    differences = []
    old_heads, new_heads = heads(saved.get("tasks")), heads(model_config.tasks)
    if old_heads != new_heads:
        for old, new in zip(old_heads, new_heads, strict=False):
            if old != new:
                differences.append(f"task '{new[0]}' has labels {new[2]}, the checkpoint {old[2]}")
                break
        else:
            differences.append(
                f"tasks {[h[0] for h in new_heads]}, the checkpoint {[h[0] for h in old_heads]}"
            )
    old_enc, new_enc = saved.get("encoder") or {}, dict(model_config.encoder)
    for key in sorted(set(old_enc) | set(new_enc)):
        if old_enc.get(key) != new_enc.get(key):
            differences.append(
                f"encoder {key} is {new_enc.get(key)!r}, the checkpoint {old_enc.get(key)!r}"
            )
    if saved.get("max_seq_length") != model_config.max_seq_length:
        differences.append(
            f"data.max_length is {model_config.max_seq_length}, "
            f"the checkpoint {saved.get('max_seq_length')}"
        )
    stored = checkpoint / RUN_CONFIG_FILE
    if stored.is_file():
        try:
            old_cfg = _flat(json.loads(stored.read_text(encoding="utf-8")))
        except (OSError, ValueError) as err:
            raise TrainingConfigError(f"{stored}: cannot read ({err})") from None
        new_cfg = _flat(json.loads(json.dumps(cfg_dict, default=str)))
        for key in sorted(set(old_cfg) | set(new_cfg)):
            if not _may_change(key) and old_cfg.get(key) != new_cfg.get(key):
                differences.append(
                    f"{key}={new_cfg.get(key)!r}, the checkpoint was trained with "
                    f"{old_cfg.get(key)!r}"
                )
    if differences:
        raise TrainingConfigError(
            f"resume=true but {checkpoint} does not match these settings: "
            + "; ".join(differences[:3])
            + ("; ..." if len(differences) > 3 else "")
            + ". Resume with the settings of that run, or train into a new folder"
        )


def headline_of(summary: dict[str, Any]) -> float:
    """A run's headline score for a sweep to compare: on validation, or on the first split
    scored where validation was not (a refit trains on it); NaN where no split was scored."""
    splits = [s for s in summary if isinstance(summary[s], dict) and HEADLINE in summary[s]]
    split = "validation" if "validation" in splits else next(iter(splits), None)
    return float(summary[split][HEADLINE]) if split else float("nan")


def train(
    cfg: Any, run_dir: str | Path | None = None, report: ReportFn | None = None
) -> dict[str, Any]:
    """Train, calibrate, evaluate and save one run. Returns the metrics written.

    ``report`` (optional) is called after each validation evaluation with the epoch and the
    value of ``trainer.metric_for_best``; hyperparameter search uses it for pruning.
    """
    from transformers import set_seed

    started = time.time()
    cfg_dict = _container(cfg)
    run_dir = Path(run_dir if run_dir is not None else cfg_dict["paths"]["output_dir"])
    trainer = TrainerSettings.from_config(cfg_dict["trainer"])
    loop = trainer.loop
    resume = bool(cfg_dict["resume"])

    check_run_dir(run_dir, resume)
    checkpoint = None
    if resume:
        if loop == "lean":
            raise TrainingConfigError(
                "resume=true needs Trainer checkpoints; the lean loop "
                "(trainer.loop=lean) keeps none. Use trainer=gpu to resume"
            )
        checkpoint = last_complete_checkpoint(run_dir / "checkpoints")
        if checkpoint is None:
            raise TrainingConfigError(
                f"resume=true but no complete checkpoint under {run_dir / 'checkpoints'}; "
                "set paths.output_dir to the run directory to resume"
            )
        logger.info("resuming from %s", checkpoint)

    reference = None
    if cfg_dict.get("refit_from"):
        reference = load_reference(cfg_dict["refit_from"], cfg_dict)
        cfg_dict["trainer"] = {**cfg_dict["trainer"], "max_epochs": reference.epochs}
        cfg_dict["eval_splits"] = [
            s for s in cfg_dict.get("eval_splits") or [] if s != "validation"
        ]
        logger.info(
            "refit of %s: train + validation for %d epoch(s), its decisions",
            reference.run_dir,
            reference.epochs,
        )

    set_seed(int(cfg_dict["seed"]))
    threads = configure_threads(trainer.num_threads)
    inputs = load_inputs(cfg_dict, run_dir, reference)
    if checkpoint is not None:
        check_resumable(checkpoint, cfg_dict, inputs.model.config)
    with fast_dropout(inputs.model, trainer.fast_dropout) as sites:
        if sites:
            logger.info("dropout masks from 64-bit random words at %d sites", sites)
        if loop == "lean":
            return train_lean(inputs, started=started, report=report)
        return train_with_trainer(inputs, checkpoint, started, threads, report)
