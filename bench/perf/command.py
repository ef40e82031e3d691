"""``bench perf``: the performance table (echo vs the C ceiling, 1k/10k
connections with memory per connection, broadcast fan-out, the load generator's own
ceiling). A benchmark: it prints figures and asserts nothing.

Writes ``reports/perf-<UTC time>.json`` and ``.md`` (never overwriting a result).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from bench.perf import run as perf
from bench.procs import machine
from bench.procs.server import ServerStartError
from bench.perf.table import plain, render
from servers.runtime import raise_open_files_limit

# (echo seconds, rounds, scale connection counts, scale seconds, broadcast seconds, rounds)
FULL = {"seconds": 3.0, "rounds": 3, "conns": (1000, 10000), "scale_seconds": 3.0,
        "fan_seconds": 3.0, "fan_rounds": 2, "loadgen_seconds": 5.0}
QUICK = {"seconds": 1.0, "rounds": 1, "conns": (1000,), "scale_seconds": 1.0,
         "fan_seconds": 1.0, "fan_rounds": 1, "loadgen_seconds": 3.0}
# Fixed parameters, recorded in the result and passed to the runs from here alone.
SIZE = 64  # bytes per echo line / broadcast message
ECHO_CONNS = 100  # connections of the echo table and of the load generator's ceiling
FAN_CONNS = 100  # broadcast receivers
FAN_SENDERS = 10  # broadcast senders among them


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("perf", help="echo/broadcast throughput vs the C ceiling (benchmark)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tools", type=Path, default=perf.DEFAULT_TOOLS, metavar="DIR",
                   help=f"directory of the C tools ceiling/echoload/fanload (default {perf.DEFAULT_TOOLS})")
    p.add_argument("--quick", action="store_true",
                   help="one short round, 1,000 connections only: a smoke run of a minute or two")
    p.add_argument("--conns", type=int, nargs="+", metavar="N",
                   help="connection counts of the scale table (default 1000 10000)")
    p.add_argument("--skip", nargs="+", default=[], choices=["echo", "scale", "broadcast", "loadgen"],
                   help="parts to leave out")
    p.add_argument("--only", nargs="+", metavar="SERVER",
                   help="measure only these servers (names as in the tables; the references "
                   "ceiling and the bare uvloop server are kept in the echo table)")
    p.add_argument("--out", type=Path, default=machine.PROJECT_ROOT / "reports", metavar="DIR",
                   help="where perf-<time>.json/.md go (default reports/)")
    p.set_defaults(func=run)


def _machine() -> str:
    return f"{machine.one_line()}; server on CPU {perf.SERVER_CPU}, clients on CPU {perf.CLIENT_CPU}"


def _nofile(soft: int, hard: int) -> str:
    """What raise_open_files_limit() achieved, as it is (it may fail, or stop short of an
    unlimited hard limit)."""
    if soft == hard == -1:
        return "unknown (no resource module)"
    if soft == hard:
        return f"soft {soft}, hard {hard} (soft at the hard limit for the clients and servers)"
    return f"soft {soft}, hard {hard} (soft below the hard limit: it could not be raised further)"


def run(args: argparse.Namespace) -> int:
    try:
        tools = perf.find_tools(args.tools.resolve())
    except perf.ToolsMissing as exc:
        print(f"bench perf: error: {exc}", file=sys.stderr)
        return 1
    cfg = dict(QUICK if args.quick else FULL)
    if args.conns:
        cfg["conns"] = tuple(args.conns)
    # The C clients inherit this process's limit: 10,000 client sockets need it raised too
    # (each server raises its own in servers.main).
    soft, hard = raise_open_files_limit()
    nofile = _nofile(soft, hard)
    print(f"open-files limit: {nofile}", flush=True)
    if max(cfg["conns"]) + 100 > soft > 0:
        print(f"warning: {max(cfg['conns'])} connections need more than the open-files limit {soft}",
              file=sys.stderr)

    def log(msg: str) -> None:
        print(f"  {msg}", file=sys.stderr, flush=True)

    result: dict = {"schema": "sockbench-perf/1", "machine": _machine(), "nofile": nofile,
                    "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "quick": args.quick, "size": SIZE, "echo_conns": ECHO_CONNS, "fan_conns": FAN_CONNS,
                    "fan_senders": FAN_SENDERS}

    def chosen(names: list[str], keep: tuple[str, ...] = ()) -> list[str]:
        return [n for n in names if not args.only or n in args.only or n in keep]

    try:
        if "echo" not in args.skip:
            result["echo"] = perf.echo_rounds(tools, chosen(perf.ECHO_SERVERS, ("ceiling", perf.UVLOOP_REFERENCE)),
                                              ECHO_CONNS, SIZE, cfg["seconds"], cfg["rounds"], log)
        if "scale" not in args.skip:
            result["scale"] = {name: {str(n): perf.scale_run(tools, name, n, SIZE, cfg["scale_seconds"], log)
                                      for n in cfg["conns"]} for name in chosen(perf.SCALE_SERVERS)}
        if "broadcast" not in args.skip:
            result["broadcast"] = perf.broadcast_rounds(tools, chosen(perf.BROADCAST_SERVERS, ("threading",)),
                                                        FAN_CONNS, FAN_SENDERS, SIZE, cfg["fan_seconds"],
                                                        cfg["fan_rounds"], log)
        if "loadgen" not in args.skip:
            result["loadgen"] = perf.loadgen_ceiling(tools, "gevent", ECHO_CONNS, SIZE, cfg["loadgen_seconds"], log)
    except ServerStartError as exc:
        print(f"bench perf: error: {exc}", file=sys.stderr)
        return 1

    print(render(result, table=plain))
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    base = args.out / f"perf-{stamp}"
    (base.with_suffix(".json")).write_text(json.dumps(result, indent=1) + "\n")
    (base.with_suffix(".md")).write_text(render(result))
    print(f"wrote {base}.json and {base}.md")
    return 0
