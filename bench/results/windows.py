"""One measured window, as the measurement program (:mod:`bench.loadgen.program`) writes it
into results.json's ``windows``. Pure data.

A window is one of three shapes, told apart by what the program wrote:

* :class:`MeasuredWindow`: ``kind`` "capacity" (closed loop), "rate" (echo at a set rate)
  or "slo" (one step of the broadcast latency ladder; only these carry ``held``);
* :class:`IdleWindow`: ``kind`` "idle", every connection sends one round trip, then the
  server's RSS is read (memory per idle connection);
* :class:`FailedWindow`: any kind with an ``error`` (the server exited during the window).

``to_json`` writes the keys in the order the program writes them, so a results.json read
with :func:`window_from_json` and written again is the same text. Keys this version does not
know (a newer program's) are kept in ``extra`` and written back after the known ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Union


@dataclass(frozen=True)
class Percentiles:
    """Latency percentiles in whole microseconds (``max`` is the largest value recorded)."""

    p50: int
    p90: int
    p99: int
    p999: int
    max: int

    def to_json(self) -> dict[str, int]:
        return {"p50": self.p50, "p90": self.p90, "p99": self.p99, "p999": self.p999, "max": self.max}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Percentiles":
        return cls(data["p50"], data["p90"], data["p99"], data["p999"], data["max"])


def _extra(data: Mapping[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in known}


@dataclass(frozen=True)
class MeasuredWindow:
    """A capacity, set-rate or latency-ladder window: what the load engine counted and what
    the server, the load generator and the rest of the machine used meanwhile."""

    mode: str                      # "echo" | "broadcast"
    kind: str                      # "capacity" | "rate" | "slo"
    backend: str
    users: int                     # connections
    repeat: int                    # the repeat's index; for "slo", the ladder step's index
    offered_per_s: float           # open loop: requests (echo) or deliveries (broadcast) offered/s; 0 closed loop
    lines_per_s: float | None      # broadcast: the room's send rate (lines/s); None in echo
    window_s: float
    requests: int                  # round trips (echo) or deliveries (broadcast) counted
    per_s: float
    failures: Mapping[str, int]    # by kind: timeout, reset, refused, protocol
    sent: int                      # lines sent
    lost: int
    out_of_order: int
    latency_us: Percentiles
    server_cpu_s: float
    cost_us: float | None          # server CPU µs per request; None when nothing was served
    server_cpu_percent: float
    loadgen_cpu_percent: float
    other_cpu_percent: float       # the rest of the machine, in % of one core
    rss_bytes: int
    disturbed: bool                # other processes took more than the program's busy limit
    attempts: int                  # 1 + how often it was measured again because it was disturbed
    held: bool | None              # "slo" only: the step held the latency target with no line lost
    wall_s: float
    # "slo" only: the step missed while the load generator's CPU, not the server's, was
    # saturated (absent in older files)
    generator_bound: bool | None = None
    # "slo" only: which part of the ladder asked for the window: "climb" (a step's first
    # try), "retry" (its second, after a failed first) or "confirm" (absent in older files)
    ladder: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    KEYS = ("mode", "kind", "backend", "users", "repeat", "offered_per_s", "lines_per_s", "window_s",
            "requests", "per_s", "failures", "sent", "lost", "out_of_order", "latency_us", "server_cpu_s",
            "cost_us", "server_cpu_percent", "loadgen_cpu_percent", "other_cpu_percent", "rss_bytes",
            "disturbed", "attempts", "ladder", "held", "generator_bound", "wall_s")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mode": self.mode, "kind": self.kind, "backend": self.backend, "users": self.users,
            "repeat": self.repeat, "offered_per_s": self.offered_per_s, "lines_per_s": self.lines_per_s,
            "window_s": self.window_s, "requests": self.requests, "per_s": self.per_s,
            "failures": dict(self.failures), "sent": self.sent, "lost": self.lost,
            "out_of_order": self.out_of_order, "latency_us": self.latency_us.to_json(),
            "server_cpu_s": self.server_cpu_s, "cost_us": self.cost_us,
            "server_cpu_percent": self.server_cpu_percent, "loadgen_cpu_percent": self.loadgen_cpu_percent,
            "other_cpu_percent": self.other_cpu_percent, "rss_bytes": self.rss_bytes,
            "disturbed": self.disturbed, "attempts": self.attempts,
        }
        if self.ladder is not None:
            out["ladder"] = self.ladder
        if self.held is not None:
            out["held"] = self.held
        if self.generator_bound is not None:
            out["generator_bound"] = self.generator_bound
        out["wall_s"] = self.wall_s
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "MeasuredWindow":
        return cls(
            mode=data["mode"], kind=data["kind"], backend=data["backend"], users=data["users"],
            repeat=data["repeat"], offered_per_s=data["offered_per_s"], lines_per_s=data["lines_per_s"],
            window_s=data["window_s"], requests=data["requests"], per_s=data["per_s"],
            failures=dict(data["failures"]), sent=data["sent"], lost=data["lost"],
            out_of_order=data["out_of_order"], latency_us=Percentiles.from_json(data["latency_us"]),
            server_cpu_s=data["server_cpu_s"], cost_us=data["cost_us"],
            server_cpu_percent=data["server_cpu_percent"], loadgen_cpu_percent=data["loadgen_cpu_percent"],
            other_cpu_percent=data["other_cpu_percent"], rss_bytes=data["rss_bytes"],
            disturbed=data["disturbed"], attempts=data["attempts"], held=data.get("held"),
            wall_s=data["wall_s"], generator_bound=data.get("generator_bound"), ladder=data.get("ladder"),
            extra=_extra(data, cls.KEYS),
        )


@dataclass(frozen=True)
class IdleWindow:
    """Every connection sends one round trip and stays open; then the server's RSS is read."""

    mode: str
    kind: str                      # "idle"
    backend: str
    users: int
    repeat: int
    rss_bytes: int
    requests: int                  # connections that were answered
    unanswered: int                # connections not answered within the request timeout
    wall_s: float
    failures: Mapping[str, int]
    attempts: int
    extra: Mapping[str, Any] = field(default_factory=dict)

    KEYS = ("mode", "kind", "backend", "users", "repeat", "rss_bytes", "requests", "unanswered", "wall_s",
            "failures", "attempts")

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "kind": self.kind, "backend": self.backend, "users": self.users,
                "repeat": self.repeat, "rss_bytes": self.rss_bytes, "requests": self.requests,
                "unanswered": self.unanswered, "wall_s": self.wall_s, "failures": dict(self.failures),
                "attempts": self.attempts, **self.extra}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "IdleWindow":
        return cls(data["mode"], data["kind"], data["backend"], data["users"], data["repeat"], data["rss_bytes"],
                   data["requests"], data["unanswered"], data["wall_s"], dict(data["failures"]),
                   data["attempts"], _extra(data, cls.KEYS))


