"""Heads that read the recommendation text alone (``model.text_only_heads``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModel

import scrclf  # noqa: F401  (registers the model with the Auto classes)
from scrclf.errors import SettingsError
from scrclf.modeling.encoders import build_model, load_tokenizer
from scrclf.modeling.model import LabelAttentionHead, ScrClfConfig, first_segment, masked_mean

TEXTS = ["Training for GPs on bruising.", "The Board should audit supervision."]
FINDINGS = ["The GP did not refer the baby.", "Supervision was rare and unrecorded."]


@pytest.fixture(params=[None, "tokens"], ids=["linear", "attending"])
def reading(request, tiny_model_cfg, tasks):
    """A tiny model whose themes head reads the text alone; linear heads over the mean of the
    tokens, or every head attending over the token states."""
    torch.manual_seed(0)
    attending = ["themes", "evidence", "action_strength"] if request.param else None
    cfg = dict(
        tiny_model_cfg,
        text_only_heads=["themes"],
        label_attention=attending,
        label_attention_keys=request.param or "per_task",
    )
    model = build_model(cfg, tasks, max_length=64).eval()
    tok = load_tokenizer(tiny_model_cfg)
    return model, dict(tok(TEXTS, FINDINGS, padding=True, return_tensors="pt"))


def _head_logits(model, batch, mask):
    """Every head's logits computed by hand over ``mask``'s tokens (no wide part)."""
    with torch.no_grad():
        hidden = model.encoder(**batch).last_hidden_state
        keys = model.label_keys_of(hidden)
        out = []
        for name in model.task_names:
            head = model.heads[name]
            if isinstance(head, LabelAttentionHead):
                out.append(head(hidden, mask, model.dropout, keys))
            else:
                out.append(head(masked_mean(hidden, mask)))
    return out


def test_build_model_takes_the_separator_from_the_tokenizer(reading, tiny_model_cfg):
    model, _ = reading
    assert model.config.text_only_heads == ["themes"]
    assert model.config.sep_token_id == load_tokenizer(tiny_model_cfg).sep_token_id


def test_the_named_head_reads_the_first_segment_and_the_others_the_pair(reading):
    model, batch = reading
    with torch.no_grad():
        got = model(**batch).logits
    whole = batch["attention_mask"]
    text = first_segment(batch["input_ids"], whole, model.config.sep_token_id)
    assert (text.sum(dim=1) < whole.sum(dim=1)).all()  # the findings are left out
    by_text, by_pair = _head_logits(model, batch, text), _head_logits(model, batch, whole)
    torch.testing.assert_close(got[0], by_text[0], atol=1e-5, rtol=0)
    for i in (1, 2):
        torch.testing.assert_close(got[i], by_pair[i], atol=1e-5, rtol=0)
    assert not torch.allclose(by_text[0], by_pair[0], atol=1e-4)


def test_saved_and_reloaded_model_keeps_the_setting(reading, tmp_path):
    model, batch = reading
    model.save_pretrained(tmp_path)
    again = AutoModel.from_pretrained(tmp_path).eval()
    assert again.config.text_only_heads == ["themes"]
    assert again.config.sep_token_id == model.config.sep_token_id
    with torch.no_grad():
        for a, b in zip(model(**batch).logits, again(**batch).logits, strict=True):
            torch.testing.assert_close(a, b)


def test_onnx_graph_reads_the_text_alone_too(tiny_model_cfg, tasks, tmp_path):
    """One graph with both kinds of head reading the text alone: themes linear, evidence
    attending; action strength reads the pair."""
    import onnxruntime as ort

    from scrclf.export.onnx import export_onnx

    torch.manual_seed(0)
    cfg = dict(tiny_model_cfg, text_only_heads=["themes", "evidence"], label_attention=["evidence"])
    model = build_model(cfg, tasks, max_length=64).eval()
    batch = dict(load_tokenizer(tiny_model_cfg)(TEXTS, FINDINGS, padding=True, return_tensors="pt"))
    path = tmp_path / "model.onnx"
    export_onnx(model, path)
    session = ort.InferenceSession(str(path))
    names = {i.name for i in session.get_inputs()}
    feeds = {k: v.numpy() for k, v in batch.items() if k in names}
    with torch.no_grad():
        want = model(**batch).logits
    for got, expected in zip(session.run(None, feeds), want, strict=True):
        np.testing.assert_allclose(got, expected.numpy(), atol=1e-4)


@pytest.mark.parametrize(
    ("value", "sep", "message"),
    [
        ("themes", 102, "must be null or a list of task names"),
        (["topics"], 102, "unknown tasks"),
        (["themes", "themes"], 102, "names a task twice"),
        (["themes"], None, "needs the tokenizer's separator"),
        (["themes"], -1, "must be a token id"),
    ],
)
def test_settings_are_checked(tasks, value, sep, message):
    with pytest.raises(SettingsError, match=message):
        ScrClfConfig(tasks=tasks.to_list(), text_only_heads=value, sep_token_id=sep)


def test_an_empty_list_means_every_head_reads_the_pair(tasks):
    config = ScrClfConfig(tasks=tasks.to_list(), text_only_heads=[])
    assert config.text_only_heads is None and config.sep_token_id is None


def test_model_card_names_the_heads_that_read_the_text_alone():
    from scrclf.export.build import heads_text

    names = ["themes", "evidence", "action_strength"]
    assert "alone" not in heads_text(names, None)
    assert heads_text(names, None, text_only=["themes"]) == (
        "masked mean pooling, one linear head per task; the head of themes reads the "
        "recommendation text's tokens alone, not the finding's"
    )
    assert heads_text(names, names, "tokens", ["themes", "evidence"]).endswith(
        "; the heads of themes and evidence read the recommendation text's tokens alone, "
        "not the finding's"
    )
