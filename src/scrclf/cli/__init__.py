"""Command-line front ends: argument parsing only; each command calls one library function."""

from scrclf.cli.main import main

__all__ = ["main"]
