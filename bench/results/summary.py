"""A point: what one backend's windows at one (mode, connection count) say together, as
results.json's ``points`` hold it. Pure data; :func:`bench.results.points.fold` builds points
from windows, and the flags are explained there.

Every class has ``to_json`` (the schema-2 object, keys in the order results.json has them)
and ``from_json`` (its inverse): a results.json read and written again is the same text.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from typing import Any, Mapping

from bench.results.windows import Percentiles


def _flat_json(record: Any, optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """A flat record's fields in order; tuples as lists. A field named in ``optional`` (one
    that older files lack) is written only when it is not its default, so that those files
    read back and write out as they were."""
    out = {}
    for f in fields(record):
        value = getattr(record, f.name)
        if f.name not in optional or value != f.default:
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def _flat_args(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor arguments of a flat record from its JSON object; lists as tuples. A field
    with a default that ``data`` lacks (an older file) takes the default."""
    out = {}
    for f in fields(cls):
        value = f.default if f.name not in data and f.default is not MISSING else data[f.name]
        out[f.name] = tuple(value) if isinstance(value, list) else value
    return out


@dataclass(frozen=True)
class Samples:
    """One figure per window used (``samples``), their median and range. Empty samples have
    None figures (the point served nothing). ``repeats``: the repeat (round) each sample was
    measured in, in the same order, so two backends' windows of one round can be compared
    (:func:`bench.results.rules.gap`); empty in older files."""

    samples: tuple[float, ...]
    median: float | None
    lo: float | None
    hi: float | None
    repeats: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return _flat_json(self, optional=("repeats",))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Samples":
        return cls(**_flat_args(cls, data))


@dataclass(frozen=True)
class SetRate:
    """Echo at one offered rate for every backend (open loop): median percentiles over the
    windows, the p99's range, and whether the backend kept up with the rate."""

    offered_per_s: float
    achieved_per_s: float
    p50: int
    p99: int
    p99_lo: int
    p99_hi: int
    p99_samples: tuple[int, ...]
    p999: int
    failures: int
    disturbed: bool
    kept_up: bool
    p99_repeats: tuple[int, ...] = ()  # the repeat of each p99 sample (empty in older files)

    def to_json(self) -> dict[str, Any]:
        return _flat_json(self, optional=("p99_repeats",))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "SetRate":
        return cls(**_flat_args(cls, data))


@dataclass(frozen=True)
class SloStep:
    """One step of the broadcast latency ladder: the room's send rate and what it got.

    ``held`` is the step's outcome: held in a majority of its counted tries (``held_tries``
    of ``tries``: every first try and confirmation, no retry; :mod:`bench.results.points`).
    Older files have no tries (None): their step is its last try."""

    lines_per_s: float | None
    deliveries_per_s: float
    achieved_per_s: float
    p99_us: int
    sent: int
    lost: int
    failures: int
    held: bool
    disturbed: bool
    # the step missed while the load generator's CPU was saturated (absent in older files)
    generator_bound: bool = False
    tries: int | None = None        # tries counted (absent in older files)
    held_tries: int | None = None   # ... of which held
    # each counted try's p99 (absent in older files and on steps without confirmations)
    p99_tries: tuple[int, ...] = ()

    @property
    def held_with_a_failed_try(self) -> bool:
        """Held by the majority of its tries while one of them failed: the room is at its
        limit at this step (:func:`bench.results.figures.slo_limit`)."""
        return self.held and self.tries is not None and (self.held_tries or 0) < self.tries

    def to_json(self) -> dict[str, Any]:
        return _flat_json(self, optional=("generator_bound", "tries", "held_tries", "p99_tries"))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "SloStep":
        return cls(**_flat_args(cls, data))


@dataclass(frozen=True)
class Slo:
    """Broadcast at a latency target: every step tried and the highest room rate held."""

    steps: tuple[SloStep, ...]
    held_lines_per_s: float | None
    held_deliveries_per_s: float | None
    # the ladder ended without the server failing a step: at its hard stop, or where the
    # load generator ran out of CPU (generator_bound): the held rate is a lower bound
    ceiling_reached: bool
    generator_bound: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"steps": [s.to_json() for s in self.steps], "held_lines_per_s": self.held_lines_per_s,
                "held_deliveries_per_s": self.held_deliveries_per_s, "ceiling_reached": self.ceiling_reached,
                **({"generator_bound": True} if self.generator_bound else {})}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Slo":
        return cls(tuple(SloStep.from_json(s) for s in data["steps"]), data["held_lines_per_s"],
                   data["held_deliveries_per_s"], data["ceiling_reached"], bool(data.get("generator_bound")))


