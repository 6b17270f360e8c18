"""Reading, validating and encoding annotated recommendations.

Records are read from JSONL, JSON, CSV or Parquet files with their line numbers kept, so
that every problem can be reported as ``file:line: field 'x': what is wrong``. Validation
runs before anything is written.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scrclf.errors import DataError  # noqa: F401 (re-exported)
from scrclf.tasks import BESIDE_TARGET_PREFIXES, TaskSet

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
DEFAULT_MAX_CHARS = 20_000
# Python's csv module refuses fields over 128 KiB by default; a long cell should reach the
# max_chars check, which names the setting, rather than fail inside the csv module.
CSV_FIELD_LIMIT = 2**31 - 1
# Line breaks as editors and Python's universal newlines see them. Not str.splitlines(),
# which also breaks at U+2028, U+0085 and others that JSON strings may hold unescaped.
LINE_BREAK = re.compile(r"\r\n|\r|\n")
LINE_BREAK_BYTES = re.compile(rb"\r\n|\r|\n")


@dataclass
class Record:
    """One row as read from a file, with where it came from."""

    data: dict[str, Any]
    file: str
    line: int


# --------------------------------------------------------------------------- reading


class DuplicateKeyError(ValueError):
    """A JSON object names one key twice (raised inside the JSON parser)."""

    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for :func:`json.loads`: a key given twice is an error, not a
    silent "the last one wins"."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKeyError(key)
        out[key] = value
    return out


def duplicate_column(names: Sequence[Any]) -> str | None:
    """The first column name that a header repeats, or None."""
    seen: set[Any] = set()
    for name in names:
        if name in seen:
            return str(name)
        seen.add(name)
    return None


def line_of_offset(data: bytes, offset: int) -> int:
    """The 1-based line holding byte ``offset`` of ``data``."""
    return len(LINE_BREAK_BYTES.findall(data, 0, offset)) + 1


def _decode(raw: bytes, path: Path) -> str:
    """Decode UTF-8 (a leading byte-order mark is accepted) or fail naming the line."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        # With a byte-order mark the decoder's offsets count from after it.
        data, offset = err.object, err.start + len(raw) - len(err.object)
        line = line_of_offset(data, err.start)
        raise DataError(
            f"not valid UTF-8 (byte 0x{data[err.start]:02x} at offset {offset}); "
            "save the file as UTF-8",
            path,
            line,
        ) from None


def json_object(raw: str, source: str | Path, line: int) -> dict[str, Any]:
    """One JSONL line as an object, or a :class:`DataError` naming ``source`` and ``line``
    (invalid JSON, a key given twice, nesting too deep, or not an object)."""
    try:
        obj = json.loads(raw, object_pairs_hook=unique_keys)
    except DuplicateKeyError as err:
        raise DataError(f"key '{err.key}' appears twice in one object", source, line) from None
    except json.JSONDecodeError as err:
        raise DataError(f"invalid JSON ({err.msg} at column {err.colno})", source, line) from None
    except RecursionError:
        raise DataError("invalid JSON (nested too deeply)", source, line) from None
    if not isinstance(obj, dict):
        raise DataError(f"each line must be a JSON object, got {type(obj).__name__}", source, line)
    return obj


def _read_jsonl(path: Path) -> list[Record]:
    text = _decode(path.read_bytes(), path)
    records = []
    for lineno, line in enumerate(LINE_BREAK.split(text), start=1):
        if not line.strip():
            continue
        records.append(Record(json_object(line, path, lineno), str(path), lineno))
    return records


