"""The measurement program of ``bench compare``: one process drives the load engine (the
native one, or the pure-Python one where it is not built: :func:`open_engine`) against
every backend of a mode, interleaved, and writes one JSON line per window.

Run by :mod:`bench.compare.runner` as ``python -m bench.loadgen.program SPEC.json``, pinned
to the load generator's CPUs, while every backend's server of the mode is up (pinned to the
server's CPU, an idle one costs nothing). No Locust and no gevent here: the engine's own
thread does every socket call with the GIL released, so switching a window from one
backend to the next is a few engine calls, not a Locust start, and windows can be short
and repeated.

What it runs, per connection count (ascending, so a server's memory is never measured
after a larger load it may not have returned):

* echo, ``idle``: that many connections, each one round trip and then silent; the
  server's RSS (memory held by mostly idle connections), and whether it answered every
  connection within the request timeout (a server that serves one connection at a time
  does not: it is left out of the set rate).
* ``capacity``: closed loop, every backend once per repeat, the backend order rotated each
  repeat; requests/s, server CPU per request, RSS. Echo: one line in flight per
  connection. Broadcast: :data:`CLOSED_LOOP_SENDERS` members keep one line in flight each
  and the others listen (every member sending closed loop would queue N lines of N-1
  deliveries at once: a measure of the queue, not of the server).
* echo, ``rate``: open loop at one offered rate for every backend (a fraction of the
  slowest served backend's median capacity, the same for all), each line timed from its
  intended send time: latency as a production load would see it.
* broadcast, ``slo``: the room's send rate stepped up (every backend at one step before
  the next) until p99 delivery latency passes the target, a line is lost, or too few
  deliveries arrive; a step fails only when it fails twice. The highest rate held counts.

A window during which other processes took more than ``busy_percent`` of a core is
measured again (``remeasure`` times, while a budget of ``remeasure_share`` of the run's
windows lasts); the last attempt is kept with ``disturbed`` set.

Each output line is a JSON object: ``{"event": "window", ...}`` (see :func:`measure`)
or ``{"event": "progress", "done", "total", "what"}``; the last is ``{"event": "end"}``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from typing import Any, Iterator

import psutil

from bench.loadgen.engine import Counts, open_engine
from bench.loadgen.window_rules import held as _held, percentiles, served as _served
from servers.runtime import raise_open_files_limit

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
# The latency-target ladder walks down at most this many steps below its start: a backend
# that holds nothing that far below its own capacity holds "none".
MAX_STEPS_DOWN = 2


@dataclass(frozen=True)
class Target:
    """One backend's server: where it listens and its pid (for CPU and RSS)."""

    backend: str
    host: str
    port: int
    pid: int


def _cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def _machine_busy_s() -> float:
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


