"""What one measurement window of :mod:`bench.loadgen.program` says: its latency
percentiles from the engine's buckets, whether the backend served it, and whether a
broadcast step held the latency target; and how many windows of a kind the program takes
at a connection count, and which it skips. Pure (no engine, no clock): the program decides
its next window from these, and the tests can check them on hand-built windows.
"""

from __future__ import annotations

import math
from typing import Any

PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9))


def percentiles(pairs: list[tuple[int, int]]) -> dict[str, int]:
    """p50/p90/p99/p999/max in µs of the engine's ``(µs, count)`` buckets (ascending).
    All zeros when empty."""
    total = sum(n for _, n in pairs)
    out = {name: 0 for name, _ in PERCENTILES}
    out["max"] = pairs[-1][0] if pairs else 0
    if not total:
        return out
    ordered = sorted(pairs)
    for name, pct in PERCENTILES:
        need, seen = math.ceil(total * pct / 100.0), 0
        for us, n in ordered:
            seen += n
            if seen >= need:
                out[name] = int(us)
                break
    out["max"] = int(ordered[-1][0])
    return out


def served(w: dict[str, Any], users: int) -> bool:
    """A capacity window without errors, failures above 1 %, or unserved users."""
    failures = sum((w.get("failures") or {}).values())
    timeouts = (w.get("failures") or {}).get("timeout", 0)
    attempts = w.get("requests", 0) + failures
    return (not w.get("error") and w.get("requests", 0) > 0 and failures <= 0.01 * attempts
            and timeouts < max(1.0, 0.01 * users))


def held(w: dict[str, Any], spec: dict[str, Any]) -> bool:
    """Did a broadcast window hold the latency target: no error, failure or lost line, enough
    lines sent, p99 within the target, and most of the expected deliveries arrived?"""
    if w.get("error") or sum((w.get("failures") or {}).values()) or w.get("lost"):
        return False
    if w.get("sent", 0) < int(spec["min_lines"]):
        return False
    expected = w.get("offered_per_s", 0.0) * w.get("window_s", 0.0)
    return (w["latency_us"]["p99"] <= float(spec["slo_ms"]) * 1000.0
            and w.get("requests", 0) >= 0.8 * expected)


# A CPU this busy (percent of what it can give) is saturated.
SATURATED_PERCENT = 90.0


def generator_bound(w: dict[str, Any], spec: dict[str, Any]) -> bool:
    """Was the load generator, not the server, the limit of window ``w``: its CPU saturated
    (``loadgen_cpus`` cores in the spec, 1 when absent) while the server's was not?"""
    cores = max(1, int(spec.get("loadgen_cpus", 1)))
    return (float(w.get("loadgen_cpu_percent") or 0.0) >= SATURATED_PERCENT * cores
            and float(w.get("server_cpu_percent") or 0.0) < SATURATED_PERCENT)


def windows_at(spec: dict[str, Any], users: int, kind: str) -> int:
    """Windows per backend of ``kind`` ("capacity", "rate"; "answer": the answer's number) at
    ``users``: ``answer_repeats`` where a pick of the report's answer is taken (the spec's
    ``answer_users`` of that kind), ``repeats`` elsewhere."""
    more = max(int(spec["repeats"]), int(spec.get("answer_repeats") or 0))
    return more if kind == "answer" or users in spec.get("answer_users", {}).get(kind, ()) else int(spec["repeats"])


def not_worth_measuring(spec: dict[str, Any], kind: str, repeat: int, unserved: bool,
                        before: list[dict[str, Any]]) -> bool:
    """Skip this window: the backend cannot rank on it, so it would tell nothing. A backend
    whose window ``before`` at this count served nothing at all while other processes left
    the machine alone is not measured again there (a busy machine can starve any server for
    a window); an echo backend that left a connection ``unserved`` in the idle window gets
    no set-rate window (it is left out of the rate too) and no window past ``repeats``."""
    if any(not w.get("error") and not w.get("requests") and not w.get("disturbed") for w in before):
        return True
    return unserved and (kind == "rate" or repeat >= int(spec["repeats"]))


def served_capacity(capacity: dict[str, list[dict[str, Any]]], users: int) -> dict[str, float]:
    """Per backend whose closed-loop ``capacity`` windows at ``users`` all :func:`served`,
    the median of their rates (the upper one of an even count), when above 0."""
    medians = {b: sorted(w["per_s"] for w in ws)[len(ws) // 2] for b, ws in capacity.items()
               if ws and all(served(w, users) for w in ws)}
    return {b: m for b, m in medians.items() if m > 0}


def set_rate(spec: dict[str, Any], users: int, capacity: dict[str, list[dict[str, Any]]],
             unserved: set[str]) -> float:
    """The echo rate offered to every backend at ``users``: ``rate_fraction`` of the slowest
    :func:`served_capacity` among backends that also answered every connection (not
    ``unserved``); 0 when none did."""
    medians = [m for b, m in served_capacity(capacity, users).items() if b not in unserved]
    return float(spec["rate_fraction"]) * min(medians) if medians else 0.0
