"""Train the classifier: ``python scripts/train.py [overrides]``.

Examples:
    python scripts/train.py
    python scripts/train.py model=tiny trainer.max_epochs=1 paths.output_dir=/tmp/run
    torchrun --nproc_per_node=2 scripts/train.py model=tiny

Bad data, a bad setting or an unwritable destination ends the run with exit status 2 and
one line on stderr, ``train: error: <file>:<line>: field '<name>': <problem>`` (or the
setting at fault), before anything is written to ``model/`` or ``metrics.json``.
"""

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from scrclf.errors import EXIT_USER_ERROR, ScrClfError, one_line
from scrclf.training import train
from scrclf.training.launch import job_output_dir, prepare_launch
from scrclf.training.main import headline_of


@hydra.main(config_path="../configs", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    try:
        summary = train(cfg, run_dir=job_output_dir(cfg))
    except ScrClfError as err:  # a problem the user can fix; anything else is a bug
        message = one_line(err)
        logging.getLogger("scrclf").error("%s", message)  # also into the run's train.log
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # one job of a sweep: Hydra records the failure and reports it
        print(f"train: error: {message}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)
    return headline_of(summary)


if __name__ == "__main__":
    os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))
    prepare_launch()
    main()
