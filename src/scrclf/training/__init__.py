"""Training: inputs and run directories, the Trainer and hand-written loops, launch, search."""

from scrclf.training.main import train

__all__ = ["train"]
