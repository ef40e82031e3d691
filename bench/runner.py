"""Run one group of the plan: a ``bench serve`` process and a headless Locust process
that steps through the group's stages; sample both with psutil; return per-stage
figures.

Processes, each its own interpreter (gevent and Locust monkey-patch theirs):

* the server: ``python -m bench serve BACKEND --mode M --port 0 --quiet``; its first
  stdout line is ``READY HOST:PORT``. Stopped with SIGTERM (then SIGKILL after 5 s).
* the load generator: ``python -m locust -f bench/locustfile.py --headless`` with
  ``--sockbench-stages``; it writes phase events and its tallies to files here
  (see :mod:`bench.stages`). With ``workers`` > 0 it is a master on loopback and that
  many ``locust --worker`` processes generate the load; their microsecond tallies
  are merged into the master's result, and loadgen CPU % sums them all.

Each is pinned with ``os.sched_setaffinity`` to its own CPUs when asked (on 2 cores:
server on CPU 0, Locust on CPU 1), so the figures do not depend on the scheduler
putting both on one core. CPU % is of one core (100 = one core busy).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import psutil

from bench.latency import StageTally, percentiles_us, stage_summary
from bench.plan import Group
from bench.ready import parse_ready, read_first_line

READY_TIMEOUT_S = 15.0
SAMPLE_INTERVAL_S = 0.2
# A group may overrun its estimate (slow ramps, a struggling backend) by this factor
# plus a margin before its Locust process is killed and the group marked failed.
OVERRUN_FACTOR = 2.0
OVERRUN_MARGIN_S = 30.0
# "The load generator is the limit": Locust at >= this % of its core, server below it.
SATURATED_PERCENT = 90.0
# Other processes using more than this % of a core during a window make it suspect:
# the measured pair waited for CPU, and neither CPU % nor the saturation flag shows it.
BUSY_MACHINE_PERCENT = 20.0
LOCUSTFILE = Path(__file__).with_name("locustfile.py")


class ServerStartError(Exception):
    """The server did not print READY. The message includes its stderr."""


@dataclass(frozen=True)
class RunnerOptions:
    """How to run groups (the same for every group of a run)."""

    workdir: Path                     # logs and Locust's output files go here
    message_bytes: int = 64
    request_timeout: float = 2.0
    spawn_rate: float = 1000.0
    server_cpus: tuple[int, ...] | None = None
    loadgen_cpus: tuple[int, ...] | None = None
    workers: int = 0  # > 0: Locust master + this many local worker processes


def loadgen_cores(opts: RunnerOptions) -> int:
    """Cores the load generator can use: what its CPU % is a percentage of."""
    if opts.workers < 1:
        return 1
    cpus = len(opts.loadgen_cpus) if opts.loadgen_cpus else (os.cpu_count() or 1)
    return max(1, min(opts.workers, cpus))


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
                 log_path: Path) -> tuple[subprocess.Popen, str]:
    """Start ``bench serve`` on port 0 and wait for READY.

    Returns:
        (process, "HOST:PORT").
    Raises:
        ServerStartError: no READY within :data:`READY_TIMEOUT_S` (stderr included).
    """
    max_clients = max(1000, 2 * max_users + 16)  # room for reconnects in flight
    cmd = [sys.executable, "-m", "bench", "serve", backend, "--mode", mode, "--port", "0",
           "--quiet", "--max-clients", str(max_clients)]
    err = open(log_path, "wb")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
    err.close()
    _pin(proc.pid, opts.server_cpus)
    text = read_first_line(proc.stdout, READY_TIMEOUT_S)
    if parse_ready(text) is None:
        stop_process(proc)
        stderr = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        why = stderr[-1] if stderr else f"no READY line within {READY_TIMEOUT_S:g} s"
        raise ServerStartError(f"bench serve {backend} --mode {mode} failed to start: {why}")
    return proc, text.split(None, 1)[1]


def stop_process(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """SIGTERM, wait, SIGKILL if needed."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout:
        proc.stdout.close()


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
            return {"server_cpu": 0.0, "loadgen_cpu": 0.0, "other_cpu": 0.0, "server_core_busy": None,
                    "loadgen_core_busy": None, "rss_peak": max((s[3] for s in inside), default=0)}
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
    user_class = "EchoUser" if group.mode == "echo" else "BroadcastUser"
    master = ["--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(master_port),
              "--expect-workers", str(opts.workers), "--expect-workers-max-wait", "30"] if opts.workers else []
    return [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", address,
        "-u", str(group.stages[0].users), "-r", f"{opts.spawn_rate:g}", "--exit-code-on-error", "0",
        "--only-summary", "--loglevel", "ERROR", "--stop-timeout", "0",
        "--message-bytes", str(opts.message_bytes), "--request-timeout", f"{opts.request_timeout:g}",
        "--broadcast-rate", f"{group.stages[0].broadcast_rate:g}",
        "--sockbench-stages", json.dumps([s.to_locust() for s in group.stages]),
        "--sockbench-out", str(out), *master, user_class,
    ]


