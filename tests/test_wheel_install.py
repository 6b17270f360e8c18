"""The runtime install, as a user gets it: the scrclf wheel and a model wheel built from the
tiny export, put in one folder of wheels with the runtime's dependencies, and installed with
``pip install --no-index --find-links <folder> <model wheel>`` into a fresh virtual
environment. There the model loads and predicts with the ONNX graph, torch and transformers
are not installed, and the configs ship inside the package.

The dependencies' wheels are fetched by ``pip download`` at exactly the versions installed
here (from pip's cache or the configured index); the install itself reads the folder only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from scrclf.export.wheel import pinned_closure, wheel_requirements
from tests.helpers import ROOT, readme_block

pytestmark = pytest.mark.slow

PROBE = ["The board should ensure that staff receive annual training on neglect."]


def _run(
    cmd: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env["HF_HUB_OFFLINE"] = "1"
    return env


@pytest.fixture(scope="module")
def runtime_env(tiny_export, tmp_path_factory) -> Iterator[dict[str, Path]]:
    """One folder of wheels, one fresh venv with the model wheel installed from it; removed
    after the module's tests (a few hundred MB that nothing else reads)."""
    root = tmp_path_factory.mktemp("runtime")
    wheels = root / "wheels"
    built = _run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"),
            *("-w", str(wheels), str(ROOT)),
        ],
        cwd=root,
    )
    assert built.returncode == 0, built.stderr
    (scrclf_wheel,) = wheels.glob("scrclf-*.whl")
    (model_wheel,) = (tiny_export.export_dir / "dist").glob("scrclf_model_*.whl")
    shutil.copy(model_wheel, wheels)
    fetched = _run(
        [
            *(sys.executable, "-m", "pip", "download", "--no-deps", "-q"),
            *("--dest", str(wheels), *pinned_closure(wheel_requirements(scrclf_wheel))),
        ],
        cwd=root,
    )
    assert fetched.returncode == 0, fetched.stderr

    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    installed = _run(
        [
            *(sys.executable, "-m", "pip", "--python", str(python), "install", "-q"),
            *("--no-index", "--find-links", str(wheels), str(wheels / model_wheel.name)),
        ],
        cwd=root,
        env=_env(),  # nothing on PYTHONPATH may count as installed
    )
    assert installed.returncode == 0, installed.stderr
    yield {"env": env_dir, "python": python, "scrclf": env_dir / "bin" / "scrclf"}
    shutil.rmtree(root, ignore_errors=True)


def test_the_model_wheel_requires_the_runtime_alone(tiny_export):
    (wheel,) = (tiny_export.export_dir / "dist").glob("scrclf_model_*.whl")
    requires = wheel_requirements(wheel)
    assert [Requirement(r).name for r in requires] == ["scrclf"]
    assert not Requirement(requires[0]).extras


def test_runtime_env_has_no_torch_or_transformers_and_ships_its_configs(runtime_env, tmp_path):
    code = (
        "import importlib.util, json, sys, scrclf, scrclf.settings as s\n"
        "print(json.dumps({'file': scrclf.__file__, 'configs': str(s.config_dir()),\n"
        "  'installed': [m for m in ('torch', 'transformers') if importlib.util.find_spec(m)],\n"
        "  'imported': sorted(m for m in sys.modules if m.split('.')[0] in\n"
        "                     ('torch', 'transformers', 'sklearn', 'datasets'))}))\n"
    )
    out = _run([str(runtime_env["python"]), "-c", code], cwd=tmp_path, env=_env())
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert found["installed"] == [] and found["imported"] == []
    assert str(runtime_env["env"]) in found["file"]
    configs = Path(found["configs"])
    assert str(runtime_env["env"]) in str(configs)
    assert (configs / "task" / "codebook.yaml").is_file() and (configs / "train.yaml").is_file()


def test_bundled_model_predicts_like_the_export_without_torch(runtime_env, tiny_export, tmp_path):
    import scrclf

    code = (
        "import json, sys, scrclf_model_tiny as bundled\n"
        "clf = bundled.load()\n"
        f"preds = clf.predict({PROBE!r})\n"
        "print(json.dumps({'backend': clf.backend, 'preds': preds,\n"
        "  'torch': 'torch' in sys.modules, 'transformers': 'transformers' in sys.modules}))\n"
    )
    out = _run([str(runtime_env["python"]), "-c", code], cwd=tmp_path, env=_env())
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["backend"] == "onnx" and not got["torch"] and not got["transformers"]
    expected = scrclf.load(tiny_export.export_dir, backend="onnx").predict(PROBE)
    assert got["preds"][0]["evidence"]["label"] == expected[0]["evidence"]["label"]
    assert got["preds"][0]["themes"]["labels"] == expected[0]["themes"]["labels"]
    assert got["preds"][0]["action_strength"]["label"] == expected[0]["action_strength"]["label"]


def test_installed_cli_predicts_and_describes_the_bundled_model(runtime_env, tmp_path):
    folder = _run(
        [
            str(runtime_env["python"]),
            "-c",
            "import scrclf_model_tiny as b; print(b.get_model_path())",
        ],
        cwd=tmp_path,
        env=_env(),
    ).stdout.strip()
    predicted = subprocess.run(
        [str(runtime_env["scrclf"]), "predict", "--model", folder],
        input=PROBE[0] + "\n",
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads(predicted.stdout)["line"] == 1
    info = _run([str(runtime_env["scrclf"]), "info", folder], cwd=tmp_path, env=_env())
    assert info.returncode == 0, info.stderr
    assert "themes" in info.stdout
    helped = _run([str(runtime_env["scrclf"]), "--help"], cwd=tmp_path, env=_env())
    assert "scrclf[train]" in helped.stdout.replace("\n", " ")


def test_readme_runtime_wheel_route_runs_in_the_runtime_env(runtime_env, tmp_path):
    code = readme_block("runtime wheel").replace("scrclf_model_scr_minilm", "scrclf_model_tiny")
    code += (
        "\nimport sys\nassert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
    )
    out = _run([str(runtime_env["python"]), "-c", code], cwd=tmp_path, env=_env())
    assert out.returncode == 0, out.stderr
    assert "'themes'" in out.stdout and "'action_strength'" in out.stdout
