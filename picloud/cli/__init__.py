"""The `picloud` command line.

Each area of the CLI lives in its own module with a `register(subparsers)`
function that adds its commands; a command's handler returns the exit status.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from picloud.config import SettingsError

# Modules under picloud.cli that contribute commands, in the order `--help` lists them.
COMMAND_MODULES = ("run", "server", "client")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="picloud",
        description="PiCloud: upload a Rhai script, get an HTTP endpoint.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"picloud.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"picloud.cli.{name}":
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except SettingsError as exc:
        print(f"picloud: {exc}", file=sys.stderr)
        return 2
