"""Dropout masks from 64-bit random words (scrclf.modeling.dropout, trainer.fast_dropout)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from scrclf.modeling.dropout import (
    ATTENTION,
    FastDropout,
    attention_with_fast_dropout,
    fast_dropout,
    keep_mask,
    quantized_rate,
)
from scrclf.modeling.encoders import build_model
from scrclf.settings import TrainerSettings
from tests.helpers import compose_train, train_tiny


def _within(share: float, rate: float, count: int, sigmas: float = 5.0) -> bool:
    return abs(share - rate) <= sigmas * math.sqrt(rate * (1 - rate) / count)


def test_masks_drop_at_the_rate_in_every_16_bit_lane_of_the_random_words():
    torch.manual_seed(0)
    count = 1 << 22
    dropped = ~keep_mask((count,), 0.1)
    rate = quantized_rate(0.1)
    assert rate == 6554 / 65536
    assert _within(float(dropped.float().mean()), rate, count)
    # Each word feeds four consecutive elements; a lane with fewer random bits (the sign
    # of a 63-bit draw, say) would drop at another rate.
    for lane in range(4):
        assert _within(float(dropped[lane::4].float().mean()), rate, count // 4)
    # Neighbouring elements are independent.
    both = (dropped[:-1] & dropped[1:]).float().mean()
    assert _within(float(both), rate * rate, count - 1)


def test_masks_follow_the_seeded_generator_and_handle_the_edge_rates():
    torch.manual_seed(3)
    first = keep_mask((5, 7, 3), 0.25)
    second = keep_mask((5, 7, 3), 0.25)
    torch.manual_seed(3)
    assert torch.equal(keep_mask((5, 7, 3), 0.25), first)
    assert not torch.equal(first, second)
    assert first.shape == (5, 7, 3) and first.dtype == torch.bool
    generator = torch.Generator().manual_seed(1)
    again = torch.Generator().manual_seed(1)
    assert torch.equal(
        keep_mask((9,), 0.5, generator=generator), keep_mask((9,), 0.5, generator=again)
    )
    assert bool(keep_mask((4, 4), 0.0).all())
    assert not bool(keep_mask((4, 4), 1.0).any())


@pytest.mark.parametrize("inplace", [False, True])
def test_fast_dropout_zeroes_or_rescales_each_element_and_keeps_the_expectation(inplace):
    torch.manual_seed(0)
    layer = FastDropout(0.1, inplace=inplace)
    x = torch.rand(512, 512) + 0.5
    y = layer(x.clone())
    scale = 1 / (1 - quantized_rate(0.1))
    kept = y != 0
    assert torch.allclose(y[kept], x[kept] * scale)
    assert _within(1 - float(kept.float().mean()), quantized_rate(0.1), x.numel())
    assert float(y.mean()) == pytest.approx(float(x.mean()), rel=5e-3)
    layer.eval()
    assert torch.equal(layer(x), x)


def test_fast_dropout_gradient_is_its_mask_times_the_scale():
    torch.manual_seed(0)
    x = torch.randn(64, 32, requires_grad=True)
    y = FastDropout(0.3)(x)
    y.sum().backward()
    factor = torch.where(y != 0, 1 / (1 - quantized_rate(0.3)), 0.0)
    assert torch.allclose(x.grad, factor)


@pytest.mark.parametrize("boolean_mask", [False, True])
def test_attention_with_dropout_is_the_math_attention_with_the_drawn_mask(boolean_mask):
    torch.manual_seed(0)
    batch, heads, length, dim = 3, 2, 6, 4
    q, k, v = (torch.randn(batch, heads, length, dim, requires_grad=True) for _ in range(3))
    padded = torch.ones(batch, 1, 1, length, dtype=torch.bool)
    padded[0, ..., 4:] = False
    mask = padded if boolean_mask else torch.zeros(padded.shape).masked_fill(~padded, -1e9)
    module = nn.Module()
    module.is_causal = False

    torch.manual_seed(7)
    out, weights = attention_with_fast_dropout(module, q, k, v, mask, dropout=0.2, scaling=0.5)
    torch.manual_seed(7)
    keep = keep_mask((batch, heads, length, length), 0.2)
    scores = (q @ k.transpose(-1, -2)) * 0.5
    scores = scores.masked_fill(~padded, float("-inf"))
    probs = scores.softmax(-1) * keep / (1 - quantized_rate(0.2))
    expected = (probs @ v).transpose(1, 2)
    assert weights is None
    assert out.shape == (batch, length, heads, dim)
    assert torch.allclose(out, expected, atol=1e-6)
    out.sum().backward()
    assert all(t.grad is not None and bool(t.grad.abs().sum() > 0) for t in (q, k, v))

    # Without dropout it is SDPA itself, bit for bit.
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    plain, _ = attention_with_fast_dropout(module, q, k, v, mask, dropout=0.0, scaling=0.5)
    stock, _ = sdpa_attention_forward(module, q, k, v, mask, dropout=0.0, scaling=0.5)
    assert torch.equal(plain, stock)


def test_fast_dropout_swaps_every_site_in_a_model_and_puts_everything_back(
    tasks, tiny_model_cfg, batch, tmp_path
):
    model = build_model(tiny_model_cfg, tasks, 64)
    dropouts = [m for m in model.modules() if type(m) is nn.Dropout]
    assert dropouts
    model.eval()
    before = model(**batch).logits
    with fast_dropout(model) as sites:
        assert sites == len(dropouts) + 1  # and the encoder's attention
        assert not any(type(m) is nn.Dropout for m in model.modules())
        assert model.encoder.config._attn_implementation == ATTENTION
        # Evaluation is unchanged: no dropout, SDPA without dropout.
        for logits, earlier in zip(model(**batch).logits, before, strict=True):
            assert torch.equal(logits, earlier)
        model.train()
        torch.manual_seed(5)
        a = model(**batch).logits[0]
        torch.manual_seed(5)
        b = model(**batch).logits[0]
        c = model(**batch).logits[0]
        assert torch.equal(a, b) and not torch.equal(a, c)
        model.save_pretrained(tmp_path / "saved")
    assert sum(type(m) is nn.Dropout for m in model.modules()) == len(dropouts)
    assert all(m.training for m in model.modules() if type(m) is nn.Dropout)
    assert model.encoder.config._attn_implementation == "sdpa"
    assert ATTENTION not in json.dumps(json.loads((tmp_path / "saved" / "config.json").read_text()))
    with fast_dropout(model, enabled=False) as sites:
        assert sites == 0
        assert any(type(m) is nn.Dropout for m in model.modules())


def test_the_setting_is_typed_and_on_for_cpu_training():
    trainer = compose_train(["model=tiny"]).trainer
    assert TrainerSettings.from_config(trainer).fast_dropout is True
    bad = dict(trainer, fast_dropout="yes")
    with pytest.raises(Exception, match="fast_dropout"):
        TrainerSettings.from_config(bad)


@pytest.mark.parametrize("loop", ["trainer", "lean"])
def test_runs_with_either_mask_source_train_and_differ_only_in_their_draws(
    toy_corpus, tmp_path, loop
):
    from safetensors.torch import load_file

    def weights(name: str, setting: str) -> dict[str, torch.Tensor]:
        summary = train_tiny(toy_corpus, tmp_path / name, loop, f"trainer.fast_dropout={setting}")
        assert 0.0 < summary["validation"]["mean_macro_f1"] <= 1.0
        return load_file(tmp_path / name / "model" / "model.safetensors")

    fast, again, native = (
        weights("fast", "true"),
        weights("again", "true"),
        weights("native", "false"),
    )
    assert fast.keys() == native.keys()
    assert all(torch.equal(fast[k], again[k]) for k in fast)
    assert not all(torch.equal(fast[k], native[k]) for k in fast)
