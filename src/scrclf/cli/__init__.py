"""Command-line front ends: argument parsing only; each command calls one library function."""

from scrclf.cli.app import main

__all__ = ["main"]
