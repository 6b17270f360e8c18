"""How many themes per item: decision rules probed on finished runs, without training.

    python benchmarks/theme_rules.py outputs/study/<run> [<run> ...]

For every run's saved model: the codebook's decision rule, one threshold for every theme,
and rules that predict each item's number of themes (from its scores, its text's length, its
words), each fitted on validation and scored on test with a paired interval over resampled
reviews, and fitted on half of the validation reviews and scored on the other half. Results
go to ``<out>/theme_rules.json`` and ``.md``. The logic is
``scrclf.evaluation.theme_rules_probe``.
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
    from scrclf.evaluation.theme_rules_probe import format_theme_rules, probe_theme_rules

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="finished run folders (or model folders)")
    parser.add_argument("--data", default=str(ROOT / "data" / "scr_recs"), help="corpus folder")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--cv-repeats", type=int, default=5, help="random halvings of validation")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        models = [Path(r) / "model" if (Path(r) / "model").is_dir() else Path(r) for r in args.runs]
        data = Path(args.data)
        result = probe_theme_rules(
            models,
            data / "train.jsonl",
            data / "validation.jsonl",
            data / "test.jsonl",
            resamples=args.resamples,
            cv_repeats=args.cv_repeats,
        )
    except ScrClfError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    out = Path(args.out)
    command = "python benchmarks/theme_rules.py " + " ".join(argv or sys.argv[1:])
    write_json(out / "theme_rules.json", result)
    write_text(out / "theme_rules.md", format_theme_rules(result, command))
    print(f"written to {out / 'theme_rules.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
