"""``scrclf review``: review reports in, classified items and the study's tables out."""

from __future__ import annotations

import argparse

from scrclf.inference.classifier import BACKENDS, quiet_libraries
from scrclf.reviews import run_review


def cmd_review(args: argparse.Namespace) -> int:
    quiet_libraries()
    run_review(
        args.paths,
        args.model,
        args.out,
        backend=args.backend,
        quantized=args.quantized,
        batch_size=args.batch_size,
        explain=not args.no_explain,
        progress=not args.no_progress,
    )
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "review",
        help="find, classify and profile the recommendations of review reports",
        description="Read review reports (PDF, DOCX, HTML, TXT/Markdown), find their "
        "recommendations and findings, classify them and write items.csv, "
        "items.jsonl, corrections.csv, profile.json, report.md and report.html.",
    )
    p.add_argument("paths", nargs="+", help="report files or folders of reports")
    p.add_argument("--model", required=True, help="an export folder or a run's model/ folder")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--backend", choices=BACKENDS, default="auto")
    p.add_argument("--quantized", action="store_true", help="use the int8 ONNX graph")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--no-explain", action="store_true", help="skip the per-word explanations")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=cmd_review)