@dataclass(frozen=True)
class FailedWindow:
    """A window that measured nothing: the server exited during it."""

    mode: str
    kind: str
    backend: str
    users: int
    repeat: int
    error: str
    disturbed: bool
    attempts: int
    wall_s: float
    extra: Mapping[str, Any] = field(default_factory=dict)

    KEYS = ("mode", "kind", "backend", "users", "repeat", "error", "disturbed", "attempts", "wall_s")

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "kind": self.kind, "backend": self.backend, "users": self.users,
                "repeat": self.repeat, "error": self.error, "disturbed": self.disturbed,
                "attempts": self.attempts, "wall_s": self.wall_s, **self.extra}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "FailedWindow":
        return cls(data["mode"], data["kind"], data["backend"], data["users"], data["repeat"], data["error"],
                   data["disturbed"], data["attempts"], data["wall_s"], _extra(data, cls.KEYS))


Window = Union[MeasuredWindow, IdleWindow, FailedWindow]


def window_from_json(data: Mapping[str, Any]) -> Window:
    """The window a program's JSON object describes (an ``event`` key, the program's
    envelope, is not part of the window and is dropped).

    Raises:
        KeyError, TypeError: a key is missing or a value has the wrong shape.
    """
    data = {k: v for k, v in data.items() if k != "event"}
    if data.get("error"):
        return FailedWindow.from_json(data)
    if data["kind"] == "idle":
        return IdleWindow.from_json(data)
    return MeasuredWindow.from_json(data)
