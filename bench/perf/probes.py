"""Probes for the flagship's behaviour at the limit, each returning plain numbers.

* :func:`echo_probe`: round trips/s and p99 at N connections (the C ``echoload`` client),
  with the Little's-law mean latency (connections / rate) that p99 is judged against;
* :func:`idle_memory_probe`: server RSS growth per idle connection (5,000 clients that
  each made one round trip, then went silent), read with psutil;
* :func:`mass_disconnect_probe`: the worst round trip a fresh client sees while 5,000
  other clients leave at once (their holding process exits, so the kernel closes all
  their sockets in one go);
* :func:`broadcast_probe`: lines relayed per second (the C ``fanload`` client).

Servers run pinned to CPU 0 and clients to CPU 1 (``bench.perf``'s launcher). The
machine may be shared, so ``python -m bench.perf_probes`` runs every probe in
interleaved rounds and prints medians and ratios measured in the same run. A benchmark:
it prints figures and asserts nothing.

usage: python -m bench.perf_probes [--tools DIR] [--rounds N] [--seconds S] [--probes ...]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import psutil

from bench import perf
from bench.perf_table import UVLOOP_REFERENCE, plain
from bench.ready import read_first_line
from servers.runtime import raise_open_files_limit

LINE = b"x" * 63 + b"\n"  # 64-byte lines, as echoload and fanload send
MANY, FEW = 10_000, 100
IDLE_CONNS = 5_000
HOLD_TIMEOUT = 60.0  # seconds to open and warm the idle clients


def _extra(conns: int, mode: str = "echo") -> list[str]:
    """Server flags: room for ``conns`` clients (+ probes), timeouts that cannot strike."""
    return ["--max-clients", str(conns + 100), "--mode", mode]


def echo_probe(tools: dict[str, Path], name: str, conns: int, seconds: float,
               warmup: float = 1.0) -> dict[str, Any]:
    """echoload at ``conns`` connections against a fresh ``name`` server.

    Returns echoload's figures (rps, p50_us, p99_us, ...) plus ``little_us``, the mean
    latency Little's law gives for a closed loop (conns / rps), and ``p99_over_mean``.
    """
    with perf.server(name, tools, _extra(conns) if name in perf.SERVERS else ()) as (pid, port):
        run = perf.run_tool(tools["echoload"], [port, conns, seconds, 64, warmup], pid,
                            seconds + warmup + 120)
    if run.get("round_trips") and run.get("server_cpu_s"):
        # What the server does per second of its own CPU: steadier than rps when other
        # processes take CPU 0 now and then.
        run["capacity"] = run["round_trips"] / run["server_cpu_s"]
    if run.get("rps"):
        run["little_us"] = conns / run["rps"] * 1e6
        run["p99_over_mean"] = run["p99_us"] / run["little_us"]
    return run


def broadcast_probe(tools: dict[str, Path], name: str, conns: int = 100, senders: int = 10,
                    seconds: float = 3.0) -> dict[str, Any]:
    """fanload (``conns`` clients, ``senders`` of them talking) on a broadcast server."""
    with perf.server(name, tools, _extra(conns, "broadcast")) as (pid, port):
        return perf.run_tool(tools["fanload"], [port, conns, senders, seconds, 64, 1], pid, seconds + 60)


def hold(port: int, conns: int) -> None:
    """Child process: open ``conns`` clients, one round trip each, print OPEN, then wait
    for a line on stdin and exit at once, leaving the kernel to close every socket."""
    raise_open_files_limit()
    socks = []
    for _ in range(conns):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(LINE)
        _recv_exactly(s, len(LINE))
        socks.append(s)
    print("OPEN", flush=True)
    sys.stdin.readline()
    os._exit(0)


def _recv_exactly(sock: socket.socket, n: int) -> None:
    got = 0
    while got < n:
        chunk = sock.recv(n - got)
        if not chunk:
            raise ConnectionError("server closed the connection")
        got += len(chunk)


def _holder(port: int, conns: int) -> subprocess.Popen:
    """Start :func:`hold` pinned to the client CPU, at the lowest priority (so the
    kernel's work of closing its sockets when it exits does not delay the probe client
    sharing that CPU); return once its clients are open."""
    pin = perf.pinned(perf.CLIENT_CPU)

    def setup() -> None:
        pin()
        os.nice(19)

    proc = subprocess.Popen([sys.executable, "-c", f"from bench.perf_probes import hold; hold({port}, {conns})"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=perf.PROJECT_ROOT, preexec_fn=setup)
    line = read_first_line(proc.stdout, HOLD_TIMEOUT)
    if line.strip() != "OPEN":
        proc.kill()
        proc.wait()
        raise RuntimeError(f"could not open {conns} idle clients")
    return proc


def _settled_rss(proc: psutil.Process, limit: float = 10.0) -> int:
    """RSS (bytes) once it has not changed for 0.5 s."""
    deadline = time.monotonic() + limit
    last, since = proc.memory_info().rss, time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < 0.5:
        time.sleep(0.1)
        now = proc.memory_info().rss
        if now != last:
            last, since = now, time.monotonic()
    return last


def idle_memory_probe(tools: dict[str, Path], name: str, conns: int = IDLE_CONNS) -> dict[str, Any]:
    """Server RSS growth per idle client, in KiB, over ``conns`` clients that each made
    one round trip and then went silent (a few warm-up clients come and go first)."""
    with perf.server(name, tools, _extra(conns) if name in perf.SERVERS else ()) as (pid, port):
        server = psutil.Process(pid)
        warm = _holder(port, 50)
        warm.stdin.write("\n")
        warm.stdin.flush()
        warm.wait()
        time.sleep(0.3)
        base = _settled_rss(server)
        held = _holder(port, conns)
        try:
            grown = _settled_rss(server)
        finally:
            held.kill()
            held.wait()
    return {"kib_per_conn": (grown - base) / 1024 / conns, "rss_base_kib": base // 1024,
            "rss_idle_kib": grown // 1024}


def mass_disconnect_probe(tools: dict[str, Path], name: str, conns: int = IDLE_CONNS,
                          window: float = 3.0) -> dict[str, Any]:
    """Worst round trip (ms) of a fresh client while ``conns`` clients leave at once.

    The probe client sends a line, waits for it, and repeats, from just before the
    others leave until ``window`` seconds after (its last round trip is allowed to run
    over). ``before_ms`` is its median round trip before they leave.
    """
    with perf.server(name, tools, _extra(conns) if name in perf.SERVERS else ()) as (pid, port):
        held = _holder(port, conns)
        probe = socket.create_connection(("127.0.0.1", port), timeout=30)
        probe.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rtts: list[tuple[float, float]] = []  # (start, seconds)
        stop = threading.Event()

        failed: list[str] = []

        def loop() -> None:
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    probe.sendall(LINE)
                    _recv_exactly(probe, len(LINE))
                except OSError as exc:  # counts as a round trip as long as it waited
                    rtts.append((t0, time.perf_counter() - t0))
                    failed.append(str(exc) or type(exc).__name__)
                    return
                rtts.append((t0, time.perf_counter() - t0))
                time.sleep(0.001)

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        try:
            time.sleep(0.5)
            leave_at = time.perf_counter()
            held.stdin.write("\n")
            held.stdin.flush()
            held.wait()
            time.sleep(window)
        finally:
            stop.set()
            thread.join(35)
            probe.close()
            if held.poll() is None:
                held.kill()
                held.wait()
    before = [r for t, r in rtts if t < leave_at]
    after = [r for t, r in rtts if t + r >= leave_at]
    return {"worst_ms": max(after) * 1e3 if after else None,
            "before_ms": statistics.median(before) * 1e3 if before else None,
            "round_trips": len(after), "error": failed[0] if failed else None}


# -- the table ---------------------------------------------------------------------------

GEVENT = "gevent"
OTHERS = ["gevent-callback", "asyncio+uvloop", "asyncio", "select", "threading"]
PROBES = ("echo", "scale", "idle", "disconnect", "broadcast")


def _median(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def measure(tools: dict[str, Path], probes: tuple[str, ...], names: list[str], rounds: int,
            seconds: float, log: Callable[[str], None]) -> list[list[str]]:
    """Run the chosen probes in ``rounds`` interleaved rounds; return table rows."""
    got: dict[tuple[str, str], list[Any]] = {}

    def record(probe: str, name: str, value: Any) -> None:
        got.setdefault((probe, name), []).append(value)
        log(f"{probe} {name}: {value}")

    def safely(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
            return {"error": str(exc)[:100]}

    for r in range(rounds):
        log(f"round {r + 1}/{rounds}")
        for name in names:
            if "echo" in probes:
                run = safely(lambda: echo_probe(tools, name, FEW, seconds, warmup=0))
                record("echo", name, run.get("rps"))
                record("echo-cpu", name, run.get("capacity"))
            if "scale" in probes:
                few = safely(lambda: echo_probe(tools, name, FEW, seconds))
                many = safely(lambda: echo_probe(tools, name, MANY, seconds))
                record("scale", name, (many.get("rps") or 0) / few["rps"] if few.get("rps") else None)
                record("p99", name, many.get("p99_over_mean"))
            if "idle" in probes and name != UVLOOP_REFERENCE:
                record("idle", name, safely(lambda: idle_memory_probe(tools, name)).get("kib_per_conn"))
            if "disconnect" in probes and name != UVLOOP_REFERENCE:
                record("disconnect", name, safely(lambda: mass_disconnect_probe(tools, name)).get("worst_ms"))
            if "broadcast" in probes and name != UVLOOP_REFERENCE:
                record("broadcast", name, safely(lambda: broadcast_probe(tools, name, seconds=seconds)).get("lines_per_s"))

    rows = [["probe", "target", *names]]
    med = {key: _median(values) for key, values in got.items()}
    uv = med.get(("echo", UVLOOP_REFERENCE))
    if "echo" in probes:
        rows.append([f"echo rps, {FEW} conns", ""] + [_fmt(med.get(("echo", n)), ",.0f") for n in names])
        rows.append(["  x bare uvloop Protocol", ">= 0.95 (gevent)"]
                    + [_fmt(m / uv if (m := med.get(("echo", n))) and uv else None) for n in names])
        uv = med.get(("echo-cpu", UVLOOP_REFERENCE))
        rows.append(["  per server CPU-second", ""] + [_fmt(med.get(("echo-cpu", n)), ",.0f") for n in names])
        rows.append(["  x bare uvloop Protocol (CPU)", ">= 0.95 (gevent)"]
                    + [_fmt(m / uv if (m := med.get(("echo-cpu", n))) and uv else None) for n in names])
    if "scale" in probes:
        rows.append([f"rate {MANY:,} / {FEW} conns", ">= 0.85 (gevent)"] + [_fmt(med.get(("scale", n))) for n in names])
        rows.append([f"p99 / mean, {MANY:,} conns", "<= 1.5 (gevent)"] + [_fmt(med.get(("p99", n))) for n in names])
    if "idle" in probes:
        rows.append([f"KiB per idle conn ({IDLE_CONNS:,})", "<= 3 (gevent)"] + [_fmt(med.get(("idle", n)), ".1f") for n in names])
    if "disconnect" in probes:
        rows.append([f"worst round trip ms, {IDLE_CONNS:,} leave", "<= 50 (gevent)"]
                    + [_fmt(med.get(("disconnect", n)), ".0f") for n in names])
    if "broadcast" in probes:
        best_other = max((m for n in names if n != GEVENT and (m := med.get(("broadcast", n)))), default=None)
        rows.append(["broadcast lines/s, fanload 100 10", ""] + [_fmt(med.get(("broadcast", n)), ",.0f") for n in names])
        rows.append(["  x best other backend", ">= 1.0 (gevent)"]
                    + [_fmt(m / best_other if (m := med.get(("broadcast", n))) and best_other else None) for n in names])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.perf_probes", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tools", type=Path, default=perf.DEFAULT_TOOLS, metavar="DIR",
                        help=f"directory of the C tools (default {perf.DEFAULT_TOOLS})")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are shown (default 3)")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each load run (default 3)")
    parser.add_argument("--probes", nargs="+", choices=PROBES, default=list(PROBES), help="probes to run")
    parser.add_argument("--servers", nargs="+", metavar="NAME", default=[GEVENT, UVLOOP_REFERENCE, *OTHERS],
                        help="servers to measure (names as in bench perf)")
    args = parser.parse_args(argv)
    try:
        tools = perf.find_tools(args.tools.resolve())
    except perf.ToolsMissing as exc:
        print(f"perf_probes: error: {exc}", file=sys.stderr)
        return 1
    unknown = [n for n in args.servers if n not in perf.SERVERS and n != UVLOOP_REFERENCE]
    if unknown:
        print(f"perf_probes: error: unknown server(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    raise_open_files_limit()  # the C clients and the idle holders inherit it
    if perf.CLIENT_CPU < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {perf.CLIENT_CPU})  # the probe client is this process

    def log(msg: str) -> None:
        print(f"  {msg}", file=sys.stderr, flush=True)

    rows = measure(tools, tuple(args.probes), args.servers, args.rounds, args.seconds, log)
    print(plain(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
