"""The runtime install: its size, the time of ``import scrclf`` and of a one-line predict.

    python benchmarks/runtime_env.py --model models/NAME
    python benchmarks/runtime_env.py --model models/NAME --repeats 9 --out /tmp/bench

Builds the scrclf wheel from this checkout, fills a folder with it and the runtime's
dependencies at the versions installed here (``pip download``), and installs scrclf from that
folder alone into a fresh virtual environment (no torch, no transformers). Then measures:

* the environment's size on disk (every file under the venv, pip included);
* ``import scrclf``: seconds inside a fresh interpreter, and the whole ``python -c`` process;
* ``scrclf predict --model NAME`` on one line from stdin, wall time of the whole command
  with the default (fp32 ONNX) graph.

Timings are medians over ``--repeats`` runs after one untimed run (files in the page
cache). Goals: under 300 MB, under 0.5 s, under 1.5 s. Writes ``runtime_env_<name>.json``
and ``.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOALS = {"env_mb": 300.0, "import_s": 0.5, "predict_s": 1.5}
LINE = "The board should ensure that staff receive annual training on neglect.\n"


def _run(cmd: list[str], env: dict[str, str], stdin: str | None = None) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, input=stdin, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} failed:\n{done.stderr}")
    return elapsed


def build_env(root: Path) -> Path:
    """The fresh runtime venv; returns its folder."""
    from scrclf.export.wheel import pinned_closure, wheel_requirements

    env = _clean_env()
    wheels = root / "wheels"
    pip = [sys.executable, "-m", "pip"]
    _run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(ROOT)],
        env,
    )
    (wheel,) = wheels.glob("scrclf-*.whl")
    needed = pinned_closure(wheel_requirements(wheel))
    _run([*pip, "download", "--no-deps", "-q", "--dest", str(wheels), *needed], env)
    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    _run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--no-index",
            "--find-links",
            str(wheels),
            "scrclf",
        ],
        env,
    )
    return env_dir


def _clean_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"))
    return env


def folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def median_of(fn, repeats: int) -> tuple[float, list[float]]:
    fn()  # untimed: fills the page cache
    runs = [fn() for _ in range(repeats)]
    return statistics.median(runs), runs


def measure(env_dir: Path, model: Path, repeats: int) -> dict:
    env = _clean_env()
    python = str(env_dir / "bin" / "python")
    code = "import time; t = time.perf_counter(); import scrclf; print(time.perf_counter() - t)"

    def in_process() -> float:
        out = subprocess.run([python, "-c", code], env=env, capture_output=True, text=True)
        return float(out.stdout.strip())

    def process() -> float:
        return _run([python, "-c", "import scrclf"], env)

    def predict() -> float:
        return _run([str(env_dir / "bin" / "scrclf"), "predict", "--model", str(model)], env, LINE)

    def bare() -> float:
        return _run([python, "-c", "pass"], env)

    installed = subprocess.run(
        [python, "-m", "pip", "list", "--format=freeze"], env=env, capture_output=True, text=True
    ).stdout.split()
    import_s, import_runs = median_of(in_process, repeats)
    process_s, _ = median_of(process, repeats)
    bare_s, _ = median_of(bare, repeats)
    predict_s, predict_runs = median_of(predict, repeats)
    size = folder_bytes(env_dir)
    site = next((env_dir / "lib").glob("python*/site-packages"))
    return {
        "env_bytes": size,
        "env_mb": round(size / 1e6, 1),
        "site_packages_mb": round(folder_bytes(site) / 1e6, 1),
        "packages": sorted(installed),
        "torch_installed": any(p.lower().startswith("torch==") for p in installed),
        "transformers_installed": any(p.lower().startswith("transformers==") for p in installed),
        "import_s": round(import_s, 3),
        "import_runs_s": [round(x, 3) for x in import_runs],
        "import_process_s": round(process_s, 3),
        "python_startup_s": round(bare_s, 3),
        "predict_s": round(predict_s, 3),
        "predict_runs_s": [round(x, 3) for x in predict_runs],
    }


def markdown(result: dict) -> str:
    m = result["measured"]

    def verdict(key: str, value: float) -> str:
        return "met" if value < GOALS[key] else "missed"

    lines = [
        f"# Runtime install: {result['model']}",
        "",
        f"scrclf {result['scrclf_version']} installed without extras from a folder of wheels into "
        f"a fresh venv (Python {result['python']}, {result['cpu']}, {result['cpu_count']} CPUs, "
        f"OMP_NUM_THREADS={result['omp_threads']}); measured {result['measured_at']}. Model: "
        f"`{result['model']}` ({result['model_kind']}), fp32 ONNX graph. Medians of "
        f"{result['repeats']} runs after one untimed run.",
        "",
        "| measure | value | goal | |",
        "|---|---:|---:|---|",
        f"| environment on disk (MB) | {m['env_mb']} | < {GOALS['env_mb']:.0f} | "
        f"{verdict('env_mb', m['env_mb'])} |",
        f"| `import scrclf` (s, in the interpreter) | {m['import_s']:.3f} | < {GOALS['import_s']} "
        f"| {verdict('import_s', m['import_s'])} |",
        f"| `python -c 'import scrclf'` (s, whole process) | {m['import_process_s']:.3f} | | |",
        f"| `python -c pass` (s, interpreter start) | {m['python_startup_s']:.3f} | | |",
        f"| one-line `scrclf predict` (s, whole command) | {m['predict_s']:.3f} | "
        f"< {GOALS['predict_s']} | {verdict('predict_s', m['predict_s'])} |",
        "",
        f"torch installed: {m['torch_installed']}; transformers installed: "
        f"{m['transformers_installed']}. Packages: {', '.join(m['packages'])}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path, help="an export folder")
    parser.add_argument(
        "--model-kind",
        default=None,
        help="how the model was made, for the report (default: read from its scrclf.json)",
    )
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    if not (args.model / "scrclf.json").is_file():
        parser.error(f"--model {args.model}: not an export folder (no scrclf.json)")

    import json

    from scrclf import atomic
    from scrclf.training.run import cpu_name
    from scrclf.version import __version__

    meta = json.loads((args.model / "scrclf.json").read_text(encoding="utf-8"))
    config = json.loads((args.model / "config.json").read_text(encoding="utf-8"))
    encoder = config.get("encoder", {})
    kind = args.model_kind or (
        f"{encoder.get('model_type')} encoder, {encoder.get('num_hidden_layers')} layers, "
        f"hidden size {encoder.get('hidden_size')}, exported by scrclf "
        f"{meta.get('versions', {}).get('scrclf')}"
    )
    with tempfile.TemporaryDirectory(prefix="scrclf_runtime_") as tmp:
        env_dir = build_env(Path(tmp))
        measured = measure(env_dir, args.model.resolve(), args.repeats)
    result = {
        "model": args.model.resolve().name,
        "model_kind": kind,
        "scrclf_version": __version__,
        "python": platform.python_version(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "omp_threads": _clean_env()["OMP_NUM_THREADS"],
        "repeats": args.repeats,
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "goals": GOALS,
        "measured": measured,
    }
    stem = f"runtime_env_{result['model']}"
    atomic.write_json(args.out / f"{stem}.json", result)
    atomic.write_text(args.out / f"{stem}.md", markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
