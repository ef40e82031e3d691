"""Run one mode of a ``bench compare`` run: every backend's server at once, and the
measurement program (:mod:`bench.loadgen.program`) that drives them in interleaved windows.

Processes, each its own interpreter:

* one server per backend: ``python -m bench serve BACKEND --mode M --port 0 --quiet``
  (:class:`bench.procs.server.ServerProcess`), all pinned to the server's CPUs. Only the
  backend being measured has connections; the others sit idle and cost nothing.
* the program: ``python -m bench.loadgen.program SPEC.json``, pinned to the load
  generator's CPUs; it prints one JSON line per window and progress line.

A backend whose server does not start is left out of the program and comes back as an
error. A server that exits mid-run makes the program's windows against it errors, and the
run goes on. On Ctrl-C (or SIGTERM) every child is stopped before the exception goes on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from bench.compare import plan
from bench.procs.children import stop_processes
from bench.procs.server import ServerProcess, ServerStartError
from bench.results.config import CompareConfig


@dataclass
class ModeResult:
    """What one mode's run produced: the program's windows and the backends that failed."""

    mode: str
    windows: list[dict[str, Any]] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # backend -> why it did not run


def default_pinning(cpu_count: int) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """Server on the first CPU, the load generator on the others; None on a single CPU."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(cpu_count))
    if len(cpus) < 2:
        return None
    return (cpus[0],), tuple(cpus[1:])


def start_server(backend: str, mode: str, config: CompareConfig, log_path: Path) -> ServerProcess:
    """``bench serve`` on port 0, pinned to the server's CPUs, with room for the largest
    connection count (and reconnects in flight).

    Raises:
        ServerStartError: no READY (the message ends with the server's last stderr line).
    """
    max_clients = max(1000, 2 * max(config.users) + 16)
    return ServerProcess.serve(backend, "--mode", mode, "--max-clients", str(max_clients),
                               log_path=log_path, cpus=config.server_cpus)


def program_command(spec_path: Path) -> list[str]:
    return [sys.executable, "-m", "bench.loadgen.program", str(spec_path)]


def run_mode(mode: str, config: CompareConfig, workdir: Path,
             on_progress: Callable[[int, int, str], None] = lambda done, total, what: None) -> ModeResult:
    """Start every backend of ``mode``, run the program against them, stop them all."""
    workdir.mkdir(parents=True, exist_ok=True)
    result = ModeResult(mode)
    servers: list[ServerProcess] = []
    program: subprocess.Popen | None = None
    try:
        targets = []
        # started side by side: each waits for its READY line (imports take most of a second)
        with ThreadPoolExecutor(max_workers=len(config.backends)) as pool:
            futures = {b: pool.submit(start_server, b, mode, config, workdir / f"{b}-{mode}.server.log")
                       for b in config.backends}
        for backend, future in futures.items():
            try:
                server = future.result()
            except ServerStartError as exc:
                result.errors[backend] = str(exc)
                continue
            servers.append(server)
            targets.append({"backend": backend, "host": server.host, "port": server.port, "pid": server.pid})
        if not targets:
            return result
        spec_path = workdir / f"{mode}.program.json"
        spec_path.write_text(json.dumps(plan.program_spec(config, mode, targets), indent=1), encoding="utf-8")
        log_path = workdir / f"{mode}.program.log"
        with open(log_path, "wb") as log:
            program = subprocess.Popen(program_command(spec_path), stdout=subprocess.PIPE, stderr=log,
                                       stdin=subprocess.DEVNULL, text=True)
        if config.loadgen_cpus and hasattr(os, "sched_setaffinity"):
            try:
                os.sched_setaffinity(program.pid, config.loadgen_cpus)
            except OSError:
                pass  # it already exited; its log says why
        ended = False
        assert program.stdout is not None
        for line in program.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "window":
                result.windows.append(event)
            elif event.get("event") == "progress":
                on_progress(int(event["done"]), int(event["total"]), str(event["what"]))
            elif event.get("event") == "end":
                ended = True
        program.wait()
        if not ended:
            tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-2:]
            why = " | ".join(tail) or f"status {program.returncode}"
            for t in targets:
                result.errors.setdefault(t["backend"], f"the measurement program stopped early: {why}")
        for server in servers:
            if not server.alive():
                result.errors.setdefault(server_backend(server, targets),
                                         f"the server exited with status {server.proc.returncode} during the run")
        return result
    finally:
        if program is not None:
            stop_processes([program])
        for server in servers:
            server.close()


def server_backend(server: ServerProcess, targets: list[dict[str, Any]]) -> str:
    return next(t["backend"] for t in targets if t["pid"] == server.pid)
