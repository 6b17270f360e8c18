"""Distillation: a trained teacher's logits as soft targets beside the annotated labels."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from scrclf.errors import SettingsError
from scrclf.modeling.encoders import build_model, load_tokenizer
from scrclf.modeling.model import soft_loss
from scrclf.settings import DistillSettings
from scrclf.tasks import TaskSet
from scrclf.training import distill as distill_module
from tests.helpers import CONFIG_DIR, compose_train, train_tiny


def test_soft_loss_is_smallest_at_the_teachers_logits():
    torch.manual_seed(0)
    teacher = torch.randn(8, 5)
    for multi_label in (True, False):
        at_teacher = soft_loss(teacher.clone(), teacher, multi_label, 2.0)
        for _ in range(5):
            other = teacher + 0.5 * torch.randn(8, 5)
            assert soft_loss(other, teacher, multi_label, 2.0) > at_teacher
    # The KL divergence of a distribution with itself is zero.
    assert float(soft_loss(teacher, teacher, False, 3.0)) == pytest.approx(0.0, abs=1e-6)


def test_soft_loss_gradient_keeps_its_size_across_temperatures():
    teacher = torch.tensor([[2.0, -1.0, 0.0]])
    sizes = []
    for t in (1.0, 4.0):
        student = torch.zeros(1, 3, requires_grad=True)
        soft_loss(student, teacher, False, t).backward()
        sizes.append(float(student.grad.abs().sum()))
    # Without the t^2 factor the gradient at t=4 would be about 16 times smaller.
    assert sizes[1] > sizes[0] / 4


def _batch(tasks, model):
    ids = load_tokenizer(_tiny_cfg())(
        ["Audit supervision records.", "Training for health visitors."], padding=True
    )
    n = 2
    targets = {
        "themes": torch.zeros(n, tasks["themes"].num_labels),
        "evidence": torch.zeros(n, dtype=torch.long),
        "action_strength": torch.ones(n, dtype=torch.long),
    }
    targets["themes"][:, 1] = 1.0
    soft = {f"teacher_{t.name}": torch.randn(n, t.num_labels) for t in tasks}
    inputs = {k: torch.tensor(v) for k, v in ids.items()}
    return inputs, targets, soft


def _tiny_cfg():
    return OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "model" / "tiny.yaml"))


def test_forward_mixes_the_label_loss_and_the_teachers(tasks):
    torch.manual_seed(0)
    model = build_model(_tiny_cfg(), tasks, max_length=64).eval()
    inputs, targets, soft = _batch(tasks, model)
    with torch.no_grad():
        hard = model(**inputs, **targets).loss
        with pytest.raises(TypeError, match="distillation is not set"):
            model(**inputs, **targets, **soft)
        model.distillation = (0.0, 2.0)
        assert torch.allclose(model(**inputs, **targets, **soft).loss, hard)
        model.distillation = (1.0, 2.0)
        out = model(**inputs, **targets, **soft)
        expected = sum(
            t.loss_weight * soft_loss(out.logits[i], soft[f"teacher_{t.name}"], t.is_multi_label, 2)
            for i, t in enumerate(tasks)
        )
        assert torch.allclose(out.loss, expected, atol=1e-6)
        model.distillation = (0.5, 2.0)
        mixed = model(**inputs, **targets, **soft).loss
        assert torch.allclose(mixed, 0.5 * hard + 0.5 * expected, atol=1e-6)
        with pytest.raises(TypeError, match="unexpected arguments"):
            model(**inputs, teacher_unknown=torch.zeros(2, 3))


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"teacher": None, "weight": 1.5, "temperature": 2.0}, "at most 1"),
        ({"teacher": None, "weight": 0.5, "temperature": 0.0}, "above 0"),
        ({"teacher": None, "weight": 0.5}, "temperature is missing"),
        ({"teacher": None, "weight": 0.5, "temperature": 2.0, "alpha": 1}, "unknown setting"),
    ],
)
def test_distill_settings_are_checked(raw, message):
    with pytest.raises(SettingsError, match=message):
        DistillSettings.from_config(raw)


def test_shipped_default_is_off():
    assert DistillSettings.from_config(compose_train([]).distill).teacher is None


def _count_calls(monkeypatch, module, name: str) -> list[int]:
    """Wrap ``module.name`` so that each call appends to the returned list."""
    calls: list[int] = []
    original = getattr(module, name)

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counting)
    return calls


@pytest.mark.parametrize("loop", ["trainer", "lean"])
def test_student_trains_on_a_teachers_logits(tiny_run, toy_corpus, tmp_path, monkeypatch, loop):
    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_run, teacher)
    calls = _count_calls(monkeypatch, distill_module, "teacher_logits")
    run = tmp_path / "student"
    summary = train_tiny(toy_corpus, run, loop, f"distill.teacher={teacher}", "distill.weight=0.7")
    assert calls == [1]
    cache = teacher / distill_module.TEACHER_CACHE
    assert cache.is_file()
    with np.load(cache) as saved:
        train_items = sum(1 for _ in open(toy_corpus / "train.jsonl", encoding="utf-8"))
        assert saved["themes"].shape[0] == train_items
    assert np.isfinite(summary["validation"]["mean_macro_f1"])
    config = (run / "config.yaml").read_text()
    assert "weight: 0.7" in config
    # The saved student carries nothing of the distillation.
    saved_config = json.loads((run / "model" / "config.json").read_text())
    assert "distill" not in json.dumps(saved_config)


def test_teacher_logits_are_reused_and_refreshed(tiny_run, tasks, tmp_path, monkeypatch):
    from scrclf.evaluation import evaluate

    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_run, teacher)
    texts = ["Audit supervision records.", "Share information with the police."]
    passes = _count_calls(monkeypatch, evaluate, "model_logits")
    first = distill_module.teacher_logits(teacher, tasks, texts, None)
    again = distill_module.teacher_logits(teacher, tasks, texts, None)
    assert len(passes) == 1
    for name in tasks.names:
        np.testing.assert_array_equal(first[name], again[name])
    distill_module.teacher_logits(teacher, tasks, texts[:1], None)
    assert len(passes) == 2


def test_teacher_with_other_labels_is_refused(tiny_run, tasks, tmp_path):
    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_run, teacher)
    raw = tasks.to_list()
    raw[1]["labels"] = list(reversed(raw[1]["labels"]))
    other = TaskSet.from_config(raw)
    with pytest.raises(SettingsError, match="labels"):
        distill_module.teacher_logits(teacher, other, ["Audit the records."], None)
