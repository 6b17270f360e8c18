"""A catalogue of bad inputs and what each one gets.

Every entry is a named case with a one-line description. Each is refused with one clear
message that names the file, the line and the field (or the setting) at fault, and leaves no
partial output: a training run gets no ``model/`` and no ``metrics.json``; ``scrclf``
exits with status 2, prints one line starting ``scrclf: error:`` and no traceback, and writes
no output file. Inputs that look odd but are accepted (a byte-order mark, CRLF line
endings) are checked to parse exactly like the plain file.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import scrclf
from scrclf import atomic
from scrclf.cli import app as cli
from scrclf.data.records import DataError, read_records, validate_records
from scrclf.inference.classifier import (
    ModelIntegrityError,
    ModelLoadError,
    UnsafeModelError,
)
from scrclf.tasks import TaskSet
from scrclf.training import train
from tests.helpers import CONFIG_DIR, ROOT, compose_train, copy_export, rewrite_manifest

GOOD_TEXTS = [
    "The board should commission training on the new procedure protocol.",
    "All agencies should redesign the referral strategy.",
]


# ------------------------------------------------------------------------------ helpers


def _tasks() -> TaskSet:
    from omegaconf import OmegaConf

    return TaskSet.from_config(OmegaConf.load(CONFIG_DIR / "task" / "codebook.yaml").tasks)


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _rewrite_row(split: str, line: int, change: Callable[[dict], object]) -> Callable[[Path], None]:
    """Apply ``change`` to the JSON object on one line of a split file."""

    def apply(corpus: Path) -> None:
        path = corpus / f"{split}.jsonl"
        lines = _lines(path)
        row = json.loads(lines[line - 1])
        change(row)
        lines[line - 1] = json.dumps(row)
        _write_lines(path, lines)

    return apply


def edit(split: str, line: int, **changes) -> Callable[[Path], None]:
    """Change fields of one row of a split file."""
    return _rewrite_row(split, line, lambda row: row.update(changes))


def drop(split: str, line: int, key: str) -> Callable[[Path], None]:
    """Remove a field from one row of a split file."""
    return _rewrite_row(split, line, lambda row: row.pop(key))


def replace_line(split: str, line: int, raw: bytes) -> Callable[[Path], None]:
    """Put raw bytes in place of one line of a split file."""

    def apply(corpus: Path) -> None:
        path = corpus / f"{split}.jsonl"
        lines = path.read_bytes().split(b"\n")
        lines[line - 1] = raw
        path.write_bytes(b"\n".join(lines))

    return apply


def copy_field(split: str, line: int, key: str, from_split: str, from_line: int):
    """Give one row the value another row (maybe of another split) has for ``key``."""

    def apply(corpus: Path) -> None:
        source = json.loads(_lines(corpus / f"{from_split}.jsonl")[from_line - 1])
        edit(split, line, **{key: source[key]})(corpus)

    return apply


def empty_file(split: str) -> Callable[[Path], None]:
    def apply(corpus: Path) -> None:
        (corpus / f"{split}.jsonl").write_bytes(b"")

    return apply


def csv_rows(rows: list[dict]) -> list[list[str]]:
    """Rows as spreadsheet cells: lists joined with ';', null as an empty cell."""
    header = list(rows[0])
    out = [header]
    for row in rows:
        out.append(
            [
                ";".join(v) if isinstance(v, list) else "" if v is None else str(v)
                for v in (row[k] for k in header)
            ]
        )
    return out


def as_csv(
    split: str, change: Callable[[list[list[str]]], None] | None = None, encoding: str = "utf-8"
) -> Callable[[Path], None]:
    """Convert a split to CSV (``data.splits.<split>=<split>.csv``), then apply ``change``."""

    def apply(corpus: Path) -> None:
        rows = [json.loads(line) for line in _lines(corpus / f"{split}.jsonl")]
        cells = csv_rows(rows)
        if change is not None:
            change(cells)
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(cells)
        (corpus / f"{split}.csv").write_bytes(buffer.getvalue().encode(encoding))

    return apply


def _extra_cell(cells: list[list[str]]) -> None:
    cells[3].append("a stray cell")  # line 4 of the file


def _latin1_text(cells: list[list[str]]) -> None:
    cells[4][2] = "The café-based family hub should keep a chronology flag"  # line 5


def _drop_column(name: str) -> Callable[[list[list[str]]], None]:
    def change(cells: list[list[str]]) -> None:
        index = cells[0].index(name)
        for row in cells:
            del row[index]

    return change


def _repeat_column(name: str) -> Callable[[list[list[str]]], None]:
    def change(cells: list[list[str]]) -> None:
        index = cells[0].index(name)
        for row in cells[1:]:
            row.append("research")
        cells[0].append(cells[0][index])

    return change


def chain(*steps: Callable[[Path], None]) -> Callable[[Path], None]:
    def apply(corpus: Path) -> None:
        for step in steps:
            step(corpus)

    return apply


def touch(name: str, content: bytes = b"") -> Callable[[Path], None]:
    def apply(corpus: Path) -> None:
        (corpus / name).write_bytes(content)

    return apply


# ----------------------------------------------------------------------- training data


@dataclass(frozen=True)
class DataCase:
    """A damaged corpus and the error a training run must stop with."""

    id: str
    description: str
    damage: Callable[[Path], None]
    file: str
    line: int | None
    field: str | None
    message: str
    overrides: tuple[str, ...] = ()


DATA_CASES = [
    DataCase(
        "invalid_json_line",
        "a JSONL line cut off mid-object",
        replace_line("train", 7, b'{"id": "TR000-07", "text": "unterminated'),
        "train.jsonl",
        7,
        None,
        "invalid JSON",
    ),
    DataCase(
        "line_not_an_object",
        "a JSONL line holding a list, not an object",
        replace_line("validation", 2, b'["a", "list"]'),
        "validation.jsonl",
        2,
        None,
        "each line must be a JSON object, got list",
    ),
    DataCase(
        "deeply_nested_json",
        "a line of 100,000 opening brackets (no RecursionError)",
        replace_line("train", 3, b"[" * 100_000),
        "train.jsonl",
        3,
        None,
        "invalid JSON (nested too deeply)",
    ),
    DataCase(
        "non_utf8_bytes",
        "a Latin-1 byte inside a UTF-8 file",
        replace_line("test", 4, b'{"id": "x", "text": "caf\xe9"}'),
        "test.jsonl",
        4,
        None,
        "not valid UTF-8 (byte 0xe9",
    ),
    DataCase(
        "missing_label_field",
        "a row without its evidence label",
        drop("train", 5, "evidence"),
        "train.jsonl",
        5,
        "evidence",
        "missing label for task 'evidence'",
    ),
    DataCase(
        "missing_text_field",
        "a row without a text",
        drop("train", 6, "text"),
        "train.jsonl",
        6,
        "text",
        "missing text",
    ),
    DataCase(
        "missing_id",
        "a row without an id",
        drop("validation", 4, "id"),
        "validation.jsonl",
        4,
        "id",
        "missing id",
    ),
    DataCase(
        "missing_review_id",
        "a row without the review it belongs to",
        drop("train", 8, "review_id"),
        "train.jsonl",
        8,
        "review_id",
        "missing review id",
    ),
    DataCase(
        "empty_text",
        "an empty text",
        edit("train", 9, text=""),
        "train.jsonl",
        9,
        "text",
        "empty or whitespace only",
    ),
    DataCase(
        "whitespace_only_text",
        "a text of spaces, a tab and an ideographic space",
        edit("train", 10, text=" \t\u3000 "),
        "train.jsonl",
        10,
        "text",
        "empty or whitespace only",
    ),
    DataCase(
        "invisible_only_text",
        "a text of zero-width spaces and control characters",
        edit("train", 11, text="\u200b\x00\x1b\u200b"),
        "train.jsonl",
        11,
        "text",
        "no visible characters",
    ),
    DataCase(
        "lone_surrogate_text",
        "a JSON \\ud800 escape: not valid Unicode text",
        edit("validation", 5, text="Agencies should\ud800 act"),
        "validation.jsonl",
        5,
        "text",
        "lone surrogate",
    ),
    DataCase(
        "label_typo",
        "a misspelt evidence label gets a suggestion",
        edit("train", 12, evidence="reserch"),
        "train.jsonl",
        12,
        "evidence",
        "unknown label 'reserch' (did you mean 'research'?)",
    ),
    DataCase(
        "theme_typo",
        "a misspelt theme gets a suggestion",
        edit("train", 13, themes=["trainng_learning"]),
        "train.jsonl",
        13,
        "themes",
        "did you mean 'training_learning'?",
    ),
    DataCase(
        "label_of_another_task",
        "an action-strength label given as the evidence",
        edit("test", 6, evidence="strong"),
        "test.jsonl",
        6,
        "evidence",
        "'strong' is a label of task 'action_strength', not of 'evidence'",
    ),
    DataCase(
        "theme_of_another_task",
        "an evidence label given as a theme",
        edit("train", 14, themes=["guidance"]),
        "train.jsonl",
        14,
        "themes",
        "'guidance' is a label of task 'evidence'",
    ),
    DataCase(
        "number_as_text",
        "a number where the text should be",
        edit("train", 15, text=42),
        "train.jsonl",
        15,
        "text",
        "text must be a string, got int",
    ),
    DataCase(
        "number_as_themes",
        "a number where the list of themes should be",
        edit("train", 16, themes=3),
        "train.jsonl",
        16,
        "themes",
        "expected a list of labels, got int",
    ),
    DataCase(
        "comma_separated_themes",
        "themes as one comma-separated string",
        edit("train", 17, themes="procedures_policy, training_learning"),
        "train.jsonl",
        17,
        "themes",
        "separate labels with ';'",
    ),
    DataCase(
        "list_as_single_label",
        "a list where one evidence label should be",
        edit("validation", 6, evidence=["research"]),
        "validation.jsonl",
        6,
        "evidence",
        "expected a label string, got list",
    ),
    DataCase(
        "number_as_finding",
        "a number where the finding should be",
        edit("train", 18, finding=7),
        "train.jsonl",
        18,
        "finding",
        "must be a string or null, got int",
    ),
    DataCase(
        "float_id",
        "an id that is a decimal number",
        edit("train", 19, id=1.5),
        "train.jsonl",
        19,
        "id",
        "id must be a string or integer, got float",
    ),
    DataCase(
        "more_than_three_themes",
        "four themes where at most three are allowed",
        edit(
            "train",
            20,
            themes=["procedures_policy", "training_learning", "audit_assurance", "other"],
        ),
        "train.jsonl",
        20,
        "themes",
        "has 4 labels, at most 3 allowed",
    ),
    DataCase(
        "repeated_theme",
        "the same theme twice",
        edit("train", 21, themes=["audit_assurance", "audit_assurance"]),
        "train.jsonl",
        21,
        "themes",
        "repeats a label",
    ),
    DataCase(
        "no_theme",
        "an empty list of themes",
        edit("test", 7, themes=[]),
        "test.jsonl",
        7,
        "themes",
        "needs at least one label",
    ),
    DataCase(
        "duplicate_id",
        "two rows of one file with the same id",
        copy_field("train", 22, "id", "train", 2),
        "train.jsonl",
        22,
        "id",
        "duplicate id 'TR000-02'",
    ),
    DataCase(
        "review_in_two_splits",
        "a validation row from a review that is in train",
        copy_field("validation", 3, "review_id", "train", 1),
        "validation.jsonl",
        3,
        "review_id",
        "review 'TR000' is in split 'validation' and in split 'train'",
    ),
    DataCase(
        "id_in_two_splits",
        "a test row with the id of a train row",
        copy_field("test", 2, "id", "train", 1),
        "test.jsonl",
        2,
        "id",
        "id 'TR000-01' is in split 'test' and in split 'train'",
    ),
    DataCase(
        "empty_split_file",
        "a split file with nothing in it",
        empty_file("test"),
        "test.jsonl",
        None,
        None,
        "split 'test' has no records (data.splits.test)",
    ),
    DataCase(
        "one_megabyte_text",
        "a whole document (1 MB) pasted into one text",
        edit("train", 23, text="word " * 200_000),
        "train.jsonl",
        23,
        "text",
        "1,000,000 characters, more than the limit of 20,000 (data.max_chars)",
    ),
    DataCase(
        "one_megabyte_csv_cell",
        "the same 1 MB text in a CSV cell (past csv's limit)",
        chain(edit("train", 24, text="word " * 200_000), as_csv("train")),
        "train.csv",
        25,
        "text",
        "more than the limit of 20,000 (data.max_chars)",
        ("data.splits.train=train.csv",),
    ),
    DataCase(
        "csv_row_with_too_many_cells",
        "a CSV row with an unquoted comma",
        as_csv("train", _extra_cell),
        "train.csv",
        4,
        None,
        "row has 11 cells, the header has 10",
        ("data.splits.train=train.csv",),
    ),
    DataCase(
        "csv_saved_as_windows_1252",
        "a CSV saved by a spreadsheet in Windows-1252",
        as_csv("train", _latin1_text, encoding="cp1252"),
        "train.csv",
        5,
        None,
        "not valid UTF-8 (byte 0xe9",
        ("data.splits.train=train.csv",),
    ),
    DataCase(
        "csv_without_a_label_column",
        "a CSV whose header lacks action_strength",
        as_csv("validation", _drop_column("action_strength")),
        "validation.csv",
        2,
        "action_strength",
        "missing label for task 'action_strength'",
        ("data.splits.validation=validation.csv",),
    ),
    DataCase(
        "unsupported_file_type",
        "a split given as an Excel workbook",
        touch("train.xlsx", b"PK\x03\x04"),
        "train.xlsx",
        None,
        None,
        "unsupported file type '.xlsx'",
        ("data.splits.train=train.xlsx",),
    ),
    DataCase(
        "duplicate_json_key",
        "a row naming 'evidence' twice (the last one would win)",
        replace_line(
            "train",
            25,
            b'{"id": "x25", "review_id": "TR001", "text": "The board should act.", '
            b'"themes": ["other"], "evidence": "guidance", "evidence": "research", '
            b'"action_strength": "weak"}',
        ),
        "train.jsonl",
        25,
        None,
        "key 'evidence' appears twice in one object",
    ),
    DataCase(
        "duplicate_csv_column",
        "a CSV header with two evidence columns",
        as_csv("train", _repeat_column("evidence")),
        "train.csv",
        1,
        None,
        "column 'evidence' appears twice in the header",
        ("data.splits.train=train.csv",),
    ),
    DataCase(
        "review_id_differing_in_case_and_space",
        "a validation row of review 'tr000 ', which is train's 'TR000'",
        edit("validation", 3, review_id="tr000 "),
        "validation.jsonl",
        3,
        "review_id",
        "review 'tr000 ' is in split 'validation' and in split 'train' (as 'TR000'",
    ),
    DataCase(
        "text_copied_into_test",
        "a train text copied into the test split",
        copy_field("test", 3, "text", "train", 1),
        "test.jsonl",
        3,
        "text",
        "exact duplicate of the text at",
    ),
    DataCase(
        "one_class_in_validation",
        "every validation row has the same evidence label",
        lambda corpus: _write_lines(
            corpus / "validation.jsonl",
            [
                json.dumps({**json.loads(line), "evidence": "guidance"})
                for line in _lines(corpus / "validation.jsonl")
            ],
        ),
        "validation.jsonl",
        None,
        None,
        "task 'evidence' has only one class in split 'validation' (guidance)",
    ),
    DataCase(
        "missing_split_file",
        "a split file name with a typo",
        lambda corpus: None,
        "tests.jsonl",
        None,
        None,
        "file not found (data.splits.test in data.dir=",
        ("data.splits.test=tests.jsonl",),
    ),
]


@pytest.fixture
def corpus_copy(toy_corpus, tmp_path) -> Path:
    dest = tmp_path / "corpus"
    shutil.copytree(toy_corpus, dest)
    return dest


@pytest.mark.parametrize("case", DATA_CASES, ids=[c.id for c in DATA_CASES])
def test_bad_training_data_stops_the_run_before_any_output(case, corpus_copy, tmp_path):
    case.damage(corpus_copy)
    run_dir = tmp_path / "run"
    cfg = compose_train(
        [
            "model=tiny",
            f"data.dir={corpus_copy}",
            f"paths.output_dir={run_dir}",
            "trainer.max_epochs=1",
            *case.overrides,
        ]
    )
    with pytest.raises(DataError) as info:
        train(cfg)
    err = info.value
    assert Path(err.file).name == case.file
    assert err.line == case.line
    assert err.field == case.field
    text = str(err)
    where = f"{corpus_copy / case.file}" + (f":{case.line}" if case.line else "") + ": "
    if case.field:
        where += f"field '{case.field}': "
    assert text.startswith(where), text
    assert case.message in text
    assert "\n" not in text
    assert not (run_dir / "model").exists()
    assert not (run_dir / "metrics.json").exists()


# ----------------------------------------------------------------------- accepted oddities


def _variants(plain: bytes) -> dict[str, bytes]:
    bom = b"\xef\xbb\xbf"
    crlf = plain.replace(b"\n", b"\r\n")
    return {
        "bom": bom + plain,
        "crlf": crlf,
        "bom_and_crlf": bom + crlf,
        "cr_only": plain.replace(b"\n", b"\r"),
    }


@pytest.mark.parametrize("variant", ["bom", "crlf", "bom_and_crlf", "cr_only"])
@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_byte_order_mark_and_crlf_are_accepted_and_parse_identically(
    toy_corpus, tmp_path, fmt, variant
):
    """A UTF-8 byte-order mark and Windows (or old Mac) line endings are accepted: same rows,
    same line numbers."""
    plain_path = tmp_path / f"plain.{fmt}"
    if fmt == "jsonl":
        plain_path.write_bytes((toy_corpus / "validation.jsonl").read_bytes())
    else:
        rows = [json.loads(line) for line in _lines(toy_corpus / "validation.jsonl")]
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(csv_rows(rows))
        plain_path.write_bytes(buffer.getvalue().encode("utf-8"))
    odd_path = tmp_path / f"odd.{fmt}"
    odd_path.write_bytes(_variants(plain_path.read_bytes())[variant])
    tasks = _tasks()
    plain, odd = read_records(plain_path), read_records(odd_path)
    validate_records(plain, tasks)
    validate_records(odd, tasks)
    assert [r.data for r in odd] == [r.data for r in plain]
    assert [r.line for r in odd] == [r.line for r in plain]
    assert not any(key.startswith("\ufeff") for r in odd for key in r.data)


def test_cli_reads_bom_and_crlf_input_like_the_plain_file(tiny_export, tmp_path, capsys):
    plain = tmp_path / "plain.csv"
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(
        [["id", "text"]] + [[f"R{i}", t] for i, t in enumerate(GOOD_TEXTS)]
    )
    plain.write_bytes(buffer.getvalue().encode("utf-8"))
    odd = tmp_path / "odd.csv"
    odd.write_bytes(_variants(plain.read_bytes())["bom_and_crlf"])
    outputs = []
    for src in (plain, odd):
        dest = tmp_path / f"{src.stem}.jsonl"
        assert (
            cli.main(
                [
                    "predict",
                    "--model",
                    str(tiny_export.export_dir),
                    "--input",
                    str(src),
                    "--output",
                    str(dest),
                    "--no-progress",
                ]
            )
            == 0
        )
        outputs.append(dest.read_bytes())
    assert capsys.readouterr().err == ""
    assert outputs[0] == outputs[1]
    assert [json.loads(line)["id"] for line in outputs[1].splitlines()] == ["R0", "R1"]


# --------------------------------------------------------------------- training settings


@dataclass(frozen=True)
class ScriptCase:
    """``scripts/train.py`` with a bad setting."""

    id: str
    description: str
    overrides: tuple[str, ...]
    exit_code: int
    messages: tuple[str, ...]  # each must appear in stderr


SCRIPT_CASES = [
    ScriptCase(
        "unknown_hydra_key",
        "a misspelt setting (Hydra refuses it, naming the key)",
        ("trainer.epochz=2",),
        1,
        ("trainer.epochz",),
    ),
    ScriptCase(
        "bad_precision",
        "trainer.precision=fp8, which no loop supports",
        ("trainer.precision=fp8",),
        2,
        ("train: error: trainer.precision must be ", "got 'fp8'"),
    ),
    ScriptCase(
        "missing_data_dir",
        "data.dir pointing at a folder that does not exist",
        ("data.dir={tmp}/no_such_corpus",),
        2,
        ("train: error: data directory not found (data.dir=",),
    ),
]


@pytest.fixture(scope="module")
def script_runs(toy_corpus, tmp_path_factory):
    """Every script case, run in parallel: {case id: (completed process, run dir)}."""
    root = tmp_path_factory.mktemp("script_cases")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("SCRCLF_RUN_ID", None)
    procs = {}
    for case in SCRIPT_CASES:
        run_dir = root / case.id
        overrides = [o.format(tmp=root) for o in case.overrides]
        argv = [
            sys.executable,
            str(ROOT / "scripts" / "train.py"),
            "model=tiny",
            f"data.dir={toy_corpus}",
            f"paths.output_dir={run_dir}",
            *overrides,
        ]
        procs[case.id] = (
            subprocess.Popen(
                argv, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            ),
            run_dir,
        )
    results = {}
    for name, (proc, run_dir) in procs.items():
        out, err = proc.communicate(timeout=300)
        results[name] = (subprocess.CompletedProcess(proc.args, proc.returncode, out, err), run_dir)
    return results


@pytest.mark.parametrize("case", SCRIPT_CASES, ids=[c.id for c in SCRIPT_CASES])
def test_bad_setting_stops_the_training_script_with_its_name(case, script_runs):
    proc, run_dir = script_runs[case.id]
    assert proc.returncode == case.exit_code, proc.stderr
    assert all(message in proc.stderr for message in case.messages), proc.stderr
    assert "Traceback" not in proc.stderr
    if case.exit_code == 2:  # its own errors: exactly one line
        assert proc.stderr.splitlines() == [proc.stderr.strip()]
    assert not (run_dir / "model").exists()
    assert not (run_dir / "metrics.json").exists()


# ---------------------------------------------------------------------------- model folders


def _edit_json(path: Path, change: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2))


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _foreign_onnx(path: Path) -> None:
    """A valid ONNX graph from some other model: one input, one output named 'logits'."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Cast", ["input_ids"], ["logits"], to=TensorProto.FLOAT)],
        "foreign",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "sequence"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))


