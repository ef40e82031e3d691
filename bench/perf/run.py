"""``bench perf``'s processes: the servers it measures and its client processes.

Each server runs as its own process pinned to SERVER_CPU; each client
(``python -m bench.perf.client``, the native engine) is a process pinned to CLIENT_CPU,
so the Python server never shares a core with the load it measures. The physical limit
is the project's own C echo server (``python -m bench.loadgen.ceiling``). Nothing here
needs anything outside the repository; ``--tools DIR`` (C reference clients such as
``echoload``) only adds comparison rows when given.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

# CEILING: the project's C echo server, the physical limit of the echo rows;
# UVLOOP_REFERENCE: bench/perf/uvloop_echo.py. REFERENCES echo bytes without the wire
# contract: no broadcast, no connection limits.
from bench.perf.table import CEILING, UVLOOP_REFERENCE
from bench.procs.machine import PROJECT_ROOT
from bench.procs.server import ServerProcess

DEFAULT_TOOLS = PROJECT_ROOT.parent / "shared" / "tools"
SERVER_CPU, CLIENT_CPU = 0, 1

FLAGSHIP = "gevent"
NEEDS_UVLOOP = (UVLOOP_REFERENCE, "asyncio+uvloop")
# Columns of the table, the flagship first. `blocking` serves one client at a time: it
# has no figure at 100 connections to show.
COLUMNS = [FLAGSHIP, UVLOOP_REFERENCE, CEILING, "gevent-callback", "asyncio+uvloop", "asyncio",
           "select", "threading"]


# Columns served by another checkout of the project (``bench perf --against``): column
# name -> that checkout's root. Its flagship runs as ``python -m servers`` there, so it
# imports that checkout's servers package, measured side by side with this one.
CHECKOUTS: dict[str, Path] = {}


def against_column(checkout: Path) -> str:
    """The column name of the flagship served by ``checkout``."""
    return f"{FLAGSHIP} @ {checkout.resolve().name}"


def is_checkout(path: Path) -> bool:
    """Whether ``path`` holds a copy of the project (a ``servers`` package to run)."""
    return (path / "servers" / "__main__.py").is_file()


def uvloop_missing() -> str:
    """Why uvloop cannot be imported here, or "" when it can."""
    try:
        importlib.import_module("uvloop")
    except ImportError as exc:
        return str(exc) or "uvloop is not importable"
    return ""


def cpus(cpu: int) -> tuple[int, ...] | None:
    """``(cpu,)`` when the machine has that CPU, else None (no pinning)."""
    return (cpu,) if cpu < (os.cpu_count() or 1) else None


@contextmanager
def server(name: str, extra: list[str] = ()) -> Iterator[tuple[int, int]]:
    """Run server ``name`` pinned to SERVER_CPU; yield (pid, port); stop it after.
    ``extra`` flags go to ``bench serve`` only (the references take none).

    Raises:
        ServerStartError: no READY line (the message ends with the server's stderr).
    """
    pin = cpus(SERVER_CPU)
    if name == CEILING:
        proc = ServerProcess.start([sys.executable, "-m", "bench.loadgen.ceiling", "--port", "0"], cpus=pin)
    elif name == UVLOOP_REFERENCE:
        proc = ServerProcess.start([sys.executable, "-m", "bench.perf.uvloop_echo"], cpus=pin)
    elif name in CHECKOUTS:
        proc = ServerProcess.start([sys.executable, "-m", "servers", FLAGSHIP, "--port", "0", *extra, "--quiet"],
                                   cpus=pin, cwd=CHECKOUTS[name])
    else:
        proc = ServerProcess.serve(name, *extra, cpus=pin)  # variants: servers.backends.VARIANTS
    with proc:
        yield proc.pid, proc.port


def pinned(cpu: int):
    """A preexec_fn pinning the child to ``cpu`` (when the machine has it)."""
    def pin() -> None:
        if cpu < (os.cpu_count() or 1):
            os.sched_setaffinity(0, {cpu})
    return pin


def client(*args: Any, timeout: float) -> dict[str, Any]:
    """Run ``python -m bench.perf.client ARGS...`` pinned to CLIENT_CPU; its JSON result,
    or ``{"error": last stderr line}``."""
    proc = subprocess.run([sys.executable, "-m", "bench.perf.client", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, preexec_fn=pinned(CLIENT_CPU))
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        try:
            return json.loads(lines[-1])
        except ValueError:
            pass
    return {"error": (proc.stderr.strip().splitlines() or [f"client exit {proc.returncode}"])[-1][:120]}


def find_tool(tools: Path | None, name: str) -> Path | None:
    """``tools/name`` when it is an executable file, else None (the tools are optional)."""
    if tools is None:
        return None
    path = tools / name
    return path if path.is_file() and os.access(path, os.X_OK) else None
