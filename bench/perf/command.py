"""``bench perf``: the servers at the limit, measured with the project's native load engine.

For the flagship (gevent) next to the other backends, the bare uvloop Protocol server
and the project's C echo server (the physical limit): echo round trips/s and p99 at 100
and 10,000 connections (p99 against the Little's-law mean), server memory per idle
connection, the worst round trip while 5,000 clients leave at once, and broadcast relay;
then the load generator's own ceiling (Locust with the engine vs the engine alone).
Servers run pinned to CPU 0, clients to CPU 1, in interleaved rounds; the table shows
medians and ratios measured in the same run. A benchmark: it prints figures and asserts
nothing. Needs the native engine (built by pip install when a C compiler is present).

Writes ``reports/perf-<UTC time>.json`` and ``.md`` (never overwriting a result).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from bench.loadgen.engine import why_unavailable
from bench.perf import loadgen, probes
from bench.perf import run as perf_run
from bench.perf.table import plain, render
from bench.procs import machine
from bench.procs.server import ServerStartError
from servers.argtypes import positive_int
from servers.runtime import raise_open_files_limit

FULL = probes.Sizes()
QUICK = probes.Sizes(rounds=1, seconds=1.0, many=1_000, idle=1_000, window=1.0)
LOADGEN = {"full": (3, 3.0), "quick": (1, 1.0)}  # rounds, seconds of the load generator table
PARTS = (*probes.PROBES, "loadgen")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("perf", help="the servers at the limit, with the native load engine (benchmark)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="one short round, 1,000 connections instead of 10,000 and 5,000: a smoke run")
    p.add_argument("--rounds", type=positive_int, metavar="N", help="interleaved rounds (default 3, 1 with --quick)")
    p.add_argument("--skip", nargs="+", default=[], choices=PARTS, help="parts to leave out")
    p.add_argument("--only", nargs="+", metavar="SERVER",
                   help="measure only these servers (names as in the table; the flagship, the C echo "
                   "server and the bare uvloop server are always kept)")
    p.add_argument("--tools", type=Path, default=perf_run.DEFAULT_TOOLS, metavar="DIR",
                   help="C reference tools (ceiling, echoload): when there, the load generator "
                   f"table compares with them; never required (default {perf_run.DEFAULT_TOOLS})")
    p.add_argument("--against", type=Path, metavar="CHECKOUT",
                   help="also measure the flagship as another checkout of this project serves it "
                   "(e.g. one made with git worktree add), as a column of its own next to this "
                   "checkout's: a change's effect, measured side by side in one run")
    p.add_argument("--out", type=Path, default=machine.PROJECT_ROOT / "reports", metavar="DIR",
                   help="where perf-<time>.json/.md go (default reports/)")
    p.set_defaults(func=run)


def _nofile(soft: int, hard: int) -> str:
    """What raise_open_files_limit() achieved, as it is."""
    if soft == hard == -1:
        return "unknown (no resource module)"
    if soft == hard:
        return f"soft raised to the hard limit {hard}"
    return f"soft {soft}, hard {hard} (could not be raised further)"


def servers(only: list[str] | None, skipped: list[str]) -> list[str]:
    """The table's columns: the chosen servers, minus those needing a missing uvloop
    (said once in ``skipped``)."""
    keep = (perf_run.FLAGSHIP, perf_run.CEILING, perf_run.UVLOOP_REFERENCE)
    names = [n for n in perf_run.COLUMNS if not only or n in only or n in keep]
    why = perf_run.uvloop_missing()
    if why:
        names = [n for n in names if n not in perf_run.NEEDS_UVLOOP]
        skipped.append(f"the uvloop rows ({', '.join(perf_run.NEEDS_UVLOOP)}): uvloop is not installed ({why})")
    return names


def run(args: argparse.Namespace) -> int:
    """``bench perf``: measure, print the tables, write the report; 0, or 1 with one error line."""
    reason = why_unavailable()
    if reason:
        print(f"bench perf: error: it drives the servers with the native engine, and {reason}",
              file=sys.stderr)
        return 1
    unknown = [n for n in args.only or [] if n not in perf_run.COLUMNS]
    if unknown:
        print(f"bench perf: error: unknown server(s): {', '.join(unknown)} "
              f"(choose from: {', '.join(perf_run.COLUMNS)})", file=sys.stderr)
        return 2
    if args.against is not None and not perf_run.is_checkout(args.against):
        print(f"bench perf: error: --against {args.against}: not a checkout of this project "
              "(no servers/__main__.py there)", file=sys.stderr)
        return 2
    sizes = QUICK if args.quick else FULL
    if args.rounds:
        sizes = probes.Sizes(**{**sizes.as_dict(), "rounds": args.rounds})
    # The client processes and the idle holders inherit this limit: 10,000 client
    # sockets need it raised (each server raises its own in servers.main).
    soft, hard = raise_open_files_limit()
    nofile = _nofile(soft, hard)
    print(f"open-files limit: {nofile}", flush=True)
    if 0 < soft < max(sizes.many, sizes.idle) + 100:
        print(f"warning: {max(sizes.many, sizes.idle):,} connections need more than the open-files "
              f"limit {soft}", file=sys.stderr)
    skipped: list[str] = []
    names = servers(args.only, skipped)
    against: dict[str, str] = {}
    if args.against is not None:
        column = perf_run.against_column(args.against)
        perf_run.CHECKOUTS[column] = args.against.resolve()
        names.insert(names.index(perf_run.FLAGSHIP) + 1, column)
        against[column] = perf_run.FLAGSHIP
    for line in skipped:
        print(f"skipping {line}", flush=True)

    def log(msg: str) -> None:
        print(f"  {msg}", file=sys.stderr, flush=True)

    result: dict = {"schema": "sockbench-perf/2", "nofile": nofile, "quick": args.quick,
                    "machine": f"{machine.one_line()}; servers on CPU {perf_run.SERVER_CPU}, "
                    f"clients on CPU {perf_run.CLIENT_CPU}",
                    "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "sizes": sizes.as_dict(), "servers": names, "skipped": skipped}
    if against:
        result["against"] = {column: {"backend": backend, "checkout": str(perf_run.CHECKOUTS[column])}
                             for column, backend in against.items()}
    chosen = tuple(p for p in probes.PROBES if p not in args.skip)
    try:
        if chosen:
            result["values"] = probes.measure(sizes, chosen, names, log)
        if "loadgen" not in args.skip:
            rounds, seconds = LOADGEN["quick" if args.quick else "full"]
            result["loadgen"] = loadgen.measure(sizes.few, seconds, 1.0, args.rounds or rounds,
                                                args.tools, log,
                                                tools_server=False)
    except ServerStartError as exc:
        print(f"bench perf: error: {exc}", file=sys.stderr)
        return 1

    print(render({**result, "skipped": []}, table=plain))  # skips were said at the start
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    base = args.out / f"perf-{stamp}"
    base.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    base.with_suffix(".md").write_text(render(result))
    print(f"wrote {base}.json and {base}.md")
    return 0
