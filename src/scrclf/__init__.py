"""scrclf: classify recommendations from child-protection serious case reviews.

Importing the package registers the model with the Hugging Face Auto classes, so a saved
or exported model loads with ``transformers.AutoModel.from_pretrained(path)``.
"""

from __future__ import annotations

from scrclf.modeling.model import ScrClfConfig, ScrClfModel, register_auto_classes  # noqa: E402
from scrclf.tasks import TaskSet, TaskSpec  # noqa: E402
from scrclf.version import __version__

register_auto_classes()


def load(path, backend: str = "auto", **kwargs):
    """Load an exported or trained model for prediction (see :mod:`scrclf.inference.classifier`)."""
    from scrclf.inference.classifier import load as _load

    return _load(path, backend=backend, **kwargs)


def metric_path() -> str:
    """The folder of scrclf's multi-task ``evaluate`` metric, shipped with the package:
    ``evaluate.load(scrclf.metric_path())`` works offline."""
    from importlib import resources

    return str(resources.files("scrclf") / "evaluation" / "metric" / "scrclf_multitask")


__all__ = [
    "ScrClfConfig",
    "ScrClfModel",
    "TaskSet",
    "TaskSpec",
    "load",
    "metric_path",
    "__version__",
]