def m_missing(tiny_export, tmp: Path) -> Path:
    return tmp / "no_such_model"


def m_file(tiny_export, tmp: Path) -> Path:
    path = tmp / "model.safetensors"
    shutil.copy(tiny_export.export_dir / "model.safetensors", path)
    return path


def m_no_weights(tiny_export, tmp: Path) -> Path:
    root = tmp / "model"
    shutil.copytree(tiny_export.run_dir / "model", root)
    (root / "model.safetensors").unlink()
    return root


def m_pickle_present(tiny_export, tmp: Path) -> Path:
    root = copy_export(tiny_export, tmp / "model")
    (root / "pytorch_model.bin").write_bytes(b"\x80\x04\x95not a real pickle")
    return root


def m_pickle_in_index(tiny_export, tmp: Path) -> Path:
    root = tmp / "model"
    shutil.copytree(tiny_export.run_dir / "model", root)
    (root / "model.safetensors.index.json").write_text(
        json.dumps(
            {
                "metadata": {},
                "weight_map": {
                    "encoder.embeddings.word_embeddings.weight": "pytorch_model-00001-of-00002.bin"
                },
            }
        )
    )
    return root


def m_tampered(tiny_export, tmp: Path) -> Path:
    root = copy_export(tiny_export, tmp / "model")
    data = bytearray((root / "model.safetensors").read_bytes())
    data[len(data) // 2] ^= 0x01
    (root / "model.safetensors").write_bytes(bytes(data))
    return root


def m_outside_path(tiny_export, tmp: Path) -> Path:
    root = copy_export(tiny_export, tmp / "model")
    _edit_json(
        root / "config.json",
        lambda c: c.__setitem__("tokenizer_file", "../../shared/tokenizer.json"),
    )
    rewrite_manifest(root)
    return root


def m_foreign_onnx(tiny_export, tmp: Path) -> Path:
    root = copy_export(tiny_export, tmp / "model")
    _foreign_onnx(root / "onnx" / "model.onnx")
    rewrite_manifest(root)
    return root


def m_corrupt_onnx(tiny_export, tmp: Path) -> Path:
    root = copy_export(tiny_export, tmp / "model")
    (root / "onnx" / "model.onnx").write_bytes(b"this is not a protobuf" * 50)
    rewrite_manifest(root)
    return root


def m_truncated_run_weights(tiny_export, tmp: Path) -> Path:
    root = tmp / "model"
    shutil.copytree(tiny_export.run_dir / "model", root)
    _truncate(root / "model.safetensors")
    return root


def m_truncated_export_weights(tiny_export, tmp: Path) -> Path:
    root = copy_export(tiny_export, tmp / "model")
    _truncate(root / "model.safetensors")
    return root


def m_run_dir(tiny_export, tmp: Path) -> Path:
    return tiny_export.run_dir


def m_manifest_not_json(tiny_export, tmp: Path) -> Path:
    root = copy_export(tiny_export, tmp / "model")
    (root / "manifest.json").write_text('{"algorithm": "sha256", "files": {')
    return root


def m_no_manifest(tiny_export, tmp: Path) -> Path:
    root = copy_export(tiny_export, tmp / "model")
    (root / "manifest.json").unlink()
    return root


def m_other_model_type(tiny_export, tmp: Path) -> Path:
    root = tmp / "model"
    shutil.copytree(tiny_export.run_dir / "model", root)
    _edit_json(root / "config.json", lambda c: c.__setitem__("model_type", "bert"))
    return root


def _set_task(key: str, value: Any, task: int = 0) -> Callable[..., Path]:
    """A run's model folder whose config.json gives task ``task`` another ``key``."""

    def build(tiny_export, tmp: Path) -> Path:
        root = tmp / "model"
        shutil.copytree(tiny_export.run_dir / "model", root)

        def change(config: dict) -> None:
            spec = config["tasks"][task]
            spec[key] = value(spec) if callable(value) else value

        _edit_json(root / "config.json", change)
        return root

    return build


def m_config_symlink_out(tiny_export, tmp: Path) -> Path:
    root = tmp / "model"
    shutil.copytree(tiny_export.run_dir / "model", root)
    outside = tmp / "elsewhere" / "config.json"
    outside.parent.mkdir()
    shutil.move(root / "config.json", outside)
    (root / "config.json").symlink_to(outside)
    return root


def m_wrong_shapes(tiny_export, tmp: Path) -> Path:
    """config.json says hidden size 64; the weights were trained at 32."""
    root = tmp / "model"
    shutil.copytree(tiny_export.run_dir / "model", root)
    _edit_json(root / "config.json", lambda c: c["encoder"].__setitem__("intermediate_size", 128))
    return root


@dataclass(frozen=True)
class ModelCase:
    """A model folder that must not load, with the file the message must name."""

    id: str
    description: str
    build: Callable[..., Path]
    file: str
    message: str
    backend: str = "auto"
    error: type = ModelLoadError


MODEL_CASES = [
    ModelCase(
        "missing_model_dir",
        "--model names a folder that does not exist",
        m_missing,
        "no_such_model",
        "model folder not found",
    ),
    ModelCase(
        "model_path_is_a_file",
        "--model names the weights file, not the folder",
        m_file,
        "model.safetensors",
        "expected a model folder, got a file",
    ),
    ModelCase(
        "model_dir_without_weights",
        "a model folder whose weights were not copied",
        m_no_weights,
        "model",
        "no weights: model.safetensors not found",
    ),
    ModelCase(
        "pickled_weights_present",
        "a pytorch_model.bin next to the safetensors",
        m_pickle_present,
        "pytorch_model.bin",
        "pickle files can execute code",
        error=UnsafeModelError,
    ),
    ModelCase(
        "pickle_named_in_weight_index",
        "a weight index pointing at .bin shards",
        m_pickle_in_index,
        "model.safetensors.index.json",
        "'weight_map' names the pickle file 'pytorch_model-00001-of-00002.bin'",
        error=UnsafeModelError,
    ),
    ModelCase(
        "tampered_checksum",
        "one bit of the weights flipped after export",
        m_tampered,
        "model.safetensors",
        "SHA-256 differs from the one recorded in manifest.json",
        backend="torch",
        error=ModelIntegrityError,
    ),
    ModelCase(
        "config_path_outside_the_folder",
        "config.json naming ../../shared/...",
        m_outside_path,
        "config.json",
        "resolves outside the model folder",
        error=UnsafeModelError,
    ),
    ModelCase(
        "onnx_not_matching_the_config",
        "the ONNX graph of some other model",
        m_foreign_onnx,
        "model.onnx",
        "graph outputs ['logits'] do not match the tasks in config.json",
        backend="onnx",
    ),
    ModelCase(
        "onnx_not_a_graph",
        "bytes that are not an ONNX graph (checksums updated)",
        m_corrupt_onnx,
        "model.onnx",
        "onnxruntime cannot load the graph",
        backend="onnx",
    ),
    ModelCase(
        "truncated_safetensors",
        "a run's model.safetensors cut in half (no manifest)",
        m_truncated_run_weights,
        "model.safetensors",
        "truncated or damaged safetensors file",
    ),
    ModelCase(
        "truncated_safetensors_in_export",
        "an export's weights cut in half",
        m_truncated_export_weights,
        "model.safetensors",
        "the file was changed or truncated",
        error=ModelIntegrityError,
    ),
    ModelCase(
        "training_run_dir",
        "the run folder given instead of its model/",
        m_run_dir,
        "run",
        "a training run folder, not a model folder",
    ),
    ModelCase(
        "manifest_not_json",
        "a manifest.json cut off mid-object",
        m_manifest_not_json,
        "manifest.json",
        "invalid JSON",
    ),
    ModelCase(
        "export_without_manifest",
        "an export whose manifest.json was deleted",
        m_no_manifest,
        "manifest.json",
        "must have manifest.json",
        error=ModelIntegrityError,
    ),
    ModelCase(
        "nan_threshold",
        "a NaN threshold (items could end with no theme)",
        _set_task("thresholds", lambda t: [float("nan")] * len(t["labels"])),
        "config.json",
        "must be a number between 0 and 1 (exclusive), got nan",
    ),
    ModelCase(
        "negative_threshold",
        "a threshold of -1 (every theme always on)",
        _set_task("thresholds", lambda t: [-1.0] * len(t["labels"])),
        "config.json",
        "must be a number between 0 and 1 (exclusive), got -1.0",
    ),
    ModelCase(
        "infinite_temperature",
        "a temperature of infinity (every score flat)",
        _set_task("temperature", float("inf"), task=1),
        "config.json",
        "temperature must be finite and > 0, got inf",
    ),
    ModelCase(
        "config_symlinked_outside",
        "a run's config.json that is a symlink to a file outside the folder",
        m_config_symlink_out,
        "config.json",
        "a symbolic link that resolves outside the model folder",
        error=UnsafeModelError,
    ),
    ModelCase(
        "weights_of_other_shapes",
        "weights whose shapes do not fit config.json",
        m_wrong_shapes,
        "model.safetensors",
        "weights do not fit config.json",
        backend="torch",
    ),
    ModelCase(
        "config_of_another_model",
        "config.json of a plain BERT model",
        m_other_model_type,
        "config.json",
        "model_type is 'bert', expected 'scrclf'",
    ),
]


def _one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("scrclf: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("case", MODEL_CASES, ids=[c.id for c in MODEL_CASES])
def test_bad_model_folder_is_refused_by_api_and_cli(case, tiny_export, tmp_path, capsys):
    model = case.build(tiny_export, tmp_path)
    with pytest.raises(case.error) as info:
        scrclf.load(model, backend=case.backend)
    assert Path(info.value.file).name == case.file
    assert case.message in str(info.value)

    src = tmp_path / "recs.txt"
    src.write_text("\n".join(GOOD_TEXTS) + "\n")
    out_dir = tmp_path / "out"
    code = cli.main(
        [
            "predict",
            "--model",
            str(model),
            "--backend",
            case.backend,
            "--input",
            str(src),
            "--output",
            str(out_dir / "preds.jsonl"),
            "--no-progress",
        ]
    )
    captured = capsys.readouterr()
    assert code == 2
    line = _one_error_line(captured.err)
    assert case.file in line and case.message in line
    assert captured.out == ""
    assert not out_dir.exists()


# ------------------------------------------------------------------------------- commands


def _recs(tmp: Path, name: str, content: bytes) -> Path:
    path = tmp / name
    path.write_bytes(content)
    return path


def _folder(tmp: Path, name: str) -> Path:
    path = tmp / name
    path.mkdir()
    return path


@dataclass(frozen=True)
class CliCase:
    """A ``scrclf`` command on a bad input or destination."""

    id: str
    description: str
    argv: Callable[[Path, Path], list[str]]  # (export folder, tmp dir) -> arguments
    message: Callable[[Path], str]  # tmp dir -> expected part of the error line


def _predict(export: Path, src: Path, dest: Path, *more: str) -> list[str]:
    return [
        "predict",
        "--model",
        str(export),
        "--input",
        str(src),
        "--output",
        str(dest),
        "--no-progress",
        *more,
    ]


def _shipped_corpus_with(tmp: Path, split: str, line: int, **changes) -> Path:
    corpus = tmp / "corpus"
    corpus.mkdir()
    for name in ("train.jsonl", "validation.jsonl", "test.jsonl", "reviews.jsonl"):
        shutil.copy(ROOT / "data" / "scr_recs" / name, corpus / name)
    edit(split, line, **changes)(corpus)
    return corpus


CLI_CASES = [
    CliCase(
        "input_is_a_directory",
        "--input names a folder",
        lambda m, t: _predict(m, _folder(t, "folder.csv"), t / "out" / "p.jsonl"),
        lambda t: f"{t / 'folder.csv'}: expected a file, got a directory",
    ),
    CliCase(
        "output_is_a_directory",
        "--output names an existing folder",
        lambda m, t: _predict(m, _recs(t, "r.txt", GOOD_TEXTS[0].encode()), _folder(t, "out")),
        lambda t: f"cannot write {t / 'out'}: it is a directory",
    ),
    CliCase(
        "input_not_utf8",
        "a text file saved as Windows-1252, bad byte on line 3",
        lambda m, t: _predict(
            m, _recs(t, "r.txt", b"one\ntwo\nthe caf\xe9 hub\n"), t / "out" / "p.jsonl"
        ),
        lambda t: f"{t / 'r.txt'}:3: not valid UTF-8",
    ),
    CliCase(
        "csv_row_with_too_many_cells",
        "a CSV row with an unquoted comma",
        lambda m, t: _predict(
            m, _recs(t, "r.csv", b"id,text\n1,fine\n2,one, two\n"), t / "out" / "p.jsonl"
        ),
        lambda t: f"{t / 'r.csv'}:3: row has 3 cells, the header has 2",
    ),
    CliCase(
        "deeply_nested_jsonl",
        "a JSONL line of 100,000 brackets",
        lambda m, t: _predict(
            m, _recs(t, "r.jsonl", b'{"text": "ok"}\n' + b"[" * 100_000), t / "out" / "p.jsonl"
        ),
        lambda t: f"{t / 'r.jsonl'}:2: invalid JSON (nested too deeply)",
    ),
    CliCase(
        "lone_surrogate_in_jsonl",
        "a \\ud800 escape in a text",
        lambda m, t: _predict(
            m,
            _recs(t, "r.jsonl", b'{"text": "ok"}\n{"text": "bad \\ud800 text"}\n'),
            t / "out" / "p.jsonl",
        ),
        lambda t: f"{t / 'r.jsonl'}:2: field 'text': contains a lone surrogate",
    ),
    CliCase(
        "invisible_text_in_csv",
        "a CSV text made of a zero-width space and a NUL",
        lambda m, t: _predict(
            m, _recs(t, "r.csv", "text\nfine\n\u200b\x00\n".encode()), t / "out" / "p.jsonl"
        ),
        lambda t: f"{t / 'r.csv'}:3: field 'text': has no visible characters",
    ),
    CliCase(
        "csv_unclosed_quote",
        "a CSV quote never closed (it would swallow the rows after it)",
        lambda m, t: _predict(
            m,
            _recs(t, "r.csv", b'id,text\n1,fine\n2,"unclosed text\n3,also fine\n'),
            t / "out" / "p.jsonl",
        ),
        lambda t: f"{t / 'r.csv'}:",
    ),
    CliCase(
        "csv_two_text_columns",
        "a CSV with two text columns",
        lambda m, t: _predict(
            m, _recs(t, "r.csv", b"text,id,text\nfirst,1,second\n"), t / "out" / "p.jsonl"
        ),
        lambda t: f"{t / 'r.csv'}:1: column 'text' appears twice in the header",
    ),
    CliCase(
        "jsonl_duplicate_key",
        "a JSONL object with 'text' twice",
        lambda m, t: _predict(
            m,
            _recs(t, "r.jsonl", b'{"text": "one", "text": "two"}\n'),
            t / "out" / "p.jsonl",
        ),
        lambda t: f"{t / 'r.jsonl'}:1: key 'text' appears twice in one object",
    ),
    CliCase(
        "data_validate_missing_corpus",
        "scrclf data validate on a folder that is not there",
        lambda m, t: ["data", "validate", str(t / "no_corpus")],
        lambda t: f"{t / 'no_corpus' / 'train.jsonl'}: file not found",
    ),
    CliCase(
        "data_validate_label_typo",
        "scrclf data validate on a corpus with a typo",
        lambda m, t: [
            "data",
            "validate",
            str(_shipped_corpus_with(t, "validation", 3, evidence="guidence")),
        ],
        lambda t: (
            f"{t / 'corpus' / 'validation.jsonl'}:3: field 'evidence': unknown label "
            "'guidence' (did you mean 'guidance'?)"
        ),
    ),
    CliCase(
        "info_on_tampered_export",
        "scrclf info on an export with a changed file",
        lambda m, t: ["info", str(m_tampered(_ExportOnly(m), t))],
        lambda t: f"{t / 'model' / 'model.safetensors'}: SHA-256 differs",
    ),
]


@dataclass(frozen=True)
class _ExportOnly:
    export_dir: Path


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_bad_command_input_exits_2_with_one_line(case, tiny_export, tmp_path, capsys):
    argv = case.argv(tiny_export.export_dir, tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code = cli.main(argv)
    captured = capsys.readouterr()
    assert code == 2
    line = _one_error_line(captured.err)
    assert case.message(tmp_path) in line, line
    assert captured.out == ""
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def _refuse(exc: OSError):
    def fail(*args, **kwargs):
        raise exc

    return fail


def test_output_into_a_read_only_directory_exits_2(tiny_export, tmp_path, monkeypatch, capsys):
    """Read-only destination, simulated: creating the temporary file is refused (EACCES)."""
    src = _recs(tmp_path, "r.txt", GOOD_TEXTS[0].encode())
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "p.jsonl").write_text("earlier results\n")
    monkeypatch.setattr(
        atomic.tempfile, "mkstemp", _refuse(PermissionError(errno.EACCES, "Permission denied"))
    )
    code = cli.main(_predict(tiny_export.export_dir, src, locked / "p.jsonl"))
    captured = capsys.readouterr()
    assert code == 2
    line = _one_error_line(captured.err)
    assert f"cannot write {locked / 'p.jsonl'}: permission denied" in line
    assert (locked / "p.jsonl").read_text() == "earlier results\n"
    assert os.listdir(locked) == ["p.jsonl"]


@pytest.mark.skipif(
    os.geteuid() == 0,
    reason="root writes into mode-0555 folders; the monkeypatched variant above covers it",
)
def test_output_into_a_chmod_read_only_directory_exits_2(tiny_export, tmp_path, capsys):
    src = _recs(tmp_path, "r.txt", GOOD_TEXTS[0].encode())
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "p.jsonl").write_text("earlier results\n")
    locked.chmod(0o555)
    try:
        code = cli.main(_predict(tiny_export.export_dir, src, locked / "p.jsonl"))
    finally:
        locked.chmod(0o755)
    captured = capsys.readouterr()
    assert code == 2
    assert "permission denied" in _one_error_line(captured.err)
    assert (locked / "p.jsonl").read_text() == "earlier results\n"
    assert os.listdir(locked) == ["p.jsonl"]


# -------------------------------------------------------------- destinations (data loss)


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_export_refuses_a_folder_of_someone_elses_files(tiny_export, tmp_path):
    """An export named like a folder of the user's own work leaves that work alone."""
    from scrclf.export.build import export_model

    thesis = tmp_path / "home" / "thesis"
    thesis.mkdir(parents=True)
    (thesis / "ch1.docx").write_text("work")
    with pytest.raises(atomic.OutputError) as info:
        export_model(tiny_export.run_dir, thesis)
    assert "holds files that scrclf did not write (ch1.docx)" in str(info.value)
    assert _tree(thesis) == {"ch1.docx": b"work"}
    assert sorted(p.name for p in thesis.parent.iterdir()) == ["thesis"]


def test_export_refuses_a_file_at_its_destination(tiny_export, tmp_path):
    from scrclf.export.build import export_model

    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("mine")
    with pytest.raises(atomic.OutputError, match="exists and is not a folder scrclf wrote"):
        export_model(tiny_export.run_dir, home / "notes.txt")
    assert sorted(p.name for p in home.iterdir()) == ["notes.txt"]
    assert (home / "notes.txt").read_text() == "mine"


def test_export_refuses_an_earlier_export_with_extra_files(tiny_export, tmp_path):
    """An export is replaced only when it holds nothing but the files its manifest lists."""
    from scrclf.export.build import export_model

    dest = copy_export(tiny_export, tmp_path / "models" / "tiny")
    (dest / "notes.md").write_text("my notes")
    before = _tree(dest)
    with pytest.raises(atomic.OutputError, match=r"did not write \(notes.md\)"):
        export_model(tiny_export.run_dir, dest)
    assert _tree(dest) == before


def test_evaluation_report_refuses_a_folder_with_the_users_notes(tiny_export, tmp_path):
    from scrclf.evaluation.evaluate import evaluate

    out = tmp_path / "report"
    out.mkdir()
    (out / "notes.md").write_text("my notes")
    with pytest.raises(atomic.OutputError, match=r"did not write \(notes.md\)"):
        evaluate(tiny_export.export_dir, tiny_export.corpus / "test.jsonl", out, resamples=20)
    assert _tree(out) == {"notes.md": b"my notes"}


def test_evaluation_report_replaces_its_own_earlier_report(tiny_export, tmp_path):
    """A stamped report is an output of scrclf: a second evaluation replaces it."""
    from scrclf.evaluation.evaluate import evaluate

    out = tmp_path / "report"
    for _ in range(2):
        evaluate(
            tiny_export.export_dir,
            tiny_export.corpus / "test.jsonl",
            out,
            resamples=20,
            plots=False,
        )
    assert {"metrics.json", "report.md", atomic.STAMP_FILE} <= set(_tree(out))
    (out / "notes.md").write_text("added later")
    with pytest.raises(atomic.OutputError, match=r"did not write \(notes.md\)"):
        evaluate(
            tiny_export.export_dir,
            tiny_export.corpus / "test.jsonl",
            out,
            resamples=20,
            plots=False,
        )


def test_predict_writes_into_a_fifo_directly(tiny_export, tmp_path, capsys):
    """A FIFO (like /dev/null or /dev/stdout, not a regular file) is written, not replaced."""
    import threading

    src = _recs(tmp_path, "r.txt", "\n".join(GOOD_TEXTS).encode() + b"\n")
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    code = cli.main(_predict(tiny_export.export_dir, src, fifo))
    reader.join(timeout=60)
    assert code == 0, capsys.readouterr().err
    assert fifo.is_fifo()
    assert len(received) == 1 and len(received[0].splitlines()) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.fifo", "r.txt"]


def test_predict_follows_a_symlinked_output(tiny_export, tmp_path, capsys):
    """An --output that is a symlink stays a link; the file it points to gets the results."""
    src = _recs(tmp_path, "r.txt", "\n".join(GOOD_TEXTS).encode() + b"\n")
    target = tmp_path / "store" / "preds.jsonl"
    target.parent.mkdir()
    target.write_text("earlier\n")
    link = tmp_path / "preds.jsonl"
    link.symlink_to(target)
    assert cli.main(_predict(tiny_export.export_dir, src, link)) == 0, capsys.readouterr().err
    assert link.is_symlink() and link.resolve() == target
    assert len(target.read_text().splitlines()) == 2


def test_predict_refuses_output_equal_to_input(tiny_export, tmp_path, capsys):
    src = _recs(tmp_path, "r.jsonl", b'{"text": "The board should act."}\n')
    before = src.read_bytes()
    code = cli.main(_predict(tiny_export.export_dir, src, tmp_path / "." / "r.jsonl"))
    captured = capsys.readouterr()
    assert code == 2
    assert "--output is the input file" in _one_error_line(captured.err)
    assert src.read_bytes() == before


def test_csv_unclosed_quote_names_the_problem(tiny_export, tmp_path, capsys):
    src = _recs(tmp_path, "r.csv", b'id,text\n1,fine\n2,"unclosed text\n3,also fine\n')
    assert cli.main(_predict(tiny_export.export_dir, src, tmp_path / "p.jsonl")) == 2
    assert "malformed CSV (unexpected end of data)" in _one_error_line(capsys.readouterr().err)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a CUDA GPU")
def test_cuda_device_without_cuda_exits_2(tiny_export, tmp_path, capsys):
    src = _recs(tmp_path, "r.txt", GOOD_TEXTS[0].encode())
    argv = _predict(tiny_export.export_dir, src, tmp_path / "p.jsonl", "--backend", "torch")
    assert cli.main([*argv, "--device", "cuda"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "device=cuda but no CUDA GPU is visible" in line
    assert not (tmp_path / "p.jsonl").exists()


# ------------------------------------------------------------------- settings and runs


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.batch_size=0", "trainer.batch_size must be at least 1, got 0"),
        ("trainer.learning_rate=abc", "trainer.learning_rate must be float, got 'abc'"),
        ("trainer.max_epochs=-1", "trainer.max_epochs must be at least 1, got -1"),
        ("data.max_length=1024", "data.max_length=1024 is more than the 512 positions"),
    ],
)
def test_bad_setting_stops_training_with_its_name(toy_corpus, tmp_path, override, message):
    from scrclf.errors import SettingsError

    run = tmp_path / "run"
    cfg = compose_train(
        ["model=tiny", f"data.dir={toy_corpus}", f"paths.output_dir={run}", override]
    )
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        train(cfg)
    assert not (run / "model").exists()


def _finished_run(tiny_export, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(tiny_export.run_dir, run)
    return run


def test_training_into_a_finished_run_folder_is_refused(tiny_export, tmp_path):
    from scrclf.errors import TrainingConfigError

    run = _finished_run(tiny_export, tmp_path)
    before = _tree(run)
    cfg = compose_train(["model=tiny", f"data.dir={tiny_export.corpus}", f"paths.output_dir={run}"])
    with pytest.raises(TrainingConfigError, match="is not empty .* pass resume=true"):
        train(cfg)
    assert _tree(run) == before


def test_output_dir_that_is_a_file_is_refused(toy_corpus, tmp_path):
    from scrclf.errors import TrainingConfigError

    (tmp_path / "run").write_text("mine")
    cfg = compose_train(
        ["model=tiny", f"data.dir={toy_corpus}", f"paths.output_dir={tmp_path / 'run'}"]
    )
    with pytest.raises(TrainingConfigError, match="is a file, not a folder"):
        train(cfg)
    assert (tmp_path / "run").read_text() == "mine"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.encoder_config.hidden_size=64", "encoder hidden_size is 64, the checkpoint 32"),
        ("trainer.batch_size=8", "trainer.batch_size=8, the checkpoint was trained with 16"),
    ],
)
def test_resume_from_a_checkpoint_of_other_settings_is_refused(
    tiny_export, tmp_path, override, message
):
    from scrclf.errors import TrainingConfigError

    run = _finished_run(tiny_export, tmp_path)
    before = _tree(run)
    cfg = compose_train(
        [
            "model=tiny",
            f"data.dir={tiny_export.corpus}",
            f"paths.output_dir={run}",
            "trainer.max_epochs=2",
            "trainer.learning_rate=1e-3",
            "trainer.batch_size=16",
            "trainer.logging_steps=5",
            "resume=true",
            override,
        ]
    )
    with pytest.raises(TrainingConfigError, match="does not match these settings") as info:
        train(cfg)
    assert message in str(info.value)
    assert _tree(run) == before


