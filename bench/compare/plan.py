"""The scenarios of a ``bench compare`` run, as data. Pure: no I/O, no clocks.

A run measures every backend x mode x user count. One *group* is one (repeat,
backend, mode): one server process and one Locust process that steps through the
user counts in ascending order, each as a *stage* (ramp, warm-up, measure). Groups
run repeat-major (every backend once, then every backend again), so slow drift in
the machine spreads over all backends instead of landing on one.

Broadcast needs at least two users (a line goes to every *other* client), so
broadcast stages below 2 users are left out.

Broadcast load is bounded by a *delivery budget*: one line from each of N users
reaches N-1 others, so at a fixed per-user rate deliveries grow as N², and at 1,000
users and 10 lines/s they would be ~10 M/s, which no Python load generator receives
(nor any backend relays). Each stage's per-user rate is therefore
``min(broadcast_rate, budget / (N * (N - 1)))``, recorded per run as
``broadcast_rate``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.results.config import CompareConfig

# Seconds a stage's ramp is expected to take (spawning and connecting its users),
# and a group's fixed cost (server and Locust start, stop): for the ETA only.
RAMP_ESTIMATE_S = 0.3
GROUP_OVERHEAD_S = 2.0


@dataclass(frozen=True)
class Stage:
    """One measured point inside a group."""

    users: int
    warmup_s: float
    duration_s: float
    broadcast_rate: float  # lines/s per user (broadcast); the option's value for echo

    def to_locust(self) -> dict[str, float]:
        """The stage as the Locust-side controller reads it (``--sockbench-stages``)."""
        return {"users": self.users, "warmup": self.warmup_s, "duration": self.duration_s,
                "rate": self.broadcast_rate}


@dataclass(frozen=True)
class Group:
    """One server + one Locust process: a backend in a mode, stepping through stages."""

    backend: str
    mode: str
    repeat: int  # 0-based
    stages: tuple[Stage, ...] = field(default_factory=tuple)

    def estimate_s(self) -> float:
        return GROUP_OVERHEAD_S + sum(RAMP_ESTIMATE_S + s.warmup_s + s.duration_s for s in self.stages)


# What build_plan reads: the run's one config (backends, modes, users, durations, repeat,
# broadcast rate and budget).
PlanOptions = CompareConfig


def broadcast_rate_for(users: int, rate: float, budget: float) -> float:
    """Per-user line rate of a broadcast stage with ``users`` users, within the budget."""
    if users < 2:
        return rate
    return min(rate, budget / (users * (users - 1)))


def build_plan(options: PlanOptions) -> list[Group]:
    """Every group to run, in order. Groups with no stage (broadcast, 1 user) are dropped."""
    users = sorted(set(options.users))
    groups: list[Group] = []
    for repeat in range(options.repeat):
        for backend in options.backends:
            for mode in options.modes:
                stages = tuple(
                    Stage(n, options.warmup_s, options.duration_s,
                          broadcast_rate_for(n, options.broadcast_rate, options.delivery_budget)
                          if mode == "broadcast" else options.broadcast_rate)
                    for n in users if not (mode == "broadcast" and n < 2)
                )
                if stages:
                    groups.append(Group(backend, mode, repeat, stages))
    return groups


def estimate_s(groups: list[Group]) -> float:
    """Rough wall time of a plan in seconds (for the progress bar's total)."""
    return sum(g.estimate_s() for g in groups)

