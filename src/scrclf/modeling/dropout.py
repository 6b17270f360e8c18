"""Dropout with cheaper random masks on CPU.

PyTorch draws a CPU dropout mask one Bernoulli sample per element; in a MiniLM training
step on 2 cores that took a fifth of the forward and backward time (docs/performance.md).
Here each element's mask comes from 16 bits of one 64-bit random word instead: about a
fifth of the cost, from the same seeded generator. An element is dropped with probability
``round(p * 65536) / 65536`` (0.1 becomes 0.1000061) and kept elements are scaled by the
inverse of the kept share, so the expectation is unchanged, as in :class:`torch.nn.Dropout`.

:func:`fast_dropout` puts this in place for a training run and takes it out afterwards: it
swaps the model's :class:`torch.nn.Dropout` modules and routes the encoder's SDPA attention,
whose dropout of the attention probabilities is drawn inside the kernel, through
:func:`attention_with_fast_dropout`. Off CPU, in eval mode and without dropout, everything is
exactly the stock computation. Nothing of this is saved with a model.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

#: The name the attention function is registered under with transformers.
ATTENTION = "scrclf_fast_dropout"

_LEVELS = 1 << 16


def quantized_rate(p: float) -> float:
    """The dropout rate the masks realise: ``p`` rounded to a multiple of 1/65536."""
    return round(float(p) * _LEVELS) / _LEVELS


def keep_mask(
    shape: Sequence[int], p: float, device: torch.device | str = "cpu", generator=None
) -> torch.Tensor:
    """A boolean mask of ``shape``, each element True (kept) with probability
    ``1 - quantized_rate(p)``, drawn from ``generator`` (the default one when None).

    Each 64-bit random word gives four elements their 16-bit uniform draws."""
    count = math.prod(shape)
    dropped = round(float(p) * _LEVELS)
    if dropped <= 0:
        return torch.ones(tuple(shape), dtype=torch.bool, device=device)
    if dropped >= _LEVELS:
        return torch.zeros(tuple(shape), dtype=torch.bool, device=device)
    words = torch.empty((count + 3) // 4, dtype=torch.int64, device=device)
    words.random_(-(1 << 63), None, generator=generator)
    draws = words.view(torch.int16)[:count].view(tuple(shape))
    # int16 draws are uniform on [-32768, 32767]: `dropped` of the 65536 values lie below.
    return draws >= dropped - (1 << 15)


def keep_factor(
    shape: Sequence[int], p: float, dtype: torch.dtype, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Dropout as one factor per element: 0 where :func:`keep_mask` drops it, the inverse of
    the kept share where it keeps it (a single multiplication forward and backward, faster
    here than masked_fill or where)."""
    factor = keep_mask(shape, p, device).to(dtype)
    return factor.mul_(1.0 / (1.0 - quantized_rate(p)))


class FastDropout(nn.Dropout):
    """:class:`torch.nn.Dropout` with masks from :func:`keep_mask` while training on CPU."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training or input.device.type != "cpu" or not 0.0 < self.p < 1.0:
            return super().forward(input)
        factor = keep_factor(input.shape, self.p, input.dtype, input.device)
        return input.mul_(factor) if self.inplace else input * factor


def attention_with_fast_dropout(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    position_bias: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention, with the attention probabilities' dropout mask from
    :func:`keep_mask` where SDPA would compute it in its math kernel (CPU, dropout > 0).

    The dropout case computes what PyTorch's math attention computes, with that mask; every
    other case (no dropout, another device, causal or biased attention, grouped keys) is
    SDPA itself.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    plain = (
        0.0 < dropout < 1.0
        and query.device.type == "cpu"
        and not causal
        and position_bias is None
        and key.shape[1] == query.shape[1]
        and not kwargs.get("output_attentions")
    )
    if not plain:
        return sdpa_attention_forward(
            module,
            query,
            key,
            value,
            attention_mask,
            dropout=dropout,
            scaling=scaling,
            is_causal=is_causal,
            position_bias=position_bias,
            **kwargs,
        )
    # PyTorch's math attention, which SDPA runs on CPU under dropout: fp32 arithmetic for
    # half-precision inputs, boolean masks as -inf, softmax, then the dropout of the weights.
    dtype = query.dtype
    if dtype in (torch.bfloat16, torch.float16):
        query, key, value = query.float(), key.float(), value.float()
    scale = scaling if scaling is not None else 1.0 / math.sqrt(query.shape[-1])
    scores = torch.matmul(query, key.transpose(-2, -1)).mul_(scale)
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, float("-inf"))
        else:
            scores = scores + attention_mask
    weights = scores.softmax(dim=-1)
    factor = keep_factor(weights.shape, dropout, weights.dtype, query.device)
    output = torch.matmul(weights * factor, value).to(dtype)
    return output.transpose(1, 2).contiguous(), None


def register_attention() -> None:
    """Make :func:`attention_with_fast_dropout` known to transformers (idempotent), with
    SDPA's attention masks: an attention function without a mask function of its own gets
    no padding mask at all."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    AttentionInterface.register(ATTENTION, attention_with_fast_dropout)
    AttentionMaskInterface.register(ATTENTION, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


@contextmanager
def fast_dropout(model: nn.Module, enabled: bool = True) -> Iterator[int]:
    """Train ``model`` with :class:`FastDropout` masks inside the block (nothing when not
    ``enabled``). Yields the number of dropout sites switched: the swapped modules plus the
    encoders whose SDPA attention now draws its masks here. All is undone on exit."""
    if not enabled:
        yield 0
        return
    from transformers import PreTrainedModel

    register_attention()
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                fast = FastDropout(child.p, child.inplace)
                fast.train(child.training)
                setattr(parent, name, fast)
                swapped.append((parent, name, child))
    routed: list[PreTrainedModel] = []
    for part in model.modules():
        config = getattr(part, "config", None)
        if (
            isinstance(part, PreTrainedModel)
            and getattr(config, "_attn_implementation", None) == "sdpa"
            and hasattr(part, "set_attn_implementation")
        ):
            part.set_attn_implementation(ATTENTION)
            routed.append(part)
    try:
        yield len(swapped) + len(routed)
    finally:
        for part in routed:
            part.set_attn_implementation("sdpa")
        for parent, name, child in swapped:
            child.train(getattr(parent, name).training)
            setattr(parent, name, child)
