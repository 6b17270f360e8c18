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

from scrclf.settings import TrainerSettings
from scrclf.training.hand_loop import train_lean
from scrclf.training.hf_loop import train_with_trainer
from scrclf.training.run import (
    ReportFn,
    TrainingConfigError,
    _container,
    configure_threads,
    last_complete_checkpoint,
    load_inputs,
)

logger = logging.getLogger(__name__)


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

    set_seed(int(cfg_dict["seed"]))
    threads = configure_threads(trainer.num_threads)
    inputs = load_inputs(cfg_dict, run_dir)
    if loop == "lean":
        return train_lean(inputs, started=started, report=report)
    return train_with_trainer(inputs, checkpoint, started, threads, report)
