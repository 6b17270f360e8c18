"""Atomic writes under a full disk and a read-only destination.

Every result (metrics.json, an export or report folder, ``scrclf predict`` output) is either
complete at its destination or not there: a failed write raises :class:`OutputError` naming
the destination, removes its temporary file or folder, and leaves earlier results there
byte for byte as they were.

The disk is filled by patching ``os.fdopen`` (the atomic layer's files accept a few bytes,
then raise ENOSPC) or ``os.fsync``; a read-only destination by patching ``mkstemp``,
``mkdtemp`` or ``os.replace`` to raise EROFS or EACCES. Real ``chmod 0o555`` folders are
also tried, except as root, where permission bits do not stop writes. A writer killed with
SIGKILL mid-write leaves the earlier result too.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import SafetensorError

from scrclf import atomic
from scrclf.atomic import OutputError
from scrclf.cli import app as cli

EARLIER_METRICS = b'{\n  "validation": {"mean_macro_f1": 0.61}\n}\n'
NEW_METRICS = {"validation": {"mean_macro_f1": 0.74}, "test": {"mean_macro_f1": 0.70}}


class _SmallFile:
    """A file object that stores ``room`` more bytes, then fails like a full disk."""

    def __init__(self, inner, disk: FullDisk):
        self._inner = inner
        self._disk = disk

    def write(self, data):
        size = len(data.encode() if isinstance(data, str) else data)
        if size > self._disk.room:
            self._inner.write(data[: self._disk.room])
            self._inner.flush()
            self._disk.room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self._disk.room -= size
        return self._inner.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._inner.close()
        return False

    def __getattr__(self, name):
        return getattr(self._inner, name)


class FullDisk:
    """Replaces ``os.fdopen``: files opened for writing hold ``room`` bytes in all."""

    def __init__(self, room: int):
        self.room = room
        self._fdopen = os.fdopen
        self.opened = 0

    def __call__(self, fd, mode="r", *args, **kwargs):
        inner = self._fdopen(fd, mode, *args, **kwargs)
        if "w" not in mode:
            return inner
        self.opened += 1
        return _SmallFile(inner, self)


def _refuse(code: int):
    """A stand-in for an os or tempfile function that always fails with ``code``."""

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    return fail


def _listing(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _earlier_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_bytes(EARLIER_METRICS)
    return run


def _assert_clean(folder: Path, expected: set[str]) -> None:
    """Only the expected names are left: no temporary file or folder."""
    assert {p.name for p in folder.iterdir()} == expected


# ------------------------------------------------------------------------- metrics.json


@pytest.mark.parametrize("room", [0, 20])
def test_full_disk_while_writing_metrics_keeps_the_earlier_file(tmp_path, monkeypatch, room):
    run = _earlier_run(tmp_path)
    disk = FullDisk(room)
    monkeypatch.setattr(atomic.os, "fdopen", disk)
    with pytest.raises(OutputError) as info:
        atomic.write_json(run / "metrics.json", NEW_METRICS)
    assert disk.opened == 1
    err = info.value
    assert err.errno == errno.ENOSPC and err.filename == str(run / "metrics.json")
    assert str(err) == (
        f"cannot write {run / 'metrics.json'}: no space left on the device; "
        "earlier results there are unchanged"
    )
    assert (run / "metrics.json").read_bytes() == EARLIER_METRICS
    _assert_clean(run, {"metrics.json"})


def test_full_disk_reported_at_fsync_keeps_the_earlier_file(tmp_path, monkeypatch):
    """Some file systems report a full disk (or quota) only when the data is flushed."""
    run = _earlier_run(tmp_path)
    monkeypatch.setattr(atomic.os, "fsync", _refuse(errno.EDQUOT))
    with pytest.raises(OutputError, match="disk quota exceeded") as info:
        atomic.write_json(run / "metrics.json", NEW_METRICS)
    assert info.value.filename == str(run / "metrics.json")
    assert (run / "metrics.json").read_bytes() == EARLIER_METRICS
    _assert_clean(run, {"metrics.json"})


def test_metrics_written_when_there_is_room(tmp_path, monkeypatch):
    run = _earlier_run(tmp_path)
    monkeypatch.setattr(atomic.os, "fdopen", FullDisk(10_000))
    atomic.write_json(run / "metrics.json", NEW_METRICS)
    assert json.loads((run / "metrics.json").read_text()) == NEW_METRICS
    _assert_clean(run, {"metrics.json"})


@pytest.mark.parametrize(
    ("target", "code", "reason"),
    [
        ("mkstemp", errno.EROFS, "the destination is on a read-only file system"),
        ("mkstemp", errno.EACCES, "permission denied"),
        ("replace", errno.EROFS, "the destination is on a read-only file system"),
        ("replace", errno.EACCES, "permission denied"),
    ],
)
def test_read_only_destination_for_metrics(tmp_path, monkeypatch, target, code, reason):
    run = _earlier_run(tmp_path)
    if target == "mkstemp":
        monkeypatch.setattr(atomic.tempfile, "mkstemp", _refuse(code))
    else:  # the temporary file is written in full; only the rename into place fails
        monkeypatch.setattr(atomic.os, "replace", _refuse(code))
    with pytest.raises(OutputError) as info:
        atomic.write_json(run / "metrics.json", NEW_METRICS)
    assert str(info.value) == (
        f"cannot write {run / 'metrics.json'}: {reason}; earlier results there are unchanged"
    )
    assert (run / "metrics.json").read_bytes() == EARLIER_METRICS
    _assert_clean(run, {"metrics.json"})


@pytest.mark.skipif(
    os.geteuid() == 0,
    reason="root writes into mode-0555 folders; the patched read-only variants cover this",
)
def test_chmod_read_only_folder_for_metrics(tmp_path):
    run = _earlier_run(tmp_path)
    run.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="permission denied"):
            atomic.write_json(run / "metrics.json", NEW_METRICS)
    finally:
        run.chmod(0o755)
    assert (run / "metrics.json").read_bytes() == EARLIER_METRICS
    _assert_clean(run, {"metrics.json"})


def test_interrupted_write_leaves_no_temporary_file(tmp_path):
    run = _earlier_run(tmp_path)
    with pytest.raises(KeyboardInterrupt), atomic.open_for_write(run / "metrics.json") as fh:
        fh.write(b'{"partial": ')
        raise KeyboardInterrupt
    assert (run / "metrics.json").read_bytes() == EARLIER_METRICS
    _assert_clean(run, {"metrics.json"})


# ------------------------------------------------------------------ folders (export, report)


def _earlier_folder(tmp_path: Path, name: str) -> tuple[Path, dict[str, bytes]]:
    dest = tmp_path / "models" / name
    (dest / "onnx").mkdir(parents=True)
    (dest / "config.json").write_text('{"model_type": "scrclf"}\n')
    (dest / "model.safetensors").write_bytes(b"\x08" + bytes(range(256)) * 4)
    (dest / "onnx" / "model.onnx").write_bytes(b"graph" * 100)
    return dest, _listing(dest)


def _build_export(tmp: Path) -> None:
    (tmp / "onnx").mkdir()
    atomic.write_bytes(tmp / "model.safetensors", b"\x00" * 2048)
    atomic.write_bytes(tmp / "onnx" / "model.onnx", b"new graph" * 200)
    atomic.write_json(tmp / "config.json", {"model_type": "scrclf", "new": True})
    atomic.write_json(tmp / "manifest.json", {"files": {}})


def test_full_disk_during_an_export_keeps_the_earlier_export(tmp_path, monkeypatch):
    dest, before = _earlier_folder(tmp_path, "tiny")
    monkeypatch.setattr(atomic.os, "fdopen", FullDisk(3000))
    with pytest.raises(OutputError) as info, atomic.directory(dest) as tmp:
        _build_export(tmp)
    # The message names the file under its final name, not the temporary folder's.
    assert str(info.value) == (
        f"cannot write {dest / 'onnx' / 'model.onnx'}: no space left "
        "on the device; earlier results there are unchanged"
    )
    assert _listing(dest) == before
    _assert_clean(dest.parent, {"tiny"})


def test_full_disk_in_a_native_writer_is_an_output_error(tmp_path):
    """safetensors writes from Rust and raises its own error type, with the OS error code."""
    dest, before = _earlier_folder(tmp_path, "tiny")
    with pytest.raises(OutputError) as info, atomic.directory(dest) as tmp:
        atomic.write_json(tmp / "config.json", {"model_type": "scrclf"})
        raise SafetensorError(
            "Error while serializing: I/O error: No space left on device (os error 28)"
        )
    assert info.value.errno == errno.ENOSPC
    assert str(info.value).startswith(f"cannot write {dest}: no space left on the device")
    assert isinstance(info.value.__cause__, SafetensorError)
    assert _listing(dest) == before
    _assert_clean(dest.parent, {"tiny"})


def test_other_errors_inside_a_folder_build_are_not_disguised(tmp_path):
    dest, before = _earlier_folder(tmp_path, "tiny")
    with pytest.raises(ValueError, match="parity"), atomic.directory(dest) as tmp:
        atomic.write_json(tmp / "config.json", {})
        raise ValueError("ONNX parity check failed")
    assert _listing(dest) == before
    _assert_clean(dest.parent, {"tiny"})


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (errno.EROFS, "the destination is on a read-only file system"),
        (errno.EACCES, "permission denied"),
    ],
)
def test_read_only_destination_for_a_folder(tmp_path, monkeypatch, code, reason):
    dest, before = _earlier_folder(tmp_path, "tiny")
    monkeypatch.setattr(atomic.tempfile, "mkdtemp", _refuse(code))
    with pytest.raises(OutputError) as info, atomic.directory(dest) as tmp:
        _build_export(tmp)
    assert str(info.value) == f"cannot write {dest}: {reason}; earlier results there are unchanged"
    assert _listing(dest) == before
    _assert_clean(dest.parent, {"tiny"})


def test_failed_swap_puts_the_earlier_folder_back(tmp_path, monkeypatch):
    """The folder is built, the old one moved aside, and moving the new one in fails."""
    dest, before = _earlier_folder(tmp_path, "tiny")
    real_replace = os.replace

    def replace(src, dst):
        if Path(src).name.endswith(".tmp") and Path(dst) == dest:
            raise OSError(errno.EACCES, os.strerror(errno.EACCES))
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    with (
        pytest.raises(OutputError, match=f"cannot write {dest}: permission denied"),
        atomic.directory(dest) as tmp,
    ):
        _build_export(tmp)
    assert _listing(dest) == before
    _assert_clean(dest.parent, {"tiny"})


def test_interrupted_folder_build_leaves_the_earlier_folder(tmp_path):
    dest, before = _earlier_folder(tmp_path, "tiny")
    with pytest.raises(KeyboardInterrupt), atomic.directory(dest) as tmp:
        atomic.write_json(tmp / "config.json", {})
        raise KeyboardInterrupt
    assert _listing(dest) == before
    _assert_clean(dest.parent, {"tiny"})


def test_swap_killed_between_its_renames_is_recovered_by_the_next_build(tmp_path):
    """Killed after ``dest`` was moved aside and before the new folder was moved in."""
    dest, before = _earlier_folder(tmp_path, "tiny")
    os.replace(dest, dest.parent / ".tiny.old")
    # A failed rebuild leaves the earlier folder in place, not nothing.
    with pytest.raises(KeyboardInterrupt), atomic.directory(dest) as tmp:
        atomic.write_json(tmp / "config.json", {})
        raise KeyboardInterrupt
    assert _listing(dest) == before
    _assert_clean(dest.parent, {"tiny"})
    # And a successful one replaces it.
    os.replace(dest, dest.parent / ".tiny.old")
    with atomic.directory(dest) as tmp:
        atomic.write_json(tmp / "config.json", {"new": True})
    assert json.loads((dest / "config.json").read_text()) == {"new": True}
    _assert_clean(dest.parent, {"tiny"})


def test_leftover_earlier_folder_from_a_completed_swap_is_removed(tmp_path):
    """Killed after both renames, before the earlier folder was deleted."""
    dest, before = _earlier_folder(tmp_path, "tiny")
    (dest.parent / ".tiny.old").mkdir()
    (dest.parent / ".tiny.old" / "stale.json").write_text("{}")
    atomic.recover_interrupted_swap(dest)
    assert _listing(dest) == before
    _assert_clean(dest.parent, {"tiny"})


@pytest.mark.skipif(
    os.geteuid() == 0,
    reason="root writes into mode-0555 folders; the patched read-only variants cover this",
)
def test_chmod_read_only_parent_for_a_folder(tmp_path):
    dest, before = _earlier_folder(tmp_path, "tiny")
    dest.parent.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="permission denied"), atomic.directory(dest) as tmp:
            _build_export(tmp)
    finally:
        dest.parent.chmod(0o755)
    assert _listing(dest) == before


def test_evaluation_report_folder_under_a_full_disk(tmp_path, monkeypatch):
    """Reports are written like scrclf.evaluation.evaluate does: metrics, report.md, charts, one folder."""
    reports = tmp_path / "reports"
    dest = reports / "tiny_test"
    dest.mkdir(parents=True)
    (dest / "metrics.json").write_bytes(EARLIER_METRICS)
    (dest / "report.md").write_text("# Earlier report\n")
    before = _listing(dest)
    monkeypatch.setattr(atomic.os, "fdopen", FullDisk(200))
    with pytest.raises(OutputError) as info, atomic.directory(dest) as tmp:
        atomic.write_json(tmp / "metrics.json", NEW_METRICS)
        atomic.write_text(tmp / "report.md", "# Report\n\n" + "| a | b |\n" * 100)
    assert str(info.value).startswith(f"cannot write {dest / 'report.md'}: no space left")
    assert _listing(dest) == before
    _assert_clean(reports, {"tiny_test"})


# ------------------------------------------------------------------------ scrclf predict


def _predict_args(tiny_export, tmp_path: Path, dest: Path) -> list[str]:
    src = tmp_path / "recs.txt"
    src.write_text("The board should commission training.\n" * 40)
    return [
        "predict",
        "--model",
        str(tiny_export.export_dir),
        "--input",
        str(src),
        "--output",
        str(dest),
        "--no-progress",
    ]


def test_full_disk_during_predict_output_exits_2_and_keeps_earlier_output(
    tiny_export, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "out"
    out.mkdir()
    dest = out / "preds.jsonl"
    dest.write_text("earlier predictions\n")
    argv = _predict_args(tiny_export, tmp_path, dest)
    monkeypatch.setattr(atomic.os, "fdopen", FullDisk(5000))
    code = cli.main(argv)
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.splitlines() == [
        f"scrclf: error: cannot write {dest}: no space left on the device; earlier results "
        "there are unchanged"
    ]
    assert dest.read_text() == "earlier predictions\n"
    _assert_clean(out, {"preds.jsonl"})


@pytest.mark.parametrize("target", ["mkstemp", "replace"])
def test_read_only_predict_destination_exits_2(tiny_export, tmp_path, monkeypatch, capsys, target):
    out = tmp_path / "out"
    out.mkdir()
    dest = out / "preds.jsonl"
    dest.write_text("earlier predictions\n")
    argv = _predict_args(tiny_export, tmp_path, dest)
    if target == "mkstemp":
        monkeypatch.setattr(atomic.tempfile, "mkstemp", _refuse(errno.EROFS))
    else:
        monkeypatch.setattr(atomic.os, "replace", _refuse(errno.EROFS))
    code = cli.main(argv)
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.splitlines() == [
        f"scrclf: error: cannot write {dest}: the destination is on a read-only file system; "
        "earlier results there are unchanged"
    ]
    assert dest.read_text() == "earlier predictions\n"
    _assert_clean(out, {"preds.jsonl"})


# ---------------------------------------------------------------------------- SIGKILL

KILLED_WRITER = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("atomic", sys.argv[1])
atomic = importlib.util.module_from_spec(spec)
spec.loader.exec_module(atomic)
kind, dest = sys.argv[2], sys.argv[3]
if kind == "file":
    with atomic.open_for_write(dest) as fh:
        fh.write(b'{"partial": ')
        fh.flush()
        print("writing", flush=True)
        time.sleep(120)
else:
    with atomic.directory(dest) as tmp:
        atomic.write_json(tmp / "config.json", {"new": True})
        print("writing", flush=True)
        time.sleep(120)
"""


