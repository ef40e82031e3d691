"""``bench ui``: Locust's web UI against a backend, with the project's TCP users.

Starts ``bench serve BACKEND --port 0`` (or, with ``--target``, uses a server already
running anywhere), then ``locust`` with the project's locustfile, the host filled in,
both user classes in the class picker (Locust ticks both; the users of the class that
does not match the server's mode stand aside, see :mod:`bench.loadgen.server_mode`) and the
custom arguments (message size, broadcast rate, request timeout, echo rate) in the start
form.
With ``--workers N`` Locust runs as a master with N local worker processes; with
``--master-bind-host`` other machines can join it (``bench worker --master HOST``).

The Locust host is ``tcp://HOST:PORT``, the form :func:`bench.loadgen.users.parse_host` reads.
This process never imports Locust or :mod:`bench.loadgen.users`: importing Locust
monkey-patches the interpreter (signals, sleep, subprocess), which a supervisor of
processes must not have.

With ``--target`` it probes the server first (:func:`bench.loadgen.mode_probe.probe`) and
says whether it echoes or broadcasts; when nothing answers there it warns (one line on
stderr) and starts anyway, since the server may be started later (the users probe again
at every test start). It also says which load engine the users run: the native one, or
the pure-Python users and why.

Prints the URL on stdout. Ctrl-C or SIGTERM stops the UI, the workers and the server
it started (SIGTERM, then SIGKILL after a grace period) and exits 0. A busy port, a
bad flag or a child that fails to start: one line on stderr, non-zero exit.
"""

from __future__ import annotations

import argparse
import sys

from bench.client import parse_target
from bench.loadgen import engine
from bench.loadgen.mode_probe import BROADCAST, ECHO, ProbeError, probe
from bench.procs import children as supervise
from bench.procs.server import ServerProcess, ServerStartError
from servers import backends, runtime
from servers.argtypes import EXIT_USAGE, non_negative_int, port_number

