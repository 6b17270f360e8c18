"""The ``scrclf`` command line: predict on every input format, errors, info, extensions."""

from __future__ import annotations

import argparse
import csv
import io
import json
import subprocess
import sys
import types

import pytest

import scrclf
from scrclf.cli import app as cli

TEXTS = [
    "The board should commission training on the new procedure protocol.",
    "All agencies should redesign the referral strategy.",
    "Managers should remind staff of supervision, and of reflective practice.",
]


@pytest.fixture(scope="session")
def expected(tiny_export):
    return scrclf.load(tiny_export.export_dir, backend="onnx").predict(TEXTS)


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


# ----------------------------------------------------------------------------- predict


def test_predict_lines_file_to_jsonl_stdout(tiny_export, expected, tmp_path, capsys):
    src = tmp_path / "recs.txt"
    src.write_text(TEXTS[0] + "\n\n" + TEXTS[1] + "\n" + TEXTS[2] + "\n")
    code, out, err = _run(
        capsys, "predict", "--model", str(tiny_export.export_dir), "--input", str(src)
    )
    assert code == 0, err
    rows = _jsonl(out)
    assert [r["line"] for r in rows] == [1, 3, 4]
    assert all(r["id"] is None for r in rows)
    for row, want in zip(rows, expected, strict=True):
        assert row["themes"] == want["themes"] and row["evidence"] == want["evidence"]
    assert "item" in err  # the progress bar


def test_csv_output_keeps_ids_with_carriage_returns_in_one_row(tiny_export, tmp_path, capsys):
    src = tmp_path / "recs.jsonl"
    ids = ["a\rb", "c\r\nd", "plain"]
    src.write_text(
        "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in zip(ids, TEXTS, strict=True))
    )
    dest = tmp_path / "preds.csv"
    code, _, err = _run(
        capsys,
        "predict",
        "--model",
        str(tiny_export.export_dir),
        "--input",
        str(src),
        "--output",
        str(dest),
        "--output-format",
        "csv",
        "--no-progress",
    )
    assert code == 0, err
    rows = list(csv.DictReader(dest.open(newline="")))
    assert [r["id"] for r in rows] == ids
    assert [r["line"] for r in rows] == ["1", "2", "3"]
    assert '"plain"' not in dest.read_text()  # ordinary rows stay minimally quoted


def test_predict_csv_to_csv_file(tiny_export, expected, tmp_path, capsys):
    src = tmp_path / "recs.csv"
    with src.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "text", "finding"])
        for i, text in enumerate(TEXTS):
            writer.writerow([f"R{i}", text, "Studies show this works." if i == 0 else ""])
    dest = tmp_path / "out" / "preds.csv"
    code, out, err = _run(
        capsys,
        "predict",
        "--model",
        str(tiny_export.export_dir),
        "--input",
        str(src),
        "--output",
        str(dest),
        "--output-format",
        "csv",
        "--no-progress",
    )
    assert code == 0, err
    assert out == "" and err == ""
    rows = list(csv.DictReader(dest.open(newline="")))
    assert [r["id"] for r in rows] == ["R0", "R1", "R2"]
    assert [r["line"] for r in rows] == ["2", "3", "4"]
    with_finding = scrclf.load(tiny_export.export_dir).predict(
        TEXTS, ["Studies show this works.", None, None]
    )
    for row, want in zip(rows, with_finding, strict=True):
        assert row["themes"].split(";") == want["themes"]["labels"]
        assert row["themes_primary"] == want["themes"]["primary"]
        assert row["evidence"] == want["evidence"]["label"]
        assert float(row["action_strength_score_weak"]) == pytest.approx(
            want["action_strength"]["scores"]["weak"], abs=1e-6
        )
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(".")]