def _read_json(path: Path) -> list[Record]:
    text = _decode(path.read_bytes(), path)
    try:
        obj = json.loads(text, object_pairs_hook=unique_keys)
    except DuplicateKeyError as err:
        raise DataError(f"key '{err.key}' appears twice in one object", path) from None
    except json.JSONDecodeError as err:
        raise DataError(f"invalid JSON ({err.msg})", path, err.lineno) from None
    except RecursionError:
        raise DataError("invalid JSON (nested too deeply)", path) from None
    if isinstance(obj, dict) and "data" in obj:
        obj = obj["data"]
    if not isinstance(obj, list):
        raise DataError("a .json file must hold a list of objects (or {'data': [...]})", path)
    records = []
    for i, item in enumerate(obj, start=1):
        if not isinstance(item, dict):
            raise DataError(f"item {i} must be a JSON object", path, i)
        records.append(Record(item, str(path), i))
    return records


def _read_csv(path: Path, delimiter: str = ",") -> list[Record]:
    """Rows of a CSV (or, with a tab ``delimiter``, TSV) file; cells stay strings (label
    lists are parsed by validation)."""
    text = _decode(path.read_bytes(), path)
    # strict: an unclosed quote is an error, not a cell that swallows the rows after it
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True, delimiter=delimiter)
    previous_limit = csv.field_size_limit(CSV_FIELD_LIMIT)
    try:
        if reader.fieldnames is None:
            raise DataError("empty CSV file (no header row)", path, 1)
        duplicate = duplicate_column(reader.fieldnames)
        if duplicate is not None:
            raise DataError(f"column '{duplicate}' appears twice in the header", path, 1)
        records = []
        for row in reader:
            lineno = reader.line_num
            if None in row:
                n_cells = len(reader.fieldnames) + len(row[None])
                raise DataError(
                    f"row has {n_cells} cells, the header has "
                    f"{len(reader.fieldnames)}; quote cells that contain commas",
                    path,
                    lineno,
                )
            # Empty cells in optional columns mean "absent".
            data = {k: (None if v == "" else v) for k, v in row.items()}
            records.append(Record(data, str(path), lineno))
    except csv.Error as err:
        raise DataError(f"malformed CSV ({err})", path, reader.line_num or 1) from None
    finally:
        csv.field_size_limit(previous_limit)
    return records


def _read_parquet(path: Path) -> list[Record]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError("reading Parquet needs pyarrow (pip install pyarrow)", path) from None

    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types
        raise DataError(f"cannot read Parquet: {err}", path) from None
    duplicate = duplicate_column(table.column_names)
    if duplicate is not None:
        raise DataError(f"column '{duplicate}' appears twice", path)
    return [Record(row, str(path), i) for i, row in enumerate(table.to_pylist(), start=1)]


_READERS = {
    ".jsonl": _read_jsonl,
    ".json": _read_json,
    ".csv": _read_csv,
    ".tsv": lambda path: _read_csv(path, delimiter="\t"),
    ".parquet": _read_parquet,
}


def read_records(path: str | Path) -> list[Record]:
    """Read a data file of any supported format; rows keep their line numbers."""
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", path)
    if path.is_dir():
        raise DataError("expected a file, got a directory", path)
    suffix = path.suffix.lower()
    if suffix not in _READERS:
        raise DataError(f"unsupported file type '{suffix}'; use one of {SUPPORTED_SUFFIXES}", path)
    return _READERS[suffix](path)


# ------------------------------------------------------------------------ validation


def _check_label_value(value: Any, task, label_owner: Mapping[str, str], rec: Record) -> None:
    field = task.column
    if not isinstance(value, str):
        raise DataError(
            f"expected a label string, got {type(value).__name__} {value!r}",
            rec.file,
            rec.line,
            field,
        )
    if value not in task.labels:
        owner = label_owner.get(value)
        hint = (
            f"'{value}' is a label of task '{owner}', not of '{task.name}'"
            if owner
            else f"unknown label '{value}'"
        )
        close = closest_label(value, task.labels)
        suggestion = f" (did you mean '{close}'?)" if close else ""
        parts = [p.strip() for p in value.split(",")]
        if task.is_multi_label and len(parts) > 1 and all(p in task.labels for p in parts):
            suggestion = f" (separate labels with ';', e.g. '{';'.join(parts)}', or give a list)"
        raise DataError(
            f"{hint}{suggestion}; allowed: {', '.join(task.labels)}", rec.file, rec.line, field
        )


