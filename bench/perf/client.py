"""``bench perf``'s client process: the native engine driving one server, one JSON line out.

``bench perf`` runs this module as a child pinned to the client CPU (the server has the
other one). The engine's own thread does every socket call; Python here only adds the
connections, sleeps through the window and harvests the counts. Each subcommand prints
one JSON object on its last line:

* ``echo PORT CONNS SECONDS WARMUP [--pid PID]``: closed-loop echo at CONNS
  connections: ``rps``, ``round_trips``, ``p50_us``, ``p99_us``, ``errors`` and, with
  ``--pid``, ``server_cpu_s`` (the server's CPU seconds in the measured window) and
  ``open_s`` (seconds until the server held every connection: the warm-up starts then);
* ``broadcast PORT CONNS SENDERS SECONDS WARMUP``: CONNS room members, SENDERS of them
  closed loop (the next line once a member here received the last): ``lines_per_s``
  (lines sent), ``deliveries_per_s`` (lines received in order), ``p99_us`` (send to
  delivery), ``lost``, ``errors``;
* ``disconnect PORT CONNS WINDOW``: a holder child opens CONNS clients (one round trip
  each) and exits at once; a probe connection sends 200 lines/s, each timed from its
  intended send time, so a stall shows whole: ``worst_ms`` (from just before the others
  leave until WINDOW seconds after), ``before_ms`` (its median before), ``errors``;
* ``hold PORT CONNS``: the holder: open CONNS plain sockets, one round trip each, print
  ``OPEN``, wait for a line on stdin, exit without closing (the kernel closes them all).

Lines are 64 bytes (63 + newline), as the C tools send. Connections go to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

from bench.procs.ready import read_first_line
from servers.runtime import raise_open_files_limit

HOST = "127.0.0.1"
SIZE = 64
LINE = b"x" * (SIZE - 1) + b"\n"
# Seconds a line may wait before it counts as a timeout: long, so that a slow backend at
# 10,000 connections is measured as slow, not as failing.
TIMEOUT_S = 10.0
PROBE_RATE = 200.0  # lines/s of the mass-disconnect probe connection
HOLD_TIMEOUT_S = 60.0  # to open and warm the holder's clients
OPEN_TIMEOUT_S = 60.0  # for the server to accept every echo client before the warm-up


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(buckets: list[tuple[int, int]], q: float) -> float | None:
    """The ``q`` quantile (0..1) of harvested ``(µs, count)`` buckets, None if empty."""
    merged: dict[int, int] = {}
    for value, count in buckets:
        merged[value] = merged.get(value, 0) + count
    total = sum(merged.values())
    if not total:
        return None
    rank, seen = q * total, 0
    for value in sorted(merged):
        seen += merged[value]
        if seen >= rank:
            return float(value)
    return float(max(merged))


def _engine():
    from bench.loadgen.engine import Engine  # here: `hold` must run without the engine

    return Engine()


def descriptors(pid: int) -> int:
    """How many file descriptors process ``pid`` holds (0 once it is gone)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def wait_accepted(pid: int, conns: int, limit: float = OPEN_TIMEOUT_S) -> float:
    """Wait until server ``pid`` holds at least ``conns`` descriptors (every client
    accepted), at most ``limit`` seconds. Returns the seconds waited."""
    t0 = time.monotonic()
    while descriptors(pid) < conns and time.monotonic() - t0 < limit:
        time.sleep(0.05)
    return time.monotonic() - t0


def echo(port: int, conns: int, seconds: float, warmup: float, pid: int | None) -> dict[str, Any]:
    opened = None
    with _engine() as engine:
        t0 = time.monotonic()
        for _ in range(conns):
            engine.add_echo(HOST, port, SIZE, 0.0, TIMEOUT_S)
        if pid:
            # Thousands of connects at once overflow any listen backlog: the kernel drops
            # the excess handshakes and the clients retry 1, 3, 7 s later. A window that
            # opened before they were all in timed those retries as round trips (p99 at
            # 10,000 connections swung 1.2-3.9 s on every server): start it only once the
            # server holds them all.
            wait_accepted(pid, conns)
            opened = time.monotonic() - t0
        time.sleep(warmup)
        engine.harvest()
        cpu0, t0 = (cpu_seconds(pid) if pid else 0.0), time.monotonic()
        time.sleep(seconds)
        got = engine.harvest().get("echo")
        elapsed = time.monotonic() - t0
        cpu = cpu_seconds(pid) - cpu0 if pid else None
    n = got.requests if got else 0
    out = {"conns": conns, "seconds": elapsed, "round_trips": n, "rps": n / elapsed,
           "p50_us": percentile(got.latency_us, 0.5) if got else None,
           "p99_us": percentile(got.latency_us, 0.99) if got else None,
           "errors": got.failed if got else 0}
    if cpu is not None:
        out["server_cpu_s"] = cpu
    if opened is not None:
        out["open_s"] = opened
    return out


