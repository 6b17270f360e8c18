"""Holding the bottom of the encoder fixed while training (trainer.freeze_layers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from scrclf.errors import SettingsError
from scrclf.modeling.encoders import build_model, load_tokenizer
from scrclf.modeling.frozen import FrozenBottom
from scrclf.modeling.model import ScrClfConfig, ScrClfModel
from scrclf.settings import TrainerSettings
from tests.helpers import CONFIG_DIR, compose_train, train_tiny

TEXTS = [
    "Audit supervision records every quarter.",
    "Training for health visitors.",
    "Share information with the police when a child is missing from school.",
    "Training for health visitors.",
]


def _model_cfg(layers: int = 3, model_type: str = "bert") -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "model" / "tiny.yaml"))
    cfg["encoder_config"].update(
        model_type=model_type,
        num_hidden_layers=layers,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    if model_type == "mpnet":
        cfg["encoder_config"].pop("type_vocab_size")
    cfg["dropout"] = 0.0
    return cfg


def _batch(cfg: dict, texts=TEXTS) -> dict[str, torch.Tensor]:
    enc = load_tokenizer(cfg)(texts, ["A finding."] * len(texts), padding=True)
    return {k: torch.tensor(v) for k, v in enc.items()}


@pytest.mark.parametrize("model_type", ["bert", "mpnet"])
@pytest.mark.parametrize("layers", [0, 1, 2, 3])
def test_training_forward_from_kept_states_equals_the_whole_encoder(tasks, model_type, layers):
    torch.manual_seed(0)
    cfg = _model_cfg(3, model_type)
    model = build_model(cfg, tasks, 64)
    batch = _batch(cfg)
    if model_type == "mpnet":
        batch.pop("token_type_ids", None)
    model.eval()
    with torch.no_grad():
        whole = model(**batch).logits
    model.freeze_encoder(layers)
    model.train()  # no dropout anywhere: training mode differs only by the kept states
    with torch.no_grad():
        first = model(**batch).logits
        # A batch padded to another width reuses the kept states.
        again = model(**{k: v for k, v in _batch(cfg, TEXTS[1:3]).items() if k in batch})
    for a, b in zip(whole, first, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for a, b in zip(whole, again.logits, strict=True):
        torch.testing.assert_close(a[1:3], b, rtol=1e-5, atol=1e-5)
    # Three distinct items (the fourth repeats the second).
    assert model._bottom is not None and model._bottom.cached_items == 3


def test_held_layers_get_no_gradients_and_stay_in_eval_mode(tasks):
    torch.manual_seed(0)
    cfg = _model_cfg(3)
    model = build_model(cfg, tasks, 64)
    model.freeze_encoder(2)
    model.train()
    layers = model.encoder.encoder.layer
    assert not model.encoder.embeddings.training and not layers[1].training
    assert layers[2].training and model.heads.training
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(
        n.startswith(("encoder.embeddings.", "encoder.encoder.layer.0.")) for n in trainable
    )
    assert any(n.startswith("encoder.encoder.layer.2.") for n in trainable)
    groups = model.param_groups(1e-4, 0.01, head_learning_rate=1e-3)
    assert sum(len(g["params"]) for g in groups) == len(trainable)
    batch = _batch(cfg)
    targets = {
        "evidence": torch.tensor([0, 1, 2, 1]),
        "action_strength": torch.tensor([0, 1, 2, 1]),
    }
    model(**batch, **targets).loss.backward()
    assert layers[2].attention.self.query.weight.grad is not None
    assert layers[1].attention.self.query.weight.grad is None
    # Released, every layer trains again and the kept states are gone.
    model.freeze_encoder(None)
    assert model._bottom is None and model.encoder.embeddings.training
    assert all(p.requires_grad for n, p in model.named_parameters() if n.startswith("encoder."))


def test_layer_count_is_checked(tasks):
    model = build_model(_model_cfg(2), tasks, 64)
    with pytest.raises(ValueError, match="between 0 and 2"):
        model.freeze_encoder(3)


def test_left_padded_batches_are_refused(tasks):
    cfg = _model_cfg(2)
    model = build_model(cfg, tasks, 64)
    model.freeze_encoder(1)
    model.train()
    batch = _batch(cfg)
    batch = {k: v.flip(1) for k, v in batch.items()}
    with pytest.raises(ValueError, match="right-padded"):
        model(**batch)


def test_an_encoder_without_a_layer_list_is_refused():
    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = type("C", (), {"num_hidden_layers": 2})()
            self.embeddings = torch.nn.Embedding(4, 2)
            self.blocks = torch.nn.ModuleList([torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)])

    with pytest.raises(ValueError, match="named 'layer' or 'layers'"):
        FrozenBottom(Odd(), 1)


def test_setting_is_typed_and_off_by_default():
    raw = OmegaConf.to_container(compose_train([]).trainer)
    assert TrainerSettings.from_config(raw).freeze_layers is None
    with pytest.raises(SettingsError, match="freeze_layers must be at least 0"):
        TrainerSettings.from_config({**raw, "freeze_layers": -1})
    with pytest.raises(SettingsError, match="cannot be combined"):
        TrainerSettings.from_config({**raw, "freeze_layers": 2, "compile": True})


@pytest.mark.parametrize("loop", ["trainer", "lean"])
def test_training_with_held_layers(toy_corpus, tmp_path, loop):
    # The lean loop compiles its step by default; held layers run eagerly.
    run = tmp_path / "run"
    summary = train_tiny(toy_corpus, run, loop, "trainer.freeze_layers=1", "trainer.compile=false")
    assert np.isfinite(summary["validation"]["mean_macro_f1"])
    assert "freeze_layers: 1" in (run / "config.yaml").read_text()
    saved = ScrClfModel.from_pretrained(run / "model")
    assert isinstance(saved.config, ScrClfConfig) and saved._bottom is None
    assert "freeze_layers" not in (run / "model" / "config.json").read_text()


def test_held_word_embeddings_get_no_gradient_and_no_update(tasks):
    torch.manual_seed(0)
    cfg = _model_cfg(2)
    cfg["encoder_config"]["hidden_dropout_prob"] = 0.1
    model = build_model(cfg, tasks, 64)
    words = model.encoder.embeddings.word_embeddings.weight
    model.freeze_encoder(None, word_embeddings=True)
    model.train()
    # Only the token matrix is held: the embeddings module still trains, dropout included.
    assert model._bottom is None and model.encoder.embeddings.training
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "encoder.embeddings.word_embeddings.weight" not in trainable
    assert "encoder.embeddings.position_embeddings.weight" in trainable
    groups = model.param_groups(1e-2, 0.01, head_learning_rate=1e-1)
    assert sum(len(g["params"]) for g in groups) == len(trainable)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(groups)
    targets = {
        "evidence": torch.tensor([0, 1, 2, 1]),
        "action_strength": torch.tensor([0, 1, 2, 1]),
    }
    model(**_batch(cfg), **targets).loss.backward()
    assert words.grad is None
    assert model.encoder.embeddings.position_embeddings.weight.grad is not None
    optimizer.step()
    after = dict(model.named_parameters())
    assert torch.equal(before["encoder.embeddings.word_embeddings.weight"], words)
    assert not torch.equal(
        before["encoder.embeddings.position_embeddings.weight"],
        after["encoder.embeddings.position_embeddings.weight"],
    )
    # Called again without it, the matrix trains again; with held layers it stays held.
    model.freeze_encoder(None)
    assert words.requires_grad
    model.freeze_encoder(1, word_embeddings=True)
    assert not words.requires_grad
    model.freeze_encoder(None)
    assert all(p.requires_grad for n, p in model.named_parameters() if n.startswith("encoder."))


def test_word_embeddings_setting_is_typed():
    raw = OmegaConf.to_container(compose_train([]).trainer)
    assert TrainerSettings.from_config(raw).freeze_word_embeddings is True
    assert (
        TrainerSettings.from_config({**raw, "freeze_word_embeddings": False}).freeze_word_embeddings
        is False
    )
    with pytest.raises(SettingsError, match="freeze_word_embeddings"):
        TrainerSettings.from_config({**raw, "freeze_word_embeddings": "yes"})


@pytest.mark.parametrize("loop", ["trainer", "lean"])
def test_training_with_held_word_embeddings(toy_corpus, tmp_path, loop):
    # A run with the learning rate at 0 keeps every weight at its (seeded) initial value.
    held = train_tiny(toy_corpus, tmp_path / "held", loop, "trainer.freeze_word_embeddings=true")
    train_tiny(toy_corpus, tmp_path / "still", loop, "trainer.learning_rate=0")
    assert np.isfinite(held["validation"]["mean_macro_f1"])
    assert "freeze_word_embeddings: true" in (tmp_path / "held" / "config.yaml").read_text()
    trained = ScrClfModel.from_pretrained(tmp_path / "held" / "model").state_dict()
    initial = ScrClfModel.from_pretrained(tmp_path / "still" / "model").state_dict()
    name = "encoder.embeddings.word_embeddings.weight"
    torch.testing.assert_close(trained[name], initial[name], rtol=0, atol=0)
    moved = [
        n
        for n in trained
        if n.startswith("encoder.") and n != name and not torch.equal(trained[n], initial[n])
    ]
    assert "encoder.embeddings.position_embeddings.weight" in moved
