"""Starting runs from Hydra entry points, alone or under torchrun.

Under ``torchrun`` every rank executes the entry point, and Hydra's ``${now:...}`` would
give each rank its own run directory. :func:`prepare_launch` runs before Hydra: ranks
agree on one run id (rank 0's timestamp, broadcast over the process group) and ranks
other than 0 are told not to write Hydra's own files.
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import cast

RUN_ID_ENV = "SCRCLF_RUN_ID"
logger = logging.getLogger(__name__)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def new_run_id() -> str:
    return datetime.now().strftime("%Y-%m-%d_%H-%M-%S_%f")


def agree_on_run_id() -> str | None:
    """Under torchrun, make every rank use rank 0's run id (via the env var)."""
    if world_size() <= 1 or os.environ.get(RUN_ID_ENV):
        return os.environ.get(RUN_ID_ENV)
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    box = [new_run_id() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    run_id = cast(str, box[0])  # rank 0's id, received by every rank
    os.environ[RUN_ID_ENV] = run_id
    return run_id


def prepare_launch(argv: list[str] | None = None) -> None:
    """Call before ``@hydra.main`` runs; edits ``sys.argv`` for ranks other than 0."""
    argv = sys.argv if argv is None else argv
    if world_size() > 1:
        agree_on_run_id()
        if rank() != 0:
            argv.extend(["hydra.output_subdir=null", "hydra/job_logging=stdout"])


def job_output_dir(cfg) -> Path:
    """The run directory: ``paths.output_dir``, or the job's folder in a multirun sweep."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        if hc.mode == RunMode.MULTIRUN:
            return Path(hc.runtime.output_dir)
    except (ImportError, ValueError):
        pass
    return Path(str(cfg.paths.output_dir))
