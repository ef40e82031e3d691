"""``bench``: the command line. Each subcommand lives in its own module; this file
only wires argparse to them.

Usage errors exit 2 (argparse's convention) with one line on stderr.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from bench import compare_cmd, report_cmd, ui_cmd, worker_cmd
from servers import main as serve_main


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run one backend", description="Run one backend server. "
                       "The first stdout line is 'READY HOST:PORT'.")
    serve_main.add_arguments(p)
    p.set_defaults(func=serve_main.run)


def _add_client(sub: argparse._SubParsersAction) -> None:
    from bench import client

    p = sub.add_parser("client", help="talk to a server like telnet",
                       description="Send lines from stdin, print what arrives.")
    client.add_arguments(p)
    p.set_defaults(func=client.run)


# One registrar per subcommand; each adds its parser and sets ``func``.
REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = [_add_serve, _add_client, report_cmd.register, compare_cmd.register, ui_cmd.register, worker_cmd.register]
REGISTRARS.append(__import__("bench.reliability_cmd", fromlist=["register"]).register)
REGISTRARS.append(__import__("bench.perf_cmd", fromlist=["register"]).register)


def build_parser() -> argparse.ArgumentParser:
    parser = serve_main.UsageParser(prog="bench", description="sockbench: compare Python "
                                    "concurrency models for a TCP line server.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=serve_main.UsageParser)
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
