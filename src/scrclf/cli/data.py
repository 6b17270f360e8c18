"""``scrclf data``: corpus tools (validate, agreement, difficulty)."""

from __future__ import annotations

import json
from pathlib import Path

from scrclf.cli.columns import add_column_options, column_map
from scrclf.data.corpus import (
    agreement_by_group,
    double_coding_agreement,
    format_agreement,
    format_agreement_by_group,
    format_file_report,
    format_report,
    validate_corpus,
    validate_file,
)
from scrclf.data.records import SUPPORTED_SUFFIXES
from scrclf.evaluation.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED
from scrclf.evaluation.corpus_checks import check_corpus, format_checks
from scrclf.evaluation.difficulty import difficulty
from scrclf.settings import task_set


def _cmd_validate(args) -> int:
    tasks = task_set(args.tasks)
    path = args.corpus_dir
    cmap = column_map(args)
    if path.is_file() or (not path.exists() and path.suffix.lower() in SUPPORTED_SUFFIXES):
        file_report = validate_file(path, tasks, cmap)
        print(
            json.dumps(file_report.to_dict(), indent=2)
            if args.json
            else format_file_report(file_report)
        )
        if args.strict and file_report.warnings:
            print(f"scrclf: error: {len(file_report.warnings)} warnings (--strict)")
            return 1
        print("file OK" + (" (with the warnings above)" if file_report.warnings else ""))
        return 0
    if not cmap.is_empty:
        print("scrclf: error: --column/--columns/--label apply to a single file, not a corpus")
        return 2
    report = validate_corpus(path, tasks, near_dup_threshold=args.near_dup)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_report(report))
    if args.strict and report.near_duplicates:
        print(f"scrclf: error: {len(report.near_duplicates)} near-duplicate pairs (--strict)")
        return 1
    print("corpus OK" + (" (with the warnings above)" if report.warnings else ""))
    return 0


def _cmd_difficulty(args) -> int:
    tasks = task_set(args.tasks)
    result = difficulty(args.corpus_dir, tasks, split=args.split)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"trained on train ({result['n_train']} items), scored on {args.split} "
        f"({result['n_eval']} items); macro-F1 (micro-F1)"
    )
    print(f"{'system':<14}" + "".join(f"{t:>24}" for t in tasks.names) + f"{'mean macro-F1':>16}")
    for name in ("prior", "keywords", "tfidf_logreg"):
        cells = "".join(
            f"{result[name][t]['macro_f1']:>15.3f} ({result[name][t]['micro_f1']:.3f})"
            for t in tasks.names
        )
        print(f"{name:<14}{cells}{result[name]['mean_macro_f1']:>16.3f}")
    return 0


def _cmd_agreement(args) -> int:
    tasks = task_set(args.tasks)
    if args.predictions:
        return _model_agreement(args, tasks)
    if args.by_style:
        groups = agreement_by_group(args.file, args.by_style, tasks)
        print(
            json.dumps(groups, indent=2) if args.json else format_agreement_by_group(groups, tasks)
        )
        return 0
    result = double_coding_agreement(args.file, tasks)
    print(json.dumps(result, indent=2) if args.json else format_agreement(result, tasks))
    return 0


def _model_agreement(args, tasks) -> int:
    from scrclf.data.corpus import SPLITS
    from scrclf.data.records import read_records
    from scrclf.evaluation.human_agreement import (
        format_model_agreement,
        model_agreement,
        read_predictions,
    )

    coder, reviews = read_predictions(args.predictions, tasks)
    if args.corpus:
        for split in SPLITS:
            path = args.corpus / f"{split}.jsonl"
            for rec in read_records(path) if path.is_file() else []:
                reviews.setdefault(str(rec.data.get("id")), rec.data.get("review_id"))
    result = model_agreement(
        args.file, coder, tasks, reviews, resamples=args.resamples, seed=args.seed
    )
    print(json.dumps(result, indent=2) if args.json else format_model_agreement(result, tasks))
    return 0


def _cmd_check(args) -> int:
    tasks = task_set(args.tasks)
    checks = check_corpus(args.corpus_dir, tasks)
    print(json.dumps(checks.to_dict(), indent=2) if args.json else format_checks(checks, tasks))
    if not checks.passed:
        failed = ", ".join(g.name for g in checks.gates if not g.passed)
        print(f"scrclf: corpus checks failed: {failed}")
        return 1
    print("corpus checks passed")
    return 0


def register_cli(subparsers) -> None:
    """``scrclf data validate DIR``, ``scrclf data agreement FILE``, ``scrclf data difficulty DIR``."""
    data = subparsers.add_parser("data", help="corpus tools")
    sub = data.add_subparsers(dest="data_command", required=True)
    val = sub.add_parser(
        "validate",
        help="check a corpus directory (schema, labels, splits, duplicates, lengths), or one "
        "annotated file as evaluate reads it",
    )
    val.add_argument(
        "corpus_dir", type=Path, metavar="PATH", help="a corpus directory or one annotated file"
    )
    val.add_argument(
        "--tasks",
        type=Path,
        default=None,
        help="task config YAML (default: the codebook's task config shipped with scrclf)",
    )
    val.add_argument(
        "--near-dup",
        type=float,
        default=0.6,
        help="Jaccard threshold on word 3-grams for near-duplicate pairs (default 0.6)",
    )
    val.add_argument(
        "--strict",
        action="store_true",
        help="fail when near-duplicates are found (a corpus) or on any warning (a file)",
    )
    val.add_argument("--json", action="store_true", help="print the report as JSON")
    add_column_options(val)
    val.set_defaults(func=_cmd_validate)
    agr = sub.add_parser(
        "agreement",
        help="inter-annotator agreement of a double-coding file; with --predictions, a "
        "model's predictions as a coder beside the two humans",
    )
    agr.add_argument("file", type=Path)
    agr.add_argument(
        "--predictions",
        type=Path,
        help="a model's predictions of the double-coded items (the JSONL or CSV of "
        "`scrclf predict`, with ids): kappa model vs each coder with review-bootstrap "
        "intervals, beside coder vs coder",
    )
    agr.add_argument(
        "--corpus",
        type=Path,
        metavar="CORPUS_DIR",
        help="with --predictions: look up each item's review here when the predictions "
        "do not carry it",
    )
    agr.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES, help="bootstrap resamples")
    agr.add_argument("--seed", type=int, default=DEFAULT_SEED, help="bootstrap seed")
    agr.add_argument("--tasks", type=Path, default=None, help="task config YAML")
    agr.add_argument("--json", action="store_true", help="print the result as JSON")
    agr.add_argument(
        "--by-style",
        type=Path,
        metavar="CORPUS_DIR",
        help="one row per review type, looking the items up in this corpus directory",
    )
    agr.set_defaults(func=_cmd_agreement)
    dif = sub.add_parser("difficulty", help="bag-of-words baselines on a corpus (templating check)")
    dif.add_argument("corpus_dir", type=Path)
    dif.add_argument("--split", default="test")
    dif.add_argument("--tasks", type=Path, default=None, help="task config YAML")
    dif.add_argument("--json", action="store_true", help="print the result as JSON")
    dif.set_defaults(func=_cmd_difficulty)
    chk = sub.add_parser(
        "check",
        help="quality gates of a corpus release: near-duplicates, label floors, styles in "
        "every split, bag-of-words ceiling; a table per style",
    )
    chk.add_argument("corpus_dir", type=Path)
    chk.add_argument("--tasks", type=Path, default=None, help="task config YAML")
    chk.add_argument("--json", action="store_true", help="print the result as JSON")
    chk.set_defaults(func=_cmd_check)
