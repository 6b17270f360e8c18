"""The multi-task model: shapes, loss, save and load, Auto-class registration."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModel

import scrclf
from scrclf.modeling.encoders import build_model
from scrclf.modeling.model import ScrClfConfig, ScrClfModel, masked_mean
from scrclf.tasks import TaskConfigError, TaskSet


def test_logits_and_loss_shapes(tasks, tiny_model_cfg, batch):
    model = build_model(tiny_model_cfg, tasks, 64)
    targets = {
        "themes": torch.zeros(3, 11),
        "evidence": torch.tensor([0, 3, 4]),
        "action_strength": torch.tensor([0, 1, 2]),
    }
    out = model(**batch, **targets)
    assert [tuple(t.shape) for t in out.logits] == [(3, 11), (3, 5), (3, 3)]
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    assert model.heads["evidence"].weight.grad is not None
    assert model(**batch).loss is None


def test_loss_is_the_weighted_sum_of_task_losses(tiny_model_cfg, batch):
    spec = [
        {"name": "a", "type": "single_label", "labels": ["x", "y"], "loss_weight": 2.0},
        {
            "name": "b",
            "type": "multi_label",
            "labels": ["p", "q", "r"],
            "loss_weight": 0.5,
            "class_weights": [1.0, 3.0, 1.0],
        },
    ]
    model = build_model(tiny_model_cfg, TaskSet.from_config(spec), 64).eval()
    a, b = torch.tensor([0, 1, 1]), torch.tensor([[1.0, 0, 0], [0, 1, 1], [0, 0, 1]])
    out = model(**batch, a=a, b=b)
    la, lb = out.logits
    expected = 2.0 * torch.nn.functional.cross_entropy(
        la, a
    ) + 0.5 * torch.nn.functional.binary_cross_entropy_with_logits(
        lb, b, pos_weight=torch.tensor([1.0, 3.0, 1.0])
    )
    assert torch.allclose(out.loss, expected, atol=1e-6)


def test_unknown_target_is_an_error(tasks, tiny_model_cfg, batch):
    model = build_model(tiny_model_cfg, tasks, 64)
    with pytest.raises(TypeError, match="themez"):
        model(**batch, themez=torch.zeros(3, 11))


def test_mean_pooling_ignores_padding():
    hidden = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert torch.equal(masked_mean(hidden, mask), torch.tensor([[2.0, 2.0]]))


def test_save_load_gives_equal_logits_through_auto_classes(tasks, tiny_model_cfg, batch, tmp_path):
    model = build_model(tiny_model_cfg, tasks, 64).eval()
    model.config.tasks[0]["thresholds"] = [0.4] * 11
    model.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert "model.safetensors" in files and not any(f.endswith((".bin", ".pt")) for f in files)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), ScrClfConfig)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, ScrClfModel)
    assert loaded.config.tasks[0]["thresholds"] == [0.4] * 11
    with torch.no_grad():
        for x, y in zip(model(**batch).logits, loaded(**batch).logits, strict=True):
            assert torch.equal(x, y)


def test_package_import_registers_model_type():
    assert scrclf.ScrClfConfig.model_type == "scrclf"
    assert AutoConfig.for_model("scrclf").__class__ is ScrClfConfig


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"name": "t", "type": "multi", "labels": ["a", "b"]}, "type must be"),
        ({"name": "t", "type": "single_label", "labels": ["a", "a"]}, "distinct"),
        (
            {"name": "t", "type": "single_label", "labels": ["a", "b"], "class_weighting": "auto"},
            "class_weighting",
        ),
        ({"name": "t", "type": "single_label", "labels": ["a", "b"], "colour": 1}, "unknown keys"),
        (
            {"name": "t", "type": "multi_label", "labels": ["a", "b"], "thresholds": [0.5]},
            "thresholds has 1",
        ),
    ],
)
def test_bad_task_specs_are_rejected(bad, match):
    with pytest.raises(TaskConfigError, match=match):
        TaskSet.from_config([bad])


# ----------------------------------------------------------------------------- wide part


@pytest.fixture(scope="module")
def wide_model(tiny_model_cfg, tasks):
    cfg = dict(tiny_model_cfg, wide={"buckets": 2048, "ngrams": 2})
    torch.manual_seed(0)
    model = build_model(cfg, tasks, max_length=64).eval()
    with torch.no_grad():
        model.wide.weight.normal_()
    return model


def test_wide_part_starts_at_zero_and_adds_to_every_head(tiny_model_cfg, tasks, batch):
    cfg = dict(tiny_model_cfg, wide={"buckets": 512, "ngrams": 1})
    model = build_model(cfg, tasks, max_length=64).eval()
    assert model.wide.weight.shape == (512, sum(t.num_labels for t in tasks))
    assert float(model.wide.weight.detach().abs().sum()) == 0.0
    with torch.no_grad():
        before = model(**batch).logits
        model.wide.weight.fill_(0.5)
        after = model(**batch).logits
    for b, a in zip(before, after, strict=True):
        assert torch.all(a > b)


def test_wide_part_ignores_padding(wide_model, batch):
    one = {k: v[:1] for k, v in batch.items()}
    length = int(one["attention_mask"].sum())
    trimmed = {k: v[:, :length] for k, v in one.items()}
    with torch.no_grad():
        padded = wide_model.wide_logits(one["input_ids"], one["attention_mask"])
        alone = wide_model.wide_logits(trimmed["input_ids"], trimmed["attention_mask"])
    assert torch.allclose(padded, alone, atol=1e-6)


def test_wide_bigrams_tell_word_order_apart(wide_model):
    ids = torch.tensor([[101, 2000, 3000, 102], [101, 3000, 2000, 102]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        out = wide_model.wide_logits(ids, mask)
    assert not torch.allclose(out[0], out[1])


def test_wide_part_learns_at_the_head_rate(wide_model):
    groups = wide_model.param_groups(1e-5, 0.01, head_learning_rate=1e-3)
    wide_group = [g for g in groups if any(p is wide_model.wide.weight for p in g["params"])]
    assert wide_group and wide_group[0]["lr"] == 1e-3


def test_wide_model_saves_and_reloads(wide_model, batch, tmp_path):
    wide_model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert loaded.config.wide == {
        "buckets": 2048,
        "ngrams": 2,
        "mode": "joint",
        "C": 4.0,
        "mix": None,
    }
    with torch.no_grad():
        for a, b in zip(wide_model(**batch).logits, loaded(**batch).logits, strict=True):
            assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize(
    "wide, message",
    [
        ({"buckets": 0}, "buckets"),
        ({"buckets": 10, "ngrams": 3}, "ngrams"),
        ({"buckets": 10, "size": 4}, "unknown keys"),
        ("yes", "mapping"),
    ],
)
def test_bad_wide_settings_are_refused(wide, message):
    with pytest.raises(scrclf.errors.SettingsError, match=message):
        ScrClfConfig(wide=wide)


def test_wide_model_exports_to_onnx_with_the_same_logits(wide_model, batch, tmp_path):
    import numpy as np
    import onnxruntime as ort

    from scrclf.export.onnx import export_onnx

    export_onnx(wide_model, tmp_path / "model.onnx")
    session = ort.InferenceSession(str(tmp_path / "model.onnx"))
    feeds = {k: v.numpy() for k, v in batch.items()}
    outputs = session.run(None, feeds)
    with torch.no_grad():
        expected = wide_model(**batch).logits
    for got, want in zip(outputs, expected, strict=True):
        np.testing.assert_allclose(got, want.numpy(), atol=1e-4)


def test_layer_lr_decay_lowers_the_rate_layer_by_layer(tiny_model_cfg, tasks):
    model = build_model(tiny_model_cfg, tasks, max_length=64)
    groups = model.param_groups(1e-4, 0.01, head_learning_rate=1e-3, layer_lr_decay=0.5)
    rate = {id(p): g["lr"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    # the tiny encoder has 2 layers: layer 1 at the full rate, layer 0 at half, embeddings a quarter
    assert rate[id(named["encoder.encoder.layer.1.attention.self.query.weight"])] == 1e-4
    assert rate[id(named["encoder.encoder.layer.0.attention.self.query.weight"])] == 5e-5
    assert rate[id(named["encoder.embeddings.word_embeddings.weight"])] == 2.5e-5
    assert rate[id(named["heads.themes.weight"])] == 1e-3
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    flat = model.param_groups(1e-4, 0.01)
    assert {g["lr"] for g in flat} == {1e-4}


def test_layer_lr_decay_outside_zero_one_is_refused():
    from scrclf.settings import TrainerSettings
    from tests.helpers import compose_train

    cfg = compose_train(["trainer.layer_lr_decay=1.5"])
    with pytest.raises(scrclf.errors.SettingsError, match="layer_lr_decay"):
        TrainerSettings.from_config(cfg.trainer)
