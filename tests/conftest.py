"""Shared fixtures: Compose-API configs, a toy corpus with a learnable signal, sockets off."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

from scrclf.tasks import TaskSet
from tests.helpers import CONFIG_DIR, TinyExport, compose_train, copy_export, toy_rows, write_jsonl


@pytest.fixture(scope="session")
def toy_corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("toy_corpus")
    write_jsonl(root / "train.jsonl", toy_rows(12, 20, 1, "TR"))
    write_jsonl(root / "validation.jsonl", toy_rows(4, 15, 2, "VA"))
    write_jsonl(root / "test.jsonl", toy_rows(4, 15, 3, "TE"))
    return root


@pytest.fixture
def tiny_cfg(toy_corpus, tmp_path):
    """A tiny-model config on the toy corpus writing into a temporary run dir."""
    cfg = compose_train(
        [
            "model=tiny",
            f"data.dir={toy_corpus}",
            f"paths.output_dir={tmp_path / 'run'}",
            "trainer.max_epochs=1",
            "trainer.batch_size=16",
            # The tiny encoder is built untrained: its token embeddings learn too.
            "trainer.freeze_word_embeddings=false",
            "trainer.logging_steps=5",
        ]
    )
    with open_dict(cfg):
        cfg.paths.root_dir = str(tmp_path)
    OmegaConf.resolve(cfg)
    return cfg


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    yield


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory, toy_corpus) -> TinyExport:
    """The tiny model trained on the toy corpus and exported (with a wheel), once per session."""
    from scrclf.export.build import export_model
    from scrclf.training import train

    root = tmp_path_factory.mktemp("tiny_export")
    cfg = compose_train(
        [
            "model=tiny",
            f"data.dir={toy_corpus}",
            f"paths.output_dir={root / 'run'}",
            "trainer.max_epochs=2",
            "trainer.learning_rate=1e-3",
            "trainer.batch_size=16",
            # The tiny encoder is built untrained: its token embeddings learn too.
            "trainer.freeze_word_embeddings=false",
            "trainer.logging_steps=5",
        ]
    )
    with open_dict(cfg):
        cfg.paths.root_dir = str(root)
    OmegaConf.resolve(cfg)
    train(cfg)
    export_dir = export_model(root / "run", root / "models" / "tiny", wheel=True)
    return TinyExport(root / "run", export_dir, toy_corpus)


@pytest.fixture
def export_copy(tiny_export, tmp_path) -> Path:
    return copy_export(tiny_export, tmp_path / "export")


@pytest.fixture
def run_model_copy(tiny_export, tmp_path) -> Path:
    """A private copy of the trained run's model/ folder."""
    import shutil

    dest = tmp_path / "run_model"
    shutil.copytree(tiny_export.run_dir / "model", dest)
    return dest


@pytest.fixture(scope="session")
def tiny_run(toy_corpus, tmp_path_factory) -> Path:
    """The tiny model trained for 3 epochs on the toy corpus, once per session (evaluation and
    benchmark tests share it)."""
    from scrclf.training import train

    run_dir = tmp_path_factory.mktemp("tiny_run")
    train(
        compose_train(
            [
                "model=tiny",
                f"data.dir={toy_corpus}",
                f"paths.output_dir={run_dir}",
                "trainer.max_epochs=3",
                "trainer.learning_rate=5e-3",
                "trainer.logging_steps=50",
            ]
        )
    )
    return run_dir


@pytest.fixture(scope="session")
def tasks():
    """The codebook's tasks, as the shipped task config defines them."""
    return TaskSet.from_config(OmegaConf.load(CONFIG_DIR / "task" / "codebook.yaml").tasks)


@pytest.fixture(scope="session")
def tiny_model_cfg():
    """The tiny model's config (``configs/model/tiny.yaml``) as a plain mapping."""
    return OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "model" / "tiny.yaml"))


@pytest.fixture(scope="session")
def batch(tiny_model_cfg):
    """Three tokenized inputs of the tiny model: a text, a text with its finding, a short one."""
    from scrclf.modeling.encoders import load_tokenizer

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