def label_key(value: str) -> str:
    """A label as compared: case-folded, with spaces, hyphens and underscores as one ``_``."""
    return re.sub(r"[\s_\-]+", "_", str(value).strip().casefold()).strip("_")


def closest_label(value: str, options: Sequence[str]) -> str | None:
    """The option ``value`` most likely means (compared as :func:`label_key`), or None."""
    import difflib

    keys = {label_key(o): o for o in options}
    match = difflib.get_close_matches(label_key(value), list(keys), n=1, cutoff=0.6)
    return keys[match[0]] if match else None


def has_visible_text(text: str) -> bool:
    """Whether ``text`` has a character other than whitespace and Unicode "other" characters.

    Control (``\\x00``, ``\\x1b``), format (zero-width space, BOM), private-use and
    unassigned characters are dropped by the tokenizer's normalizer, so a text made only of
    them and whitespace reaches the model as nothing.
    """
    return any(not ch.isspace() and not unicodedata.category(ch).startswith("C") for ch in text)


def unicode_problem(text: str) -> str | None:
    """Why ``text`` cannot be encoded as UTF-8 (a lone surrogate), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return (
            f"contains a lone surrogate {text[err.start]!r} at character {err.start}, "
            "which is not valid Unicode text"
        )
    return None


def label_list(value: str) -> list[Any]:
    """A multi-label cell given as a string: a JSON list, or labels separated by ';'."""
    stripped = value.strip()
    if stripped.startswith("[") and stripped.endswith("]"):
        try:
            parsed = json.loads(stripped)
        except (json.JSONDecodeError, RecursionError):
            parsed = None
        if isinstance(parsed, list):
            return parsed
    return [v.strip() for v in value.split(";") if v.strip()]


def validate_records(
    records: Sequence[Record],
    tasks: TaskSet,
    *,
    id_column: str = "id",
    text_column: str = "text",
    pair_column: str | None = "finding",
    group_column: str | None = "review_id",
    max_chars: int = DEFAULT_MAX_CHARS,
    require_labels: bool = True,
    require_group: bool = True,
) -> list[str]:
    """Check every row against the task config; raise :class:`DataError` on the first problem.

    Returns the names of the tasks whose label column is present (all tasks when
    ``require_labels`` is true; for evaluation files a task whose column is absent
    everywhere is skipped).
    """
    label_owner = {label: t.name for t in tasks for label in t.labels}
    if not records:
        return tasks.names
    present = [t.name for t in tasks if any(t.column in r.data for r in records)]
    if require_labels:
        present = tasks.names
    seen_ids: dict[str, Record] = {}
    for rec in records:
        row = rec.data
        if id_column not in row or row[id_column] is None or str(row[id_column]).strip() == "":
            raise DataError("missing id", rec.file, rec.line, id_column)
        rid = row[id_column]
        if not isinstance(rid, (str, int)) or isinstance(rid, bool):
            raise DataError(
                f"id must be a string or integer, got {type(rid).__name__}",
                rec.file,
                rec.line,
                id_column,
            )
        rid = str(rid)
        if rid in seen_ids:
            first = seen_ids[rid]
            raise DataError(
                f"duplicate id '{rid}' (first seen at {first.file}:{first.line})",
                rec.file,
                rec.line,
                id_column,
            )
        seen_ids[rid] = rec
        if text_column not in row or row[text_column] is None:
            raise DataError("missing text", rec.file, rec.line, text_column)
        text = row[text_column]
        if not isinstance(text, str):
            raise DataError(
                f"text must be a string, got {type(text).__name__}", rec.file, rec.line, text_column
            )
        if not text.strip():
            raise DataError("text is empty or whitespace only", rec.file, rec.line, text_column)
        problem = unicode_problem(text)
        if problem:
            raise DataError(problem, rec.file, rec.line, text_column)
        if not has_visible_text(text):
            raise DataError(
                "text has no visible characters (only whitespace, control or format characters)",
                rec.file,
                rec.line,
                text_column,
            )
        if len(text) > max_chars:
            raise DataError(
                f"text has {len(text):,} characters, more than the limit of "
                f"{max_chars:,} (data.max_chars); is this a whole document?",
                rec.file,
                rec.line,
                text_column,
            )
        if pair_column and row.get(pair_column) is not None:
            finding = row[pair_column]
            if isinstance(finding, float) and math.isnan(finding):
                row[pair_column] = None
            elif isinstance(finding, str) and not has_visible_text(finding):
                row[pair_column] = None  # a blank finding is no finding
            elif not isinstance(finding, str):
                raise DataError(
                    f"must be a string or null, got {type(finding).__name__}",
                    rec.file,
                    rec.line,
                    pair_column,
                )
            elif len(finding) > max_chars:
                raise DataError(
                    f"has {len(finding):,} characters, more than {max_chars:,} (data.max_chars)",
                    rec.file,
                    rec.line,
                    pair_column,
                )
            elif problem := unicode_problem(finding):
                raise DataError(problem, rec.file, rec.line, pair_column)
        if group_column and require_group:
            group = row.get(group_column)
            if group is None or str(group).strip() == "":
                raise DataError(
                    "missing review id (splits are made by review)",
                    rec.file,
                    rec.line,
                    group_column,
                )
        for task in tasks:
            if task.name not in present:
                continue
            if task.column not in row or row[task.column] is None:
                raise DataError(
                    f"missing label for task '{task.name}'", rec.file, rec.line, task.column
                )
            value = row[task.column]
            if task.is_multi_label:
                if isinstance(value, str):
                    # Spreadsheets hold lists as "a;b" (or as a JSON list): accepted in every
                    # format.
                    value = label_list(value)
                    row[task.column] = value
                if not isinstance(value, list):
                    raise DataError(
                        f"expected a list of labels, got {type(value).__name__}",
                        rec.file,
                        rec.line,
                        task.column,
                    )
                if not value:
                    raise DataError("needs at least one label", rec.file, rec.line, task.column)
                if task.max_labels is not None and len(value) > task.max_labels:
                    raise DataError(
                        f"has {len(value)} labels, at most {task.max_labels} allowed",
                        rec.file,
                        rec.line,
                        task.column,
                    )
                if len(set(map(str, value))) != len(value):
                    raise DataError(f"repeats a label: {value}", rec.file, rec.line, task.column)
                for v in value:
                    _check_label_value(v, task, label_owner, rec)
            else:
                _check_label_value(value, task, label_owner, rec)
    return present


def normalise_id(value: Any) -> str:
    """An id as compared across splits: trimmed, case-folded, and a whole float written as an
    integer (a Parquet or spreadsheet ``1.0`` is the id ``1``)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = unicodedata.normalize("NFKC", str(value)).strip().casefold()
    if re.fullmatch(r"[+-]?\d+\.0+", text):
        text = text.split(".")[0]
    return text


