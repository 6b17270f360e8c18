"""Run a benchmark suite: ``python scripts/benchmark.py suite=NAME [overrides]``.

Suites are the files of configs/benchmark/ (``default``, ``smoke``, ...). Examples:
    python scripts/benchmark.py suite=default systems.models=[outputs/train/RUN,models/NAME]
    python scripts/benchmark.py suite=default systems.models=[RUN] data.external=other.jsonl
    python scripts/benchmark.py suite=smoke data.dir=tests_corpus systems.models=[RUN]

The report folder (reports/benchmarks/<suite>-<timestamp>/ by default) is printed at the end.
"""

import os
import shlex
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from scrclf.errors import EXIT_USER_ERROR, ScrClfError, one_line

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def _pop_suite(argv: list[str]) -> tuple[str, list[str]]:
    """Take ``suite=NAME`` out of the overrides (it chooses the config, it is not a key)."""
    suite, rest = "default", []
    for arg in argv:
        if arg.startswith("suite="):
            suite = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return suite, rest


def run(cfg: DictConfig) -> str:
    from scrclf.evaluation.suites import run_benchmark

    try:
        out = run_benchmark(cfg, command=COMMAND)
    except ScrClfError as err:  # a problem the user can fix; anything else is a bug
        print(f"benchmark: error: {one_line(err)}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    print(f"leaderboard written to {out}", flush=True)
    return str(out)


if __name__ == "__main__":
    os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))
    COMMAND = shlex.join(["python", *sys.argv])  # the interpreter by name, not its path
    suite, overrides = _pop_suite(sys.argv[1:])
    known = sorted(p.stem for p in (CONFIG_DIR / "benchmark").glob("*.yaml"))
    if suite not in known:
        print(
            f"benchmark: error: unknown suite '{suite}'; suites: {', '.join(known)}",
            file=sys.stderr,
        )
        sys.exit(2)
    sys.argv = [sys.argv[0], *overrides]
    hydra.main(config_path="../configs", config_name=f"benchmark/{suite}", version_base="1.3")(
        run
    )()
