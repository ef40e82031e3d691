"""The measurement schedule of ``bench compare``: every backend of a mode, interleaved, in
short windows, one JSON line per window.

It runs inside the mode's one Locust process (:mod:`bench.loadgen.compare_locustfile`
starts it as a greenlet when the test starts): each window's connections are Locust users,
one per connection in the process's engine (the native one, or the pure-Python one where
it is not built: :func:`~bench.loadgen.engine.open_engine`), started and stopped through a
:class:`Crowd`. The schedule itself imports neither Locust nor gevent: the engine's own
thread does every socket call, so switching a window from one backend to the next is a
spawn and a stop of users, and windows can be short and repeated. The program is the only
consumer of the engine's counts; every window's counts also go to Locust's statistics
(through ``record``) under :func:`locust_name`.

What it runs, per connection count (ascending, so a server's memory is never measured
after a larger load it may not have returned):

* echo, ``idle``: that many connections, each one round trip and then silent; the
  server's RSS (memory held by mostly idle connections), and whether it answered every
  connection within the request timeout (a server that serves one connection at a time
  does not: it is left out of the set rate).
* ``capacity``: closed loop, every backend once per repeat, the backend order rotated each
  repeat; requests/s, server CPU per request, RSS. Where a pick of the report's answer is
  taken there are more repeats (:func:`~bench.loadgen.window_rules.windows_at`), and a
  backend that cannot rank there is not measured for nothing
  (:func:`~bench.loadgen.window_rules.not_worth_measuring`). Echo: one line in flight per
  connection. Broadcast: :data:`CLOSED_LOOP_SENDERS` members keep one line in flight each
  and the others listen (every member sending closed loop would queue N lines of N-1
  deliveries at once: a measure of the queue, not of the server).
* echo, ``rate``: open loop at one offered rate for every backend (a fraction of the
  slowest served backend's median capacity, the same for all), each line timed from its
  intended send time: latency as a production load would see it.
* broadcast, ``slo``: the room's send rate stepped up until a step fails
  (:mod:`bench.loadgen.slo_ladder`).

A window during which other processes took more than ``busy_percent`` of a core is
measured again (``remeasure`` times, while a budget of ``remeasure_share`` of the run's
windows lasts); the last attempt is kept with ``disturbed`` set, and Locust files the
counts of the attempts dropped under the window's name plus :data:`DROPPED_SUFFIX`.

Each output is a JSON object: ``{"event": "window", ...}`` (see :meth:`Program.measure`)
or ``{"event": "progress", "done", "total", "what"}``; the last is ``{"event": "end"}``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import psutil

from bench.loadgen.engine import Counts
from bench.loadgen.slo_ladder import climb
from bench.loadgen.window_rules import (generator_bound, held as _held, not_worth_measuring, percentiles,
                                       set_rate, windows_at)

# A connection of the idle window sends a line at a random time within its first 0.25 s,
# then four a second: mostly idle, and every one has been answered once when RSS is read.
IDLE_RATE_PER_S = 4.0
# The idle window waits this long past the first second for every connection's first
# round trip; one still unanswered then is counted unanswered (a loopback round trip to a
# server that serves every connection takes well under this, even at 1,000 connections).
IDLE_MARGIN_S = 0.5
# Broadcast capacity: this many members send closed loop (one line in flight each), the
# others only listen (a rate so low that their first line would come in decades).
CLOSED_LOOP_SENDERS = 8
LISTEN_ONLY_RATE = 1e-9
# Locust's name for the counts of an attempt that was measured again (not in results.json).
DROPPED_SUFFIX = " (measured again)"

Batches = list[tuple[float, Counts]]  # (time.time() of the harvest, what it counted)


class Crowd(Protocol):
    """Starts and stops one window's connections (in ``bench compare``: Locust users)."""

    def start(self, mode: str, host: str, port: int, users: int, rate: float, senders: int,
              other_rate: float) -> None:
        """``users`` connections in the program's engine, every one added when this returns:
        the first ``senders`` at ``rate`` lines/s each, the rest at ``other_rate``."""

    def stop(self) -> None:
        """Remove every connection :meth:`start` added; none counts anything after this."""


