"""Compose-API tests of the Hydra configs: the contract other tools rely on."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from scrclf.tasks import TaskSet
from tests.helpers import ROOT, compose_train

CODEBOOK = ROOT.parent / "shared" / "codebook.md"


def test_default_config_composes():
    cfg = compose_train()
    assert cfg.model.name == "minilm"
    assert cfg.trainer.name == "cpu"
    assert cfg.data.name == "scr_recs"
    assert cfg.model.pooling == "mean"
    assert cfg.model.wide.mode == "logreg" and list(cfg.model.wide.text_only) == ["themes"]
    assert list(cfg.model.label_attention) == ["themes", "evidence", "action_strength"]
    assert cfg.model.label_attention_keys == "tokens"
    assert cfg.trainer.max_epochs == 4 and cfg.trainer.batch_size == 8
    assert cfg.trainer.freeze_word_embeddings is True
    assert list(cfg.model.wide.residual) == []
    assert cfg.data.dir.endswith("data/scr_recs")
    tasks = TaskSet.from_config(cfg.task.tasks)
    assert tasks.names == ["themes", "evidence", "action_strength"]
    assert [t.num_labels for t in tasks] == [11, 5, 3]
    assert tasks["themes"].is_multi_label and tasks["themes"].max_labels == 3


@pytest.mark.parametrize(
    "overrides,check",
    [
        (["model=tiny"], lambda c: c.model.encoder_config.hidden_size == 32),
        (
            ["trainer=gpu"],
            lambda c: (
                c.trainer.precision == "bf16"
                and c.trainer.optim == "adamw_torch_fused"
                and c.trainer.max_epochs == 8
                and c.trainer.freeze_word_embeddings is False
            ),
        ),
        (
            ["experiment=quick"],
            lambda c: (
                c.model.name == "tiny"
                and c.trainer.max_epochs == 2
                and c.run_name == "quick"
                # The tiny encoder is built untrained: its token embeddings must learn.
                and c.trainer.freeze_word_embeddings is False
                and c.trainer.batch_size == 16
            ),
        ),
        (
            ["experiment=long"],
            lambda c: (
                c.model.name == "minilm"
                and c.trainer.max_epochs == 6
                and c.trainer.batch_size == 16
                and c.trainer.freeze_word_embeddings is False
                and c.run_name == "long"
                and list(c.model.label_attention) == ["themes", "evidence", "action_strength"]
                and c.model.label_attention_keys == "tokens"
            ),
        ),
        # The command line still wins over an experiment.
        (["experiment=long", "run_name=mine"], lambda c: c.run_name == "mine"),
        (["trainer.max_epochs=1", "paths.output_dir=/x/y"], lambda c: c.paths.output_dir == "/x/y"),
    ],
)
def test_groups_and_overrides(overrides, check):
    assert check(compose_train(overrides))


def test_unknown_key_is_rejected_with_its_name():
    with pytest.raises(ConfigCompositionException, match="not_a_setting"):
        compose_train(["trainer.not_a_setting=3"])


def test_output_dir_is_unique_per_launch():
    a = OmegaConf.to_container(compose_train(), resolve=True)["paths"]["output_dir"]
    b = OmegaConf.to_container(compose_train(), resolve=True)["paths"]["output_dir"]
    assert a != b  # microsecond timestamps: runs started in the same second do not collide


def test_run_id_env_fixes_output_dir(monkeypatch):
    monkeypatch.setenv("SCRCLF_RUN_ID", "shared-id")
    cfg = compose_train()
    assert OmegaConf.to_container(cfg, resolve=True)["paths"]["output_dir"].endswith(
        "train/shared-id"
    )


def _codebook_labels(heading: str) -> list[str]:
    text = CODEBOOK.read_text(encoding="utf-8")
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.MULTILINE)


@pytest.mark.skipif(not CODEBOOK.exists(), reason="codebook not beside the checkout")
def test_task_labels_match_the_codebook():
    tasks = TaskSet.from_config(compose_train().task.tasks)
    assert tasks["themes"].labels == _codebook_labels("## Task 1: `themes`")
    assert tasks["evidence"].labels == _codebook_labels("## Task 2: `evidence`")
    assert tasks["action_strength"].labels == _codebook_labels("## Task 3: `action_strength`")


def test_cli_prints_config_and_rejects_unknown_key():
    script = str(Path(ROOT) / "scripts" / "train.py")
    out = subprocess.run(
        [sys.executable, script, "--cfg", "job", "model=tiny"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "hidden_size: 32" in out.stdout and "action_strength" in out.stdout
    bad = subprocess.run(
        [sys.executable, script, "trainer.epochz=2"], capture_output=True, text=True, timeout=120
    )
    assert bad.returncode != 0
    assert "epochz" in bad.stderr


def test_export_settings_come_from_the_shipped_yaml():
    from scrclf.export.build import quantization_settings
    from scrclf.settings import ExportSettings, QuantizationSettings, compose

    shipped = OmegaConf.load(ROOT / "configs" / "export.yaml")
    defaults = ExportSettings.defaults()
    assert defaults.quantization.as_dict() == OmegaConf.to_container(shipped.quantization)
    assert defaults.onnx.opset == shipped.onnx.opset
    assert defaults.onnx.max_logit_diff == shipped.onnx.max_logit_diff
    assert (defaults.parity_split, defaults.license) == (shipped.parity_split, shipped.license)
    cfg = compose("export", ["run_dir=r", "name=n", "quantization.smooth_alpha=null"])
    assert ExportSettings.from_config(cfg).quantization.smooth_alpha is None
    # Python callers give some options; the rest come from the YAML
    got = quantization_settings({"calibration_items": 8})
    assert got == QuantizationSettings(
        smooth_alpha=defaults.quantization.smooth_alpha,
        calibration_split=defaults.quantization.calibration_split,
        calibration_items=8,
        fuse=defaults.quantization.fuse,
        fuse_attention=defaults.quantization.fuse_attention,
    )
    assert quantization_settings(None) == defaults.quantization


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["quantization.calibration_items=many"], "export.quantization.calibration_items must"),
        (["quantization.smooth_alpha=1.5"], "export.quantization.smooth_alpha must be between"),
        (["+quantization.bits=4"], "unknown setting export.quantization.bits"),
        (["onnx.max_logit_diff=-1"], "export.onnx.max_logit_diff must be at least 0"),
        (["wheel=maybe"], "export.wheel must be bool"),
        (["+colour=red"], "unknown setting export.colour"),
    ],
)
def test_export_settings_name_the_setting_at_fault(overrides, message):
    from scrclf.errors import SettingsError
    from scrclf.settings import ExportSettings, compose

    cfg = compose("export", ["run_dir=r", "name=n", *overrides])
    with pytest.raises(SettingsError, match=re.escape(message)):
        ExportSettings.from_config(cfg)
