"""scrclf: classify recommendations from child-protection serious case reviews.

Importing the package registers the model with the Hugging Face Auto classes, so a saved
or exported model loads with ``transformers.AutoModel.from_pretrained(path)``.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .modeling import ScrClfConfig, ScrClfModel, register_auto_classes  # noqa: E402
from .tasks import TaskSet, TaskSpec  # noqa: E402

register_auto_classes()


def load(path, backend: str = "auto", **kwargs):
    """Load an exported or trained model for prediction (see :mod:`scrclf.inference`)."""
    from .inference import load as _load

    return _load(path, backend=backend, **kwargs)


__all__ = ["ScrClfConfig", "ScrClfModel", "TaskSet", "TaskSpec", "load", "__version__"]
