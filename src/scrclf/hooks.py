"""Work that waits for scrclf's model module to finish loading.

``import scrclf`` registers the model with transformers as soon as transformers is imported.
When scrclf's own model module is the one importing transformers, that registration cannot
run yet (the model classes are still being defined); it waits here, and the model module
runs it as its last step.
"""

from __future__ import annotations

from collections.abc import Callable

_waiting: list[Callable[[], object]] = []
_loaded = False


def model_loaded() -> bool:
    """Whether scrclf's model module has finished loading."""
    return _loaded


def when_model_loaded(callback: Callable[[], object]) -> None:
    """Run ``callback`` once the model module has loaded (now, if it has)."""
    if _loaded:
        callback()
    elif callback not in _waiting:
        _waiting.append(callback)


def mark_model_loaded() -> None:
    """Called by the model module as its last step: runs what waited for it."""
    global _loaded
    _loaded = True
    while _waiting:
        _waiting.pop(0)()