def test_predict_jsonl_to_jsonl_file_with_torch(tiny_export, expected, tmp_path, capsys):
    src = tmp_path / "recs.jsonl"
    src.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(TEXTS)))
    dest = tmp_path / "preds.jsonl"
    code, _, err = _run(
        capsys,
        "predict",
        "--model",
        str(tiny_export.export_dir),
        "--backend",
        "torch",
        "--input",
        str(src),
        "--output",
        str(dest),
        "--batch-size",
        "2",
    )
    assert code == 0, err
    rows = _jsonl(dest.read_text())
    assert [r["id"] for r in rows] == [0, 1, 2]
    assert [r["themes"]["labels"] for r in rows] == [e["themes"]["labels"] for e in expected]


def test_predict_from_stdin_detects_jsonl_and_lines(tiny_export, expected, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(TEXTS) + "\n"))
    code, out, err = _run(capsys, "predict", "--model", str(tiny_export.export_dir))
    assert code == 0, err
    assert [r["evidence"] for r in _jsonl(out)] == [e["evidence"] for e in expected]
    assert err == ""  # no progress bar for stdin
    stdin = "".join(json.dumps({"text": t, "id": f"x{i}"}) + "\n" for i, t in enumerate(TEXTS))
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code, out, err = _run(
        capsys,
        "predict",
        "--model",
        str(tiny_export.export_dir),
        "--input",
        "-",
        "--output-format",
        "csv",
    )
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["id"] for r in rows] == ["x0", "x1", "x2"]


def test_truncation_is_reported_in_one_warning_line(tiny_export, tmp_path, capsys):
    src = tmp_path / "long.txt"
    src.write_text(("word " * 600 + "\n") * 3)
    code, out, err = _run(
        capsys,
        "predict",
        "--model",
        str(tiny_export.export_dir),
        "--input",
        str(src),
        "--no-progress",
    )
    assert code == 0
    assert len(_jsonl(out)) == 3
    assert err.splitlines() == [
        "scrclf: warning: 3 inputs were longer than 256 tokens and were truncated"
    ]


# ------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "bad.csv",
            "id,text\n1,fine\n2,   \n",
            "bad.csv:3: field 'text': is empty or whitespace only",
        ),
        ("bad.csv", "id,finding\n1,x\n", "bad.csv:1: no 'text' column"),
        (
            "bad.jsonl",
            '{"text": "fine"}\n{"text": 5}\n',
            "bad.jsonl:2: field 'text': must be a string",
        ),
        ("bad.jsonl", '{"text": "fine"}\nnot json\n', "bad.jsonl:2: invalid JSON"),
        ("bad.jsonl", '{"text": "ok", "finding": 3}\n', "bad.jsonl:1: field 'finding': must be a"),
        ("bad.jsonl", '["text"]\n', "bad.jsonl:1: each line must be a JSON object"),
    ],
)
def test_bad_input_exits_2_with_one_line(tiny_export, tmp_path, capsys, name, content, message):
    src = tmp_path / name
    src.write_text(content)
    dest = tmp_path / "preds.jsonl"
    code, out, err = _run(
        capsys,
        "predict",
        "--model",
        str(tiny_export.export_dir),
        "--input",
        str(src),
        "--output",
        str(dest),
    )
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("scrclf: error: ") and message in lines[0]
    assert "Traceback" not in err and out == ""
    assert not dest.exists()


def test_error_midway_through_stdin_leaves_no_output_file(
    tiny_export, tmp_path, monkeypatch, capsys
):
    rows = [json.dumps({"text": t}) for t in TEXTS * 100] + ['{"text": ""}']
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(rows) + "\n"))
    dest = tmp_path / "preds.jsonl"
    dest.write_text("earlier results\n")
    code, _, err = _run(
        capsys, "predict", "--model", str(tiny_export.export_dir), "--output", str(dest)
    )
    assert code == 2
    assert err.splitlines() == [
        "scrclf: error: <stdin>:301: field 'text': is empty or whitespace only"
    ]
    assert dest.read_text() == "earlier results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preds.jsonl"]


