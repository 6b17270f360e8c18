"""The built wheel, installed (not editable) into a fresh virtual environment, works without
the source tree: its configs ship inside the package."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.slow


def _run(
    cmd: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory) -> Path:
    """A fresh venv holding the scrclf wheel; its dependencies are borrowed from the test
    interpreter's site-packages through a .pth line (so nothing is downloaded), which adds
    that folder to sys.path without running its .pth files (the editable install's hook)."""
    root = tmp_path_factory.mktemp("wheel")
    dist = root / "dist"
    built = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(ROOT),
        ],
        cwd=root,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("scrclf-*.whl")
    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            cwd=root,
        ).stdout.strip()
    )
    (site / "_borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            "-q",
            str(wheel),
        ],
        cwd=root,
    )
    assert installed.returncode == 0, installed.stderr
    return env_dir


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env["HF_HUB_OFFLINE"] = "1"
    return env


def test_the_wheel_is_imported_from_the_venv_not_the_source_tree(wheel_env, tmp_path):
    python = wheel_env / "bin" / "python"
    out = _run(
        [
            str(python),
            "-c",
            "import scrclf, scrclf.settings as s; print(scrclf.__file__); print(s.config_dir())",
        ],
        cwd=tmp_path,
        env=_env(),
    )
    assert out.returncode == 0, out.stderr
    module_file, config_dir = out.stdout.split()
    assert str(wheel_env) in module_file and str(wheel_env) in config_dir
    assert (Path(config_dir) / "task" / "codebook.yaml").is_file()
    assert (Path(config_dir) / "train.yaml").is_file()


def test_installed_scrclf_validates_the_corpus_and_describes_a_model(
    wheel_env, tiny_export, tmp_path
):
    scrclf = wheel_env / "bin" / "scrclf"
    validated = _run(
        [str(scrclf), "data", "validate", str(ROOT / "data" / "scr_recs")], cwd=tmp_path, env=_env()
    )
    assert validated.returncode == 0, validated.stderr
    assert "corpus OK" in validated.stdout
    info = _run([str(scrclf), "info", str(tiny_export.export_dir)], cwd=tmp_path, env=_env())
    assert info.returncode == 0, info.stderr
    assert "themes" in info.stdout
