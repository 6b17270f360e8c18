"""scrclf: classify recommendations from child-protection serious case reviews.

``import scrclf`` is light: it imports neither torch nor transformers, so the runtime
install (onnxruntime, tokenizers, numpy) loads exports and predicts with the ONNX backend.
``ScrClfConfig`` and ``ScrClfModel`` are imported on first use (they need the ``train``
extra).

With transformers installed, the model registers itself with the Hugging Face Auto
classes and the ``scrclf-classification`` pipeline as soon as transformers' Auto classes
or pipelines are imported (after ``import scrclf``), so ``AutoModel.from_pretrained(path)``
and ``pipeline("scrclf-classification", model=path)`` work without ``trust_remote_code``.
"""

from __future__ import annotations

import importlib.abc
import sys
from typing import Any

from scrclf.tasks import TaskSet, TaskSpec
from scrclf.version import __version__

# transformers modules whose import makes the Auto classes or pipelines available.
_TRANSFORMERS_ENTRY_POINTS = ("transformers.models.auto", "transformers.pipelines")
_LAZY = {"ScrClfConfig": "scrclf.modeling.model", "ScrClfModel": "scrclf.modeling.model"}


def load(path, backend: str = "auto", **kwargs):
    """Load an exported or trained model for prediction (see :mod:`scrclf.inference.classifier`)."""
    from scrclf.inference.classifier import load as _load

    return _load(path, backend=backend, **kwargs)


def metric_path() -> str:
    """The folder of scrclf's multi-task ``evaluate`` metric, shipped with the package:
    ``evaluate.load(scrclf.metric_path())`` works offline."""
    from importlib import resources

    return str(resources.files("scrclf") / "evaluation" / "metric" / "scrclf_multitask")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'scrclf' has no attribute {name!r}")


def register_with_transformers() -> bool:
    """Register the model with the Auto classes and the ``scrclf-classification`` pipeline;
    False when transformers or torch is not installed (a runtime install)."""
    try:
        from scrclf.inference.pipeline import register
    except ImportError:  # no torch or transformers, or scrclf's model module is still loading
        from scrclf import hooks

        if "scrclf.modeling.model" in sys.modules and not hooks.model_loaded():
            hooks.when_model_loaded(register_with_transformers)
        return False
    register()
    return True


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    """Runs :func:`register_with_transformers` once a transformers entry point is imported."""

    def __init__(self, names: tuple[str, ...]):
        self.pending = set(names)

    def find_spec(self, name, path, target=None):
        if name not in self.pending:
            return None
        self.pending.discard(name)
        if not self.pending and self in sys.meta_path:
            sys.meta_path.remove(self)
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is not None and hasattr(loader, "exec_module"):
            execute = loader.exec_module

            def exec_module(module):
                execute(module)
                register_with_transformers()

            loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _arm() -> None:
    loaded = [n for n in _TRANSFORMERS_ENTRY_POINTS if n in sys.modules]
    if loaded:
        register_with_transformers()
    waiting = tuple(n for n in _TRANSFORMERS_ENTRY_POINTS if n not in sys.modules)
    if waiting and not any(isinstance(f, _RegisterAfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterImport(waiting))


_arm()

__all__ = [
    "ScrClfConfig",
    "ScrClfModel",
    "TaskSet",
    "TaskSpec",
    "load",
    "metric_path",
    "register_with_transformers",
    "__version__",
]
