"""``bench perf``: how close each backend gets to the C ceiling.

A benchmark, not a test: it prints figures, asserts nothing. Each server runs as its
own process pinned to one CPU, each C client (``../shared/tools``: ``ceiling``,
``echoload``, ``fanload``; run in place, never copied) pinned to the other, so the
Python server never shares a core with the load it measures. Other work on the machine
still steals time, hence:

* servers are measured in interleaved rounds (ceiling, a, b, ..., ceiling, a, b, ...)
  and the best round is the throughput figure;
* every run also records the server's CPU seconds, giving a *CPU capacity* (requests
  per CPU-second): what the server would do with its core to itself. That ratio moves
  little when the machine is shared.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from bench.perf.table import UVLOOP_REFERENCE, parse_tool_output
from bench.procs.children import free_port, locust_command
from bench.procs.machine import PROJECT_ROOT
from bench.procs.server import ServerProcess, ServerStartError
from servers import backends

DEFAULT_TOOLS = PROJECT_ROOT.parent / "shared" / "tools"
TOOLS = ("ceiling", "echoload", "fanload")
SERVER_CPU, CLIENT_CPU = 0, 1

# Display name -> `bench serve` arguments: every backend of the registry, and asyncio on
# uvloop. "ceiling" (the C server) and the bare uvloop server are handled apart.
SERVERS: dict[str, list[str]] = {name: [name] for name in backends.BACKENDS}
SERVERS["asyncio+uvloop"] = ["asyncio", "--loop", "uvloop"]
# A bare uvloop Protocol echo server (bench/perf/uvloop_echo.py): the stretch target.
ECHO_SERVERS = ["ceiling", UVLOOP_REFERENCE, "threading", "select", "gevent", "gevent-callback", "asyncio", "asyncio+uvloop"]
SCALE_SERVERS = ["threading", "select", "gevent", "gevent-callback", "asyncio", "asyncio+uvloop"]
BROADCAST_SERVERS = ["threading", "select", "gevent", "gevent-callback", "asyncio"]


class ToolsMissing(Exception):
    """The C tools are not where --tools says; the message is one line."""


def find_tools(directory: Path) -> dict[str, Path]:
    """Paths of the C tools in ``directory``.

    Raises:
        ToolsMissing: a tool is absent or not executable.
    """
    found = {name: directory / name for name in TOOLS}
    missing = [n for n, p in found.items() if not (p.is_file() and os.access(p, os.X_OK))]
    if missing:
        raise ToolsMissing(f"C tools not found in {directory} (missing: {', '.join(missing)}); "
                           "build them there or pass --tools DIR")
    return found


def pinned(cpu: int):
    """A preexec_fn pinning the child to ``cpu`` (when the machine has it)."""
    def pin() -> None:
        if cpu < os.cpu_count():
            os.sched_setaffinity(0, {cpu})
    return pin


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    """Resident memory of process ``pid`` in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@contextmanager
def server(name: str, tools: dict[str, Path], extra: list[str] = ()) -> Iterator[tuple[int, int]]:
    """Run server ``name`` pinned to SERVER_CPU; yield (pid, port); stop it after.

    Raises:
        ServerStartError: no READY line (the message ends with the server's stderr).
    """
    pin = (SERVER_CPU,) if SERVER_CPU < (os.cpu_count() or 1) else None
    if name == "ceiling":
        proc = ServerProcess.start([str(tools["ceiling"]), str(free_port())], cpus=pin)
    elif name == UVLOOP_REFERENCE:
        proc = ServerProcess.start([sys.executable, "-m", "bench.perf.uvloop_echo"], cpus=pin)
    else:
        proc = ServerProcess.serve(*SERVERS[name], *extra, cpus=pin)
    with proc:
        yield proc.pid, proc.port


