"""``bench worker --master HOST``: Locust worker processes that join a master elsewhere.

The master (``bench ui --master-bind-host 0.0.0.0``, or any ``locust --master`` with
the project's locustfile) decides users, spawn rate, host and the custom arguments;
a worker only needs to know where the master is. Each worker records microsecond
latencies and sends them with every report, so the master's histograms cover every
machine.

Runs until the master quits (the workers exit with it) or until Ctrl-C/SIGTERM,
which stops every worker it started and exits 0. A worker that fails is reported at
once (one line on stderr) and the others are stopped: exit status 1.
"""

from __future__ import annotations

import argparse
import socket
import sys

from bench.procs import children as supervise
from servers import runtime
from servers.argtypes import port_number, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``bench worker`` to the ``bench`` subcommands."""
    p = sub.add_parser(
        "worker", help="run Locust workers that join a master on another machine",
        description="Run Locust worker processes with the project's users; they take their "
        "orders from the master at --master.")
    p.add_argument("--master", required=True, metavar="HOST",
                   help="the machine running the Locust master (bench ui --master-bind-host ...)")
    p.add_argument("--master-port", type=port_number, default=supervise.DEFAULT_MASTER_PORT,
                   help=f"the master's port (default {supervise.DEFAULT_MASTER_PORT})")
    p.add_argument("--processes", type=positive_int, default=1, metavar="N",
                   help="worker processes to run here, about one per free core (default 1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the workers until they exit or a signal arrives. Returns the exit status."""
    try:
        socket.getaddrinfo(args.master, args.master_port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        print(f"bench worker: error: cannot resolve master {args.master!r}: {exc.strerror}",
              file=sys.stderr)
        return supervise.EXIT_STARTUP
    children: list[supervise.Child] = []
    runtime.raise_stop_on_signals()
    try:
        for n in range(args.processes):
            child = supervise.Child(f"worker {n + 1}", supervise.locust_worker_command(
                args.master, args.master_port))
            children.append(child)
            child.relay()
        print(f"{args.processes} worker process(es) joining the master at "
              f"{supervise.url_host(args.master)}:{args.master_port}. Ctrl-C stops them.", flush=True)
        # All exit when the master quits; a crash is reported as soon as it happens,
        # whichever worker it is, and stops the rest.
        running = list(children)
        while running:
            done = supervise.watch(running)
            running.remove(done)
            if done.proc.returncode != 0:
                print(f"bench worker: error: {done.name} exited with status "
                      f"{done.proc.returncode}: {done.tail() or 'no output'}", file=sys.stderr)
                return supervise.EXIT_STARTUP
        return 0
    except runtime.Stop:
        return 0
    finally:
        runtime.ignore_stop_signals()  # a second Ctrl-C must not cut the cleanup short
        supervise.stop_all(children)
