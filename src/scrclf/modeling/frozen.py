"""Training with the bottom of the encoder held fixed (``trainer.freeze_layers``).

The embeddings and the bottom ``k`` encoder layers get no gradients and stay in eval mode (no
dropout), so an item's hidden states at depth ``k`` are a fixed function of its tokens. While
the model trains, they are computed once per distinct item and kept in memory; every later
step runs only the layers above. With half of MiniLM's six layers held fixed, a training
step costs about half as much (docs/performance.md). Evaluation and inference run the whole
encoder as usual: the cache is a training-time shortcut, not part of the model.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn


def _layer_list(encoder: nn.Module, count: int) -> tuple[nn.Module, str, nn.ModuleList]:
    """The module list holding the encoder's ``count`` layers, with its parent and name."""
    found = []
    for name, module in encoder.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            parent_name, _, attr = name.rpartition(".")
            if attr in ("layer", "layers"):
                found.append((encoder.get_submodule(parent_name), attr, module))
    if len(found) != 1:
        raise ValueError(
            f"cannot hold layers of {type(encoder).__name__} fixed: expected one list of its "
            f"{count} layers named 'layer' or 'layers', found {len(found)}"
        )
    return found[0]


class FrozenBottom:
    """The embeddings and the bottom ``layers`` layers of ``encoder``, held fixed.

    :meth:`encode` returns the encoder's last hidden states like ``encoder(**inputs)``, but
    runs only the layers above the fixed part, starting from hidden states kept per distinct
    item (its unpadded token ids and token types). Batches must be right-padded.
    """

    def __init__(self, encoder: nn.Module, layers: int):
        config = getattr(encoder, "config", None)
        count = int(getattr(config, "num_hidden_layers", 0))
        if not 0 <= layers <= count:
            raise ValueError(
                f"freeze_layers must be between 0 and {count} (the encoder's layers), got {layers}"
            )
        embeddings = getattr(encoder, "embeddings", None)
        if not isinstance(embeddings, nn.Module):
            raise ValueError(f"{type(encoder).__name__} has no embeddings module to hold fixed")
        self.layers = layers
        self._embeddings = embeddings
        self._parent, self._attr, self._all = _layer_list(encoder, count)
        self.modules: list[nn.Module] = [embeddings, *self._all[:layers]]
        for module in self.modules:
            for param in module.parameters():
                param.requires_grad_(False)
        self._cache: dict[bytes, torch.Tensor] = {}

    def release(self) -> None:
        """Let every held module train again and drop the kept hidden states."""
        for module in self.modules:
            for param in module.parameters():
                param.requires_grad_(True)
        self._cache.clear()

    @property
    def cached_items(self) -> int:
        return len(self._cache)

    @contextmanager
    def _only(self, part: nn.ModuleList) -> Iterator[None]:
        setattr(self._parent, self._attr, part)
        try:
            yield
        finally:
            setattr(self._parent, self._attr, self._all)

    def _keys(self, inputs: Mapping[str, torch.Tensor]) -> tuple[list[bytes], list[int]]:
        mask = inputs["attention_mask"]
        lengths = [int(n) for n in mask.sum(dim=1).tolist()]
        if any(not bool(mask[i, :n].all()) for i, n in enumerate(lengths)):
            raise ValueError("held-fixed encoder layers need right-padded batches")
        ids = inputs["input_ids"].cpu()
        types = inputs.get("token_type_ids")
        types = types.cpu() if types is not None else None
        keys = []
        for i, n in enumerate(lengths):
            key = ids[i, :n].numpy().tobytes()
            if types is not None:
                key += b"|" + types[i, :n].numpy().tobytes()
            keys.append(key)
        return keys, lengths

    def _fill(
        self,
        encoder: nn.Module,
        inputs: Mapping[str, torch.Tensor],
        rows: list[int],
        keys: list[bytes],
        lengths: list[int],
    ) -> None:
        """Compute and keep the held part's output for the items ``rows`` of a batch."""
        width = max(lengths[i] for i in rows)
        index = torch.tensor(rows, device=inputs["input_ids"].device)
        part = {k: v.index_select(0, index)[:, :width] for k, v in inputs.items()}
        with torch.no_grad(), self._only(self._all[: self.layers]):
            hidden = encoder(**part).last_hidden_state.float()
        for j, i in enumerate(rows):
            self._cache[keys[i]] = hidden[j, : lengths[i]].clone()

    def encode(self, encoder: nn.Module, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if "input_ids" not in inputs:
            raise ValueError("held-fixed encoder layers need input_ids")
        keys, lengths = self._keys(inputs)
        missing: dict[bytes, int] = {}
        for i, key in enumerate(keys):
            if key not in self._cache:
                missing.setdefault(key, i)
        if missing:
            self._fill(encoder, inputs, list(missing.values()), keys, lengths)
        batch, width = inputs["input_ids"].shape
        first = self._cache[keys[0]]
        start = first.new_zeros((batch, width, first.shape[-1]))
        for i, key in enumerate(keys):
            start[i, : lengths[i]] = self._cache[key]

        def replace(_module: nn.Module, _args: object, _output: object) -> torch.Tensor:
            return start

        handle = self._embeddings.register_forward_hook(replace)
        try:
            with self._only(self._all[self.layers :]):
                return encoder(**inputs).last_hidden_state
        finally:
            handle.remove()
