"""Run one group of the plan: a ``bench serve`` process and a headless Locust process
that steps through the group's stages; sample both with psutil; return per-stage
figures.

Processes, each its own interpreter (gevent and Locust monkey-patch theirs):

* the server: ``python -m bench serve BACKEND --mode M --port 0 --quiet``; its first
  stdout line is ``READY HOST:PORT``. Stopped with SIGTERM (then SIGKILL after
  :data:`bench.procs.children.STOP_GRACE_S`).
* the load generator: ``python -m locust -f bench/locustfile.py --headless`` with
  ``--sockbench-stages``; it writes phase events and its tallies to files here
  (see :mod:`bench.loadgen.stages`). With ``workers`` > 0 it is a master on loopback and that
  many ``locust --worker`` processes generate the load; their microsecond tallies
  are merged into the master's result, and loadgen CPU % sums them all.

Each is pinned with ``os.sched_setaffinity`` to its own CPUs when asked (on 2 cores:
server on CPU 0, Locust on CPU 1), so the figures do not depend on the scheduler
putting both on one core. CPU % is of one core (100 = one core busy).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import psutil

from bench.results.tally import StageTally
from bench.compare.plan import Group
from bench.results.config import CompareConfig
from bench.procs import children as supervise
from bench.procs.children import free_port, stop_processes
from bench.procs.server import ServerProcess, ServerStartError

SAMPLE_INTERVAL_S = 0.2
# Users Locust starts per second: all of a stage's users at once, in practice.
SPAWN_RATE = 1000.0
# A group may overrun its estimate (slow ramps, a struggling backend) by this factor
# plus a margin before its Locust process is killed and the group marked failed.
OVERRUN_FACTOR = 2.0
OVERRUN_MARGIN_S = 30.0
# The figures of a window with no samples (and of a stage that did not run).
EMPTY_WINDOW: dict[str, Any] = {"server_cpu": 0.0, "loadgen_cpu": 0.0, "other_cpu": 0.0, "rss_peak": 0,
                                "server_core_busy": None, "loadgen_core_busy": None}


@dataclass(frozen=True)
class RunnerOptions:
    """How to run groups: the run's config, and where its logs go."""

    workdir: Path                     # logs and Locust's output files go here
    config: CompareConfig = CompareConfig(backends=())


def loadgen_cores(opts: RunnerOptions) -> int:
    """Cores the load generator can use: what its CPU % is a percentage of."""
    config = opts.config
    if config.workers < 1:
        return 1
    cpus = len(config.loadgen_cpus) if config.loadgen_cpus else (os.cpu_count() or 1)
    return max(1, min(config.workers, cpus))


