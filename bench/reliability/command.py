"""``bench reliability``: the adversarial matrix, the soak and the leak check, printed
as the README's Markdown "Reliability" section.

Exit status: 0 when everything that applies passed, 1 otherwise, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
from pathlib import Path

from servers import runtime
from servers.argtypes import backend_list_with_variants, positive_float, positive_int

# Full-size figures (the README's tables) and the --quick ones.
FULL = {"soak_clients": 200, "soak_seconds": 60.0, "leak_connections": 1000}
QUICK = {"soak_clients": 50, "soak_seconds": 5.0, "leak_connections": 300}


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``bench reliability`` to the ``bench`` command."""
    from servers.backends import BACKENDS, VARIANTS

    names = list(BACKENDS) + list(VARIANTS)  # asyncio+uvloop runs as a column of its own

    p = sub.add_parser("reliability", help="fault cases x backends, soak and leak check",
                       description="Run every fault case against every backend (real servers on "
                       "127.0.0.1, port 0), a broadcast soak and a leak check, and print the "
                       "outcome as a Markdown table.")
    p.add_argument("--backends", type=backend_list_with_variants, default=None, metavar="LIST",
                   help=f"comma-separated backends (default: all: {','.join(names)}; "
                   "asyncio+uvloop only when uvloop is installed)")
    p.add_argument("--soak-seconds", type=positive_float, default=None, metavar="S",
                   help=f"soak length (default {FULL['soak_seconds']:g}; --quick: {QUICK['soak_seconds']:g})")
    p.add_argument("--soak-clients", type=positive_int, default=None, metavar="N",
                   help=f"soak clients (default {FULL['soak_clients']}; --quick: {QUICK['soak_clients']})")
    p.add_argument("--soak-rate", type=positive_float, default=None, metavar="LINES",
                   help="lines per second sent into the soak's room (default 200)")
    p.add_argument("--leak-connections", type=positive_int, default=None, metavar="N",
                   help=f"connections per leak cycle (default {FULL['leak_connections']}; "
                   f"--quick: {QUICK['leak_connections']})")
    p.add_argument("--quick", action="store_true",
                   help=f"a small soak ({QUICK['soak_clients']} clients for {QUICK['soak_seconds']:g} s) "
                   f"and leak check ({QUICK['leak_connections']} connections per cycle); the cases are the same")
    p.add_argument("--markdown", type=Path, metavar="PATH", help="also write the Markdown here")
    p.set_defaults(func=run)


# A variant that needs a package the plain install lacks: variant -> that module.
VARIANT_NEEDS = {"asyncio+uvloop": "uvloop"}


def default_backends() -> list[str]:
    """Every backend and variant, leaving out (with one line on stderr) a variant whose
    package is not installed: ``pip install -e .`` brings no uvloop, and a column of
    failures would say nothing about the servers."""
    from servers.backends import BACKENDS, VARIANTS

    names = list(BACKENDS)
    for variant in VARIANTS:
        module = VARIANT_NEEDS.get(variant)
        if module is not None and not _importable(module):
            print(f"bench reliability: {variant} left out: {module} is not installed "
                  f"(pip install {module})", file=sys.stderr)
            continue
        names.append(variant)
    return names


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def run(args: argparse.Namespace) -> int:
    from bench.reliability.matrix import DEFAULT_SOAK_RATE, all_passed, render_markdown, run_all

    backends = args.backends if args.backends is not None else default_backends()
    sizes = QUICK if args.quick else FULL
    clients = args.soak_clients or sizes["soak_clients"]
    seconds = args.soak_seconds or sizes["soak_seconds"]
    leak = args.leak_connections or sizes["leak_connections"]
    rate = args.soak_rate or DEFAULT_SOAK_RATE
    if args.markdown is not None and not args.markdown.parent.is_dir():
        print(f"bench reliability: error: directory {args.markdown.parent} does not exist", file=sys.stderr)
        return 2
    # The soak and the leak check hold thousands of client sockets.
    soft, _ = runtime.raise_open_files_limit()
    print(f"open-files soft limit: {soft} (raised to the hard limit)", file=sys.stderr)
    report = run_all(backends, clients, seconds, rate, leak,
                     progress=lambda line: print(line, file=sys.stderr, flush=True))
    report.command = "bench reliability " + " ".join(shlex.quote(a) for a in sys.argv[2:]) \
        if len(sys.argv) > 2 and sys.argv[1] == "reliability" else "bench reliability"
    text = render_markdown(report)
    print(text)
    if args.markdown is not None:
        args.markdown.write_text(text)
    return 0 if all_passed(report) else 1
