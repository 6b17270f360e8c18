"""Two CPU processes under torchrun (gloo): one shared run dir, and the same loss as one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from tests.helpers import ROOT

# With learning rate 0 and no dropout the model never changes, so the mean training loss over
# one epoch depends only on the items seen: it must be equal with 1 process x batch 16 and
# 2 processes x batch 8. Logging every step: the Trainer gathers the loss across ranks only
# when it logs, and adds the unlogged remainder of rank 0 alone at the end.
FROZEN = [
    "trainer.logging_steps=1",
    "model=tiny",
    "trainer.max_epochs=1",
    "trainer.learning_rate=0.0",
    "model.dropout=0.0",
    "+model.encoder_config.hidden_dropout_prob=0.0",
    "+model.encoder_config.attention_probs_dropout_prob=0.0",
    "trainer.early_stopping_patience=null",
    "eval_splits=[validation]",
    "calibrate=false",
]


def _run(cmd, env_extra=None):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env_extra or {})}
    env.pop("SCRCLF_RUN_ID", None)
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=400, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(toy_corpus, tmp_path):
    script = str(ROOT / "scripts" / "train.py")
    single = tmp_path / "single"
    _run(
        [
            sys.executable,
            script,
            *FROZEN,
            f"data.dir={toy_corpus}",
            "trainer.batch_size=16",
            f"paths.output_dir={single}",
        ]
    )
    log_dir = tmp_path / "logs"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            f"--master_port={port}",
            script,
            *FROZEN,
            f"data.dir={toy_corpus}",
            "trainer.batch_size=8",
            f"paths.log_dir={log_dir}",
            "run_name=ddp",
        ]
    )
    runs = list((log_dir / "ddp").iterdir())
    assert len(runs) == 1, f"ranks wrote to several run dirs: {runs}"
    ddp = runs[0]
    assert (ddp / "model" / "model.safetensors").exists()
    m1 = json.loads((single / "metrics.json").read_text())["training"]
    m2 = json.loads((ddp / "metrics.json").read_text())["training"]
    assert m2["world_size"] == 2 and m1["world_size"] == 1
    assert m2["train_loss"] == pytest.approx(m1["train_loss"], rel=1e-4)
