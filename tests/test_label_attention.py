"""Heads that attend over the tokens once per label (``model.label_attention``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoModel

import scrclf
from scrclf.modeling.encoders import build_model
from scrclf.modeling.model import LabelAttentionHead, ScrClfConfig
from tests.helpers import train_tiny

KEYS = ["per_task", "shared", "tokens"]
# Projections of the tokens that two attending heads add, by ``label_attention_keys``.
PROJECTIONS = {"per_task": 2, "shared": 1, "tokens": 0}


@pytest.fixture(params=KEYS)
def attending(request, tiny_model_cfg, tasks):
    torch.manual_seed(0)
    cfg = dict(
        tiny_model_cfg, label_attention=["themes", "evidence"], label_attention_keys=request.param
    )
    return build_model(cfg, tasks, max_length=64).eval()


def _keys(model, head, hidden):
    if head.proj is not None:
        return torch.tanh(head.proj(hidden))
    return model.label_keys_of(hidden)


def _projections(model) -> list[torch.nn.Linear]:
    heads = [h.proj for h in model.heads.values() if isinstance(h, LabelAttentionHead)]
    return [p for p in (*heads, model.label_keys) if p is not None]


def test_only_the_named_tasks_attend(attending, batch):
    heads = attending.heads
    assert isinstance(heads["themes"], LabelAttentionHead)
    assert isinstance(heads["evidence"], LabelAttentionHead)
    assert isinstance(heads["action_strength"], torch.nn.Linear)
    assert heads["themes"].query.shape == (11, attending.encoder.config.hidden_size)
    with torch.no_grad():
        out = attending(**batch)
    assert [tuple(t.shape) for t in out.logits] == [(3, 11), (3, 5), (3, 3)]


def test_each_label_reads_its_own_tokens(attending, batch):
    """Two labels with different queries weigh the tokens differently: the head is not the
    mean-pooled text under another name."""
    head = attending.heads["themes"]
    with torch.no_grad():
        hidden = attending.encoder(**batch).last_hidden_state
        keys = _keys(attending, head, hidden)
        scores = torch.einsum("bld,kd->bkl", keys, head.query)
    assert not torch.allclose(scores[0, 0], scores[0, 1])


def test_padding_does_not_change_an_items_logits(attending, batch):
    one = {k: v[2:3] for k, v in batch.items()}
    length = int(one["attention_mask"].sum())
    assert length < one["input_ids"].shape[1]
    trimmed = {k: v[:, :length] for k, v in one.items()}
    with torch.no_grad():
        padded, alone = attending(**one).logits, attending(**trimmed).logits
    for a, b in zip(padded, alone, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_gradients_reach_queries_and_encoder(attending, batch):
    attending.train()
    out = attending(**batch, themes=torch.ones(3, 11), evidence=torch.tensor([0, 1, 2]))
    out.loss.backward()
    head = attending.heads["themes"]
    projections = [p.weight for p in _projections(attending)]
    assert len(projections) == PROJECTIONS[attending.config.label_attention_keys]
    for param in (head.query, head.weight, head.bias, *projections):
        assert param.grad is not None and float(param.grad.abs().sum()) > 0
    assert attending.encoder.embeddings.word_embeddings.weight.grad is not None


def test_attention_heads_learn_at_the_head_rate(attending):
    groups = attending.param_groups(1e-5, 0.01, head_learning_rate=1e-3)
    for param in (attending.heads["themes"].query, *(p.weight for p in _projections(attending))):
        assert [g["lr"] for g in groups if any(p is param for p in g["params"])] == [1e-3]


def test_saves_and_reloads_through_the_auto_classes(attending, batch, tmp_path):
    attending.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert loaded.config.label_attention == ["themes", "evidence"]
    assert loaded.config.label_attention_keys == attending.config.label_attention_keys
    assert isinstance(loaded.heads["themes"], LabelAttentionHead)
    assert len(_projections(loaded)) == len(_projections(attending))
    with torch.no_grad():
        for a, b in zip(attending(**batch).logits, loaded(**batch).logits, strict=True):
            assert torch.allclose(a, b, atol=1e-6)


def test_exports_to_onnx_with_the_same_logits(attending, batch, tmp_path):
    import onnxruntime as ort

    from scrclf.export.onnx import export_onnx

    export_onnx(attending, tmp_path / "model.onnx")
    session = ort.InferenceSession(str(tmp_path / "model.onnx"))
    outputs = session.run(None, {k: v.numpy() for k, v in batch.items()})
    with torch.no_grad():
        expected = attending(**batch).logits
    for got, want in zip(outputs, expected, strict=True):
        np.testing.assert_allclose(got, want.numpy(), atol=1e-4)


@pytest.mark.parametrize(
    "value, message",
    [
        ("themes", "list of task names"),
        (["themes", "themes"], "twice"),
        (["topics"], "unknown tasks"),
    ],
)
def test_bad_settings_are_refused(tasks, value, message):
    with pytest.raises(scrclf.errors.SettingsError, match=message):
        ScrClfConfig(tasks=tasks.to_list(), label_attention=value)


def test_unknown_keys_are_refused(tasks):
    with pytest.raises(scrclf.errors.SettingsError, match="label_attention_keys must be one of"):
        ScrClfConfig(tasks=tasks.to_list(), label_attention=["themes"], label_attention_keys="q")


def test_saved_configs_read_as_mappings_share_the_models_keys():
    from scrclf.export.build import KEYS_TEXT
    from scrclf.modeling.keys import LABEL_ATTENTION_KEYS, saved_label_attention_keys

    # A config saved before the setting existed reads as the model's own default.
    assert saved_label_attention_keys({}) == ScrClfConfig().label_attention_keys == "per_task"
    assert saved_label_attention_keys({"label_attention_keys": "tokens"}) == "tokens"
    with pytest.raises(scrclf.errors.SettingsError, match="label_attention_keys must be one of"):
        saved_label_attention_keys({"label_attention_keys": "q"})
    # The model card has words for every setting.
    assert set(KEYS_TEXT) == set(LABEL_ATTENTION_KEYS)


def test_shared_keys_cost_one_projection_and_tokens_none(tiny_model_cfg, tasks):
    """Three attending heads: three projections of the tokens of their own, one shared, or
    none; the queries and weight vectors are the same in number either way."""
    sizes = {}
    for keys in KEYS:
        cfg = dict(tiny_model_cfg, label_attention=list(tasks.names), label_attention_keys=keys)
        model = build_model(cfg, tasks, max_length=64)
        assert len(_projections(model)) == {"per_task": 3, "shared": 1, "tokens": 0}[keys]
        sizes[keys] = sum(p.numel() for p in model.parameters())
    hidden = tiny_model_cfg["encoder_config"]["hidden_size"]
    projection = hidden * hidden + hidden
    assert sizes["per_task"] - sizes["shared"] == 2 * projection
    assert sizes["shared"] - sizes["tokens"] == projection


def test_a_head_without_its_own_projection_needs_the_keys():
    head = LabelAttentionHead(8, 3, project=False)
    hidden, mask = torch.zeros(1, 4, 8), torch.ones(1, 4, dtype=torch.long)
    with pytest.raises(TypeError, match="pass the keys"):
        head(hidden, mask, torch.nn.Identity())
    assert head(hidden, mask, torch.nn.Identity(), keys=hidden).shape == (1, 3)


@pytest.mark.parametrize("loop", ["trainer", "lean"])
def test_training_keeps_the_setting_in_the_saved_model(toy_corpus, tmp_path, loop):
    summary = train_tiny(
        toy_corpus,
        tmp_path / "run",
        loop,
        "model.label_attention=[themes]",
        "model.label_attention_keys=shared",
    )
    assert np.isfinite(summary["validation"]["mean_macro_f1"])
    loaded = AutoModel.from_pretrained(tmp_path / "run" / "model")
    assert loaded.config.label_attention == ["themes"]
    assert loaded.config.label_attention_keys == "shared"
    assert isinstance(loaded.heads["themes"], LabelAttentionHead)


def test_export_keeps_parity_and_describes_the_heads(toy_corpus, tmp_path):
    from scrclf.export.build import export_model

    run = tmp_path / "run"
    train_tiny(toy_corpus, run, "trainer", "model.label_attention=[themes,evidence]")
    export = export_model(run, tmp_path / "models" / "attending")
    meta = json.loads((export / "scrclf.json").read_text())
    assert meta["parity"]["onnx_fp32"]["max_abs_logit_diff"] < 1e-4
    card = (export / "README.md").read_text()
    assert "themes and evidence attend over the tokens once per label" in card
    assert "action_strength linear over the masked mean of the tokens" in card


@pytest.mark.parametrize(
    "named, words",
    [
        (None, "masked mean pooling, one linear head per task"),
        (["themes"], "one head per task: themes attend over the tokens once per label"),
        (
            ["themes", "evidence", "action_strength"],
            "one head per task: themes, evidence and action_strength attend over the tokens "
            "once per label (a query and a weight vector per label; ",
        ),
    ],
)
def test_model_card_words_for_the_heads(named, words):
    from scrclf.export.build import heads_text

    text = heads_text(["themes", "evidence", "action_strength"], named)
    assert text.startswith(words)
    if named:
        assert "each head projecting the tokens on its own" in text
        shared = heads_text(["themes", "evidence", "action_strength"], named, "shared")
        assert "over one projection of the tokens that they share" in shared
    assert ("linear over the masked mean" in text) == (named is not None and len(named) < 3)


def test_int8_graph_quantizes_the_projections_per_token(attending, batch, tmp_path):
    from scrclf.export import quantization

    feeds = {k: v.numpy().astype(np.int64) for k, v in batch.items()}
    info = quantization.build_int8_graph(attending, tmp_path / "q.onnx", [feeds])
    layers = attending.encoder.config.num_hidden_layers
    # The encoder's six products per layer, and the keys' projections.
    keys = attending.config.label_attention_keys
    assert info["quantized_matmuls"] == 6 * layers + PROJECTIONS[keys]
    assert info["batch_independent"] is True
    got = quantization._logits(quantization._session(str(tmp_path / "q.onnx")), [feeds])
    with torch.no_grad():
        want = attending(**batch).logits
    for g, w in zip(got, want, strict=True):
        assert np.max(np.abs(g - w.numpy())) < 0.1 * max(1.0, float(w.abs().max()))