def text_key(text: Any) -> str:
    """A text as compared for duplicates: its lower-cased words and numbers."""
    return " ".join(re.findall(r"[a-z0-9']+", str(text).lower()))


def check_splits(
    splits: Mapping[str, Sequence[Record]],
    *,
    id_column: str = "id",
    group_column: str | None = "review_id",
    text_column: str = "text",
) -> None:
    """Splits must be non-empty and share no id, no review (group) and no text.

    The one leakage check of training and ``scrclf data validate``. Ids and review ids are
    compared normalised (:func:`normalise_id`), texts by their words (:func:`text_key`).
    """
    id_home: dict[str, tuple[str, Record]] = {}
    group_home: dict[str, tuple[str, Record]] = {}
    text_home: dict[str, tuple[str, Record]] = {}
    for split, records in splits.items():
        if not records:
            raise DataError(f"split '{split}' is empty")
        for rec in records:
            rid = normalise_id(rec.data[id_column])
            if rid in id_home and id_home[rid][0] != split:
                other_split, other = id_home[rid]
                raise DataError(
                    f"id '{rec.data[id_column]}' is in split '{split}' and in split "
                    f"'{other_split}' (as '{other.data[id_column]}', {other.file}:{other.line})"
                    if str(rec.data[id_column]) != str(other.data[id_column])
                    else f"id '{rec.data[id_column]}' is in split '{split}' and in split "
                    f"'{other_split}' ({other.file}:{other.line})",
                    rec.file,
                    rec.line,
                    id_column,
                )
            id_home[rid] = (split, rec)
            if group_column:
                gid = normalise_id(rec.data[group_column])
                if gid in group_home and group_home[gid][0] != split:
                    other_split, other = group_home[gid]
                    shown = str(rec.data[group_column])
                    same = shown == str(other.data[group_column])
                    raise DataError(
                        f"review '{shown}' is in split '{split}' and in split '{other_split}' "
                        + ("(" if same else f"(as '{other.data[group_column]}', ")
                        + f"{other.file}:{other.line}); splits must be made by review",
                        rec.file,
                        rec.line,
                        group_column,
                    )
                group_home.setdefault(gid, (split, rec))
            key = text_key(rec.data.get(text_column))
            if key in text_home and text_home[key][0] != split:
                other_split, other = text_home[key]
                raise DataError(
                    f"exact duplicate of the text at {other.file}:{other.line} (split "
                    f"'{other_split}'); a text in two splits leaks between them",
                    rec.file,
                    rec.line,
                    text_column,
                )
            text_home.setdefault(key, (split, rec))