def test_resume_with_reordered_labels_is_refused(tiny_export, tmp_path):
    from omegaconf import open_dict

    from scrclf.errors import TrainingConfigError

    run = _finished_run(tiny_export, tmp_path)
    cfg = compose_train(
        [
            "model=tiny",
            f"data.dir={tiny_export.corpus}",
            f"paths.output_dir={run}",
            "resume=true",
        ]
    )
    with open_dict(cfg):
        labels = list(cfg.task.tasks[1].labels)
        cfg.task.tasks[1].labels = labels[::-1]
    with pytest.raises(TrainingConfigError, match="task 'evidence' has labels"):
        train(cfg)


def test_diverging_run_stops_with_the_step(toy_corpus, tmp_path):
    from scrclf.errors import TrainingConfigError

    run = tmp_path / "run"
    cfg = compose_train(
        [
            "model=tiny",
            f"data.dir={toy_corpus}",
            f"paths.output_dir={run}",
            "trainer.max_epochs=1",
            "trainer.learning_rate=1e12",
            "trainer.max_grad_norm=0",
            "trainer.batch_size=32",
        ]
    )
    with pytest.raises(TrainingConfigError, match=r"loss became NaN at step \d+"):
        train(cfg)
    assert not (run / "model").exists() and not (run / "metrics.json").exists()


