"""Command-line options for files with their own column names and label codes."""

from __future__ import annotations

import argparse

from scrclf.data.columns import ColumnMap


def add_column_options(parser: argparse.ArgumentParser, labels: bool = True) -> None:
    """``--columns FILE``, ``--column KEY=NAME`` and (with ``labels``) ``--label``."""
    group = parser.add_argument_group(
        "columns",
        "for a file whose column names or label codes differ from the corpus schema "
        "(see docs/evaluation.md); the options override the map file",
    )
    group.add_argument(
        "--columns",
        metavar="FILE",
        help="a column map file (YAML or JSON): id, text, finding, review, labels, label_map",
    )
    group.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="KEY=NAME",
        help="the file's column for KEY: id, text, finding, review, or a task name "
        "(themes, evidence, action_strength); repeatable",
    )
    if labels:
        group.add_argument(
            "--label",
            action="append",
            default=[],
            metavar="TASK:CODE=LABEL",
            help="read the file's label CODE of TASK as LABEL (e.g. evidence:NS=none_stated); "
            "case, spaces, hyphens and underscores are matched without it; repeatable",
        )


def column_map(args: argparse.Namespace) -> ColumnMap:
    """The column map the options of :func:`add_column_options` give."""
    return ColumnMap.from_options(args.columns, args.column, getattr(args, "label", []))