def resolve_split_files(data_cfg: Mapping[str, Any]) -> dict[str, Path]:
    root = Path(str(data_cfg["dir"]))
    return {split: root / str(name) for split, name in dict(data_cfg["splits"]).items()}


def load_splits(
    data_cfg: Mapping[str, Any], tasks: TaskSet, splits: Iterable[str] | None = None
) -> dict[str, list[Record]]:
    """Read and validate the configured split files (all of them, or only ``splits``)."""
    files = resolve_split_files(data_cfg)
    wanted = list(splits) if splits is not None else list(files)
    root = Path(str(data_cfg["dir"]))
    if not root.exists():
        if data_cfg.get("hub_name"):
            return _load_hub(data_cfg, tasks, wanted)
        raise DataError(f"data directory not found (data.dir={root})")
    out: dict[str, list[Record]] = {}
    for split in wanted:
        if split not in files:
            raise DataError(f"unknown split '{split}'; configured: {sorted(files)}")
        if not files[split].exists():
            raise DataError(
                f"file not found (data.splits.{split} in data.dir={root})", files[split]
            )
        records = read_records(files[split])
        if not records:
            raise DataError(f"split '{split}' has no records (data.splits.{split})", files[split])
        validate_records(records, tasks, **validation_kwargs(data_cfg))
        out[split] = records
    _check_loaded_splits(out, data_cfg)
    return out


def validation_kwargs(data_cfg: Mapping[str, Any]) -> dict[str, Any]:
    return dict(
        id_column=data_cfg.get("id_column", "id"),
        text_column=data_cfg.get("text_column", "text"),
        pair_column=data_cfg.get("pair_column"),
        group_column=data_cfg.get("group_column"),
        max_chars=int(data_cfg.get("max_chars", DEFAULT_MAX_CHARS)),
    )


def _check_loaded_splits(
    splits: Mapping[str, Sequence[Record]], data_cfg: Mapping[str, Any]
) -> None:
    """:func:`check_splits` with the data config's column names."""
    kwargs = validation_kwargs(data_cfg)
    check_splits(
        splits,
        id_column=kwargs["id_column"],
        group_column=kwargs["group_column"],
        text_column=kwargs["text_column"],
    )