# ----------------------------------------------------------------- prediction details


def test_blank_finding_is_no_finding(tiny_export):
    clf = scrclf.load(tiny_export.export_dir, backend="torch")
    texts = GOOD_TEXTS
    none = clf.logits(texts, [None, None])
    for blank in (" ", "\t\u200b", ""):
        same = clf.logits(texts, [blank, blank])
        for a, b in zip(none, same, strict=True):
            assert (a == b).all()


def test_blank_finding_in_training_data_is_none(toy_corpus):
    from scrclf.data.records import Record

    rows = [json.loads(line) for line in _lines(toy_corpus / "train.jsonl")[:2]]
    rows[0]["finding"] = "  "
    records = [Record(r, "train.jsonl", i) for i, r in enumerate(rows, 1)]
    validate_records(records, _tasks())
    assert records[0].data["finding"] is None


def test_predict_reads_a_fifo_once(tiny_export, tmp_path, capsys):
    """A FIFO (like `--input <(cat recs.txt)`) can be read once: it is streamed."""
    import threading

    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    payload = ("\n".join(GOOD_TEXTS * 3) + "\n").encode()
    writer = threading.Thread(target=lambda: fifo.write_bytes(payload), daemon=True)
    writer.start()
    dest = tmp_path / "p.jsonl"
    code = cli.main(_predict(tiny_export.export_dir, fifo, dest))
    writer.join(timeout=60)
    assert code == 0, capsys.readouterr().err
    assert len(dest.read_text().splitlines()) == 6


def test_csv_output_neutralises_formula_ids(tiny_export, tmp_path, capsys):
    src = _recs(
        tmp_path,
        "r.jsonl",
        b'{"id": "=HYPERLINK(\\"x\\")", "text": "The board should act."}\n'
        b'{"id": "+1", "text": "The board should act."}\n'
        b'{"id": "@SUM(A1)", "text": "The board should act."}\n'
        b'{"id": -5, "text": "The board should act."}\n',
    )
    dest = tmp_path / "p.csv"
    argv = _predict(tiny_export.export_dir, src, dest, "--output-format", "csv")
    assert cli.main(argv) == 0, capsys.readouterr().err
    ids = [row[0] for row in csv.reader(io.StringIO(dest.read_text()))][1:]
    assert ids == ['\'=HYPERLINK("x")', "'+1", "'@SUM(A1)", "-5"]


@pytest.mark.parametrize("texts", [set(GOOD_TEXTS), dict.fromkeys(GOOD_TEXTS)])
def test_unordered_texts_are_refused(tiny_export, texts):
    clf = scrclf.load(tiny_export.export_dir, backend="torch")
    with pytest.raises(DataError, match="no fixed order"):
        clf.predict(texts)