def broadcast(port: int, conns: int, senders: int, seconds: float, warmup: float) -> dict[str, Any]:
    # Members that only listen get a rate so low that their first line would be due in
    # years (the engine gives each a random phase within one interval).
    quiet = 1e-9
    with _engine() as engine:
        for i in range(conns):
            engine.add_broadcast(HOST, port, SIZE, 0.0 if i < senders else quiet, TIMEOUT_S)
        time.sleep(warmup)
        engine.harvest()
        t0 = time.monotonic()
        time.sleep(seconds)
        got = engine.harvest().get("broadcast")
        elapsed = time.monotonic() - t0
    if got is None:
        return {"lines_per_s": 0.0, "deliveries_per_s": 0.0, "p99_us": None, "lost": 0, "errors": 0}
    return {"conns": conns, "senders": senders, "seconds": elapsed,
            "lines_per_s": got.sent / elapsed, "deliveries_per_s": got.requests / elapsed,
            "p99_us": percentile(got.latency_us, 0.99), "lost": got.lost, "errors": got.failed}


def hold(port: int, conns: int) -> None:
    """Open ``conns`` clients, one round trip each, print OPEN, exit at a line on stdin."""
    socks = []
    for _ in range(conns):
        s = socket.create_connection((HOST, port), timeout=10)
        s.sendall(LINE)
        got = 0
        while got < len(LINE):
            chunk = s.recv(len(LINE) - got)
            if not chunk:
                raise ConnectionError("the server closed a held connection")
            got += len(chunk)
        socks.append(s)
    print("OPEN", flush=True)
    sys.stdin.readline()
    os._exit(0)  # no orderly close: the kernel drops every socket at once


def start_holder(port: int, conns: int, cpu: int | None = None) -> subprocess.Popen:
    """Start :func:`hold` in a child at the lowest priority (pinned to ``cpu`` if given):
    closing its sockets when it exits must not delay whoever shares its CPU. Returns
    once its clients are open.

    Raises:
        RuntimeError: it could not open them all within HOLD_TIMEOUT_S.
    """
    def setup() -> None:
        if cpu is not None and cpu < (os.cpu_count() or 1):
            os.sched_setaffinity(0, {cpu})
        os.nice(19)

    proc = subprocess.Popen([sys.executable, "-m", "bench.perf.client", "hold", str(port), str(conns)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, preexec_fn=setup)
    if read_first_line(proc.stdout, HOLD_TIMEOUT_S).strip() != "OPEN":
        proc.kill()
        proc.wait()
        raise RuntimeError(f"could not open {conns:,} idle clients")
    return proc


def release(proc: subprocess.Popen) -> None:
    """Tell a holder to exit now and wait for it."""
    try:
        proc.stdin.write("\n")
        proc.stdin.flush()
    except OSError:
        pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def disconnect(port: int, conns: int, window: float) -> dict[str, Any]:
    held = start_holder(port, conns)  # inherits this process's CPU
    try:
        with _engine() as engine:
            engine.add_echo(HOST, port, SIZE, PROBE_RATE, 30.0)
            time.sleep(1.0)
            before = engine.harvest().get("echo")
            release(held)
            time.sleep(window)
            after = engine.harvest().get("echo")
    finally:
        if held.poll() is None:
            held.kill()
            held.wait()
    worst = max(after.max_us, max((v for v, _ in after.failure_latency_us), default=0)) if after else None
    return {"worst_ms": worst / 1e3 if worst else None,
            "before_ms": (p / 1e3 if before and (p := percentile(before.latency_us, 0.5)) else None),
            "round_trips": after.requests if after else 0, "errors": after.failed if after else 0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.perf.client", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("echo")
    p.add_argument("port", type=int)
    p.add_argument("conns", type=int)
    p.add_argument("seconds", type=float)
    p.add_argument("warmup", type=float)
    p.add_argument("--pid", type=int, help="a server process whose CPU seconds to report")
    p = sub.add_parser("broadcast")
    for name, kind in (("port", int), ("conns", int), ("senders", int), ("seconds", float), ("warmup", float)):
        p.add_argument(name, type=kind)
    p = sub.add_parser("disconnect")
    for name, kind in (("port", int), ("conns", int), ("window", float)):
        p.add_argument(name, type=kind)
    p = sub.add_parser("hold")
    p.add_argument("port", type=int)
    p.add_argument("conns", type=int)
    args = parser.parse_args(argv)
    raise_open_files_limit()  # 10,000 client sockets in one process
    if args.what == "hold":
        hold(args.port, args.conns)
        return 0
    try:
        if args.what == "echo":
            out = echo(args.port, args.conns, args.seconds, args.warmup, args.pid)
        elif args.what == "broadcast":
            out = broadcast(args.port, args.conns, args.senders, args.seconds, args.warmup)
        else:
            out = disconnect(args.port, args.conns, args.window)
    except (OSError, RuntimeError) as exc:
        print(f"client: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
