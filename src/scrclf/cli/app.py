"""The ``scrclf`` command: ``predict`` and ``info``, plus subcommands from optional modules.

    scrclf predict --model models/NAME --input recs.csv --output preds.jsonl
    scrclf predict --model models/NAME < recs.txt          # one recommendation per line
    scrclf info models/NAME

Modules named in :data:`SUBCOMMAND_MODULES` add their own subcommands: when such a module
exists and has ``register_cli(subparsers)``, it is called with the ``argparse``
subparsers object and registers parsers whose ``func`` default takes the parsed arguments
and returns an exit status (None means 0).

Bad input or a model folder that cannot be loaded ends the command with exit status 2 and
one line on stderr, ``scrclf: error: <file>:<line>: <problem>``, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib
import io
import itertools
import json
import os
import signal
import stat
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from scrclf import atomic
from scrclf.cli.columns import add_column_options, column_map
from scrclf.data.columns import ColumnMap
from scrclf.data.records import (
    CSV_FIELD_LIMIT,
    DataError,
    duplicate_column,
    has_visible_text,
    json_object,
    line_of_offset,
)
from scrclf.errors import ScrClfError, SettingsError, one_line
from scrclf.inference.classifier import (
    BACKENDS,
    EXPORT_META_FILE,
    ONNX_FP32_FILE,
    ONNX_INT8_FILE,
    WEIGHTS_FILE,
    WEIGHTS_INDEX_FILE,
    TruncationWarning,
    finding_problem,
    inspect_model_dir,
    load,
    quiet_libraries,
    read_tasks,
    text_problem,
)
from scrclf.version import __version__

# Import names of the libraries that only the optional extras (train, reviews) install: a
# command module that needs one is left out of a runtime install, and named in --help.
EXTRA_LIBRARIES = frozenset(
    {"torch", "transformers", "accelerate", "datasets", "evaluate", "hydra", "omegaconf"}
    | {"safetensors", "sklearn", "tensorboard", "matplotlib", "onnx", "onnxscript"}
    | {"pypdf", "docx", "bs4", "lxml"}
)
# Commands of this module: parsing them needs none of SUBCOMMAND_MODULES.
BUILTIN_COMMANDS = ("predict", "info")
SUBCOMMAND_MODULES = [
    "scrclf.cli.data",
    "scrclf.cli.encoders",
    "scrclf.cli.evaluate",
    "scrclf.cli.review",
]
EXIT_USAGE = 2
INPUT_FORMATS = ("auto", "lines", "csv", "tsv", "jsonl")
# Input formats by file suffix (``--format auto``); any other suffix is refused.
SUFFIX_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".txt": "lines",
    ".text": "lines",
}
OUTPUT_FORMATS = ("jsonl", "csv")
STDIO = "-"
STDIN_NAME = "<stdin>"
# Items predicted per step: large enough for full batches, small enough to stream.
CHUNK_ITEMS = 256


# ----------------------------------------------------------------------------- input


@dataclass
class Item:
    """One recommendation read from the input, with where it came from."""

    line: int
    text: str
    finding: str | None = None
    id: str | int | None = None
    review: str | int | None = None


@dataclass(frozen=True)
class InputColumns:
    """The input's column (CSV) or key (JSONL) names: by default the corpus schema's."""

    text: str
    finding: str | None
    id: str
    review: str | None
    # The names a column map gave: a CSV must have these columns.
    given: tuple[str, ...] = ()

    @classmethod
    def from_map(cls, column_map: ColumnMap | None = None) -> InputColumns:
        """The shipped corpus names (``configs/data/scr_recs.yaml``), overridden by a map."""
        from scrclf.settings import data_columns

        names = data_columns()
        cmap = column_map or ColumnMap()
        return cls(
            text=cmap.text or names["text_column"],
            finding=cmap.finding or names["pair_column"],
            id=cmap.id or names["id_column"],
            review=cmap.review or names["group_column"],
            given=tuple(c for c in (cmap.id, cmap.finding, cmap.review) if c),
        )


def detect_format(
    path: str,
    first_line: str | None = None,
    columns: InputColumns | None = None,
    source: str | None = None,
) -> str:
    """The input format by file suffix (:data:`SUFFIX_FORMATS`); stdin: JSONL when the
    first line is an object, else plain lines. An unknown suffix, and a first line that
    looks like a CSV or TSV header, are errors: a header read as text would be classified
    as a recommendation. A pipe (``source``, read as ``path`` ``-``) is told by content."""
    if path != STDIO:
        suffix = Path(path).suffix.lower()
        if suffix not in SUFFIX_FORMATS:
            known = ", ".join(sorted(SUFFIX_FORMATS))
            raise DataError(
                f"unknown input format (suffix '{suffix or '(none)'}'); name it with "
                f"--format lines|csv|tsv|jsonl, or use a file ending in {known}",
                path,
            )
        fmt = SUFFIX_FORMATS[suffix]
    elif first_line is not None and first_line.lstrip().startswith("{"):
        fmt = "jsonl"
    else:
        fmt = "lines"
    if fmt == "lines" and first_line is not None:
        header = header_format(first_line, columns or InputColumns.from_map())
        if header:
            raise DataError(
                f"the first line looks like a {header.upper()} header "
                f"({first_line.strip()[:60]!r}) and would be classified as a "
                f"recommendation; pass --format {header} (or --format lines if it is text)",
                source or (STDIN_NAME if path == STDIO else path),
                1,
            )
    return fmt


def header_format(line: str, columns: InputColumns) -> str | None:
    """``csv`` or ``tsv`` when ``line`` is a header row naming the text column, else None."""
    for fmt, delimiter in (("tsv", "\t"), ("csv", ",")):
        try:
            cells = next(csv.reader([line.rstrip("\r\n")], delimiter=delimiter))
        except (csv.Error, StopIteration):
            continue
        names = [c.strip().strip('"').casefold() for c in cells]
        if columns.text.casefold() in names and (len(names) > 1 or fmt == "csv"):
            return fmt
    return None


def _check_item(
    source: str,
    line: int,
    text: Any,
    finding: Any,
    item_id: Any,
    review: Any = None,
    columns: InputColumns | None = None,
) -> Item:
    cols = columns or InputColumns.from_map()
    problem = text_problem(text)
    if problem:
        raise DataError(problem, source, line, cols.text)
    problem = finding_problem(finding)
    if problem:
        raise DataError(problem, source, line, cols.finding or "finding")
    for value, name in ((item_id, cols.id), (review, cols.review or "review")):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int))):
            raise DataError(
                f"must be a string or integer, got {type(value).__name__}", source, line, name
            )
    return Item(line, text, finding or None, item_id, review)


def _read_lines(lines: Iterable[str], source: str, columns: InputColumns) -> Iterator[Item]:
    for number, raw in enumerate(lines, start=1):
        text = raw.rstrip("\r\n")
        if has_visible_text(text):  # blank lines (also invisible-only ones) separate items
            yield _check_item(source, number, text, None, None, None, columns)


def _read_jsonl(lines: Iterable[str], source: str, columns: InputColumns) -> Iterator[Item]:
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        obj = json_object(raw, source, number)
        if columns.text not in obj:
            raise DataError(
                f"missing '{columns.text}'; the object has keys {sorted(obj)} "
                f"(name the text key with --column text=NAME)",
                source,
                number,
                columns.text,
            )
        yield _check_item(
            source,
            number,
            obj[columns.text],
            obj.get(columns.finding) if columns.finding else None,
            obj.get(columns.id),
            obj.get(columns.review) if columns.review else None,
            columns,
        )


def _read_tsv(lines: Iterable[str], source: str, columns: InputColumns) -> Iterator[Item]:
    return _read_csv(lines, source, columns, delimiter="\t")


def _read_csv(
    lines: Iterable[str], source: str, columns: InputColumns, delimiter: str = ","
) -> Iterator[Item]:
    # strict: an unclosed quote is an error, not a cell that swallows the rows after it
    reader = csv.DictReader(lines, strict=True, delimiter=delimiter)
    previous_limit = csv.field_size_limit(CSV_FIELD_LIMIT)  # long texts are truncated later
    kind = "TSV" if delimiter == "\t" else "CSV"
    try:
        if reader.fieldnames is None:
            raise DataError(f"empty {kind} file (no header row)", source, 1)
        duplicate = duplicate_column(reader.fieldnames)
        if duplicate is not None:
            raise DataError(f"column '{duplicate}' appears twice in the header", source, 1)
        if columns.text not in reader.fieldnames:
            raise DataError(
                f"no '{columns.text}' column; the header has {reader.fieldnames} "
                "(name the text column with --column text=NAME)",
                source,
                1,
            )
        for name in columns.given:
            if name not in reader.fieldnames:
                raise DataError(
                    f"no '{name}' column; the header has {reader.fieldnames}", source, 1
                )
        for row in reader:
            if None in row:
                n_cells = len(reader.fieldnames) + len(row[None])
                raise DataError(
                    f"row has {n_cells} cells, the header has "
                    f"{len(reader.fieldnames)}; quote cells that contain commas",
                    source,
                    reader.line_num,
                )
            if not any((v or "").strip() for v in row.values()):
                continue
            yield _check_item(
                source,
                reader.line_num,
                row.get(columns.text),
                (row.get(columns.finding) or None) if columns.finding else None,
                row.get(columns.id) or None,
                (row.get(columns.review) or None) if columns.review else None,
                columns,
            )
    except csv.Error as err:
        raise DataError(f"malformed CSV ({err})", source, reader.line_num or 1) from None
    finally:
        csv.field_size_limit(previous_limit)


READERS: dict[str, Callable[[Iterable[str], str, InputColumns], Iterator[Item]]] = {
    "lines": _read_lines,
    "jsonl": _read_jsonl,
    "csv": _read_csv,
    "tsv": _read_tsv,
}


@contextlib.contextmanager
def _open_input(path: str) -> Iterator[IO[str]]:
    """The input as UTF-8 text; stdin is read through, never closed."""
    if path == STDIO:
        buffer = getattr(sys.stdin, "buffer", None)
        if buffer is None:  # already text (e.g. replaced in tests)
            yield sys.stdin
            return
        wrapper = io.TextIOWrapper(buffer, encoding="utf-8-sig", newline="")
        try:
            yield wrapper
        finally:
            wrapper.detach()
        return
    try:
        stream = open(path, encoding="utf-8-sig", newline="")
    except FileNotFoundError:
        raise DataError("file not found", path) from None
    except IsADirectoryError:
        raise DataError("expected a file, got a directory", path) from None
    with stream:
        yield stream


def read_items(path: str, fmt: str = "auto", columns: InputColumns | None = None) -> Iterator[Item]:
    """Stream validated items from a file or stdin (``-``)."""
    source = STDIN_NAME if path == STDIO else path
    columns = columns or InputColumns.from_map()
    with _open_input(path) as stream:
        lines: Iterable[str] = stream
        try:
            if fmt == "auto":
                by_content = path == STDIO or (
                    _is_stream(path) and Path(path).suffix.lower() not in SUFFIX_FORMATS
                )
                probe = STDIO if by_content else path
                fmt = detect_format(probe, None, columns, source)
                if fmt == "lines":  # plain text: is its first line a header?
                    head = list(itertools.islice(stream, 1))
                    fmt = detect_format(probe, head[0] if head else None, columns, source)
                    lines = itertools.chain(head, stream)
            yield from READERS[fmt](lines, source, columns)
        except UnicodeDecodeError as err:
            line = None if path == STDIO else _first_bad_utf8_line(Path(path))
            raise DataError(
                f"not valid UTF-8 ({err.reason}); save the input as UTF-8", source, line
            ) from None


def _first_bad_utf8_line(path: Path) -> int | None:
    """The line holding the first byte that is not UTF-8 (text is decoded in blocks, so the
    decoder's error alone does not say which line it was)."""
    try:
        raw = path.read_bytes()
        raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        return line_of_offset(err.object, err.start)  # offsets count from after a BOM
    except OSError:
        return None
    return None


def _chunks(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


# ---------------------------------------------------------------------------- output


@contextlib.contextmanager
def atomic_output(path: str) -> Iterator[IO[str]]:
    """Standard output, or a file that appears complete or not at all."""
    if path == STDIO:
        yield sys.stdout
        sys.stdout.flush()
        return
    with atomic.open_for_write(path, "w", encoding="utf-8", newline="") as fh:
        yield fh


class JsonlWriter:
    """One JSON object per line: ``id``, ``review``, ``line``, ``text``, then one entry per
    task."""

    def __init__(self, stream: IO[str], tasks):
        self.stream = stream

    def write(self, item: Item, prediction: Mapping[str, Any]) -> None:
        row = {
            "id": item.id,
            "review": item.review,
            "line": item.line,
            "text": item.text,
            **prediction,
        }
        self.stream.write(json.dumps(row, ensure_ascii=False) + "\n")


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula, with a leading apostrophe.

    As OWASP recommends for CSV injection: a cell starting with ``=``, ``+``, ``-``, ``@``,
    a tab or a carriage return is prefixed with ``'``, which spreadsheets show as text.
    Numbers (an integer id such as -5) are left alone.
    """
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


class CsvWriter:
    """``id``, ``review``, ``line``, ``text``; per task its label(s), the primary theme, and
    a score per label."""

    def __init__(self, stream: IO[str], tasks):
        self.tasks = tasks
        header = ["id", "review", "line", "text"]
        for task in tasks:
            header.append(task.name)
            if task.is_multi_label:
                header.append(f"{task.name}_primary")
            header += [f"{task.name}_score_{label}" for label in task.labels]
        self.writer = csv.writer(stream, lineterminator="\n")
        # The csv module quotes a field for the characters of its line terminator only, so a
        # lone carriage return would end the row early; rows holding one are fully quoted.
        self.quoted_writer = csv.writer(stream, lineterminator="\n", quoting=csv.QUOTE_ALL)
        self.writer.writerow(header)

    def write(self, item: Item, prediction: Mapping[str, Any]) -> None:
        row: list[Any] = [
            "" if item.id is None else spreadsheet_safe(item.id),
            "" if item.review is None else spreadsheet_safe(item.review),
            item.line,
            spreadsheet_safe(item.text),
        ]
        for task in self.tasks:
            entry = prediction[task.name]
            if task.is_multi_label:
                row += [";".join(entry["labels"]), entry["primary"] or ""]
            else:
                row.append(entry["label"])
            row += [f"{entry['scores'][label]:.6f}" for label in task.labels]
        lone_cr = any(isinstance(value, str) and "\r" in value for value in row)
        (self.quoted_writer if lone_cr else self.writer).writerow(row)


WRITERS: dict[str, type[JsonlWriter] | type[CsvWriter]] = {"jsonl": JsonlWriter, "csv": CsvWriter}


# --------------------------------------------------------------------------- commands


def cmd_predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if args.batch_size < 1:
        raise SettingsError(f"--batch-size must be >= 1, got {args.batch_size}")
    if _same_file(args.input, args.output):
        raise SettingsError(
            f"--output is the input file {args.input}; write the predictions to another file"
        )
    columns = InputColumns.from_map(column_map(args))
    from_file = args.input != STDIO and not _is_stream(args.input)
    total = None
    if from_file:
        # A regular file is validated in a first pass, before any model is loaded or output
        # written. Pipes, FIFOs and stdin can be read only once: they are validated as they
        # stream, and an error midway still leaves no output file.
        before = _identity(args.input)
        total = sum(1 for _ in read_items(args.input, args.format, columns))
        if _identity(args.input) != before:
            raise DataError("the file changed while it was read; run again", args.input)
        if total == 0:
            raise DataError("no recommendations in the input (the file is empty)", args.input)
    quiet_libraries()
    clf = load(args.model, backend=args.backend, quantized=args.quantized, device=args.device)
    show_progress = from_file and not args.no_progress
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TruncationWarning)  # counted per chunk, summed below
        with (
            atomic_output(args.output) as out,
            tqdm(total=total, unit="item", file=sys.stderr, disable=not show_progress) as bar,
        ):
            writer = WRITERS[args.output_format](out, clf.tasks)
            written = 0
            for chunk in _chunks(read_items(args.input, args.format, columns), CHUNK_ITEMS):
                predictions = clf.predict(
                    [i.text for i in chunk], [i.finding for i in chunk], batch_size=args.batch_size
                )
                for item, prediction in zip(chunk, predictions, strict=True):
                    writer.write(item, prediction)
                out.flush()
                bar.update(len(chunk))
                written += len(chunk)
            if not written:
                source = STDIN_NAME if args.input == STDIO else args.input
                raise DataError("no recommendations in the input (it is empty)", source)
    truncated = sum(w.message.count for w in caught if isinstance(w.message, TruncationWarning))
    if truncated:
        max_length = next(
            w.message.max_length for w in caught if isinstance(w.message, TruncationWarning)
        )
        _warn(f"{truncated} inputs were longer than {max_length} tokens and were truncated")
    for message in dict.fromkeys(
        str(w.message) for w in caught if not isinstance(w.message, TruncationWarning)
    ):
        _warn(message)
    return 0


def _is_stream(path: str) -> bool:
    """A pipe, FIFO, socket or device (``<(cmd)``, ``/dev/stdin``): it can be read once."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False  # not there (or unreadable): the reader names the problem
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode)


def _identity(path: str) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None  # not there (or unreadable): the reader names the problem
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _same_file(src: str, dest: str) -> bool:
    if STDIO in (src, dest):
        return False
    try:
        return os.path.samefile(src, dest)
    except OSError:
        return False


def _warn(message: str) -> None:
    print("scrclf: warning: " + " ".join(message.split()), file=sys.stderr)


def _metrics_path(root: Path) -> Path | None:
    for candidate in (root / "metrics.json", root.parent / "metrics.json"):
        if candidate.is_file():
            return candidate
    return None


def _json_or_none(path: Path | None) -> Any:
    if path is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read: {err}", path) from None


def _card_license(path: Path) -> str | None:
    """The ``license`` of a model card's front matter, if it has one."""
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8")
    if not text.startswith("---"):
        return None
    import yaml

    try:
        front = yaml.safe_load(text.split("---", 2)[1])
    except (yaml.YAMLError, IndexError):
        return None
    return front.get("license") if isinstance(front, dict) else None


def model_info(path: str | Path) -> dict[str, Any]:
    """What ``scrclf info`` reports, as data: checks, tasks, metrics and provenance."""
    root, manifest, meta = inspect_model_dir(path)
    config, tasks = read_tasks(root)
    metrics = _json_or_none(_metrics_path(root))
    fingerprint = _json_or_none(root / "data_fingerprint.json")
    files = (meta or {}).get("onnx", {}).get("files", {})
    backends = [
        name
        for name, present in (
            ("onnx fp32", (root / files.get("fp32", ONNX_FP32_FILE)).is_file()),
            ("onnx int8", (root / files.get("int8", ONNX_INT8_FILE)).is_file()),
            ("torch", (root / WEIGHTS_FILE).is_file() or (root / WEIGHTS_INDEX_FILE).is_file()),
        )
        if present
    ]
    headline = {}
    if isinstance(metrics, dict):
        for split in ("test", "validation"):
            if isinstance(metrics.get(split), dict):
                m = metrics[split]
                headline = {
                    "split": split,
                    "mean_macro_f1": m.get("mean_macro_f1"),
                    "tasks": {
                        t.name: {
                            "macro_f1": (m.get(t.name) or {}).get("macro_f1"),
                            "micro_f1": (m.get(t.name) or {}).get("micro_f1"),
                        }
                        for t in tasks
                    },
                }
                break
    return {
        "path": str(root),
        "kind": "export" if meta is not None else "saved model",
        "name": (meta or {}).get("name", root.name),
        "created": (meta or {}).get("created"),
        "versions": (meta or {}).get("versions"),
        "integrity": (
            f"{len(manifest['files'])} files verified against manifest.json"
            if manifest
            else "no manifest.json: checksums not verified"
        ),
        "backends": backends,
        "max_seq_length": int(config.get("max_seq_length", 256)),
        "tasks": [
            {
                "name": t.name,
                "type": t.type,
                "labels": t.labels,
                "thresholds": t.decision_thresholds() if t.is_multi_label else None,
                "temperature": t.temperature,
                "max_labels": t.max_labels,
            }
            for t in tasks
        ],
        "metrics": headline or None,
        "parity": (meta or {}).get("parity"),
        "provenance": {
            "source": (meta or {}).get("source"),
            "data": (meta or {}).get("provenance", {}).get("data"),
            "fingerprint": fingerprint,
            "license": _card_license(root / "README.md"),
            "metadata_file": EXPORT_META_FILE if meta else None,
        },
    }


def _num(value: Any, spec: str = ".3f") -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "n/a"


def format_info(info: Mapping[str, Any]) -> str:
    """The human-readable ``scrclf info`` report."""
    lines = [f"model       {info['name']} ({info['kind']}) at {info['path']}"]
    if info["created"]:
        versions = info["versions"] or {}
        lines.append(
            f"created     {info['created']} with scrclf {versions.get('scrclf', '?')}, "
            f"torch {versions.get('torch', '?')}, "
            f"onnxruntime {versions.get('onnxruntime', '?')}"
        )
    lines += [
        f"integrity   {info['integrity']}",
        f"backends    {', '.join(info['backends']) or 'none'}",
        f"max length  {info['max_seq_length']} tokens",
        "",
    ]
    for task in info["tasks"]:
        if task["type"] == "multi_label":
            limit = f", at most {task['max_labels']} labels" if task["max_labels"] else ""
            lines.append(
                f"{task['name']} (multi-label{limit}; temperature {_num(task['temperature'])})"
            )
            width = max(len(label) for label in task["labels"])
            for label, threshold in zip(task["labels"], task["thresholds"], strict=True):
                lines.append(f"  {label:<{width}}  threshold {_num(threshold)}")
        else:
            lines.append(f"{task['name']} (single-label; temperature {_num(task['temperature'])})")
            offsets = task.get("offsets") or [0.0] * len(task["labels"])
            if any(offsets):
                width = max(len(label) for label in task["labels"])
                for label, offset in zip(task["labels"], offsets, strict=True):
                    lines.append(f"  {label:<{width}}  offset {offset:+.2f}")
            else:
                lines.append("  " + ", ".join(task["labels"]))
    lines.append("")
    metrics = info["metrics"]
    if metrics:
        parts = [
            f"{name} macro-F1 {_num(m['macro_f1'])} micro-F1 {_num(m['micro_f1'])}"
            for name, m in metrics["tasks"].items()
        ]
        lines.append(
            f"metrics     [{metrics['split']}] mean macro-F1 "
            f"{_num(metrics['mean_macro_f1'])}; " + "; ".join(parts)
        )
    else:
        lines.append("metrics     none found (no metrics.json)")
    parity = info["parity"]
    if parity and not parity.get("skipped"):
        agreement = ", ".join(
            f"{t} {_num(v)}" for t, v in parity["onnx_int8"]["label_agreement"].items()
        )
        lines.append(
            f"parity      [{parity['split']}, {parity['n_items']} items] onnx fp32 max "
            f"|logit diff| {_num(parity['onnx_fp32']['max_abs_logit_diff'], '.2e')}; "
            f"int8 label agreement {agreement}"
        )
    elif parity:
        lines.append(f"parity      skipped: {parity.get('note')}")
    provenance = info["provenance"]
    source = provenance["source"] or {}
    if source:
        lines.append(
            f"source run  {source.get('run')} (best {source.get('best_checkpoint')}, "
            f"{source.get('epochs_run')} epochs)"
        )
    if provenance["data"]:
        lines.append(f"data        {provenance['data']}")
    fingerprint = provenance["fingerprint"] or {}
    for split, entry in (fingerprint.get("splits") or {}).items():
        if entry.get("status") == "ok":
            lines.append(
                f"  {split:<11} {entry['file']}: {entry.get('n_items')} items, "
                f"sha256 {entry['sha256'][:16]}"
            )
        else:
            lines.append(f"  {split:<11} {entry.get('file')}: {entry.get('status')}")
    if provenance["license"]:
        lines.append(f"license     {provenance['license']}")
    return "\n".join(lines)


def cmd_info(args: argparse.Namespace) -> int:
    info = model_info(args.model_dir)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(format_info(info))
    return 0


# ----------------------------------------------------------------------------- parser


def _add_predict(subparsers) -> None:
    p = subparsers.add_parser(
        "predict",
        help="classify recommendations from a file or stdin",
        description="Classify recommendations. Input: plain text (one per line, .txt), CSV, "
        "TSV or JSONL with a 'text' column/key and optional 'finding', 'id' and 'review_id' "
        "(other names with --column or --columns). Output: id, review, line and text, "
        "then the predictions.",
    )
    p.add_argument("--model", required=True, help="an export folder or a run's model/ folder")
    p.add_argument("--backend", choices=BACKENDS, default="auto")
    p.add_argument("--quantized", action="store_true", help="use the int8 ONNX graph")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    p.add_argument("--input", default=STDIO, help="input file, or - for stdin (default)")
    p.add_argument(
        "--format",
        choices=INPUT_FORMATS,
        default="auto",
        help="input format (auto: by suffix .txt, .csv, .tsv, .jsonl, others refused; "
        "stdin: JSONL if it starts with '{', refused if it starts with a CSV/TSV header)",
    )
    p.add_argument(
        "--output",
        default=STDIO,
        help="output file (written atomically), or - for stdout (default)",
    )
    p.add_argument("--output-format", choices=OUTPUT_FORMATS, default="jsonl")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    add_column_options(p, labels=False)
    p.set_defaults(func=cmd_predict)


def _add_info(subparsers) -> None:
    p = subparsers.add_parser("info", help="labels, thresholds, metrics and provenance of a model")
    p.add_argument("model_dir", help="an export folder or a run's model/ folder")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_info)


