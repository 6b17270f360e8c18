"""A run killed with SIGKILL mid-epoch resumes and ends with the same metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import ROOT

ARGS = [
    "model=tiny",
    "trainer.max_epochs=3",
    "trainer.learning_rate=5e-3",
    "trainer.batch_size=8",
    "trainer.early_stopping_patience=null",
    "trainer.save_total_limit=5",
    "trainer.logging_steps=5",
]


def _env():
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("SCRCLF_RUN_ID", None)
    return env


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_gives_the_same_metrics(toy_corpus, tmp_path):
    script = str(ROOT / "scripts" / "train.py")
    data = f"data.dir={toy_corpus}"
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(
        [sys.executable, script, *ARGS, data, f"paths.output_dir={full}"],
        cwd=ROOT,
        env=_env(),
        check=True,
        capture_output=True,
        timeout=300,
    )

    steps_per_epoch = 240 // 8
    first = killed / "checkpoints" / f"checkpoint-{steps_per_epoch}" / "trainer_state.json"
    proc = subprocess.Popen(
        [sys.executable, script, *ARGS, data, f"paths.output_dir={killed}"],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while not first.exists():
        assert proc.poll() is None, "training ended before its first checkpoint"
        assert time.time() < deadline
        time.sleep(0.02)
    time.sleep(0.2)  # into the second epoch
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "metrics.json").exists()
    assert not (killed / "checkpoints" / f"checkpoint-{3 * steps_per_epoch}").exists()

    subprocess.run(
        [sys.executable, script, *ARGS, data, f"paths.output_dir={killed}", "resume=true"],
        cwd=ROOT,
        env=_env(),
        check=True,
        capture_output=True,
        timeout=300,
    )
    a = json.loads((full / "metrics.json").read_text())
    b = json.loads((killed / "metrics.json").read_text())
    for split in ("validation", "test"):
        for task in ("themes", "evidence", "action_strength"):
            assert b[split][task]["macro_f1"] == pytest.approx(a[split][task]["macro_f1"], abs=1e-9)
        assert b[split]["mean_macro_f1"] == pytest.approx(a[split]["mean_macro_f1"], abs=1e-9)
    assert b["calibration"] == a["calibration"]


def test_resume_without_checkpoint_is_a_clear_error(toy_corpus, tmp_path):
    script = str(ROOT / "scripts" / "train.py")
    out = subprocess.run(
        [
            sys.executable,
            script,
            "model=tiny",
            f"data.dir={toy_corpus}",
            f"paths.output_dir={tmp_path / 'nothing'}",
            "resume=true",
        ],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0
    assert "no complete checkpoint" in out.stderr
