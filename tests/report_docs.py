"""Hand-built schema-2 results documents for the report and analysis tests.

Points are made with :func:`bench.results.points.fold` from hand-built windows, so the
tests exercise the same folding as a real run; :func:`doc` wraps them in a document.
"""

from __future__ import annotations

from typing import Any

from bench.results import schema
from bench.results.points import fold

BACKENDS = ("blocking", "threading", "select", "gevent", "asyncio")


def window(kind: str, per_s: float, *, users: int = 100, cost: float = 10.0, p99: int = 500,
           disturbed: bool = False, loadgen: float = 40.0, server: float = 95.0, sent: int = 0,
           lost: int = 0, failures: dict[str, int] | None = None, rss: int = 50 << 20, repeat: int = 0,
           offered: float = 0.0, held: bool | None = None, lines: float | None = None) -> dict[str, Any]:
    """One window as the program writes it (figures over a 1 s window)."""
    w = {"kind": kind, "users": users, "repeat": repeat, "window_s": 1.0, "requests": int(per_s),
         "per_s": per_s, "failures": {"timeout": 0, "reset": 0, "refused": 0, "protocol": 0, **(failures or {})},
         "sent": sent, "lost": lost, "out_of_order": 0,
         "latency_us": {"p50": p99 // 3, "p90": p99 // 2, "p99": p99, "p999": p99 * 2, "max": p99 * 3},
         "cost_us": cost, "server_cpu_percent": server, "loadgen_cpu_percent": loadgen,
         "other_cpu_percent": 45.0 if disturbed else 3.0, "rss_bytes": rss, "disturbed": disturbed,
         "offered_per_s": offered, "lines_per_s": lines}
    if held is not None:
        w["held"] = held
    return w


def idle(users: int, rss: int, unanswered: int = 0) -> dict[str, Any]:
    return {"kind": "idle", "users": users, "repeat": 0, "rss_bytes": rss, "requests": users - unanswered,
            "unanswered": unanswered, "failures": {}}


def point(backend: str, mode: str, users: int, caps: list[float], **kw: Any) -> dict[str, Any]:
    """A point from capacity windows at ``caps`` (one per repeat) plus ``extra`` windows."""
    extra = kw.pop("extra", [])
    windows = [window("capacity", c, users=users, repeat=i, **kw) for i, c in enumerate(caps)] + extra
    return fold(mode, backend, users, windows)


def doc(*points: dict[str, Any], engine: str = "native", backends: tuple[str, ...] | None = None) -> dict[str, Any]:
    names = backends or tuple(dict.fromkeys(p["backend"] for p in points))
    d = {
        "schema": schema.SCHEMA_VERSION, "run_id": "20261130-120000", "created": "2026-11-30T12:00:00+00:00",
        "environment": {"cpu_model": "Test CPU", "cpu_count": 2, "ram_bytes": 8 << 30, "os": "Linux",
                        "python": "3.11", "versions": {"locust": "2.x"}, "open_files_limit": [20000, 20000],
                        "git_commit": "abc"},
        "config": {"backends": list(names), "modes": ["echo", "broadcast"], "users": [10, 100, 1000],
                   "duration_s": 0.5, "warmup_s": 0.2, "repeat": 3, "message_bytes": 64,
                   "request_timeout_s": 2.0, "slo_ms": 10.0, "slo_factor": 1.5,
                   "cpu_pinning": {"server": [0], "loadgen": [1]}},
        "loadgen": {"engine": engine, "cpus": [1]},
        "points": list(points), "windows": [],
    }
    schema.validate(d)
    return d


def full_doc() -> dict[str, Any]:
    """Every backend at 10, 100 and 1000 connections in both modes, with every flag somewhere."""
    pts = []
    base = {"threading": 30_000, "select": 45_000, "gevent": 50_000, "asyncio": 60_000, "blocking": 9_000}
    idle_per_conn = {"threading": 17_000, "select": 2_000, "gevent": 9_000, "asyncio": 3_000, "blocking": 500}
    for users in (10, 100, 1000):
        for b in BACKENDS:
            c = base[b] * (1.0 if users < 1000 else 0.8)
            extra = [idle(users, (20 << 20) + users * idle_per_conn[b], unanswered=users - 1 if b == "blocking" else 0)]
            rate = 0.5 * base["threading"]
            extra += [window("rate", rate, users=users, repeat=i, offered=rate, p99=300 + 100 * i
                             + (2000 if b == "threading" else 0)) for i in range(3)]
            kw: dict[str, Any] = {}
            if b == "select" and users == 100:
                kw["disturbed"] = True
            if b == "gevent" and users == 1000:
                kw["loadgen"], kw["server"] = 99.0, 60.0
            pts.append(point(b, "echo", users, [c * 0.98, c, c * 1.02], cost=1e6 / c, extra=extra,
                             rss=(30 << 20) + users * idle_per_conn[b] * 2, **kw))
            bc = base[b] * 4
            sent = 5 if users == 1000 else 500
            steps = [window("slo", bc * f, users=users, repeat=k, offered=bc * f, held=f <= 0.5, sent=500,
                            lines=bc * f / (users - 1), p99=2000 if f <= 0.5 else 20_000)
                     for k, f in enumerate((0.25, 0.5, 0.75))]
            pts.append(point(b, "broadcast", users, [bc * 0.97, bc, bc * 1.03], cost=1e6 / bc, sent=sent,
                             extra=steps if b != "blocking" else [], failures={"timeout": 50} if b == "blocking" else None))
    return doc(*pts, backends=BACKENDS)
