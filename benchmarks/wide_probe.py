"""The wide part's settings probed beside trained encoders, without training again.

    python benchmarks/wide_probe.py outputs/study/<run> [<run> ...]
    python benchmarks/wide_probe.py outputs/study/<run> --ngrams 1,2 --C 2,4,8,16
    python benchmarks/wide_probe.py outputs/study/<run> --ngrams 2 --C 4 --text-only none themes
    python benchmarks/wide_probe.py outputs/study/<run> --ngrams 2 --C 4,8 --intercept false,true

Each finished run (logreg wide part) is scored with its own wide part and with one fitted on
the training split under every combination of ``--ngrams``, ``--C`` and ``--text-only`` (the
tasks whose wide logits read the recommendation text alone, ``+``-joined, or ``none``; each
value one setting) and ``--intercept`` (whether the wide logits add the logistic regressions'
intercepts): the same encoder
logits, the wide weights and decisions refitted on validation, test reported with the
study's review resamples beside its baseline (``--study``). Results go to
``<out>/wide_probe.json`` and ``.md``. The logic is ``scrclf.training.wide_probe``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from itertools import product
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _numbers(text: str, kind: type) -> list:
    return [kind(part) for part in text.split(",") if part.strip()]


def _flags(text: str) -> list[bool]:
    values = {"true": True, "false": False}
    flags = [part.strip().lower() for part in text.split(",") if part.strip()]
    unknown = [f for f in flags if f not in values]
    if unknown or not flags:
        raise ValueError(f"--intercept takes true and/or false, comma-separated; got {text!r}")
    return [values[f] for f in flags]


def main(argv: list[str] | None = None) -> int:
    from scrclf.atomic import write_json, write_text
    from scrclf.errors import ScrClfError, one_line
    from scrclf.training.selection import read_study
    from scrclf.training.wide_probe import WideSetting, format_probe, probe_wide

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="finished run folders")
    parser.add_argument("--ngrams", default="1,2", help="n-gram orders, comma-separated")
    parser.add_argument("--C", default="2,4,8,16", help="inverse regularisations")
    parser.add_argument(
        "--text-only",
        nargs="+",
        default=["none"],
        help="per setting, the tasks whose wide logits read the text alone (a+b, or none)",
    )
    parser.add_argument(
        "--intercept",
        default="false",
        help="with the logistic regressions' intercepts: false, true, or false,true",
    )
    parser.add_argument("--tag", default="", help="suffix of the output file names")
    parser.add_argument("--study", default=str(ROOT / "benchmarks" / "model_selection.yaml"))
    parser.add_argument("--data", default=None, help="corpus folder (default: the config's)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        text_only = [
            () if value == "none" else tuple(t for t in value.split("+") if t)
            for value in args.text_only
        ]
        settings = [
            WideSetting(n, c, t, i)
            for n, c, t, i in product(
                _numbers(args.ngrams, int),
                _numbers(args.C, float),
                text_only,
                _flags(args.intercept),
            )
        ]
        result = probe_wide(args.runs, settings, read_study(args.study), args.data)
    except (ScrClfError, ValueError) as err:
        print(one_line(err) if isinstance(err, ScrClfError) else str(err), file=sys.stderr)
        return 2
    out = Path(args.out)
    stem = f"wide_probe_{args.tag}" if args.tag else "wide_probe"
    write_json(out / f"{stem}.json", result)
    write_text(out / f"{stem}.md", format_probe(result))
    print(f"wrote {out / f'{stem}.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
