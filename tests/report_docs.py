"""Hand-built schema-2 results for the report and analysis tests.

Points are made with :func:`bench.results.points.fold` from hand-built windows, so the
tests exercise the same folding as a real run; :func:`doc` wraps them in a
:class:`bench.results.schema.Results`.
"""

from __future__ import annotations

from typing import Any

from bench.results import schema
from bench.results.config import CompareConfig
from bench.results.points import fold
from bench.results.summary import Point
from bench.results.windows import IdleWindow, MeasuredWindow, Percentiles, Window

BACKENDS = ("blocking", "threading", "select", "gevent", "asyncio")


def window(kind: str, per_s: float, *, users: int = 100, cost: float = 10.0, p99: int = 500,
           disturbed: bool = False, loadgen: float = 40.0, server: float = 95.0, sent: int = 0,
           lost: int = 0, failures: dict[str, int] | None = None, rss: int = 50 << 20, repeat: int = 0,
           offered: float = 0.0, held: bool | None = None, lines: float | None = None,
           mode: str = "echo", backend: str = "x", ladder: str | None = None) -> MeasuredWindow:
    """One window as the program writes it (figures over a 1 s window)."""
    return MeasuredWindow(
        mode=mode, kind=kind, backend=backend, users=users, repeat=repeat, offered_per_s=offered,
        lines_per_s=lines, window_s=1.0, requests=int(per_s), per_s=per_s,
        failures={"timeout": 0, "reset": 0, "refused": 0, "protocol": 0, **(failures or {})},
        sent=sent, lost=lost, out_of_order=0,
        latency_us=Percentiles(p99 // 3, p99 // 2, p99, p99 * 2, p99 * 3),
        server_cpu_s=cost * per_s / 1e6, cost_us=cost, server_cpu_percent=server, loadgen_cpu_percent=loadgen,
        other_cpu_percent=45.0 if disturbed else 3.0, rss_bytes=rss, disturbed=disturbed, attempts=1,
        held=held, wall_s=1.2, ladder=ladder)


def idle(users: int, rss: int, unanswered: int = 0, mode: str = "echo", backend: str = "x") -> IdleWindow:
    return IdleWindow(mode=mode, kind="idle", backend=backend, users=users, repeat=0, rss_bytes=rss,
                      requests=users - unanswered, unanswered=unanswered, wall_s=0.3, failures={}, attempts=1)


def point(backend: str, mode: str, users: int, caps: list[float], **kw: Any) -> Point:
    """A point from capacity windows at ``caps`` (one per repeat) plus ``extra`` windows."""
    extra: list[Window] = kw.pop("extra", [])
    windows: list[Window] = [window("capacity", c, users=users, repeat=i, mode=mode, backend=backend, **kw)
                             for i, c in enumerate(caps)]
    return fold(mode, backend, users, windows + extra)


def doc(*points: Point, engine: str = "native", backends: tuple[str, ...] | None = None) -> schema.Results:
    names = backends or tuple(dict.fromkeys(p.backend for p in points))
    d = schema.Results(
        run_id="20261130-120000", created="2026-11-30T12:00:00+00:00",
        environment={"cpu_model": "Test CPU", "cpu_count": 2, "ram_bytes": 8 << 30, "os": "Linux",
                     "python": "3.11", "versions": {"locust": "2.x"}, "open_files_limit": [20000, 20000],
                     "git_commit": "abc"},
        config=CompareConfig(backends=names, modes=("echo", "broadcast"), users=(10, 100, 1000),
                             duration_s=0.5, warmup_s=0.2, repeat=3, message_bytes=64, request_timeout_s=2.0,
                             slo_ms=10.0, slo_factor=1.5, cpu_pinning=((0,), (1,))),
        loadgen=schema.Loadgen(engine, (1,)),
        points=tuple(points),
    )
    schema.validate(d.to_json())
    return d


def full_doc() -> schema.Results:
    """Every backend at 10, 100 and 1000 connections in both modes, with every flag somewhere."""
    pts = []
    base = {"threading": 30_000, "select": 45_000, "gevent": 50_000, "asyncio": 60_000, "blocking": 9_000}
    idle_per_conn = {"threading": 17_000, "select": 2_000, "gevent": 9_000, "asyncio": 3_000, "blocking": 500}
    for users in (10, 100, 1000):
        for b in BACKENDS:
            c = base[b] * (1.0 if users < 1000 else 0.8)
            extra: list[Window] = [idle(users, (20 << 20) + users * idle_per_conn[b],
                                        unanswered=users - 1 if b == "blocking" else 0)]
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
                            lines=bc * f / (users - 1), p99=2000 if f <= 0.5 else 20_000, mode="broadcast")
                     for k, f in enumerate((0.25, 0.5, 0.75))]
            pts.append(point(b, "broadcast", users, [bc * 0.97, bc, bc * 1.03], cost=1e6 / bc, sent=sent,
                             extra=steps if b != "blocking" else [], failures={"timeout": 50} if b == "blocking" else None))
    return doc(*pts, backends=BACKENDS)