def _load_hub(data_cfg, tasks, wanted):  # pragma: no cover - needs network
    import datasets

    ds = datasets.load_dataset(str(data_cfg["hub_name"]))
    out = {}
    for split in wanted:
        rows = ds[split].to_list()
        records = [Record(r, f"{data_cfg['hub_name']}[{split}]", i) for i, r in enumerate(rows, 1)]
        validate_records(records, tasks, **validation_kwargs(data_cfg))
        out[split] = records
    _check_loaded_splits(out, data_cfg)
    return out


# -------------------------------------------------------------------------- encoding


def encode_targets(
    rows: Sequence[Mapping[str, Any]], tasks: TaskSet, present: Iterable[str] | None = None
) -> dict[str, list]:
    """Label columns as model targets: multi-hot float lists or class indices."""
    present = set(tasks.names if present is None else present)
    out: dict[str, list] = {}
    for task in tasks:
        if task.name not in present:
            continue
        index = task.label2id()
        if task.is_multi_label:
            col = []
            for row in rows:
                vec = [0.0] * task.num_labels
                for label in row[task.column]:
                    vec[index[label]] = 1.0
                col.append(vec)
        else:
            col = [index[row[task.column]] for row in rows]
        out[task.name] = col
    return out


def tokenize(
    tokenizer, texts: Sequence[str], findings: Sequence[str | None] | None, max_length: int
) -> dict[str, list]:
    """Tokenize texts, pairing each with its finding when it has one."""
    findings = list(findings) if findings is not None else [None] * len(texts)
    # A blank finding (whitespace, control or format characters only) is no finding.
    inputs = [
        (t, f) if f and has_visible_text(f) else t for t, f in zip(texts, findings, strict=True)
    ]
    # "only_second" would fail when the text alone is too long; longest_first is safe.
    return tokenizer(inputs, truncation="longest_first", max_length=max_length)


def build_dataset(
    records: Sequence[Record],
    tokenizer,
    tasks: TaskSet,
    data_cfg: Mapping[str, Any],
    present: Iterable[str] | None = None,
):
    """A :class:`datasets.Dataset` with token ids, a ``length`` column and target columns."""
    import datasets

    rows = [r.data for r in records]
    text_col = data_cfg.get("text_column", "text")
    pair_col = data_cfg.get("pair_column")
    enc = tokenize(
        tokenizer,
        [r[text_col] for r in rows],
        [r.get(pair_col) for r in rows] if pair_col else None,
        int(data_cfg.get("max_length", 256)),
    )
    columns = {k: list(v) for k, v in enc.items()}
    columns["length"] = [len(ids) for ids in columns["input_ids"]]
    columns.update(encode_targets(rows, tasks, present))
    return datasets.Dataset.from_dict(columns)


class MultiTaskCollator:
    """Pads token inputs dynamically and stacks each task's targets with the right dtype."""

    token_keys = ("input_ids", "attention_mask", "token_type_ids")

    def __init__(self, tokenizer, tasks: TaskSet, pad_to_multiple_of: int | None = None):
        self.tokenizer = tokenizer
        self.tasks = tasks
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        import torch

        tokens = [{k: f[k] for k in self.token_keys if k in f} for f in features]
        batch = self.tokenizer.pad(
            tokens, padding=True, return_tensors="pt", pad_to_multiple_of=self.pad_to_multiple_of
        )
        batch = dict(batch)
        for task in self.tasks:
            if task.name not in features[0]:
                continue
            values = [f[task.name] for f in features]
            dtype = torch.float32 if task.is_multi_label else torch.long
            batch[task.name] = torch.tensor(values, dtype=dtype)
            # A teacher's logits, when training with distillation (scrclf.training.distill),
            # and out-of-fold wide logits, when the task is learnt as a residual of them.
            for extra in (prefix + task.name for prefix in BESIDE_TARGET_PREFIXES):
                if extra in features[0]:
                    batch[extra] = torch.tensor([f[extra] for f in features], dtype=torch.float32)
        return batch