def worker_command(master_port: int) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--worker", "--master-host", "127.0.0.1",
            "--master-port", str(master_port), "--loglevel", "ERROR"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_group(group: Group, opts: RunnerOptions,
              on_event: Callable[[int, str], None] = lambda stage, event: None) -> list[dict[str, Any]]:
    """Run one group; return one raw result per stage (see :func:`raw_stage`).

    ``on_event(stage_index, event)`` is called as Locust reports its phases (for the
    progress bar). A server that fails to start raises :class:`ServerStartError`;
    any other failure comes back as stages carrying ``error``.
    """
    name = f"{group.backend}-{group.mode}-r{group.repeat + 1}"
    opts.workdir.mkdir(parents=True, exist_ok=True)
    max_users = max(s.users for s in group.stages)
    server, address = start_server(group.backend, group.mode, max_users, opts, opts.workdir / f"{name}.server.log")
    try:
        baseline_rss = psutil.Process(server.pid).memory_info().rss
        out = opts.workdir / f"{name}.locust.json"
        events_path = Path(str(out) + ".events")
        log_path = opts.workdir / f"{name}.locust.log"
        master_port = _free_port() if opts.workers else 0
        with open(log_path, "wb") as log:
            locust = subprocess.Popen(locust_command(group, address, opts, out, master_port), stdout=log,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            workers = [subprocess.Popen(worker_command(master_port), stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL) for _ in range(opts.workers)]
        for proc in (locust, *workers):
            _pin(proc.pid, opts.loadgen_cpus)
        sampler = _Sampler(server.pid, [p.pid for p in (locust, *workers)], loadgen_cores(opts),
                           opts.server_cpus, opts.loadgen_cpus)
        deadline = time.monotonic() + OVERRUN_FACTOR * group.estimate_s() + OVERRUN_MARGIN_S
        seen = 0
        error = None
        try:
            while locust.poll() is None:
                sampler.sample()
                seen = _read_events(events_path, seen, on_event)
                if server.poll() is not None:
                    error = f"server exited with status {server.returncode} during the run"
                    break
                if time.monotonic() > deadline:
                    error = "the load generator overran its time limit and was stopped"
                    break
                time.sleep(SAMPLE_INTERVAL_S)
        finally:
            if locust.poll() is None:
                stop_process(locust)  # also on Ctrl-C: never leave a Locust behind
            for worker in workers:  # they quit with their master; this is the backstop
                stop_process(worker)
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
        stop_process(server)


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
                "window_s": 0.0, "server_cpu": 0.0, "loadgen_cpu": 0.0, "other_cpu": 0.0, "rss_peak": 0,
                "server_core_busy": None, "loadgen_core_busy": None,
                "baseline_rss": 0, "users_reached": 0}
    return {"backend": group.backend, "mode": group.mode, "users": stage.users,
            "broadcast_rate": stage.broadcast_rate, "error": error, "tally": locust_stage["tally"],
            "window_s": locust_stage["t_end"] - locust_stage["t_start"],
            "users_reached": locust_stage["users_reached"], "baseline_rss": baseline_rss, **window}


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def combine(raws: list[dict[str, Any]], message_bytes: int, processes: int = 1) -> dict[str, Any]:
    """Fold the repeats of one (backend, mode, users) into one results.json run.

    Counts and histograms add up over repeats; ``rps`` is the median of the repeats'
    rates (``rps_samples`` keeps each, for the tie rule); CPU is the mean, RSS the peak.
    """
    first = raws[0]
    good = [r for r in raws if r["error"] is None]
    tally = StageTally()
    for r in good:
        tally.add_wire(r["tally"])
    seconds = sum(r["window_s"] for r in good)
    summary = stage_summary(tally, seconds)
    samples = [_stage_rps(r) for r in good]
    users = first["users"]
    server_cpu = sum(r["server_cpu"] for r in good) / len(good) if good else 0.0
    loadgen_cpu = sum(r["loadgen_cpu"] for r in good) / len(good) if good else 0.0
    rss = max((r["rss_peak"] for r in good), default=0)
    loadgen_core, server_core = _mean_or_none(good, "loadgen_core_busy"), _mean_or_none(good, "server_core_busy")
    baseline = min((r["baseline_rss"] for r in good), default=0)
    broadcast = first["mode"] == "broadcast"
    rps = _median(samples) if samples else 0.0
    return {
        "backend": first["backend"], "mode": first["mode"], "users": users,
        "message_bytes": message_bytes, "duration_s": seconds / len(good) if good else 0.0,
        "requests": summary["requests"], "failures": summary["failures"],
        "failures_by_kind": summary["failures_by_kind"],
        "rps": rps, "rps_samples": samples,
        "latency_us": summary["latency_us"] if good else percentiles_us(StageTally().hist),
        "server": {"cpu_percent": round(server_cpu, 1), "rss_bytes": int(rss),
                   "rss_per_conn_bytes": (rss - baseline) / users if good and users else None,
                   "core_busy_percent": server_core},
        "loadgen": {"cpu_percent": round(loadgen_cpu, 1), "processes": processes,
                    "saturated": bool(good) and generator_bound(loadgen_cpu, server_cpu, loadgen_core, server_core),
                    "core_busy_percent": loadgen_core},
        "deliveries_per_s": rps if broadcast else None,
        "lost": summary["lost"] if broadcast else None,
        "error": next((r["error"] for r in raws if r["error"]), None) if not good else None,
        # optional keys (documented in bench/results.py)
        "broadcast_rate": first["broadcast_rate"] if broadcast else None,
        "sent": summary["sent"] if broadcast else None,
        "out_of_order": summary["out_of_order"] if broadcast else None,
        "users_reached": min((r["users_reached"] for r in good), default=0),
        "server_rss_baseline_bytes": int(baseline),
        "other_cpu_percent": round(sum(r["other_cpu"] for r in good) / len(good), 1) if good else 0.0,
    }


def generator_bound(loadgen_cpu: float, server_cpu: float, loadgen_core: float | None,
                    server_core: float | None) -> bool:
    """Was the load generator, not the server, the limit?

    Yes when Locust used >= 90% of its core while the server used less. When both are
    pinned, also when Locust's core(s) were >= 90% busy, whoever used them (another
    process preempting Locust caps the load just the same), while the server's core
    was not: CPU % of the process alone cannot see that.
    """
    if server_cpu >= SATURATED_PERCENT:
        return False
    if loadgen_cpu >= SATURATED_PERCENT:
        return True
    return (loadgen_core is not None and server_core is not None
            and loadgen_core >= SATURATED_PERCENT and server_core < SATURATED_PERCENT)


def _mean_or_none(raws: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in raws if r.get(key) is not None]
    return round(sum(values) / len(values), 1) if values else None


def _stage_rps(raw: dict[str, Any]) -> float:
    return raw["tally"]["requests"] / raw["window_s"] if raw["window_s"] > 0 else 0.0
