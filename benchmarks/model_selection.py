"""Model selection: train the variants of a study file, score them against TF-IDF on
validation and test with review-bootstrap intervals, and select on validation.

    python benchmarks/model_selection.py                       # benchmarks/model_selection.yaml
    python benchmarks/model_selection.py --no-train            # score finished runs only
    python benchmarks/model_selection.py --render              # re-select, rewrite the table
    python benchmarks/model_selection.py --runs outputs/study --out benchmarks/results/model_selection

Runs go to ``--runs/<variant>-s<seed>`` and are reused when finished; with ``--no-train``,
runs that are not there keep their rows from the earlier results when their recipe and the
scored data are unchanged. On 2 cores one MiniLM run on the shipped corpus takes 10-20
minutes with bf16 arithmetic, three to four times as long without; the study resumes where
it stopped.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    from scrclf.errors import ScrClfError, one_line
    from scrclf.training.selection import read_study, rerender, run_study

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", default=str(ROOT / "benchmarks" / "model_selection.yaml"))
    parser.add_argument("--runs", default=str(ROOT / "outputs" / "study"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "model_selection"))
    parser.add_argument("--no-train", action="store_true", help="score finished runs only")
    parser.add_argument(
        "--render", action="store_true", help="select and rewrite the table from results.json"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        study = read_study(args.study)
        if args.render:
            result = rerender(study, args.out)
        else:
            result = run_study(study, args.runs, args.out, train=not args.no_train)
    except ScrClfError as err:
        print(one_line(err), file=sys.stderr)
        return 2
    chosen = result["selected"]
    print(f"wrote {args.out}; selected: {chosen['variant'] if chosen else 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
