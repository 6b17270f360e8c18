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

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    from scrclf.cli.probes import run_probe
    from scrclf.evaluation.theme_rules_probe import format_theme_rules, probe_theme_rules

    return run_probe(
        argv,
        "theme_rules",
        __doc__.split("\n\n")[0],
        lambda models, data, args: probe_theme_rules(
            models,
            data / "train.jsonl",
            data / "validation.jsonl",
            data / "test.jsonl",
            resamples=args.resamples,
            cv_repeats=args.cv_repeats,
        ),
        format_theme_rules,
        data=ROOT / "data" / "scr_recs",
        out=ROOT / "benchmarks" / "results",
        add_arguments=lambda parser: parser.add_argument(
            "--cv-repeats", type=int, default=5, help="random halvings of validation"
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
