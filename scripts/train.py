"""Train the classifier: ``python scripts/train.py [overrides]``.

Examples:
    python scripts/train.py
    python scripts/train.py model=tiny trainer.max_epochs=1 paths.output_dir=/tmp/run
    torchrun --nproc_per_node=2 scripts/train.py model=tiny
"""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

from scrclf.launch import job_output_dir, prepare_launch
from scrclf.training import train


@hydra.main(config_path="../configs", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    summary = train(cfg, run_dir=job_output_dir(cfg))
    split = "validation" if "validation" in summary else next(iter(cfg.eval_splits))
    return summary[split][summary["headline"]]


if __name__ == "__main__":
    os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))
    prepare_launch()
    main()
