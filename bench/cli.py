"""``bench``: the command line. Each subcommand lives in its own module; this file
only wires argparse to them.

Usage errors exit 2 (argparse's convention) with one line on stderr.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Callable

from bench import client
from bench.compare import command as compare_cmd
from bench.perf import command as perf_cmd
from bench.reliability import command as reliability_cmd
from bench.compare import report_command as report_cmd
from bench.ui import command as ui_cmd
from bench.ui import worker as worker_cmd
from servers import main as serve_main
from servers.argtypes import SubcommandParser, UsageParser


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run one backend", description="Run one backend server. "
                       "The first stdout line is 'READY HOST:PORT'.")
    serve_main.add_arguments(p)
    p.set_defaults(func=serve_main.run)


def _add_client(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("client", help="talk to a server like telnet",
                       description="Send lines from stdin, print what arrives.")
    client.add_arguments(p)
    p.set_defaults(func=client.run)


# One registrar per subcommand, in --help order; each adds its parser and sets ``func``.
# Subcommand modules import their heavy dependencies (Locust, matplotlib) inside their
# run functions, so `bench serve` never loads Locust's monkey-patching.
REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_serve,
    _add_client,
    compare_cmd.register,
    report_cmd.register,
    ui_cmd.register,
    worker_cmd.register,
    perf_cmd.register,
    reliability_cmd.register,
]


def _version() -> str:
    try:
        return version("sockbench")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = UsageParser(prog="bench", description="sockbench: compare Python "
                         "concurrency models for a TCP line server.")
    parser.add_argument("--version", action="version", version=f"bench (sockbench) {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=SubcommandParser)
    sub.required = True
    for register in REGISTRARS:
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
