"""Per-class offsets of single-label decisions, probed on finished runs without training.

    python benchmarks/class_offsets.py outputs/train/<run> [<run> ...]

For every run's saved model and single-label task: test macro-F1 at the top class and at
the top class after offsets fitted on validation, with a paired interval over resampled
reviews. Results go to ``<out>/class_offsets.json`` and ``.md``. The logic is
``scrclf.evaluation.offsets_probe``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    from scrclf.atomic import write_json, write_text
    from scrclf.errors import ScrClfError, one_line
    from scrclf.evaluation.offsets_probe import format_offsets_probe, probe_offsets

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="finished run folders (or model folders)")
    parser.add_argument("--data", default=str(ROOT / "data" / "scr_recs"), help="corpus folder")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        models = [Path(r) / "model" if (Path(r) / "model").is_dir() else Path(r) for r in args.runs]
        data = Path(args.data)
        result = probe_offsets(
            models, data / "validation.jsonl", data / "test.jsonl", resamples=args.resamples
        )
    except ScrClfError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    out = Path(args.out)
    command = "python benchmarks/class_offsets.py " + " ".join(argv or sys.argv[1:])
    write_json(out / "class_offsets.json", result)
    write_text(out / "class_offsets.md", format_offsets_probe(result, command))
    print(f"written to {out / 'class_offsets.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