def register_optional(subparsers, modules: Iterable[str]) -> dict[str, str]:
    """Let each installed module of ``modules`` add subcommands via ``register_cli``.

    Returns the modules left out because a library they need is not installed (the runtime
    install has no ``train`` extra), each with that library's name."""
    left_out = {}
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name is not None and (name == err.name or name.startswith(err.name + ".")):
                continue  # the module is not part of this installation
            library = (err.name or "").partition(".")[0]
            if library in EXTRA_LIBRARIES:
                left_out[name] = library
                continue
            raise  # any other missing module is a broken installation: never hidden
        register = getattr(module, "register_cli", None)
        if register is not None:
            register(subparsers)
    return left_out


def build_parser(optional: bool = True) -> argparse.ArgumentParser:
    """The ``scrclf`` parser; with ``optional=False`` only ``predict`` and ``info``, without
    importing the modules of the other commands (what ``scrclf predict`` needs to start fast)."""
    parser = argparse.ArgumentParser(
        prog="scrclf",
        description="Classify recommendations from child-protection serious case reviews.",
    )
    parser.add_argument("--version", action="version", version=f"scrclf {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_predict(subparsers)
    _add_info(subparsers)
    left_out = register_optional(subparsers, SUBCOMMAND_MODULES) if optional else {}
    if left_out:
        parser.epilog = "Not in this installation (pip install 'scrclf[train]'): " + ", ".join(
            f"'{name.rpartition('.')[2]}' commands (need {lib})" for name, lib in left_out.items()
        )
    return parser


def describe_error(err: BaseException) -> str:
    """The one-line message for an error: ``<file>[:<line>]: <problem>`` where known."""
    return one_line(err)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 bad input or model)."""
    words = sys.argv[1:] if argv is None else argv
    parser = build_parser(optional=not words or words[0] not in BUILTIN_COMMANDS)
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_usage(sys.stderr)
        print("scrclf: error: choose a command (see scrclf --help)", file=sys.stderr)
        return EXIT_USAGE
    previous = _terminate_like_interrupt()
    try:
        return int(func(args) or 0)
    except BrokenPipeError:
        # The reader of stdout went away (e.g. `| head`): stop quietly.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except ScrClfError as err:  # a problem the user can fix; anything else is a bug
        print(f"scrclf: error: {describe_error(err)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("scrclf: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _terminate_like_interrupt() -> Any:
    """Make SIGTERM unwind like Ctrl-C, so that temporary files are removed; returns the
    previous handler (None when signals cannot be set here, outside the main thread)."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, interrupt)
    except ValueError:
        return None


if __name__ == "__main__":
    sys.exit(main())
