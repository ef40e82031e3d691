"""Run one mode of a ``bench compare`` run: every backend's server at once, and one Locust
process that drives them in interleaved windows.

Processes, each its own interpreter:

* one server per backend: ``python -m bench serve BACKEND --mode M --port 0 --quiet``
  (:class:`bench.procs.server.ServerProcess`), all pinned to the server's CPUs. Only the
  backend being measured has connections; the others sit idle and cost nothing.
* Locust, headless (:func:`bench.procs.children.compare_locust_command`), pinned to the
  load generator's CPUs: it runs the measurement schedule (:mod:`bench.loadgen.program`,
  inside :mod:`bench.loadgen.compare_locustfile`) with every window's connections as
  Locust users, prints one line per window and progress step, and leaves its CSV and HTML
  report in ``<run>/locust/`` (:func:`locust_paths`). Its other output goes to
  ``<run>/logs/<mode>.locust.log``.

A backend whose server does not start is left out of the schedule and comes back as an
error. A server that exits mid-run makes the windows against it errors, and the run goes
on. On Ctrl-C (or SIGTERM) every child is stopped before the exception goes on.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from bench.compare import plan
from bench.procs.children import EVENT_PREFIX, Child, compare_locust_command, stop_all
from bench.procs.server import ServerProcess, ServerStartError
from bench.results.config import CompareConfig


@dataclass
class ModeResult:
    """What one mode's run produced: the program's windows and the backends that failed."""

    mode: str
    windows: list[dict[str, Any]] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # backend -> why it did not run
    # Locust's files of this mode, relative to the run folder: {"html", "stats_csv"}
    locust_reports: dict[str, str] = field(default_factory=dict)


def orchestrator() -> str:
    """What runs the windows, for results.json: "Locust <version>" (this interpreter's)."""
    try:
        return f"Locust {importlib.metadata.version('locust')}"
    except importlib.metadata.PackageNotFoundError:
        return "Locust"


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


def locust_paths(workdir: Path, mode: str) -> tuple[Path, Path]:
    """(CSV prefix, HTML report) of ``mode``'s Locust process: ``<run>/locust/<mode>_stats.csv``
    (and Locust's other CSV files) and ``<run>/locust/<mode>.html``, ``workdir`` being
    ``<run>/logs``."""
    folder = workdir.parent / "locust"
    return folder / mode, folder / f"{mode}.html"


class _Events:
    """The Locust process's output, line by line (in its relay thread): schedule events into
    the mode's result, everything else into the log file."""

    def __init__(self, result: ModeResult, log_path: Path, on_progress: Callable[[int, int, str], None]) -> None:
        self.result, self.on_progress = result, on_progress
        self.log = open(log_path, "w", encoding="utf-8")
        self.ended = threading.Event()

    def __call__(self, line: str) -> None:
        if not line.startswith(EVENT_PREFIX):
            try:
                self.log.write(line + "\n")
            except ValueError:
                pass  # closed: the run is over (a stopped Locust's last words)
            return
        try:
            event = json.loads(line[len(EVENT_PREFIX):])
        except ValueError:
            return
        if event.get("event") == "window":
            self.result.windows.append(event)
        elif event.get("event") == "progress":
            self.on_progress(int(event["done"]), int(event["total"]), str(event["what"]))
        elif event.get("event") == "end":
            self.ended.set()


def run_mode(mode: str, config: CompareConfig, workdir: Path,
             on_progress: Callable[[int, int, str], None] = lambda done, total, what: None) -> ModeResult:
    """Start every backend of ``mode`` and the mode's Locust process (side by side: Locust
    waits for the schedule file, written once the servers' ports are known), run the
    schedule, stop them all."""
    workdir.mkdir(parents=True, exist_ok=True)
    result = ModeResult(mode)
    servers: list[ServerProcess] = []
    spec_path = workdir / f"{mode}.program.json"
    csv_prefix, html_path = locust_paths(workdir, mode)
    csv_prefix.parent.mkdir(parents=True, exist_ok=True)
    events = _Events(result, workdir / f"{mode}.locust.log", on_progress)
    locust = Child("Locust", compare_locust_command(spec_path, csv_prefix, html_path), on_line=events)
    try:
        if config.loadgen_cpus and hasattr(os, "sched_setaffinity"):
            try:
                os.sched_setaffinity(locust.pid, config.loadgen_cpus)
            except OSError:
                pass  # it already exited; its log says why
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
        partial = spec_path.with_suffix(".partial")
        partial.write_text(json.dumps(plan.program_spec(config, mode, targets), indent=1), encoding="utf-8")
        os.replace(partial, spec_path)  # Locust never reads half a file
        locust.proc.wait()
        why = locust.tail()  # also waits for the relay thread to read the last lines
        run_dir = workdir.parent
        result.locust_reports = {name: path.relative_to(run_dir).as_posix() for name, path in
                                 (("html", html_path), ("stats_csv", Path(f"{csv_prefix}_stats.csv")))
                                 if path.exists()}
        if not events.ended.is_set():
            why = why or f"status {locust.proc.returncode}"
            for t in targets:
                result.errors.setdefault(t["backend"], f"the measurement stopped early: {why}")
        for server in servers:
            if not server.alive():
                result.errors.setdefault(server_backend(server, targets),
                                         f"the server exited with status {server.proc.returncode} during the run")
        return result
    finally:
        stop_all([locust])
        for server in servers:
            server.close()
        events.log.close()


def server_backend(server: ServerProcess, targets: list[dict[str, Any]]) -> str:
    return next(t["backend"] for t in targets if t["pid"] == server.pid)