@dataclass(frozen=True)
class Memory:
    """Server RSS with idle connections (echo's idle window) and the most during busy windows."""

    idle_rss_bytes: int | None
    active_rss_bytes: int | None

    def to_json(self) -> dict[str, Any]:
        return _flat_json(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Memory":
        return cls(**_flat_args(cls, data))


@dataclass(frozen=True)
class Flags:
    """Why a point may not rank (see :mod:`bench.results.points`)."""

    failing: bool
    generator_bound: bool
    disturbed: bool
    too_few_lines: bool

    def to_json(self) -> dict[str, Any]:
        return _flat_json(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Flags":
        return cls(**_flat_args(cls, data))


@dataclass(frozen=True)
class Point:
    """One (mode, backend, connections) of a run. ``error`` set: the backend did not run
    there, and the figures are empty."""

    mode: str
    backend: str
    users: int
    error: str | None
    capacity: Samples               # req/s (echo) or deliveries/s (broadcast), closed loop
    cost_us: Samples                # server CPU µs per request
    latency_us: Percentiles | None  # closed loop, medians over the windows used
    set_rate: SetRate | None        # echo only
    slo: Slo | None                 # broadcast only
    memory: Memory
    requests: int
    failures: int
    failures_by_kind: Mapping[str, int]
    unanswered: int | None          # echo's idle window: connections never answered
    sent: int | None                # broadcast only
    lost: int | None
    out_of_order: int | None
    server_cpu_percent: float | None
    loadgen_cpu_percent: float | None
    other_cpu_percent: float | None
    windows: int                    # capacity windows measured
    clean_windows: int              # ... of which not disturbed
    flags: Flags
    notes: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "backend": self.backend, "users": self.users, "error": self.error,
            "capacity": self.capacity.to_json(), "cost_us": self.cost_us.to_json(),
            "latency_us": self.latency_us.to_json() if self.latency_us else None,
            "set_rate": self.set_rate.to_json() if self.set_rate else None,
            "slo": self.slo.to_json() if self.slo else None,
            "memory": self.memory.to_json(), "requests": self.requests, "failures": self.failures,
            "failures_by_kind": dict(self.failures_by_kind), "unanswered": self.unanswered,
            "sent": self.sent, "lost": self.lost, "out_of_order": self.out_of_order,
            "server_cpu_percent": self.server_cpu_percent, "loadgen_cpu_percent": self.loadgen_cpu_percent,
            "other_cpu_percent": self.other_cpu_percent, "windows": self.windows,
            "clean_windows": self.clean_windows, "flags": self.flags.to_json(), "notes": list(self.notes),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Point":
        """Raises KeyError or TypeError when a key is missing or a value has the wrong shape."""
        return cls(
            mode=data["mode"], backend=data["backend"], users=data["users"], error=data["error"],
            capacity=Samples.from_json(data["capacity"]), cost_us=Samples.from_json(data["cost_us"]),
            latency_us=Percentiles.from_json(data["latency_us"]) if data["latency_us"] else None,
            set_rate=SetRate.from_json(data["set_rate"]) if data["set_rate"] else None,
            slo=Slo.from_json(data["slo"]) if data["slo"] else None,
            memory=Memory.from_json(data["memory"]), requests=data["requests"], failures=data["failures"],
            failures_by_kind=dict(data["failures_by_kind"]), unanswered=data["unanswered"],
            sent=data["sent"], lost=data["lost"], out_of_order=data["out_of_order"],
            server_cpu_percent=data["server_cpu_percent"], loadgen_cpu_percent=data["loadgen_cpu_percent"],
            other_cpu_percent=data["other_cpu_percent"], windows=data["windows"],
            clean_windows=data["clean_windows"], flags=Flags.from_json(data["flags"]),
            notes=tuple(data["notes"]),
        )
