"""Bundling an exported model as a pip-installable wheel, built offline with the stdlib.

The wheel ``scrclf_model_<name>-<version>-py3-none-any.whl`` holds one small package,
``scrclf_model_<name>``, with the export folder as package data under ``model/``::

    import scrclf_model_<name> as bundled
    clf = bundled.load()                # scrclf.load(<bundled folder>, ...)
    folder = bundled.get_model_path()   # the installed export folder

It depends on the scrclf runtime alone (``scrclf`` without extras: onnxruntime, tokenizers,
numpy), so ``pip install --find-links <folder with both wheels> <model wheel>`` gives a
torch-free environment that predicts with the ONNX graph. Only
files listed in the export's ``manifest.json`` (and the manifest itself) are bundled, so the
installed copy is verified by the same checksums. Archive entries carry a fixed timestamp:
the same export gives the same wheel bytes.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import zipfile
from pathlib import Path

from scrclf import atomic
from scrclf.errors import PackagingError  # noqa: F401 (re-exported)
from scrclf.inference.classifier import MANIFEST_FILE, inside
from scrclf.version import __version__

# 1980-01-01, the earliest timestamp a zip entry can hold.
ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)
NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")


def module_name(name: str) -> str:
    """``scrclf_model_<name>`` with the name lower-cased and non-alphanumerics as ``_``."""
    if not NAME_RE.match(name):
        raise PackagingError(
            f"name={name!r}: use letters, digits, '.', '-' and '_' only, "
            "starting and ending with a letter or digit"
        )
    return "scrclf_model_" + re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def check_version(version: str) -> str:
    """A PEP 440 version string, or an error naming the setting."""
    from packaging.version import InvalidVersion, Version

    try:
        return str(Version(str(version)))
    except InvalidVersion:
        raise PackagingError(
            f"wheel_version={version!r} is not a PEP 440 version (e.g. 1.0.0)"
        ) from None


def _record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _loader_source(name: str, version: str) -> str:
    return f'''"""The scrclf model '{name}' (version {version}), bundled as package data.

    import {module_name(name)} as bundled
    clf = bundled.load()              # the ONNX graph; backend="torch" needs scrclf[train]
    clf.predict(["The board should ..."])
"""

from pathlib import Path

__version__ = "{version}"
MODEL_NAME = "{name}"


def get_model_path() -> str:
    """The installed model folder (an scrclf export folder)."""
    return str(Path(__file__).resolve().parent / "model")


def load(**kwargs):
    """``scrclf.load`` on the bundled folder; keyword arguments are passed through."""
    import scrclf

    return scrclf.load(get_model_path(), **kwargs)
'''


def _metadata(dist: str, version: str, name: str, card: str) -> str:
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {dist}",
        f"Version: {version}",
        f"Summary: The scrclf model '{name}' with its ONNX graphs, bundled for pip",
        "License: Apache-2.0",
        "Requires-Python: >=3.10",
        f"Requires-Dist: scrclf>={__version__}",
        "Description-Content-Type: text/markdown",
    ]
    return "\n".join(lines) + "\n\n" + card


def _wheel_file() -> str:
    return (
        "\n".join(
            [
                "Wheel-Version: 1.0",
                f"Generator: scrclf.export.wheel {__version__}",
                "Root-Is-Purelib: true",
                "Tag: py3-none-any",
            ]
        )
        + "\n"
    )


def build_wheel(
    model_dir: str | Path, out_dir: str | Path, name: str, version: str = "1.0.0"
) -> Path:
    """Build the wheel of the export at ``model_dir`` into ``out_dir``; return its path.

    ``model_dir`` must hold ``manifest.json``: exactly the files it lists are bundled.
    """
    model_dir = Path(model_dir)
    version = check_version(version)
    package = module_name(name)
    manifest_path = model_dir / MANIFEST_FILE
    if not manifest_path.is_file():
        raise PackagingError(f"{manifest_path}: missing; only a finished export can be bundled")
    listed = sorted(json.loads(manifest_path.read_text(encoding="utf-8"))["files"])
    files = [inside(model_dir, rel, manifest_path) for rel in listed] + [manifest_path]
    card_path = model_dir / "README.md"
    card = card_path.read_text(encoding="utf-8") if card_path.is_file() else ""

    dist_info = f"{package}-{version}.dist-info"
    entries: list[tuple[str, bytes]] = [
        (f"{package}/__init__.py", _loader_source(name, version).encode("utf-8"))
    ]
    for path in files:
        rel = path.relative_to(model_dir).as_posix()
        entries.append((f"{package}/model/{rel}", path.read_bytes()))
    dist_name = "scrclf-model-" + re.sub(r"[-_.]+", "-", name.lower())
    entries.append(
        (f"{dist_info}/METADATA", _metadata(dist_name, version, name, card).encode("utf-8"))
    )
    entries.append((f"{dist_info}/WHEEL", _wheel_file().encode("utf-8")))
    entries.append((f"{dist_info}/top_level.txt", f"{package}\n".encode()))
    record = "".join(f"{arc},{_record_hash(data)},{len(data)}\n" for arc, data in entries)
    record += f"{dist_info}/RECORD,,\n"
    entries.append((f"{dist_info}/RECORD", record.encode("utf-8")))

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for arc, data in entries:
            info = zipfile.ZipInfo(arc, date_time=ZIP_TIMESTAMP)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    wheel_path = Path(out_dir) / f"{package}-{version}-py3-none-any.whl"
    atomic.write_bytes(wheel_path, buffer.getvalue())
    return wheel_path


# --------------------------------------------------------------------------- wheelhouse


def wheel_requirements(wheel: str | Path) -> list[str]:
    """The ``Requires-Dist`` lines of a wheel's metadata."""
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        lines = zf.read(name).decode("utf-8").splitlines()
    return [line.split(":", 1)[1].strip() for line in lines if line.startswith("Requires-Dist:")]


def pinned_closure(requirements: list[str]) -> list[str]:
    """``name==version`` of every distribution that ``requirements`` (without extras) need,
    followed through their own requirements, at the versions installed in this environment:
    what ``pip download --no-deps`` fetches to fill a folder of wheels for an offline install
    of the same environment."""
    from importlib import metadata

    from packaging.requirements import Requirement

    pinned: dict[str, str] = {}
    pending = [Requirement(r) for r in requirements]
    while pending:
        req = pending.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        key = re.sub(r"[-_.]+", "-", req.name).lower()
        if key in pinned:
            continue
        try:
            pinned[key] = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            raise PackagingError(f"{req.name} (required by the runtime) is not installed") from None
        pending.extend(Requirement(r) for r in metadata.requires(req.name) or [])
    return sorted(f"{name}=={version}" for name, version in pinned.items())