def _kill_while_writing(kind: str, dest: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, atomic.__file__, kind, str(dest)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline() == "writing\n"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL


def test_sigkill_mid_write_leaves_the_earlier_file(tmp_path):
    run = _earlier_run(tmp_path)
    _kill_while_writing("file", run / "metrics.json")
    assert (run / "metrics.json").read_bytes() == EARLIER_METRICS
    # Only a hidden temporary sibling can be left behind (nothing can clean up after SIGKILL).
    leftovers = {p.name for p in run.iterdir()} - {"metrics.json"}
    assert all(n.startswith(".metrics.json.") and n.endswith(".tmp") for n in leftovers)


def test_sigkill_mid_folder_build_leaves_the_earlier_folder(tmp_path):
    dest, before = _earlier_folder(tmp_path, "tiny")
    _kill_while_writing("folder", dest)
    assert _listing(dest) == before
    leftovers = {p.name for p in dest.parent.iterdir()} - {"tiny"}
    assert all(n.startswith(".tiny.") and n.endswith(".tmp") for n in leftovers)


# ------------------------------------------------------------------------ a training run


def test_full_disk_at_the_end_of_training_leaves_no_metrics(tiny_cfg, monkeypatch):
    """metrics.json is written last: a run folder without it is an unfinished run."""
    from scrclf.training import train

    run = Path(tiny_cfg.paths.output_dir)
    real_replace = os.replace

    def replace(src, dst):
        if Path(dst).name == "metrics.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(OutputError) as info:
        train(tiny_cfg)
    assert str(info.value) == (
        f"cannot write {run / 'metrics.json'}: no space left on the "
        "device; earlier results there are unchanged"
    )
    assert not (run / "metrics.json").exists()
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]


def test_shown_paths_are_relative_to_the_project_root(tmp_path, monkeypatch):
    from scrclf.atomic import shown_path, shown_paths

    root = tmp_path / "project"
    (root / "data").mkdir(parents=True)
    monkeypatch.setenv("PROJECT_ROOT", str(root))
    assert shown_path(root / "data" / "test.jsonl") == "data/test.jsonl"
    assert shown_path(root) == "."
    # Outside the root, or already relative: as given.
    assert shown_path(tmp_path / "elsewhere.jsonl") == str(tmp_path / "elsewhere.jsonl")
    assert shown_path("outputs/run") == "outputs/run"
    assert shown_path(None) is None
    cfg = {
        "paths": {"root_dir": str(root), "data_dir": str(root / "data")},
        "files": [str(root / "a.jsonl"), "b.jsonl", 3],
        "note": "a sentence, not a path",
    }
    assert shown_paths(cfg) == {
        "paths": {"root_dir": ".", "data_dir": "data"},
        "files": ["a.jsonl", "b.jsonl", 3],
        "note": "a sentence, not a path",
    }
    monkeypatch.delenv("PROJECT_ROOT")
    monkeypatch.chdir(root)
    assert shown_path(root / "data") == "data"
