"""Fold the measurement program's windows into points: one per (mode, backend, connections).
Pure: no processes, no I/O.

Each window (:mod:`bench.loadgen.program`) is one measurement; a point gathers a backend's
windows at one connection count and decides what they say together:

* **capacity** and **cost**: one sample per ``capacity`` window (requests/s, server CPU µs
  per request). Disturbed windows (other processes busy even after a re-measure) are left
  out when at least two clean ones remain; otherwise every sample is kept and the point is
  *disturbed*: shown, marked, never recommended.
* **failing**: more than :data:`FAILURE_TOLERANCE` of the attempts failed, users timed out,
  or (echo) a connection went unanswered in the idle window.
* **generator-bound**: the load generator used >= :data:`SATURATED_PERCENT` of its core
  while the server used less: the generator, not the server, was the limit.
* **too few lines** (broadcast): fewer than :data:`MIN_LINES` lines sent per window, too
  few for a delivery rate or a loss count to rank.
* ``set_rate`` (echo): the windows at the offered rate, percentiles as the median over them.
* ``slo`` (broadcast): the ladder's steps, each decided by the majority of its counted
  tries, and the highest room rate held.
* ``memory``: RSS with idle connections (echo) and at the end of the busy windows.
"""

from __future__ import annotations

from statistics import median
from typing import Iterable

from bench.results.summary import Flags, Memory, Point, Samples, SetRate, Slo, SloStep
from bench.results.windows import FailedWindow, IdleWindow, MeasuredWindow, Percentiles, Window

FAILURE_TOLERANCE = 0.01
SATURATED_PERCENT = 90.0
MIN_LINES = 50
FAILURE_KINDS = ("timeout", "reset", "refused", "protocol")


def _failures(windows: Iterable[MeasuredWindow]) -> dict[str, int]:
    out = dict.fromkeys(FAILURE_KINDS, 0)
    for w in windows:
        for kind, n in w.failures.items():
            out[kind] = out.get(kind, 0) + int(n)
    return out


def _summary(windows: list[MeasuredWindow], figure: str) -> Samples:
    """One window attribute (``per_s`` or ``cost_us``) over the windows that have it: the
    values, their median and range (None figures when empty), and each one's repeat."""
    have = [w for w in windows if getattr(w, figure) is not None]
    if not have:
        return Samples((), None, None, None)
    values = [getattr(w, figure) for w in have]
    return Samples(tuple(values), median(values), min(values), max(values), tuple(w.repeat for w in have))


def _used(windows: list[MeasuredWindow]) -> tuple[list[MeasuredWindow], bool]:
    """The windows a point's figures come from, and whether the point is disturbed."""
    clean = [w for w in windows if not w.disturbed]
    if len(clean) >= min(2, len(windows)):
        return clean, False
    return windows, bool(windows)


def _measured(windows: Iterable[Window], kind: str) -> list[MeasuredWindow]:
    return [w for w in windows if isinstance(w, MeasuredWindow) and w.kind == kind]


def fold(mode: str, backend: str, users: int, windows: list[Window], error: str | None = None) -> Point:
    """One point from its windows (any kinds; failed windows and no capacity make the point an error)."""
    capacity = _measured(windows, "capacity")
    errors = [w.error for w in windows if isinstance(w, FailedWindow)]
    error = error or (errors[0] if errors and not capacity else None)
    used, disturbed = _used(capacity)
    failures = _failures(used)
    requests = sum(w.requests for w in used)
    idle = next((w for w in windows if isinstance(w, IdleWindow)), None)
    unanswered = idle.unanswered if idle else None
    attempts = requests + sum(failures.values())
    failing = bool(used) and (sum(failures.values()) > FAILURE_TOLERANCE * attempts
                              or failures["timeout"] >= max(1.0, FAILURE_TOLERANCE * users)
                              or bool(unanswered))
    server_cpu = median([w.server_cpu_percent for w in used]) if used else None
    loadgen_cpu = median([w.loadgen_cpu_percent for w in used]) if used else None
    generator_bound = (server_cpu is not None and loadgen_cpu is not None
                       and loadgen_cpu >= SATURATED_PERCENT and server_cpu < SATURATED_PERCENT)
    broadcast = mode == "broadcast"
    sent = sum(w.sent for w in used) if broadcast else None
    too_few = broadcast and bool(used) and median([w.sent for w in used]) < MIN_LINES
    latency = Percentiles(*(int(median([getattr(w.latency_us, p) for w in used]))
                            for p in ("p50", "p90", "p99", "p999", "max"))) if used else None
    notes = []
    if failing:
        if unanswered:
            notes.append(f"{unanswered} of {users} connections unanswered within the timeout")
        elif failures["timeout"]:
            notes.append(f"{failures['timeout']:,} timeouts")
        else:
            notes.append(f"{sum(failures.values()) / max(1, attempts):.0%} failures")
    if too_few:
        notes.append(f"fewer than {MIN_LINES} lines sent per window")
    return Point(
        mode=mode, backend=backend, users=users, error=error,
        capacity=_summary(used, "per_s"),
        cost_us=_summary(used, "cost_us"),
        latency_us=latency,
        set_rate=_set_rate(windows),
        slo=_slo(windows) if broadcast else None,
        memory=Memory(idle_rss_bytes=idle.rss_bytes if idle else None,
                      active_rss_bytes=max((w.rss_bytes for w in used), default=None)),
        requests=requests, failures=sum(failures.values()), failures_by_kind=failures,
        unanswered=unanswered,
        sent=sent, lost=sum(w.lost for w in used) if broadcast else None,
        out_of_order=sum(w.out_of_order for w in used) if broadcast else None,
        server_cpu_percent=server_cpu, loadgen_cpu_percent=loadgen_cpu,
        other_cpu_percent=max((w.other_cpu_percent for w in used), default=None),
        windows=len(capacity), clean_windows=sum(1 for w in capacity if not w.disturbed),
        flags=Flags(failing=failing, generator_bound=generator_bound, disturbed=disturbed, too_few_lines=too_few),
        notes=tuple(notes),
    )


