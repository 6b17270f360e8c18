"""``scrclf evaluate`` and ``scrclf profile``: argument parsing around :mod:`scrclf.evaluation`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scrclf import atomic
from scrclf.cli.columns import add_column_options, column_map
from scrclf.evaluation.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED
from scrclf.evaluation.domain_profile import write_profile
from scrclf.evaluation.evaluate import (
    default_report_dir,
    evaluate,
    headline_line,
    profile_file,
    resolve_model,
)
from scrclf.inference.classifier import BACKENDS, quiet_libraries
from scrclf.reporting.markdown import render_profile


def _cmd_evaluate(args: argparse.Namespace) -> int:
    quiet_libraries()
    source = resolve_model(args.model)
    out = (
        Path(args.out)
        if args.out
        else default_report_dir(Path("reports") / "evaluations", source, Path(args.file).stem)
    )
    result = evaluate(
        source.path,
        args.file,
        out,
        recalibrate=args.validation_file is not None,
        validation_file=args.validation_file,
        resamples=args.resamples,
        seed=args.seed,
        profile=args.profile,
        plots=not args.no_plots,
        backend=args.backend,
        batch_size=args.batch_size,
        columns=column_map(args),
    )
    for note in result["data"]["notes"]:
        print(f"note: {note}", file=sys.stderr)
    print(headline_line(result))
    print(f"report written to {out} (per-item predictions: {out / 'predictions.csv'})")
    return 0


def _cmd_profile(args: argparse.Namespace) -> int:
    result = profile_file(
        args.file,
        args.model,
        backend=args.backend,
        batch_size=args.batch_size,
        columns=column_map(args),
    )
    if args.out:
        with atomic.directory(args.out) as tmp:
            write_profile(result, tmp)
        print(f"profile written to {args.out}")
    else:
        print(render_profile(result))
    return 0


def register_cli(subparsers) -> None:
    """Add ``scrclf evaluate`` and ``scrclf profile`` to the main command line."""
    p = subparsers.add_parser(
        "evaluate",
        help="score a model on an annotated file and write a report folder",
        description="Score a model on annotated recommendations: F1 (micro, macro, weighted, "
        "per label), accuracy, subset accuracy, Hamming loss, PR-AUC, calibration, "
        "with cluster-bootstrap intervals over reviews, at the model's stored "
        "decisions and at the defaults.",
    )
    p.add_argument(
        "--model", required=True, help="a training run, its model/ folder, or an export folder"
    )
    p.add_argument("--file", required=True, help="annotated JSONL, CSV, JSON or Parquet")
    p.add_argument(
        "--out", help="report folder (default: reports/evaluations/<model>-<file>-<time>)"
    )
    p.add_argument(
        "--validation-file",
        help="also re-fit temperatures and thresholds on this "
        "held-out file and report what changes",
    )
    p.add_argument("--profile", action="store_true", help="also write the domain profile")
    p.add_argument(
        "--resamples",
        type=int,
        default=DEFAULT_RESAMPLES,
        help="bootstrap resamples (default 1000)",
    )
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="bootstrap seed")
    p.add_argument("--backend", choices=BACKENDS, default="auto")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--no-plots", action="store_true", help="skip the PNG charts")
    add_column_options(p)
    p.set_defaults(func=_cmd_evaluate)

    q = subparsers.add_parser(
        "profile",
        help="recommendations per review and shares of themes, evidence and "
        "action strength (annotated, and predicted with --model)",
    )
    q.add_argument("--file", required=True, help="recommendations: JSONL, CSV, JSON or Parquet")
    q.add_argument(
        "--model", help="also predict labels with this model and show them beside the annotations"
    )
    q.add_argument(
        "--out",
        help="write profile.json, profile.md and profile.png into this "
        "folder (default: print the tables)",
    )
    q.add_argument("--backend", choices=BACKENDS, default="auto")
    q.add_argument("--batch-size", type=int, default=32)
    add_column_options(q)
    q.set_defaults(func=_cmd_profile)