class Program:
    """The schedule of one mode, run against one engine. ``emit`` gets every output line."""

    def __init__(self, spec: dict[str, Any], emit: Any = None) -> None:
        self.spec = spec
        self.mode: str = spec["mode"]
        self.targets = [Target(**t) for t in spec["targets"]]
        self.procs = {t.backend: psutil.Process(t.pid) for t in self.targets}
        self.me = psutil.Process()
        self.engine = open_engine()
        self.emit = emit or (lambda obj: print(json.dumps(obj), flush=True))
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
        users = self.users()
        per_users = n_b * reps * 2 + (n_b if self.mode == "echo" else n_b * 6)
        return max(1, len(users) * per_users)

    def users(self) -> list[int]:
        users = sorted(set(int(u) for u in self.spec["users"]))
        return [u for u in users if u >= 2] if self.mode == "broadcast" else users

    def rotated(self, repeat: int) -> list[Target]:
        k = repeat % len(self.targets)
        return self.targets[k:] + self.targets[:k]

    def run(self) -> None:
        try:
            for users in self.users():
                if self.mode == "echo":
                    for target in self.targets:
                        self.idle_window(target, users)
                capacity: dict[str, list[dict[str, Any]]] = {t.backend: [] for t in self.targets}
                for repeat in range(int(self.spec["repeats"])):
                    for target in self.rotated(repeat):
                        capacity[target.backend].append(self.window(target, users, "capacity", repeat))
                if self.mode == "echo":
                    rate = self.set_rate(users, capacity)
                    if rate:
                        for repeat in range(int(self.spec["repeats"])):
                            for target in self.rotated(repeat):
                                self.window(target, users, "rate", repeat, rate)
                else:
                    self.slo_ladder(users, capacity)
        finally:
            self.engine.close()
        self.emit({"event": "end"})

    def set_rate(self, users: int, capacity: dict[str, list[dict[str, Any]]]) -> float:
        """The offered rate for every backend at ``users``: ``rate_fraction`` of the slowest
        median capacity among backends that served it without failures (0: none did)."""
        medians = [sorted(w["per_s"] for w in ws)[len(ws) // 2] for b, ws in capacity.items()
                   if ws and all(_served(w, users) for w in ws) and b not in self.unserved.get(users, ())]
        medians = [m for m in medians if m > 0]
        return float(self.spec["rate_fraction"]) * min(medians) if medians else 0.0

    def slo_ladder(self, users: int, capacity: dict[str, list[dict[str, Any]]]) -> None:
        """Find each served backend's highest room rate that holds the target, on one grid of
        rates shared by all backends (so equal results mean the same step).

        A backend starts at the highest step at or below ``slo_start_fraction`` of its own
        closed-loop capacity and climbs until a step fails; if its first step fails it walks
        down instead, at most :data:`MAX_STEPS_DOWN` steps and never below the rate that
        sends ``min_lines`` in three windows. Every backend takes one step per round (interleaved), and a step fails
        only when it fails twice."""
        served = {b: sorted(w["per_s"] for w in ws)[len(ws) // 2] for b, ws in capacity.items()
                  if ws and all(_served(w, users) for w in ws)}
        served = {b: c for b, c in served.items() if c > 0}
        if not served:
            return
        factor, base = float(self.spec["slo_factor"]), float(self.spec["slo_grid_base"])
        top = float(self.spec["slo_top_fraction"]) * max(served.values())

        def rate(k: int) -> float:  # deliveries/s of grid step k
            return base * factor ** k

        # the lowest step that can send min_lines within its longest window (3 windows):
        # below it no step can hold, so the ladder never goes there
        floor_rate = float(self.spec["min_lines"]) / (3 * float(self.spec["window_s"])) * (users - 1)
        lowest = max(0, math.ceil(math.log(max(floor_rate, base) / base, factor)))
        # state per backend: (next step, direction, any step held yet)
        state = {}
        start = {}
        for b, cap in served.items():
            k = max(lowest, int(math.floor(math.log(max(cap * float(self.spec["slo_start_fraction"]), base) / base,
                                                    factor))))
            state[b], start[b] = (k, 0, False), k
        targets = {t.backend: t for t in self.targets}
        while state:
            for b in [t.backend for t in self.targets if t.backend in state]:
                k, direction, held_any = state[b]
                w = self.window(targets[b], users, "slo", k, rate(k) / (users - 1))
                if not w["held"]:
                    w = self.window(targets[b], users, "slo", k, rate(k) / (users - 1))
                if w["held"]:
                    if direction < 0 or rate(k + 1) > top:
                        del state[b]            # walked down to a held step, or past the grid's top
                    else:
                        state[b] = (k + 1, 1, True)
                elif held_any or k <= lowest or start[b] - k >= MAX_STEPS_DOWN:
                    del state[b]                # the step above the last held one failed, or none held
                else:
                    state[b] = (k - 1, -1, False)

    # -- windows ------------------------------------------------------------------------

    def _connect(self, target: Target, users: int, kind: str, rate: float) -> list[int]:
        timeout = float(self.spec["timeout_s"])
        size = int(self.spec["message_bytes"])
        if self.mode == "echo":
            per_conn = IDLE_RATE_PER_S if kind == "idle" else (rate / users if rate else 0.0)
            ids = [self.engine.add_echo(target.host, target.port, size, per_conn, timeout) for _ in range(users)]
        else:
            per_conn = rate / users if rate else 0.0
            self.engine.set_broadcast(per_conn, 0.0)
            self.engine.sync()  # the engine-wide rate first: it would override the rates below
            # closed loop: a few senders keep one line each in flight and the rest only listen,
            # so the room is busy without N lines of N-1 deliveries each queued at once
            senders = users if rate else min(users, CLOSED_LOOP_SENDERS)
            ids = [self.engine.add_broadcast(target.host, target.port, size,
                                             per_conn if i < senders else LISTEN_ONLY_RATE, timeout, 0.0)
                   for i in range(users)]
        self.engine.sync()
        return ids

    def _disconnect(self, ids: list[int]) -> None:
        for i in ids:
            self.engine.remove(i)
        self.engine.sync()
        self.engine.harvest()

    def idle_window(self, target: Target, users: int) -> None:
        """``users`` echo connections that each made one round trip; the server's RSS."""
        ids = self._connect(target, users, "idle", 0.0)
        t0 = time.monotonic()
        deadline, answered = t0 + 1.0 / IDLE_RATE_PER_S + IDLE_MARGIN_S, Counts()
        while time.monotonic() < deadline:
            time.sleep(0.05)
            answered.add(self.engine.harvest().get("echo", Counts()))
            if answered.requests + answered.failed >= users:
                break
        time.sleep(0.05)
        rss = self._rss(target)
        self._disconnect(ids)
        if answered.requests < users:
            self.unserved.setdefault(users, set()).add(target.backend)
        self._emit_window({"kind": "idle", "backend": target.backend, "users": users, "repeat": 0,
                           "rss_bytes": rss, "requests": answered.requests,
                           "unanswered": max(0, users - answered.requests),
                           "wall_s": time.monotonic() - t0,
                           "failures": dict(answered.failures), "attempts": 1})

    def window(self, target: Target, users: int, kind: str, repeat: int, rate: float = 0.0) -> dict[str, Any]:
        """One measured window, re-measured while other processes were busy (see module doc)."""
        attempts, t0 = 0, time.monotonic()
        while True:
            attempts += 1
            w = self.measure(target, users, kind, repeat, rate)
            w["attempts"] = attempts
            if kind == "slo":
                w["held"] = _held(w, self.spec)
            # the budget grows with the run, so a busy start cannot spend all of it
            budget = self.remeasure_share * (self.done + 1) + (2 if self.remeasure_share else 0)
            if not w["disturbed"] or attempts > int(self.spec["remeasure"]) or self.remeasured >= budget:
                break
            self.remeasured += 1
        w["wall_s"] = time.monotonic() - t0
        self._emit_window(w)
        return w

    def measure(self, target: Target, users: int, kind: str, repeat: int, rate: float) -> dict[str, Any]:
        """Connect, warm up, count one window, disconnect. ``rate``: offered lines/s of the
        whole window (all connections together); 0 = closed loop."""
        window_s = float(self.spec["window_s"])
        if kind == "slo" and rate > 0:  # enough lines for the p99 and the loss count to mean something,
            # within reason: a rate too low to send them in 3 windows does not hold the target
            window_s = max(window_s, min(float(self.spec["min_lines"]) / rate, 3 * window_s))
        ids = self._connect(target, users, kind, rate)
        try:
            time.sleep(float(self.spec["warmup_s"]))
            proc = self.procs[target.backend]
            self.engine.harvest()
            t0, s0, l0, m0 = time.monotonic(), _cpu_s(proc), _cpu_s(self.me), _machine_busy_s()
            counts = self._count(window_s, kind == "capacity" and self.mode == "broadcast")
            t1, s1, l1, m1 = time.monotonic(), _cpu_s(proc), _cpu_s(self.me), _machine_busy_s()
            rss = self._rss(target)
        except psutil.Error:
            self._disconnect(ids)
            return {"kind": kind, "backend": target.backend, "users": users, "repeat": repeat,
                    "error": "the server exited during the window", "disturbed": False}
        self._disconnect(ids)
        c = counts.get("broadcast" if self.mode == "broadcast" else "echo", Counts())
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
        }

    def _count(self, window_s: float, until_lines: bool) -> dict[str, Counts]:
        """Harvest after ``window_s``; with ``until_lines`` (broadcast closed loop, where a
        large room sends few lines: each takes N-1 deliveries), go on in steps of a tenth of
        the window until ``min_lines`` lines were sent, for at most three windows."""
        time.sleep(window_s)
        counts = self.engine.harvest()
        if not until_lines:
            return counts
        total = counts.get("broadcast", Counts())
        deadline = time.monotonic() + 2 * window_s
        while total.sent < int(self.spec["min_lines"]) and time.monotonic() < deadline:
            time.sleep(window_s / 10)
            total.add(self.engine.harvest().get("broadcast", Counts()))
        return {"broadcast": total}

    def _rss(self, target: Target) -> int:
        try:
            return int(self.procs[target.backend].memory_info().rss)
        except psutil.Error:
            return 0

    def _emit_window(self, w: dict[str, Any]) -> None:
        self.emit({"event": "window", "mode": self.mode, **w})
        self.done += 1
        self.emit({"event": "progress", "done": self.done, "total": max(self.total, self.done),
                   "what": f"{self.mode} {w['backend']} {w['users']} conn {w['kind']}"})


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0], encoding="utf-8") as fh:
        spec = json.load(fh)
    raise_open_files_limit()
    Program(spec).run()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the supervisor stops us with SIGINT/SIGTERM: no traceback
        sys.exit(130)