def default_pinning(cpu_count: int) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """Server on the first CPU, Locust on the others; None on a single CPU."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(cpu_count))
    if len(cpus) < 2:
        return None
    return (cpus[0],), tuple(cpus[1:])


def _pin(pid: int, cpus: tuple[int, ...] | None) -> None:
    if cpus and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(pid, cpus)
        except OSError:
            pass  # the process already exited; its own error will be reported


def start_server(backend: str, mode: str, max_users: int, opts: RunnerOptions,
                 log_path: Path) -> ServerProcess:
    """Start ``bench serve`` on port 0, pinned to the server's CPUs, and wait for READY.

    Raises:
        ServerStartError: no READY (the message ends with the server's last stderr line).
    """
    max_clients = max(1000, 2 * max_users + 16)  # room for reconnects in flight
    return ServerProcess.serve(backend, "--mode", mode, "--max-clients", str(max_clients),
                               log_path=log_path, cpus=opts.config.server_cpus)


def _cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


class _Sampler:
    """(time, server CPU s, loadgen CPU s, server RSS) every :data:`SAMPLE_INTERVAL_S`.

    Loadgen CPU is summed over its processes and divided by ``cores``, so 100 means
    every core the load generator may use is busy."""

    def __init__(self, server_pid: int, loadgen_pids: list[int], cores: int = 1,
                 server_cpus: tuple[int, ...] | None = None, loadgen_cpus: tuple[int, ...] | None = None) -> None:
        self.server = psutil.Process(server_pid)
        self.loadgen = [psutil.Process(pid) for pid in loadgen_pids]
        self.cores = cores
        self.server_cpus, self.loadgen_cpus = server_cpus, loadgen_cpus
        # (time, server CPU s, loadgen CPU s, server RSS, the whole machine's busy CPU s,
        #  busy CPU s of the server's pinned cores, of the load generator's pinned cores)
        self.samples: list[tuple[float, float, float, int, float, float, float]] = []

    def sample(self) -> None:
        try:
            with self.server.oneshot():
                s_cpu, rss = _cpu_seconds(self.server), self.server.memory_info().rss
            l_cpu = sum(_cpu_seconds(p) for p in self.loadgen)
        except psutil.Error:
            return
        machine = psutil.cpu_times()
        busy = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
        s_core = l_core = 0.0
        if self.server_cpus and self.loadgen_cpus:
            per_cpu = [sum(t) - t.idle - getattr(t, "iowait", 0.0) for t in psutil.cpu_times(percpu=True)]
            s_core = sum(per_cpu[i] for i in self.server_cpus if i < len(per_cpu))
            l_core = sum(per_cpu[i] for i in self.loadgen_cpus if i < len(per_cpu))
        self.samples.append((time.time(), s_cpu, l_cpu, rss, busy, s_core, l_core))

    def window(self, t_start: float, t_end: float) -> dict[str, float]:
        """CPU % of server and loadgen, and the server's peak RSS, over a window."""
        inside = [s for s in self.samples if t_start <= s[0] <= t_end]
        before = [s for s in self.samples if s[0] < t_start]
        after = [s for s in self.samples if s[0] > t_end]
        first = inside[0] if inside else (before[-1] if before else None)
        last = inside[-1] if len(inside) > 1 else (after[0] if after else None)
        if first is None or last is None or last[0] <= first[0]:
            return {**EMPTY_WINDOW, "rss_peak": max((s[3] for s in inside), default=0)}
        span = last[0] - first[0]
        server, loadgen = (last[1] - first[1]) / span, (last[2] - first[2]) / span
        return {
            "server_cpu": 100.0 * server,
            "loadgen_cpu": 100.0 * loadgen / self.cores,
            # everything else on the machine (this process included): what competed with
            # the measured pair for CPU; neither CPU % nor the saturation flag shows that
            "other_cpu": max(0.0, 100.0 * ((last[4] - first[4]) / span - server - loadgen)),
            "rss_peak": max(s[3] for s in (inside or [first, last])),
            # how busy the pinned cores were, whoever used them (None when not pinned)
            "server_core_busy": (100.0 * (last[5] - first[5]) / span / len(self.server_cpus)
                                 if self.server_cpus and self.loadgen_cpus else None),
            "loadgen_core_busy": (100.0 * (last[6] - first[6]) / span / len(self.loadgen_cpus)
                                  if self.server_cpus and self.loadgen_cpus else None),
        }


def locust_command(group: Group, address: str, opts: RunnerOptions, out: Path,
                   master_port: int = 0) -> list[str]:
    config = opts.config
    master = ["--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(master_port),
              "--expect-workers", str(config.workers), "--expect-workers-max-wait", "30"] if config.workers else []
    return supervise.locust_command(
        "--headless", "--host", address,
        "-u", str(group.stages[0].users), "-r", f"{SPAWN_RATE:g}", "--exit-code-on-error", "0",
        "--only-summary", "--loglevel", "ERROR", "--stop-timeout", "0",
        "--message-bytes", str(config.message_bytes), "--request-timeout", f"{config.request_timeout_s:g}",
        "--broadcast-rate", f"{group.stages[0].broadcast_rate:g}",
        "--sockbench-stages", json.dumps([s.to_locust() for s in group.stages]),
        "--sockbench-out", str(out), *master, supervise.USER_CLASS[group.mode],
    )


def worker_command(master_port: int) -> list[str]:
    return supervise.locust_worker_command("127.0.0.1", master_port, "ERROR")


def run_group(group: Group, opts: RunnerOptions,
              on_event: Callable[[int, str], None] = lambda stage, event: None) -> list[dict[str, Any]]:
    """Run one group; return one raw result per stage (see :func:`raw_stage`).

    ``on_event(stage_index, event)`` is called as Locust reports its phases (for the
    progress bar). Every failure, a server that does not start included, comes back as
    stages carrying ``error`` (the same message on each).
    """
    name = f"{group.backend}-{group.mode}-r{group.repeat + 1}"
    opts.workdir.mkdir(parents=True, exist_ok=True)
    max_users = max(s.users for s in group.stages)
    try:
        server = start_server(group.backend, group.mode, max_users, opts,
                              opts.workdir / f"{name}.server.log")
    except ServerStartError as exc:
        return [raw_stage(group, i, error=str(exc)) for i in range(len(group.stages))]
    try:
        baseline_rss = psutil.Process(server.pid).memory_info().rss
        out = opts.workdir / f"{name}.locust.json"
        events_path = Path(str(out) + ".events")
        log_path = opts.workdir / f"{name}.locust.log"
        master_port = free_port() if opts.config.workers else 0
        with open(log_path, "wb") as log:
            locust = subprocess.Popen(locust_command(group, server.url_address, opts, out, master_port), stdout=log,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            workers = [subprocess.Popen(worker_command(master_port), stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL) for _ in range(opts.config.workers)]
        for proc in (locust, *workers):
            _pin(proc.pid, opts.config.loadgen_cpus)
        sampler = _Sampler(server.pid, [p.pid for p in (locust, *workers)], loadgen_cores(opts),
                           opts.config.server_cpus, opts.config.loadgen_cpus)
        deadline = time.monotonic() + OVERRUN_FACTOR * group.estimate_s() + OVERRUN_MARGIN_S
        seen = 0
        error = None
        try:
            while locust.poll() is None:
                sampler.sample()
                seen = _read_events(events_path, seen, on_event)
                if not server.alive():
                    error = f"server exited with status {server.proc.returncode} during the run"
                    break
                if time.monotonic() > deadline:
                    error = "the load generator overran its time limit and was stopped"
                    break
                time.sleep(SAMPLE_INTERVAL_S)
        finally:
            # also on Ctrl-C: never leave a Locust behind. Workers quit with their
            # master; signalling them too is the backstop, and one grace covers all.
            stop_processes([locust, *workers])
        _read_events(events_path, seen, on_event)
        if error is None and (locust.returncode != 0 or not out.exists()):
            tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
            error = f"locust exited with status {locust.returncode}: " + " | ".join(tail)
        if error is not None:
            return [raw_stage(group, i, error=error) for i in range(len(group.stages))]
        stages = json.loads(out.read_text(encoding="utf-8"))["stages"]
        return [raw_stage(group, s["index"], s, sampler.window(s["t_start"], s["t_end"]), baseline_rss)
                for s in stages]
    finally:
        server.close()


def _read_events(path: Path, seen: int, on_event: Callable[[int, str], None]) -> int:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return seen
    for line in lines[seen:]:
        try:
            event = json.loads(line)
        except ValueError:
            return seen  # a half-written line: read it next time
        on_event(int(event["stage"]), event["event"])
        seen += 1
    return seen


def raw_stage(group: Group, index: int, locust_stage: dict[str, Any] | None = None,
              window: dict[str, float] | None = None, baseline_rss: int = 0,
              error: str | None = None) -> dict[str, Any]:
    """One stage of one repeat, before repeats are combined."""
    stage = group.stages[index]
    if locust_stage is None or window is None:
        return {"backend": group.backend, "mode": group.mode, "users": stage.users,
                "broadcast_rate": stage.broadcast_rate, "error": error, "tally": StageTally().to_wire(),
                "window_s": 0.0, **EMPTY_WINDOW, "baseline_rss": 0, "users_reached": 0}
    return {"backend": group.backend, "mode": group.mode, "users": stage.users,
            "broadcast_rate": stage.broadcast_rate, "error": error, "tally": locust_stage["tally"],
            "window_s": locust_stage["t_end"] - locust_stage["t_start"],
            "users_reached": locust_stage["users_reached"], "baseline_rss": baseline_rss, **window}
