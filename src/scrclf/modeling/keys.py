"""What the attending heads' queries score (``model.label_attention_keys``).

Torch-free, so that layers reading a saved ``config.json`` as a mapping (the export's model
card) share the model's values and fallback without importing the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scrclf.errors import SettingsError

# per_task: each head projects the tokens with its own matrix, ``tanh(W h)``; shared: one
# such projection serves every attending head; tokens: the token states themselves, with no
# projection.
LABEL_ATTENTION_KEYS = ("per_task", "shared", "tokens")
# The setting of a model config that does not name it, as those saved before it existed.
DEFAULT_LABEL_ATTENTION_KEYS = "per_task"


def check_label_attention_keys(value: Any) -> str:
    if value not in LABEL_ATTENTION_KEYS:
        raise SettingsError(
            f"model.label_attention_keys must be one of {LABEL_ATTENTION_KEYS}, got {value!r}"
        )
    return str(value)


def saved_label_attention_keys(config: Mapping[str, Any]) -> str:
    """The setting of a saved model config read as a mapping."""
    return check_label_attention_keys(
        config.get("label_attention_keys", DEFAULT_LABEL_ATTENTION_KEYS)
    )
