"""Folding raw per-stage results into results.json runs. Pure: no processes, no I/O.

:mod:`bench.compare.runner` returns one raw result per stage and repeat (see
:func:`bench.compare.runner.raw_stage`); :func:`combine` folds the repeats of one
(backend, mode, users) into the run that ``results.json`` stores (:mod:`bench.results.schema`).
"""

from __future__ import annotations

from statistics import median
from typing import Any

from bench.results.tally import StageTally, stage_summary

# "The load generator is the limit": Locust at >= this % of its core, server below it.
SATURATED_PERCENT = 90.0


def combine(raws: list[dict[str, Any]], message_bytes: int, processes: int = 1) -> dict[str, Any]:
    """Fold the repeats of one (backend, mode, users) into one results.json run.

    Counts and histograms add up over repeats; ``rps`` is the median of the repeats'
    rates (``rps_samples`` keeps each, for the tie rule); CPU is the mean, RSS the peak.
    Memory per connection divides by the users actually connected (``users_reached``)
    when that is known, else by the stage's target.
    """
    first = raws[0]
    good = [r for r in raws if r["error"] is None]
    tally = StageTally()
    for r in good:
        tally.add_wire(r["tally"])
    seconds = sum(r["window_s"] for r in good)
    summary = stage_summary(tally, seconds)  # an empty tally when nothing ran: all zeros
    samples = [_stage_rps(r) for r in good]
    users = first["users"]
    reached = min((r["users_reached"] for r in good), default=0)
    server_cpu, loadgen_cpu = _mean(good, "server_cpu") or 0.0, _mean(good, "loadgen_cpu") or 0.0
    loadgen_core, server_core = _mean(good, "loadgen_core_busy"), _mean(good, "server_core_busy")
    rss = max((r["rss_peak"] for r in good), default=0)
    baseline = min((r["baseline_rss"] for r in good), default=0)
    connected = reached or users
    broadcast = first["mode"] == "broadcast"
    rps = median(samples) if samples else 0.0
    return {
        "backend": first["backend"], "mode": first["mode"], "users": users,
        "message_bytes": message_bytes, "duration_s": seconds / len(good) if good else 0.0,
        "requests": summary["requests"], "failures": summary["failures"],
        "failures_by_kind": summary["failures_by_kind"],
        "rps": rps, "rps_samples": samples,
        "latency_us": summary["latency_us"],
        "server": {"cpu_percent": round(server_cpu, 1), "rss_bytes": int(rss),
                   "rss_per_conn_bytes": (rss - baseline) / connected if good and connected else None,
                   "core_busy_percent": _round(server_core)},
        "loadgen": {"cpu_percent": round(loadgen_cpu, 1), "processes": processes,
                    "saturated": bool(good) and generator_bound(loadgen_cpu, server_cpu, loadgen_core, server_core),
                    "core_busy_percent": _round(loadgen_core)},
        "deliveries_per_s": rps if broadcast else None,
        "lost": summary["lost"] if broadcast else None,
        "error": next((r["error"] for r in raws if r["error"]), None) if not good else None,
        # optional keys (documented in bench/results/schema.py)
        "broadcast_rate": first["broadcast_rate"] if broadcast else None,
        "sent": summary["sent"] if broadcast else None,
        "out_of_order": summary["out_of_order"] if broadcast else None,
        "users_reached": reached,
        "server_rss_baseline_bytes": int(baseline),
        "other_cpu_percent": round(_mean(good, "other_cpu") or 0.0, 1),
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


def _mean(raws: list[dict[str, Any]], key: str) -> float | None:
    """The mean of ``key`` over ``raws`` that have it; None if none do."""
    values = [r[key] for r in raws if r.get(key) is not None]
    return sum(values) / len(values) if values else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _stage_rps(raw: dict[str, Any]) -> float:
    return raw["tally"]["requests"] / raw["window_s"] if raw["window_s"] > 0 else 0.0