# The user class that matches each server mode (the class picker offers both).
USER_CLASS = supervise.USER_CLASS
DEFAULT_BACKEND = "gevent"  # the flagship
# Locust's hint for an interactive terminal; stdin is not one here.
LOCUST_NOISE = ("press enter to open your default browser",)
# Seconds the --target probe may take (a server that answers does in milliseconds).
TARGET_PROBE_TIMEOUT_S = 2.0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``bench ui`` to the ``bench`` subcommands."""
    p = sub.add_parser(
        "ui", help="open Locust's web UI against a backend",
        description="Start a backend (or use --target) and Locust's web UI with the echo and "
        "broadcast users. Ctrl-C stops everything it started.")
    p.add_argument("backend", nargs="?", choices=sorted(backends.BACKENDS), metavar="BACKEND",
                   help=f"backend to start (default {DEFAULT_BACKEND}): " + ", ".join(backends.BACKENDS))
    p.add_argument("--mode", choices=sorted(USER_CLASS), default="echo",
                   help="the server's mode: echo (EchoUser) or broadcast (BroadcastUser) (default echo)")
    p.add_argument("--target", metavar="HOST:PORT",
                   help="use a server already running there instead of starting one")
    p.add_argument("--web-host", default="127.0.0.1",
                   help="address the web UI listens on (default 127.0.0.1, this machine only)")
    p.add_argument("--web-port", type=port_number, default=8089,
                   help="web UI port (default 8089; 0 picks a free one)")
    p.add_argument("--workers", type=non_negative_int, default=0, metavar="N",
                   help="run Locust as a master with N local worker processes (default 0: one process)")
    p.add_argument("--master-bind-host", default=None, metavar="HOST",
                   help="run as a master listening for workers on HOST (e.g. 0.0.0.0 for other "
                   "machines); default 127.0.0.1 when --workers is given")
    p.add_argument("--master-port", type=port_number, default=supervise.DEFAULT_MASTER_PORT,
                   help=f"port workers connect to (default {supervise.DEFAULT_MASTER_PORT}; "
                   "0 picks a free one)")
    p.set_defaults(func=run)


def _fail(message: str, status: int = supervise.EXIT_STARTUP) -> int:
    print(f"bench ui: error: {message}", file=sys.stderr)
    return status


def _check_free(host: str, port: int, what: str) -> int:
    """Bind and release ``host:port``; return the port (the kernel's pick for 0).

    Raises:
        runtime.StartupError: busy or not bindable, naming ``what``.
    """
    if host == "*":
        host = ""
    try:
        sock = runtime.bind_listener(host or "0.0.0.0", port)
    except runtime.StartupError as exc:
        raise runtime.StartupError(f"{what}: {exc}") from None
    port = sock.getsockname()[1]
    sock.close()
    return port


def probe_target(host: str, port: int, address: str) -> str | None:
    """The mode of the server at ``--target`` (``echo`` or ``broadcast``), or None after
    one warning on stderr naming the problem (the UI starts anyway)."""
    try:
        return probe(host, port, TARGET_PROBE_TIMEOUT_S)
    except ProbeError as exc:
        print(f"warning: --target {address}: {exc}; starting anyway, the users will fail until a "
              "line server answers there", file=sys.stderr, flush=True)
        return None


def engine_line() -> str:
    """Which load engine Locust's users run, and why when it is not the native one."""
    reason = engine.why_unavailable()
    if not reason:
        return "load engine: native (the socket work runs in C, one thread per Locust process)"
    return f"load engine: pure-Python users ({reason})"


def users_line(mode: str | None) -> str:
    """What the class picker's two ticked classes do against a server in ``mode``."""
    if mode is None:
        return (f"users: {USER_CLASS[ECHO]} for echo servers, {USER_CLASS[BROADCAST]} for broadcast "
                "servers; each Locust process probes the server when a test starts and the other "
                "class's users stand aside.")
    other = next(c for m, c in USER_CLASS.items() if m != mode)
    return (f"users: {USER_CLASS[mode]} runs; {other} users stand aside (the server is in {mode} "
            f"mode): untick {other} in the start form so every user counts.")


def run(args: argparse.Namespace) -> int:
    """Run until SIGTERM/SIGINT or until a child dies. Returns the exit status."""
    if args.target and args.backend:
        return _fail("give a BACKEND to start or --target HOST:PORT, not both", EXIT_USAGE)
    if args.target:
        try:
            target_host, target_port = parse_target(args.target)
        except ValueError as exc:
            return _fail(f"--target: {exc}", EXIT_USAGE)
    master = args.workers > 0 or args.master_bind_host is not None
    bind_host = args.master_bind_host or "127.0.0.1"
    try:
        web_port = _check_free(args.web_host, args.web_port, "--web-port")
        master_port = _check_free(bind_host, args.master_port, "--master-port") if master else 0
    except runtime.StartupError as exc:
        return _fail(str(exc))
    if not runtime.is_loopback(args.web_host):
        print(f"warning: the web UI listens on {args.web_host or 'all interfaces'}; anyone who can "
              "reach it can start a load from this machine", file=sys.stderr)
    if master and not runtime.is_loopback(bind_host):
        print(f"warning: the Locust master listens on {bind_host}:{master_port}; any machine that "
              "reaches it can join as a worker", file=sys.stderr)

    server: ServerProcess | None = None  # the backend this started (none with --target)
    children: list[supervise.Child] = []  # the load: Locust and its local workers
    runtime.raise_stop_on_signals()
    try:
        if args.target:
            address = f"{supervise.url_host(target_host)}:{target_port}"
            mode = probe_target(target_host, target_port, address)
            what = f"server at {address}" + (f" ({mode})" if mode else " (not answering)")
        else:
            backend = args.backend or DEFAULT_BACKEND
            try:
                server = ServerProcess.serve(backend, "--mode", args.mode, session=True)
            except ServerStartError as exc:
                return _fail(str(exc))
            server.relay()
            address = server.url_address
            mode = args.mode
            what = f"{backend} backend ({args.mode}) at {address}"

        locust_args = ["--host", f"tcp://{address}", "--web-host", args.web_host,
                       "--web-port", str(web_port), "--class-picker", "--loglevel", "WARNING"]
        if master:
            locust_args += ["--master", "--master-bind-host", bind_host,
                            "--master-bind-port", str(master_port)]
        ui = supervise.Child("Locust", supervise.locust_command(*locust_args), skip=LOCUST_NOISE)
        children.append(ui)
        for n in range(args.workers):
            children.append(supervise.Child(f"worker {n + 1}", supervise.locust_worker_command(
                supervise.connect_host(bind_host), master_port)))

        web = supervise.connect_host(args.web_host)
        if not supervise.wait_for_port(web, web_port, supervise.WEB_READY_TIMEOUT_S, ui.alive):
            return _fail(f"Locust's web UI did not start: {ui.tail() or 'no output'}")
        for child in children:
            child.relay()
        url = f"http://{supervise.url_host(web)}:{web_port}/"
        if args.workers and not supervise.wait_for_workers(url, args.workers, supervise.WEB_READY_TIMEOUT_S):
            return _fail(f"the {args.workers} local Locust workers did not join the master")
        workers = f", {args.workers} local workers" if args.workers else ""
        joins = f"; workers join at {bind_host}:{master_port}" if master else ""
        print(f"Locust web UI: {url}", flush=True)
        print(f"target: {what}{workers}{joins}. Ctrl-C stops it all.", flush=True)
        print(users_line(mode), flush=True)
        print(engine_line(), flush=True)

        dead = supervise.watch(children + ([server] if server else []))
        return _fail(f"{dead.name} exited with status {dead.proc.returncode}: "
                     f"{dead.tail() or 'no output'}")
    except runtime.Stop:
        return 0
    finally:
        runtime.ignore_stop_signals()  # a second Ctrl-C must not cut the cleanup short
        # the load first (the master tells its workers to quit), then the server, so the
        # users are not reset by a server going away under them
        supervise.stop_all(children)
        if server is not None:
            server.close()
