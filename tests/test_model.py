"""The multi-task model: shapes, loss, save and load, Auto-class registration."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoConfig, AutoModel

import scrclf
from scrclf.modeling.encoders import build_model, load_tokenizer
from scrclf.modeling.model import ScrClfConfig, ScrClfModel, masked_mean
from scrclf.tasks import TaskConfigError, TaskSet
from tests.helpers import CONFIG_DIR


@pytest.fixture(scope="module")
def tasks():
    return TaskSet.from_config(OmegaConf.load(CONFIG_DIR / "task" / "codebook.yaml").tasks)


@pytest.fixture(scope="module")
def tiny_model_cfg():
    return OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "model" / "tiny.yaml"))


@pytest.fixture(scope="module")
def batch(tiny_model_cfg):
    tok = load_tokenizer(tiny_model_cfg)
    return dict(
        tok(
            [
                "The Board should seek assurance that supervision happens.",
                ("Training for GPs on bruising.", "The GP did not refer the baby."),
                "Audit.",
            ],
            padding=True,
            return_tensors="pt",
        )
    )


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
