"""The command line shared by the decision-rule probes in ``benchmarks/`` (``class_offsets.py``,
``theme_rules.py``): finished runs in, the probe's JSON and Markdown out."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

Probe = Callable[[list[Path], Path, argparse.Namespace], Mapping[str, Any]]
Render = Callable[[Mapping[str, Any], str], str]


def run_probe(
    argv: Sequence[str] | None,
    name: str,
    description: str,
    probe: Probe,
    render: Render,
    data: Path,
    out: Path,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> int:
    """Parse ``runs --data --resamples --out`` (and ``add_arguments``), run ``probe`` on the
    runs' models and the corpus folder, write ``<out>/<name>.json`` and ``.md``. Returns the
    exit status: 2, with a one-line message, for bad input."""
    from scrclf.atomic import write_json, write_text
    from scrclf.errors import ScrClfError, one_line

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("runs", nargs="+", help="finished run folders (or model folders)")
    parser.add_argument("--data", default=str(data), help="corpus folder")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--out", default=str(out))
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        models = [Path(r) / "model" if (Path(r) / "model").is_dir() else Path(r) for r in args.runs]
        result = probe(models, Path(args.data), args)
    except ScrClfError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    folder = Path(args.out)
    given = list(sys.argv[1:] if argv is None else argv)
    command = f"python benchmarks/{name}.py " + " ".join(given)
    write_json(folder / f"{name}.json", result)
    write_text(folder / f"{name}.md", render(result, command))
    print(f"written to {folder / f'{name}.md'}")
    return 0