def run_tool(tool: Path, args: list[Any], pid: int, timeout: float) -> dict[str, Any]:
    """Run a C client pinned to CLIENT_CPU; its JSON plus the server's CPU seconds."""
    before = cpu_seconds(pid)
    proc = subprocess.run([str(tool), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=pinned(CLIENT_CPU))
    result = parse_tool_output(proc.stdout) if proc.returncode == 0 else {
        "error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]}
    result["server_cpu_s"] = cpu_seconds(pid) - before
    return result


def echo_rounds(tools: dict[str, Path], names: list[str], conns: int, size: int, seconds: float,
                rounds: int, log) -> dict[str, list[dict[str, Any]]]:
    """Interleaved echoload runs of every server at ``conns`` connections.

    WARMUP is 0 so that round_trips and server CPU cover the same window.
    """
    out: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names:
            with server(name, tools) as (pid, port):
                run = run_tool(tools["echoload"], [port, conns, seconds, size, 0], pid, seconds + 60)
            out[name].append(run)
            log(f"echo round {r + 1}/{rounds} {name}: {run.get('rps', run.get('error'))} rps")
    return out


def _open_idle(port: int, conns: int) -> list[socket.socket]:
    socks = []
    for _ in range(conns):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        socks.append(s)
    return socks


def _wait_rss_settles(pid: int, limit: float = 10.0) -> int:
    """RSS once it has stopped growing for 0.5 s (the server has admitted everyone)."""
    deadline = time.monotonic() + limit
    last, stable_since = rss_kib(pid), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = rss_kib(pid)
        if now != last:
            last, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since >= 0.5:
            break
    return last


def scale_run(tools: dict[str, Path], name: str, conns: int, size: int, seconds: float,
              log) -> dict[str, Any]:
    """One fresh server: RSS before clients, with ``conns`` idle clients, and at its peak
    while echoload drives ``conns`` active clients (throughput and p99 from that run)."""
    try:
        with server(name, tools, ["--max-clients", str(conns + 100)]) as (pid, port):
            time.sleep(0.3)
            base = rss_kib(pid)
            idle_socks = _open_idle(port, conns)
            try:
                idle = _wait_rss_settles(pid)
            finally:
                for s in idle_socks:
                    s.close()
            time.sleep(1.0)  # let the server notice the closes
            peak = [0]
            done = threading.Event()

            def sample() -> None:
                while not done.wait(0.1):
                    peak[0] = max(peak[0], rss_kib(pid))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            try:
                run = run_tool(tools["echoload"], [port, conns, seconds, size, 1], pid, seconds + 120)
            finally:
                done.set()
                sampler.join()
            run.update(rss_base_kib=base, rss_idle_kib=idle, rss_active_kib=peak[0])
    except (OSError, ServerStartError, subprocess.TimeoutExpired) as exc:
        run = {"error": str(exc)[:120]}
    log(f"scale {name} {conns}: {run.get('rps', run.get('error'))} rps")
    return run


def broadcast_rounds(tools: dict[str, Path], names: list[str], conns: int, senders: int,
                     size: int, seconds: float, rounds: int, log) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names:
            with server(name, tools, ["--mode", "broadcast"]) as (pid, port):
                run = run_tool(tools["fanload"], [port, conns, senders, seconds, size, 0], pid,
                               seconds + 60)
            out[name].append(run)
            log(f"broadcast round {r + 1}/{rounds} {name}: {run.get('lines_per_s', run.get('error'))} lines/s")
    return out


def locust_rps(port: int, users: int, seconds: float, processes: int, pin: bool) -> dict[str, Any]:
    """Round trips/s that Locust (``bench/locustfile.py``'s EchoUser) drives at ``port``.

    Requests counted over Locust's own first-to-last request window, ramp included
    (spawn rate = users, so the ramp is one second at most).
    """
    cmd = locust_command("--headless", "--host", f"127.0.0.1:{port}", "-u", str(users), "-r", str(users),
                         "-t", f"{seconds:g}s", "--only-summary", "--loglevel", "ERROR",
                         "--stop-timeout", "0", "--json", "EchoUser")
    if processes > 1:
        cmd[-1:-1] = ["--processes", str(processes)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 90, cwd="/tmp",
                          preexec_fn=pinned(CLIENT_CPU) if pin else None)
    try:
        # With --processes every worker prints its own (empty) array before the
        # master's: take the document holding the most requests.
        docs, text, i = [], proc.stdout, 0
        decoder = json.JSONDecoder()
        while (i := text.find("[", i)) >= 0:
            try:
                doc, i = decoder.raw_decode(text, i)
            except ValueError:  # a '[' in the summary table, not a document
                i += 1
                continue
            if isinstance(doc, list) and all(isinstance(s, dict) for s in doc):
                docs.append(doc)
        stats = max(docs, key=lambda d: sum(s["num_requests"] for s in d))
        total = sum(s["num_requests"] for s in stats)
        window = max(s["last_request_timestamp"] for s in stats) - min(s["start_time"] for s in stats)
        return {"rps": total / window if window > 0 else None}
    except (ValueError, KeyError, TypeError):
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:120]}


def loadgen_ceiling(tools: dict[str, Path], backend: str, users: int, size: int, seconds: float,
                    log) -> dict[str, float | None]:
    """Locust vs echoload against the same server (one fresh server per client)."""
    out: dict[str, float | None] = {}
    clients = [("echoload (C)", None), ("locust, 1 process, pinned", (1, True)),
               ("locust, 2 processes, unpinned", (2, False))]
    for label, spec in clients:
        with server(backend, tools) as (pid, port):
            if spec is None:
                run = run_tool(tools["echoload"], [port, users, seconds, size, 1], pid, seconds + 60)
            else:
                run = locust_rps(port, users, seconds, *spec)
        out[f"{label} -> {backend}, {users} conns"] = run.get("rps")
        log(f"loadgen {label}: {run.get('rps', run.get('error'))}")
    return out
