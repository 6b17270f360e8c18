"""Named arrays kept in an ``.npz`` file under a key, computed again when the key changes.

Forward passes of a finished model over fixed texts do not change: the model-selection
study (its runs' logits) and distillation (a teacher's logits) keep them beside the model,
keyed by a SHA-256 of what they were computed from.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

KEY = "fingerprint"


def texts_digest(
    digest: Any, texts: Sequence[str], findings: Sequence[str | None] | None, prefix: str = ""
) -> Any:
    """``digest`` (a hashlib object) updated with each text and its finding, in order."""
    pairs = findings if findings is not None else [None] * len(texts)
    for text, finding in zip(texts, pairs, strict=True):
        digest.update(f"{prefix}{text}\x1f{finding}\x1e".encode())
    return digest


def new_digest(head: str = "") -> Any:
    return hashlib.sha256(head.encode())


def cached_arrays(
    cache: Path | None,
    key: str,
    compute: Callable[[], dict[str, np.ndarray]],
    wanted: Iterable[str] = (),
    best_effort: bool = False,
) -> dict[str, np.ndarray]:
    """``compute()``, or the arrays kept in ``cache`` when they were kept under ``key`` (and
    hold every name in ``wanted``); what is computed is kept there. With ``best_effort``, a
    cache that cannot be written is only logged."""
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as saved:
            if str(saved[KEY]) == key and all(name in saved.files for name in wanted):
                logger.info("arrays read from %s", cache)
                return {k: saved[k] for k in saved.files if k != KEY}
    arrays = compute()
    if cache is not None:
        # One temporary name per process: under torchrun every rank computes and writes.
        tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp.npz")
        payload: dict[str, Any] = {KEY: np.array(key), **arrays}
        try:
            # numpy's stubs read the named arrays as its keyword options.
            np.savez(tmp, **payload)  # type: ignore[arg-type]
            tmp.replace(cache)
        except OSError as err:
            if not best_effort:
                raise
            logger.warning("arrays not kept in %s (%s)", cache, err.strerror)
    return arrays
