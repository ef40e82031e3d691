"""The broadcast latency-target ladder's walk (bench.loadgen.slo_ladder), on a stand-in
program whose windows hold or fail by rule: it climbs until a step fails, retries a failed
step once, stops at a generator-bound step and at its hard stop."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import pytest

from bench.loadgen.program import Target
from bench.loadgen.slo_ladder import MAX_STEPS_UP, climb
from bench.loadgen.window_rules import generator_bound

pytestmark = pytest.mark.timeout(10)

SPEC = {"slo_factor": 2.0, "slo_grid_base": 1000.0, "slo_top_fraction": 1000.0, "slo_start_fraction": 0.5,
        "min_lines": 1, "window_s": 1.0}


@dataclass
class FakeProgram:
    """Windows decided by ``outcome(backend, step) -> (held, generator_bound)``."""

    outcome: Callable[[str, int], tuple[bool, bool]]
    spec: dict[str, Any] = field(default_factory=lambda: dict(SPEC))
    targets: list[Target] = field(default_factory=lambda: [Target("a", "127.0.0.1", 1, 1),
                                                           Target("b", "127.0.0.1", 2, 2)])
    steps: list[tuple[str, int]] = field(default_factory=list)

    def window(self, target: Target, users: int, kind: str, repeat: int, rate: float = 0.0) -> dict[str, Any]:
        assert kind == "slo" and rate > 0
        self.steps.append((target.backend, repeat))
        held, bound = self.outcome(target.backend, repeat)
        return {"held": held, "generator_bound": bound}


def capacity(per_s: float) -> list[dict[str, Any]]:
    return [{"per_s": per_s, "requests": 1000, "failures": {}}]


def test_each_backend_climbs_until_a_step_fails_twice():
    # a holds up to step 6, b up to step 4; 8000/s capacity x 0.5 starts both at step 2
    limits = {"a": 6, "b": 4}
    program = FakeProgram(lambda b, k: (k <= limits[b], False))
    climb(program, 10, {"a": capacity(8000), "b": capacity(8000)})
    a = [k for b, k in program.steps if b == "a"]
    b = [k for b, k in program.steps if b == "b"]
    assert a == [2, 3, 4, 5, 6, 7, 7]   # the first failed step is tried twice, then the climb ends
    assert b == [2, 3, 4, 5, 5]
    # interleaved: one step per backend per round while both climb
    assert program.steps[:4] == [("a", 2), ("b", 2), ("a", 3), ("b", 3)]


def test_a_generator_bound_step_ends_the_climb_without_a_server_failure():
    program = FakeProgram(lambda b, k: (k < 4, k >= 4))
    climb(program, 10, {"a": capacity(8000)})
    assert [k for _, k in program.steps] == [2, 3, 4, 4]


def test_the_climb_has_a_hard_stop_when_every_step_holds():
    program = FakeProgram(lambda b, k: (True, False))
    climb(program, 10, {"a": capacity(8000)})
    ks = [k for _, k in program.steps]
    assert ks == list(range(2, 2 + MAX_STEPS_UP + 1))


def test_the_grid_top_stops_the_climb():
    program = FakeProgram(lambda b, k: (True, False), spec={**SPEC, "slo_top_fraction": 2.0})
    climb(program, 10, {"a": capacity(8000)})
    # top: 16000/s = step 4; no step above it
    assert [k for _, k in program.steps] == [2, 3, 4]


def test_a_failing_start_walks_down_a_bounded_number_of_steps():
    program = FakeProgram(lambda b, k: (k <= 0, False))
    climb(program, 10, {"a": capacity(64000)})   # starts at step 5
    ks = [k for _, k in program.steps]
    assert ks[0] == 5 and ks == sorted(ks, reverse=True) and min(ks) == 3  # two steps down, then "none"


def test_generator_bound_needs_the_generator_saturated_and_the_server_not():
    spec = {"loadgen_cpus": 1}
    assert generator_bound({"loadgen_cpu_percent": 97.0, "server_cpu_percent": 40.0}, spec)
    assert not generator_bound({"loadgen_cpu_percent": 97.0, "server_cpu_percent": 99.0}, spec)
    assert not generator_bound({"loadgen_cpu_percent": 60.0, "server_cpu_percent": 40.0}, spec)
    assert not generator_bound({"loadgen_cpu_percent": 150.0, "server_cpu_percent": 40.0}, {"loadgen_cpus": 2})