@dataclass(frozen=True)
class Target:
    """One backend's server: where it listens and its pid (for CPU and RSS)."""

    backend: str
    host: str
    port: int
    pid: int


def locust_name(w: dict[str, Any]) -> str:
    """The name Locust's statistics file a window's counts under (request type: the mode),
    e.g. ``gevent 100 conn capacity`` or ``gevent 100 conn slo 40000/s``; repeats add up."""
    name = f"{w['backend']} {w['users']} conn {w['kind']}"
    return name + f" {w['offered_per_s']:.0f}/s" if w["kind"] == "slo" else name


def _cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def _machine_busy_s() -> float:
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


class Program:
    """The schedule of one mode, run against one engine through one crowd.

    ``emit`` gets every output object; ``record(mode, name, batches)`` gets the counts of
    every window (for Locust's statistics)."""

    def __init__(self, spec: dict[str, Any], engine: Any, crowd: Crowd,
                 emit: Callable[[dict[str, Any]], None],
                 record: Callable[[str, str, Batches], None] = lambda mode, name, batches: None) -> None:
        self.spec = spec
        self.mode: str = spec["mode"]
        self.targets = [Target(**t) for t in spec["targets"]]
        self.procs = {t.backend: psutil.Process(t.pid) for t in self.targets}
        self.me = psutil.Process()
        self.engine, self.crowd, self.emit, self.record = engine, crowd, emit, record
        self.done, self.total = 0, self.estimate_windows()
        # windows that may still be measured again because other processes were busy: a
        # share of the run, so a busy machine cannot lengthen it without bound
        self.remeasure_share = float(spec.get("remeasure_share", 0.15))
        self.remeasured = 0
        # echo: backends that left a connection unanswered in the idle window, per count
        self.unserved: dict[int, set[str]] = {}

    # -- the schedule --------------------------------------------------------------------

    def estimate_windows(self) -> int:
        n_b, reps = len(self.targets), int(self.spec["repeats"])
        per_users = n_b * reps * 2 + (n_b if self.mode == "echo" else n_b * 6)
        extra = sum(len(v) for v in self.spec.get("answer_users", {}).values())
        return max(1, len(self.users()) * per_users + extra * n_b * (windows_at(self.spec, 0, "answer") - reps))

    def users(self) -> list[int]:
        users = sorted(set(int(u) for u in self.spec["users"]))
        return [u for u in users if u >= 2] if self.mode == "broadcast" else users

    def rotated(self, repeat: int) -> list[Target]:
        k = repeat % len(self.targets)
        return self.targets[k:] + self.targets[:k]

    def run(self) -> None:
        for users in self.users():
            if self.mode == "echo":
                for target in self.targets:
                    self.idle_window(target, users)
            capacity: dict[str, list[dict[str, Any]]] = {t.backend: [] for t in self.targets}
            for repeat in range(windows_at(self.spec, users, "capacity")):
                for target in self.rotated(repeat):
                    if not self._skip(target, users, "capacity", repeat, capacity[target.backend]):
                        capacity[target.backend].append(self.window(target, users, "capacity", repeat))
            if self.mode == "echo":
                rate = self.set_rate(users, capacity)
                if rate:
                    for repeat in range(windows_at(self.spec, users, "rate")):
                        for target in self.rotated(repeat):
                            if not self._skip(target, users, "rate", repeat, []):
                                self.window(target, users, "rate", repeat, rate)
            else:
                climb(self, users, capacity, confirm=users in self.spec.get("answer_users", {}).get("slo", ()))
        self.emit({"event": "end"})

    def _skip(self, target: Target, users: int, kind: str, repeat: int, before: list[dict[str, Any]]) -> bool:
        return not_worth_measuring(self.spec, kind, repeat, target.backend in self.unserved.get(users, ()), before)

    def set_rate(self, users: int, capacity: dict[str, list[dict[str, Any]]]) -> float:
        return set_rate(self.spec, users, capacity, self.unserved.get(users, set()))

    # -- windows ------------------------------------------------------------------------

    def _connect(self, target: Target, users: int, kind: str, rate: float) -> None:
        if self.mode == "echo":
            per_conn = IDLE_RATE_PER_S if kind == "idle" else (rate / users if rate else 0.0)
            self.crowd.start("echo", target.host, target.port, users, per_conn, users, per_conn)
            return
        per_conn = rate / users if rate else 0.0
        self.engine.set_broadcast(per_conn, 0.0)
        self.engine.sync()  # the engine-wide rate first: it would override the rates below
        # closed loop: a few senders keep one line each in flight and the rest only listen,
        # so the room is busy without N lines of N-1 deliveries each queued at once
        senders = users if rate else min(users, CLOSED_LOOP_SENDERS)
        self.crowd.start("broadcast", target.host, target.port, users, per_conn, senders, LISTEN_ONLY_RATE)

    def _disconnect(self) -> None:
        self.crowd.stop()
        self.engine.harvest()  # what came in while the connections closed counts nowhere

    def idle_window(self, target: Target, users: int) -> None:
        """``users`` echo connections that each made one round trip; the server's RSS."""
        self._connect(target, users, "idle", 0.0)
        t0 = time.monotonic()
        deadline, answered, batches = t0 + 1.0 / IDLE_RATE_PER_S + IDLE_MARGIN_S, Counts(), []
        while time.monotonic() < deadline:
            time.sleep(0.05)
            batch = self.engine.harvest().get("echo", Counts())
            batches.append((time.time(), batch))
            answered.add(batch)
            if answered.requests + answered.failed >= users:
                break
        time.sleep(0.05)
        rss = self._rss(target)
        self._disconnect()
        if answered.requests < users:
            self.unserved.setdefault(users, set()).add(target.backend)
        self._emit_window({"kind": "idle", "backend": target.backend, "users": users, "repeat": 0,
                           "rss_bytes": rss, "requests": answered.requests,
                           "unanswered": max(0, users - answered.requests),
                           "wall_s": time.monotonic() - t0,
                           "failures": dict(answered.failures), "attempts": 1}, batches)

    def window(self, target: Target, users: int, kind: str, repeat: int, rate: float = 0.0,
               ladder: str | None = None) -> dict[str, Any]:
        """One measured window, re-measured while other processes were busy (see module doc).
        ``ladder``: which part of the latency ladder asked for it ("climb", "retry" or
        "confirm", :mod:`bench.loadgen.slo_ladder`), written into the window."""
        attempts, t0 = 0, time.monotonic()
        while True:
            attempts += 1
            w, batches = self.measure(target, users, kind, repeat, rate)
            w["attempts"] = attempts
            if ladder:
                w["ladder"] = ladder
            if kind == "slo":
                w["held"] = _held(w, self.spec)
                # failed because the load generator, not the server, ran out of CPU
                w["generator_bound"] = not w["held"] and generator_bound(w, self.spec)
            # the budget grows with the run, so a busy start cannot spend all of it
            budget = self.remeasure_share * (self.done + 1) + (2 if self.remeasure_share else 0)
            if not w["disturbed"] or attempts > int(self.spec["remeasure"]) or self.remeasured >= budget:
                break
            self.remeasured += 1
            self.record(self.mode, locust_name(w) + DROPPED_SUFFIX, batches)
        w["wall_s"] = time.monotonic() - t0
        self._emit_window(w, batches)
        return w

    def measure(self, target: Target, users: int, kind: str, repeat: int,
                rate: float) -> tuple[dict[str, Any], Batches]:
        """Connect, warm up, count one window, disconnect: the window and the harvests it
        counted. ``rate``: offered lines/s of the whole window (all connections); 0 = closed loop."""
        window_s = float(self.spec["window_s"])
        if kind == "slo" and rate > 0:  # enough lines for the p99 and the loss count to mean something,
            # within reason: a rate too low to send them in 3 windows does not hold the target
            window_s = max(window_s, min(float(self.spec["min_lines"]) / rate, 3 * window_s))
        self._connect(target, users, kind, rate)
        try:
            time.sleep(float(self.spec["warmup_s"]))
            proc = self.procs[target.backend]
            self.engine.harvest()
            t0, s0, l0, m0 = time.monotonic(), _cpu_s(proc), _cpu_s(self.me), _machine_busy_s()
            batches = self._count(window_s, kind == "capacity" and self.mode == "broadcast")
            t1, s1, l1, m1 = time.monotonic(), _cpu_s(proc), _cpu_s(self.me), _machine_busy_s()
            rss = self._rss(target)
        except psutil.Error:
            self._disconnect()
            return {"kind": kind, "backend": target.backend, "users": users, "repeat": repeat,
                    "error": "the server exited during the window", "disturbed": False}, []
        self._disconnect()
        c = Counts()
        for _, batch in batches:
            c.add(batch)
        span = max(t1 - t0, 1e-6)
        server_cpu, loadgen_cpu = (s1 - s0) / span, (l1 - l0) / span
        other = max(0.0, (m1 - m0) / span - server_cpu - loadgen_cpu)
        return {
            "kind": kind, "backend": target.backend, "users": users, "repeat": repeat,
            "offered_per_s": rate * (users - 1 if self.mode == "broadcast" else 1),
            "lines_per_s": rate if self.mode == "broadcast" else None,
            "window_s": span, "requests": c.requests, "per_s": c.requests / span,
            "failures": dict(c.failures), "sent": c.sent, "lost": c.lost,
            "out_of_order": c.out_of_order + c.duplicated,
            "latency_us": percentiles(c.latency_us),
            "server_cpu_s": s1 - s0,
            "cost_us": (s1 - s0) * 1e6 / c.requests if c.requests else None,
            "server_cpu_percent": 100.0 * server_cpu, "loadgen_cpu_percent": 100.0 * loadgen_cpu,
            "other_cpu_percent": 100.0 * other, "rss_bytes": rss,
            "disturbed": 100.0 * other > float(self.spec["busy_percent"]),
        }, batches

    def _count(self, window_s: float, until_lines: bool) -> Batches:
        """Harvest after ``window_s``; with ``until_lines`` (broadcast closed loop, where a
        large room sends few lines: each takes N-1 deliveries), go on in steps of a tenth of
        the window until ``min_lines`` lines were sent, for at most three windows."""
        name = "broadcast" if self.mode == "broadcast" else "echo"
        time.sleep(window_s)
        batches = [(time.time(), self.engine.harvest().get(name, Counts()))]
        if not until_lines:
            return batches
        sent, deadline = batches[0][1].sent, time.monotonic() + 2 * window_s
        while sent < int(self.spec["min_lines"]) and time.monotonic() < deadline:
            time.sleep(window_s / 10)
            batches.append((time.time(), self.engine.harvest().get(name, Counts())))
            sent += batches[-1][1].sent
        return batches

    def _rss(self, target: Target) -> int:
        try:
            return int(self.procs[target.backend].memory_info().rss)
        except psutil.Error:
            return 0

    def _emit_window(self, w: dict[str, Any], batches: Batches) -> None:
        if not w.get("error"):
            self.record(self.mode, locust_name(w), batches)
        self.emit({"event": "window", "mode": self.mode, **w})
        self.done += 1
        self.emit({"event": "progress", "done": self.done, "total": max(self.total, self.done),
                   "what": f"{self.mode} {w['backend']} {w['users']} conn {w['kind']}"})
