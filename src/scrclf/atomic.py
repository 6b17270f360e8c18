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


@contextlib.contextmanager
def open_for_write(path: str | Path, mode: str = "wb", **open_kwargs) -> Iterator[IO]:
    """Stream into a temporary sibling of ``path``; rename it into place on success.

    On any exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
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


@contextlib.contextmanager
def directory(dest: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Build a directory in a temporary sibling; on success swap it in for ``dest``.

    On any exception the temporary directory is removed and ``dest`` is left as it was.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        recover_interrupted_swap(dest)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
    except OSError as err:
        raise _explain(err, dest) from err
    try:
        yield tmp
        _make_ordinary(tmp)
        if dest.exists():
            if not overwrite:
                raise FileExistsError(f"{dest} exists; pass overwrite=True to replace it")
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
