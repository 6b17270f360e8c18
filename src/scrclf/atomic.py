"""Atomic writes: a result is either complete at its destination or not there at all.

Files are written to a temporary sibling and renamed into place; directories are built in a
temporary sibling and swapped in, so an earlier result survives a failure. Disk-full and
permission problems become :class:`OutputError` naming the destination.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from scrclf.errors import OutputError  # noqa: F401 (re-exported)


def _explain(err: OSError, dest: Path) -> OutputError:
    reasons: dict[int | None, str] = {
        errno.ENOSPC: "no space left on the device",
        errno.EROFS: "the destination is on a read-only file system",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.EDQUOT: "disk quota exceeded",
    }
    reason = reasons.get(err.errno, err.strerror or str(err))
    out = OutputError(
        err.errno or 0, f"cannot write {dest}: {reason}; earlier results there are unchanged"
    )
    out.filename = str(dest)
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _is_special(path: Path) -> bool:
    """Whether ``path`` is a device, pipe, socket or a descriptor name (``/dev/stdout``)."""
    text = str(path)
    if text.startswith(("/dev/", "/proc/self/fd/")):
        return True
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


@contextlib.contextmanager
def _open_special(path: Path, mode: str, **open_kwargs) -> Iterator[IO]:
    """A device or pipe is written directly: it cannot be renamed over, and must not be."""
    try:
        fh = open(path, mode, **open_kwargs)
    except OSError as err:
        raise _explain(err, path) from err
    try:
        with fh:
            yield fh
            fh.flush()
    except OutputError:
        raise
    except OSError as err:
        raise _explain(err, path) from err


@contextlib.contextmanager
def open_for_write(path: str | Path, mode: str = "wb", **open_kwargs) -> Iterator[IO]:
    """Stream into a temporary sibling of ``path``; rename it into place on success.

    On any exception the temporary file is removed and ``path`` is left as it was.
    A device or pipe (``/dev/null``, ``/dev/stdout``, a FIFO) is written directly. A
    symbolic link is followed: the file it points to is replaced, the link stays.
    """
    path = Path(path)
    if _is_special(path):
        with _open_special(path, mode, **open_kwargs) as fh:
            yield fh
        return
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    if path.is_dir():
        raise OutputError(errno.EISDIR, f"cannot write {path}: it is a directory")
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; results are ordinary files
        with os.fdopen(fd, mode, **open_kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(path.parent)
    except OutputError:
        raise
    except OSError as err:
        raise _explain(err, path) from err
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def write_bytes(path: str | Path, data: bytes) -> None:
    with open_for_write(path, "wb") as fh:
        fh.write(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _native_os_error(err: BaseException) -> OSError | None:
    """The OS error inside an exception of a native writer, or None.

    safetensors and tokenizers write from Rust and raise their own exception types, whose
    messages end with the OS error code, e.g. ``... No space left on device (os error 28)``.
    """
    if not isinstance(err, Exception) or isinstance(err, OSError):
        return None
    match = re.search(r"\(os error (\d+)\)", str(err))
    if match is None:
        return None
    code = int(match.group(1))
    return OSError(code, os.strerror(code))


def _names_inside(err: OSError, folder: Path) -> bool:
    return bool(err.filename) and Path(err.filename).is_relative_to(folder)


def _final_name(err: OSError, tmp: Path, dest: Path) -> Path:
    """Where the file an error names will live once the temporary folder becomes ``dest``."""
    if _names_inside(err, tmp):
        return dest / Path(err.filename).relative_to(tmp)
    return dest


def _make_ordinary(root: Path) -> None:
    """Give a built tree the permissions of ordinary results (some writers create 0600 files)."""
    mask = _umask()
    os.chmod(root, 0o777 & ~mask)
    for path in root.rglob("*"):
        if not path.is_symlink():
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


def _previous(dest: Path) -> Path:
    """Where ``directory`` parks the earlier ``dest`` while the new one is moved in."""
    return dest.with_name(f".{dest.name}.old")


def recover_interrupted_swap(dest: str | Path) -> None:
    """Finish a swap that a killed process left half done.

    Replacing ``dest`` takes two renames: ``dest`` to ``.<name>.old``, then the new folder to
    ``dest``. Killed between them, only ``.<name>.old`` remains: it is moved back, so the
    earlier version is in place again. Killed after both, ``.<name>.old`` is left over and
    is removed.
    """
    dest = Path(dest)
    old = _previous(dest)
    if not old.is_dir():
        return
    if dest.exists():
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(old, dest)
        _fsync_dir(dest.parent)


# Written into evaluation report folders, listing their files; with an export's manifest it
# tells a folder that scrclf wrote (and may replace) from one holding someone's own files.
STAMP_FILE = ".scrclf-output"
_REPORT_FILES = re.compile(r"(metrics\.json|report\.md|[^/]+\.png|profile/profile\.(json|md|png))")
_PROFILE_FILES = re.compile(r"profile\.(json|md|png)")


def _json_object(path: Path) -> dict[str, Any] | None:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def _files(folder: Path) -> list[str]:
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_symlink() or not p.is_dir()
    )


def foreign_files(folder: str | Path) -> list[str]:
    """Files of an existing folder that scrclf did not write there (all of them when the
    folder carries no marker of ours).

    The markers: the stamp of a report (it lists the report's files), an export's
    ``manifest.json`` (it lists the export's files), the ``config.json`` of a saved scrclf
    model (a run's ``model/``), and the fixed file names of an unstamped evaluation report
    (``metrics.json`` with ``report.md``) or of a profile (``profile.json``).
    """
    folder = Path(folder)
    files = _files(folder)
    stamp = _json_object(folder / STAMP_FILE)
    if stamp is not None and isinstance(stamp.get("files"), list):
        listed = {str(f) for f in stamp["files"]} | {STAMP_FILE}
        return [f for f in files if f not in listed]
    manifest = _json_object(folder / "manifest.json")
    if manifest is not None and isinstance(manifest.get("files"), dict):
        listed = set(manifest["files"]) | {"manifest.json"}
        return [f for f in files if f not in listed]
    config = _json_object(folder / "config.json")
    if config is not None and config.get("model_type") == "scrclf":
        return []
    if "metrics.json" in files and "report.md" in files:
        return [f for f in files if not _REPORT_FILES.fullmatch(f)]
    if "profile.json" in files:
        return [f for f in files if not _PROFILE_FILES.fullmatch(f)]
    return files


def check_replaceable(dest: str | Path) -> None:
    """Refuse ``dest`` unless it is absent, an empty folder, or an earlier output of scrclf
    holding nothing else (:func:`foreign_files`). Raises :class:`OutputError`; nothing is
    changed."""
    dest = Path(dest)
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise OutputError(
            errno.EEXIST,
            f"cannot write {dest}: it exists and is not a folder scrclf wrote; it was left "
            "alone. Move it away or choose another destination",
        )
    if not dest.is_dir():
        return
    try:
        foreign = foreign_files(dest)
    except OSError as err:
        raise _explain(err, dest) from err
    if foreign:
        shown = ", ".join(foreign[:3]) + (
            f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        )
        raise OutputError(
            errno.EEXIST,
            f"cannot write {dest}: it holds files that scrclf did not write ({shown}); "
            "they were left alone. Move them away or choose another destination",
        )


def _write_stamp(folder: Path, kind: str) -> None:
    from scrclf.version import __version__

    write_json(
        folder / STAMP_FILE,
        {"kind": kind, "written_by": f"scrclf {__version__}", "files": _files(folder)},
    )


@contextlib.contextmanager
def directory(dest: str | Path, overwrite: bool = True, stamp: str | None = None) -> Iterator[Path]:
    """Build a directory in a temporary sibling; on success swap it in for ``dest``.

    On any exception the temporary directory is removed and ``dest`` is left as it was.
    An existing ``dest`` is replaced only when it is empty or an earlier scrclf output with
    nothing else in it (:func:`foreign_files`); anything else is refused with an
    :class:`OutputError` before the build starts. ``stamp`` names the kind of output; the
    folder then gets a stamp file listing its files, so that it can be replaced later.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        recover_interrupted_swap(dest)
    except OSError as err:
        raise _explain(err, dest) from err
    if overwrite:
        check_replaceable(dest)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
    except OSError as err:
        raise _explain(err, dest) from err
    try:
        yield tmp
        if stamp is not None:
            _write_stamp(tmp, stamp)
        _make_ordinary(tmp)
        if dest.exists() or dest.is_symlink():
            if not overwrite:
                raise FileExistsError(f"{dest} exists; pass overwrite=True to replace it")
            check_replaceable(dest)  # it may have changed while the folder was built
            old = _previous(dest)
            if old.exists():
                shutil.rmtree(old)
            os.replace(dest, old)
            try:
                os.replace(tmp, dest)
            except OSError:
                os.replace(old, dest)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, FileExistsError):
            raise
        if isinstance(err, OutputError) and not _names_inside(err, tmp):
            raise
        # A file of the temporary folder failed: report it under its final name.
        cause = err.__cause__ if isinstance(err.__cause__, OSError) else err
        raise _explain(cause, _final_name(err, tmp, dest)) from err
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        native = _native_os_error(err)
        if native is not None:
            raise _explain(native, dest) from err
        raise


def shown_path(path: str | Path | None) -> str | None:
    """``path`` as reports and result files name it: relative to the project root
    (``$PROJECT_ROOT``, else the working directory) when it lies under it, so that results
    committed with the project hold no machine's folders; otherwise as given."""
    if path is None:
        return None
    given = Path(str(path))
    if not given.is_absolute():
        return given.as_posix()
    root = Path(os.environ.get("PROJECT_ROOT") or os.getcwd()).resolve()
    try:
        return given.resolve().relative_to(root).as_posix()
    except ValueError:
        return str(given)


def shown_paths(value: Any) -> Any:
    """:func:`shown_path` applied to every string in ``value`` (mappings and lists, as a
    resolved config holds them) that is an absolute path."""
    if isinstance(value, dict):
        return {k: shown_paths(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [shown_paths(v) for v in value]
    if isinstance(value, str) and value.startswith(os.sep) and "\n" not in value:
        return shown_path(value)
    return value
