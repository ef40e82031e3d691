"""The probes of ``bench perf``, each against a fresh server, each returning plain numbers.

* :func:`echo_probe`: round trips/s and p99 at N connections (closed loop, the engine),
  with the Little's-law mean latency (connections / rate) that p99 is judged against: a
  p99 far above that mean means some connections wait much longer than others;
* :func:`idle_memory_probe`: server RSS growth per idle connection, over clients that
  each made one round trip and then went silent;
* :func:`mass_disconnect_probe`: the worst round trip a fresh client sees while many
  other clients leave at once (their holding process exits, so the kernel closes all
  their sockets in one go);
* :func:`broadcast_probe`: lines relayed per second through a room.

:func:`measure` runs them in interleaved rounds (every server once per round, so a
busy moment on the shared machine hits them all alike) and returns every value; the
table (``bench.perf.table``) shows medians and ratios measured in the same run.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import psutil

from bench.perf import client as perf_client
from bench.perf import run
from bench.perf.table import REFERENCES
from bench.procs.server import ServerStartError

PROBES = ("echo", "scale", "idle", "disconnect", "broadcast")


@dataclass(frozen=True)
class Sizes:
    """How big and how long each probe is (recorded in the result)."""

    rounds: int = 3
    seconds: float = 3.0  # measured window of each echo and broadcast run
    few: int = 100  # connections of the echo probe
    many: int = 10_000  # connections of the scale probe
    idle: int = 5_000  # idle clients of the memory and mass-disconnect probes
    window: float = 3.0  # seconds watched after the mass disconnect
    fan_conns: int = 100  # broadcast room members
    fan_senders: int = 10  # of which closed-loop senders

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _extra(conns: int, mode: str = "echo") -> list[str]:
    """Server flags: room for ``conns`` clients (+ probes)."""
    return ["--max-clients", str(conns + 100), "--mode", mode]


def _flags(name: str, conns: int, mode: str = "echo") -> list[str]:
    return [] if name in REFERENCES else _extra(conns, mode)


def echo_probe(name: str, conns: int, seconds: float) -> dict[str, Any]:
    """Closed-loop echo at ``conns`` connections against a fresh ``name`` server.

    Returns the client's figures (rps, p50_us, p99_us, errors, server_cpu_s) plus
    ``capacity`` (round trips per server CPU-second: steadier than rps when other
    processes take the server's CPU now and then), ``little_us`` (the mean latency
    Little's law gives for a closed loop: conns / rps) and ``p99_over_mean``.
    """
    # after the server holds every connection (the client waits for that, up to 60 s):
    # every connection echoing before the window
    warmup = 1.0 + conns / 5000
    with run.server(name, _flags(name, conns)) as (pid, port):
        out = run.client("echo", port, conns, seconds, warmup, "--pid", pid,
                         timeout=seconds + warmup + 120)
    if out.get("round_trips") and out.get("server_cpu_s"):
        out["capacity"] = out["round_trips"] / out["server_cpu_s"]
    if out.get("rps") and out.get("p99_us"):
        out["little_us"] = conns / out["rps"] * 1e6
        out["p99_over_mean"] = out["p99_us"] / out["little_us"]
    return out


def broadcast_probe(name: str, conns: int, senders: int, seconds: float) -> dict[str, Any]:
    """``conns`` room members, ``senders`` of them closed loop, on a broadcast server."""
    with run.server(name, _extra(conns, "broadcast")) as (_pid, port):
        return run.client("broadcast", port, conns, senders, seconds, 1.0, timeout=seconds + 60)


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


def idle_memory_probe(name: str, conns: int) -> dict[str, Any]:
    """Server RSS growth per idle client, in KiB, over ``conns`` clients that each made
    one round trip and then went silent (50 warm-up clients come and go first, so
    one-off allocations are not charged to the idle ones)."""
    with run.server(name, _flags(name, conns)) as (pid, port):
        server = psutil.Process(pid)
        perf_client.release(perf_client.start_holder(port, 50, run.CLIENT_CPU))
        time.sleep(0.3)
        base = _settled_rss(server)
        held = perf_client.start_holder(port, conns, run.CLIENT_CPU)
        try:
            grown = _settled_rss(server)
        finally:
            held.kill()
            held.wait()
    return {"kib_per_conn": (grown - base) / 1024 / conns, "rss_base_kib": base // 1024,
            "rss_idle_kib": grown // 1024}


def mass_disconnect_probe(name: str, conns: int, window: float) -> dict[str, Any]:
    """Worst round trip (ms) of a fresh client while ``conns`` clients leave at once
    (see ``bench.perf.client``'s ``disconnect``)."""
    with run.server(name, _flags(name, conns)) as (_pid, port):
        return run.client("disconnect", port, conns, window, timeout=window + 120)


def measure(sizes: Sizes, probes: tuple[str, ...], names: list[str],
            log: Callable[[str], None]) -> dict[str, dict[str, list[Any]]]:
    """Run ``probes`` over ``names`` in ``sizes.rounds`` interleaved rounds.

    Returns ``{key: {server: [value per round]}}``; keys: ``echo`` (rps at ``few``),
    ``echo-cpu`` (round trips per server CPU-second), ``p99`` and ``p99-mean`` (p99 in µs
    and over the Little's-law mean, at ``few``), ``many``, ``many-p99``,
    ``many-p99-mean`` (the same at ``many``), ``idle`` (KiB per connection),
    ``disconnect`` (worst ms), ``broadcast`` (lines/s), ``errors`` (failed round trips,
    summed, and probe errors as text). A value is None where a run failed.
    """
    got: dict[str, dict[str, list[Any]]] = {}

    def record(key: str, name: str, value: Any) -> None:
        got.setdefault(key, {}).setdefault(name, []).append(value)

    def safely(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        try:
            return fn()
        except (OSError, RuntimeError, ServerStartError, subprocess.TimeoutExpired) as exc:
            return {"error": str(exc)[:120]}

    def note(probe: str, name: str, out: dict[str, Any], shown: str) -> None:
        if out.get("error") or out.get("errors"):
            record("errors", name, f"{probe}: {out.get('error') or str(out['errors']) + ' failed'}")
        log(f"{probe} {name}: {out.get('error') or shown}")

    for r in range(sizes.rounds):
        log(f"round {r + 1}/{sizes.rounds}")
        for name in names:
            wire = name not in REFERENCES  # the references have no broadcast, no limits
            if "echo" in probes or "scale" in probes:
                few = safely(lambda: echo_probe(name, sizes.few, sizes.seconds))
                record("echo", name, few.get("rps"))
                record("echo-cpu", name, few.get("capacity"))
                record("p99", name, few.get("p99_us"))
                record("p99-mean", name, few.get("p99_over_mean"))
                note(f"echo {sizes.few}", name, few, f"{few.get('rps', 0):,.0f}/s p99 {few.get('p99_us')} us")
            if "scale" in probes:
                many = safely(lambda: echo_probe(name, sizes.many, sizes.seconds))
                record("many", name, many.get("rps"))
                record("many-p99", name, many.get("p99_us"))
                record("many-p99-mean", name, many.get("p99_over_mean"))
                note(f"echo {sizes.many}", name, many, f"{many.get('rps', 0):,.0f}/s p99 {many.get('p99_us')} us")
            if "idle" in probes and wire:
                idle = safely(lambda: idle_memory_probe(name, sizes.idle))
                record("idle", name, idle.get("kib_per_conn"))
                note("idle", name, idle, f"{idle.get('kib_per_conn', 0):.1f} KiB/conn")
            if "disconnect" in probes and wire:
                gone = safely(lambda: mass_disconnect_probe(name, sizes.idle, sizes.window))
                record("disconnect", name, gone.get("worst_ms"))
                note("disconnect", name, gone, f"worst {gone.get('worst_ms')} ms")
            if "broadcast" in probes and wire:
                fan = safely(lambda: broadcast_probe(name, sizes.fan_conns, sizes.fan_senders, sizes.seconds))
                record("broadcast", name, fan.get("lines_per_s"))
                note("broadcast", name, fan, f"{fan.get('lines_per_s', 0):,.0f} lines/s")
    return got