def test_bad_model_or_missing_input_exits_2(tiny_export, tmp_path, capsys):
    src = tmp_path / "recs.txt"
    src.write_text(TEXTS[0] + "\n")
    code, _, err = _run(capsys, "predict", "--model", str(tmp_path / "nope"), "--input", str(src))
    assert code == 2 and err.splitlines() == [
        f"scrclf: error: {tmp_path / 'nope'}: model folder not found"
    ]
    code, _, err = _run(
        capsys,
        "predict",
        "--model",
        str(tiny_export.export_dir),
        "--input",
        str(tmp_path / "missing.txt"),
    )
    assert code == 2 and err.splitlines() == [
        f"scrclf: error: {tmp_path / 'missing.txt'}: file not found"
    ]
    code, _, err = _run(
        capsys,
        "predict",
        "--model",
        str(tiny_export.export_dir),
        "--input",
        str(src),
        "--batch-size",
        "0",
    )
    assert code == 2 and "--batch-size must be >= 1" in err
    code, _, err = _run(capsys, "info", str(tiny_export.run_dir))
    assert code == 2 and "a training run folder, not a model folder" in err
    (tmp_path / "empty").mkdir()
    code, _, err = _run(capsys, "info", str(tmp_path / "empty"))
    assert code == 2 and "no config.json" in err


# -------------------------------------------------------------------------------- info


def test_info_reports_labels_thresholds_metrics_and_provenance(tiny_export, capsys):
    code, out, err = _run(capsys, "info", str(tiny_export.export_dir))
    assert code == 0, err
    assert "tiny (export)" in out
    assert "files verified against manifest.json" in out
    assert "themes (multi-label, at most 3 labels; temperature" in out
    assert "procedures_policy" in out and "threshold" in out
    assert "research, guidance, local_data, single_case, none_stated" in out
    assert "[test] mean macro-F1" in out
    assert "int8 label agreement" in out
    assert "test.jsonl: 60 items, sha256" in out
    assert "license     apache-2.0" in out

    code, out, _ = _run(capsys, "info", str(tiny_export.export_dir), "--json")
    info = json.loads(out)
    metrics = json.loads((tiny_export.export_dir / "metrics.json").read_text())
    assert info["metrics"]["mean_macro_f1"] == metrics["test"]["mean_macro_f1"]
    assert info["backends"] == ["onnx fp32", "onnx int8", "torch"]
    assert (
        info["tasks"][0]["thresholds"]
        == json.loads((tiny_export.export_dir / "config.json").read_text())["tasks"][0][
            "thresholds"
        ]
    )


def test_info_on_a_run_model_folder(tiny_export, capsys):
    code, out, err = _run(capsys, "info", str(tiny_export.run_dir / "model"))
    assert code == 0, err
    assert "(saved model)" in out and "checksums not verified" in out
    assert "[test] mean macro-F1" in out  # metrics.json of the run


def test_console_entry_point_runs(tiny_export):
    proc = subprocess.run(
        [sys.executable, "-m", "scrclf.cli", "info", str(tiny_export.export_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "files verified" in proc.stdout


# -------------------------------------------------------------------------- extensions


def test_subcommand_modules_register_when_present(monkeypatch, capsys):
    module = types.ModuleType("scrclf_test_ext")

    def register_cli(subparsers: argparse._SubParsersAction) -> None:
        p = subparsers.add_parser("data", help="corpus tools")
        p.add_argument("--check", action="store_true")
        p.set_defaults(func=lambda args: print(f"data check={args.check}") or 0)

    module.register_cli = register_cli
    monkeypatch.setitem(sys.modules, "scrclf_test_ext", module)
    monkeypatch.setattr(cli, "SUBCOMMAND_MODULES", ["scrclf_test_missing", "scrclf_test_ext"])
    assert cli.main(["data", "--check"]) == 0
    assert capsys.readouterr().out == "data check=True\n"


def test_broken_subcommand_module_is_not_hidden(tmp_path, monkeypatch):
    (tmp_path / "scrclf_test_broken.py").write_text("import a_dependency_that_is_missing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    parser = argparse.ArgumentParser()
    with pytest.raises(ModuleNotFoundError, match="a_dependency_that_is_missing"):
        cli.register_optional(parser.add_subparsers(), ["scrclf_test_broken"])


def test_no_command_prints_usage_and_exits_2(capsys):
    code, _, err = _run(capsys)
    assert code == 2 and "choose a command" in err