def _set_rate(windows: list[Window]) -> SetRate | None:
    """Echo at the set rate: offered and achieved rate, median percentiles, the p99 range."""
    rate = _measured(windows, "rate")
    if not rate:
        return None
    used, disturbed = _used(rate)
    p99s = [w.latency_us.p99 for w in used]
    failures = sum(_failures(used).values())
    achieved = median([w.per_s for w in used])
    return SetRate(
        offered_per_s=used[0].offered_per_s, achieved_per_s=achieved,
        p50=int(median([w.latency_us.p50 for w in used])),
        p99=int(median(p99s)), p99_lo=min(p99s), p99_hi=max(p99s), p99_samples=tuple(p99s),
        p999=int(median([w.latency_us.p999 for w in used])),
        failures=failures, disturbed=disturbed,
        # a backend that fell behind the offered rate did not hold it, whatever its latency
        kept_up=achieved >= 0.95 * used[0].offered_per_s and not failures,
        p99_repeats=tuple(w.repeat for w in used),
    )


def _slo(windows: list[Window]) -> Slo | None:
    """Broadcast at a latency target: every step tried and the highest held.

    A step the ladder confirmed (:func:`bench.loadgen.slo_ladder.climb`) is decided by the
    majority of its counted tries: its first try and every confirmation, never a retry (a
    retry follows a failed first try only, so counting it would count that failure twice);
    a tie of tries is not held; tries disturbed by other processes are left out while two
    undisturbed ones remain. Its figures are the median of the counted tries (latency,
    achieved rate) and their sums (lines, losses, failures). A step without confirmations is
    the climb's verdict: its last try (it fails only when it fails twice). Windows of older
    files carry no ``ladder`` mark: there too a step is its last try."""
    by_step: dict[int, list[MeasuredWindow]] = {}
    for w in _measured(windows, "slo"):
        by_step.setdefault(w.repeat, []).append(w)  # repeat: the ladder's step index
    if not by_step:
        return None
    out = [_step(ws) for _, ws in sorted(by_step.items())]
    held = [s for s in out if s.held]
    best = held[-1] if held else None
    # A last step held by a majority of tries, one of which failed, is at the limit, not
    # below an unknown one (bench.results.figures.slo_limit puts the limit a step above).
    at_limit = out[-1].held_with_a_failed_try
    return Slo(steps=tuple(out), held_lines_per_s=best.lines_per_s if best else None,
               held_deliveries_per_s=best.deliveries_per_s if best else None,
               ceiling_reached=bool(held) and (out[-1].held or out[-1].generator_bound) and not at_limit,
               generator_bound=out[-1].generator_bound)


def _step(tries: list[MeasuredWindow]) -> SloStep:
    """One ladder step from its windows (see :func:`_slo`)."""
    last = tries[-1]
    if not any(w.ladder == "confirm" for w in tries):
        return SloStep(lines_per_s=last.lines_per_s, deliveries_per_s=last.offered_per_s, achieved_per_s=last.per_s,
                       p99_us=last.latency_us.p99, sent=last.sent, lost=last.lost,
                       failures=sum(last.failures.values()), held=bool(last.held), disturbed=last.disturbed,
                       generator_bound=bool(last.generator_bound))
    counted = [w for w in tries if w.ladder != "retry"] or tries
    clean = [w for w in counted if not w.disturbed]
    counted = clean if len(clean) >= 2 else counted   # tries disturbed by other processes left out
    held_tries = sum(1 for w in counted if w.held)
    held = 2 * held_tries > len(counted)
    p99s = tuple(w.latency_us.p99 for w in counted)
    return SloStep(lines_per_s=last.lines_per_s, deliveries_per_s=last.offered_per_s,
                   achieved_per_s=median([w.per_s for w in counted]),
                   p99_us=int(median(p99s)), sent=sum(w.sent for w in counted),
                   lost=sum(w.lost for w in counted), failures=sum(sum(w.failures.values()) for w in counted),
                   held=held, disturbed=any(w.disturbed for w in counted),
                   generator_bound=not held and any(bool(w.generator_bound) for w in counted),
                   tries=len(counted), held_tries=held_tries, p99_tries=p99s)


def fold_all(windows: list[Window], errors: dict[tuple[str, str], str],
             backends: list[str], users_by_mode: dict[str, list[int]]) -> tuple[Point, ...]:
    """Every point of a run, in (mode, users, backend) order. ``errors``: (mode, backend) ->
    why that backend did not run in that mode (its points carry the error)."""
    by_key: dict[tuple[str, str, int], list[Window]] = {}
    for w in windows:
        by_key.setdefault((w.mode, w.backend, int(w.users)), []).append(w)
    points = []
    for mode, users_list in users_by_mode.items():
        for users in users_list:
            for backend in backends:
                found = by_key.get((mode, backend, users), [])
                error = errors.get((mode, backend))
                if not found and error is None:
                    error = "not measured (the run stopped before this point)"
                points.append(fold(mode, backend, users, found, error))
    return tuple(points)
