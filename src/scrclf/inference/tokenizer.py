"""The exported tokenizer run by the ``tokenizers`` library alone, without transformers.

An export's ``tokenizer.json`` is the complete fast tokenizer (normalizer, pre-tokenizer,
vocabulary, special-token template); ``tokenizer_config.json`` adds the padding and
truncation sides and the padding token. :class:`RuntimeTokenizer` reads both and encodes
as a transformers fast tokenizer called with ``truncation="longest_first"`` and
``max_length`` does: the same ids, token types and attention masks, with no padding
(the classifier pads each batch itself).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scrclf.errors import ModelLoadError

TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
# transformers' default inputs for a tokenizer whose config does not name them.
DEFAULT_INPUT_NAMES = ("input_ids", "token_type_ids", "attention_mask")
TRUNCATION_STRATEGIES = ("longest_first", "only_first", "only_second")


class RuntimeTokenizer:
    """``tokenizer.json`` plus the settings of ``tokenizer_config.json``; callable like the
    transformers tokenizer for the arguments the classifier uses."""

    def __init__(self, backend, config: dict[str, Any], source: Path):
        self.backend = backend
        self.source = source
        self.pad_token: str | None = _token(config.get("pad_token"))
        self.pad_token_id: int | None = (
            backend.token_to_id(self.pad_token) if self.pad_token is not None else None
        )
        self.pad_token_type_id = int(config.get("pad_token_type_id") or 0)
        self.padding_side = str(config.get("padding_side") or "right")
        self.truncation_side = str(config.get("truncation_side") or "right")
        self.model_max_length = config.get("model_max_length")
        names = config.get("model_input_names") or DEFAULT_INPUT_NAMES
        self.model_input_names = [str(n) for n in names]
        backend.no_padding()
        backend.no_truncation()

    @classmethod
    def from_folder(cls, root: str | Path) -> RuntimeTokenizer:
        """Read ``tokenizer.json`` and ``tokenizer_config.json`` from a model folder."""
        from tokenizers import Tokenizer

        root = Path(root)
        file = root / TOKENIZER_JSON
        if not file.is_file():
            raise ModelLoadError(
                f"no {TOKENIZER_JSON}: the ONNX backend reads the fast tokenizer file", root
            )
        try:
            backend = Tokenizer.from_file(str(file))
        except Exception as err:  # tokenizers raises plain Exceptions on bad files
            raise ModelLoadError(f"cannot load the tokenizer: {err}", file) from None
        config: dict[str, Any] = {}
        config_file = root / TOKENIZER_CONFIG
        if config_file.is_file():
            try:
                loaded = json.loads(config_file.read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                raise ModelLoadError(f"cannot read: {err}", config_file) from None
            if not isinstance(loaded, dict):
                raise ModelLoadError("expected a JSON object", config_file)
            config = loaded
        return cls(backend, config, file)

    def __repr__(self) -> str:
        return f"RuntimeTokenizer({str(self.source)!r})"

    def __call__(
        self,
        inputs: Sequence[str | tuple[str, str]],
        truncation: str = "longest_first",
        max_length: int | None = None,
    ) -> dict[str, list[list[int]]]:
        """Encode texts (or ``(text, pair)`` tuples) with special tokens, truncated to
        ``max_length`` tokens, unpadded."""
        if truncation not in TRUNCATION_STRATEGIES:
            raise ValueError(f"truncation must be one of {TRUNCATION_STRATEGIES}")
        if max_length is None:
            self.backend.no_truncation()
        else:
            self.backend.enable_truncation(
                int(max_length), strategy=truncation, direction=self.truncation_side
            )
        encodings = self.backend.encode_batch(list(inputs), add_special_tokens=True)
        columns = {
            "input_ids": [e.ids for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
        }
        return {name: columns[name] for name in self.model_input_names if name in columns}

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """The text of token ids (special tokens left out by default)."""
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)


def _token(value: Any) -> str | None:
    """A special token as saved by transformers: a string or an ``AddedToken`` mapping."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None
