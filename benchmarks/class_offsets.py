"""Per-class offsets of single-label decisions, probed on finished runs without training.

    python benchmarks/class_offsets.py outputs/train/<run> [<run> ...]

For every run's saved model and single-label task: test macro-F1 at the top class and at
the top class after offsets fitted on validation, with a paired interval over resampled
reviews. Results go to ``<out>/class_offsets.json`` and ``.md``. The logic is
``scrclf.evaluation.offsets_probe``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    from scrclf.cli.probes import run_probe
    from scrclf.evaluation.offsets_probe import format_offsets_probe, probe_offsets

    return run_probe(
        argv,
        "class_offsets",
        __doc__.split("\n\n")[0],
        lambda models, data, args: probe_offsets(
            models, data / "validation.jsonl", data / "test.jsonl", resamples=args.resamples
        ),
        format_offsets_probe,
        data=ROOT / "data" / "scr_recs",
        out=ROOT / "benchmarks" / "results",
    )


if __name__ == "__main__":
    sys.exit(main())
