"""bench.compare.plan: what a run measures, as data (pure; no processes), and the order in
which the measurement program (bench.loadgen.program) takes its windows, with the windows stubbed."""

from __future__ import annotations

import os
from typing import Callable

import pytest

from bench.compare.plan import estimate_s, modes_to_run, program_spec, users_for
from bench.loadgen.program import Program, Target
from bench.loadgen.window_rules import not_worth_measuring
from bench.results.config import CompareConfig

pytestmark = pytest.mark.timeout(10)


def test_counts_are_ascending_and_broadcast_needs_two_connections():
    config = CompareConfig(backends=("gevent", "asyncio"), users=(100, 1, 10, 10))
    assert users_for(config, "echo") == [1, 10, 100]
    assert users_for(config, "broadcast") == [10, 100]     # a line goes to every *other* client
    assert modes_to_run(CompareConfig(backends=("x",), users=(1,))) == ["echo"]


def test_the_program_spec_carries_the_run_settings():
    config = CompareConfig(backends=("a",), modes=("broadcast",), users=(2, 8), duration_s=0.3, warmup_s=0.1,
                           repeat=4, slo_ms=5.0)
    spec = program_spec(config, "broadcast", [{"backend": "a", "host": "127.0.0.1", "port": 1, "pid": 2}])
    assert spec["users"] == [2, 8] and spec["repeats"] == 4 and spec["window_s"] == 0.3
    assert spec["warmup_s"] == 0.1 and spec["slo_ms"] == 5.0 and spec["targets"][0]["backend"] == "a"
    assert 0 < spec["rate_fraction"] < 1 and spec["busy_percent"] == 20.0


def test_the_estimate_grows_with_backends_repeats_and_windows():
    one = CompareConfig(backends=("a",), users=(10, 100))
    assert estimate_s(one) > 0
    assert estimate_s(CompareConfig(backends=("a", "b"), users=(10, 100))) > estimate_s(one)
    assert estimate_s(CompareConfig(backends=("a",), users=(10, 100), repeat=6)) > estimate_s(one)
    assert estimate_s(CompareConfig(backends=("a",), users=(10, 100), duration_s=2.0)) > estimate_s(one)


def test_the_default_run_is_estimated_inside_six_minutes():
    from bench.compare.command import DEFAULTS
    from servers.backends import BACKENDS
    config = CompareConfig(backends=tuple(BACKENDS), users=DEFAULTS["users"], repeat=DEFAULTS["repeat"],
                           answer_repeat=DEFAULTS["answer_repeat"])
    assert config.answer_windows > config.repeat
    assert estimate_s(CompareConfig(backends=tuple(BACKENDS))) < estimate_s(config) < 6 * 60


def test_window_percentiles_and_the_latency_target_rule():
    from bench.loadgen.window_rules import held, percentiles, served

    assert percentiles([(10, 1), (20, 98), (30, 1)]) == {"p50": 20, "p90": 20, "p99": 20, "p999": 30, "max": 30}
    assert percentiles([]) == {"p50": 0, "p90": 0, "p99": 0, "p999": 0, "max": 0}
    spec = {"min_lines": 50, "slo_ms": 10.0}
    ok = {"sent": 60, "lost": 0, "failures": {}, "latency_us": {"p99": 9_000}, "offered_per_s": 1000.0,
          "window_s": 1.0, "requests": 990}
    assert held(ok, spec)
    assert not held({**ok, "latency_us": {"p99": 11_000}}, spec)     # over the target
    assert not held({**ok, "lost": 1}, spec)                          # a line lost
    assert not held({**ok, "sent": 49}, spec)                         # too few lines to judge
    assert not held({**ok, "requests": 500}, spec)                    # deliveries fell behind
    assert served({"requests": 1000, "failures": {"timeout": 0}}, 10)
    assert not served({"requests": 1000, "failures": {"timeout": 1}}, 10)   # a user went unserved


# -- the program's schedule ---------------------------------------------------------------------

class ScheduleOnly(Program):
    """The measurement program with its windows stubbed: what it would measure, in order.
    ``served(backend, users) -> requests per capacity window``; ``unserved``: backends that
    leave a connection unanswered in the idle window."""

    def __init__(self, spec: dict, served: Callable[[str, int], int], unserved: set[str] = frozenset()) -> None:
        super().__init__(spec, engine=None, crowd=None, emit=lambda obj: None)
        self.served, self.unserved_backends, self.log = served, unserved, []

    def idle_window(self, target: Target, users: int) -> None:
        self.log.append((target.backend, users, "idle", 0))
        if target.backend in self.unserved_backends:
            self.unserved.setdefault(users, set()).add(target.backend)

    def window(self, target, users, kind, repeat, rate=0.0, ladder=None):
        self.log.append((target.backend, users, kind, repeat))
        n = self.served(target.backend, users)
        return {"kind": kind, "backend": target.backend, "users": users, "per_s": float(n), "requests": n,
                "failures": {}, "held": False, "generator_bound": False, "lost": 0, "latency_us": {"p99": 50_000}}


def schedule(mode: str, served: Callable[[str, int], int], unserved: set[str] = frozenset(),
             answer_repeat: int = 5) -> list[tuple[str, int, str, int]]:
    config = CompareConfig(backends=("a", "b"), modes=(mode,), users=(1, 10, 100, 1000), repeat=3,
                           answer_repeat=answer_repeat)
    targets = [{"backend": b, "host": "127.0.0.1", "port": 1, "pid": os.getpid()} for b in ("a", "b")]
    program = ScheduleOnly(program_spec(config, mode, targets), served, unserved)
    program.run()
    return program.log


def count(log: list, kind: str, users: int, backend: str = "a") -> int:
    return sum(1 for b, u, k, _ in log if (b, u, k) == (backend, users, kind))


def test_the_answers_counts_get_more_windows_interleaved():
    log = schedule("echo", lambda b, u: 1000)
    # echo: CPU per round trip and p99 at the set rate are answered at 100, throughput at 1000
    assert [count(log, "capacity", u) for u in (1, 10, 100, 1000)] == [3, 3, 5, 5]
    assert [count(log, "rate", u) for u in (1, 10, 100, 1000)] == [3, 3, 5, 3]
    at_100 = [(b, r) for b, u, k, r in log if (u, k) == (100, "capacity")]
    assert at_100 == [("a", 0), ("b", 0), ("b", 1), ("a", 1), ("a", 2), ("b", 2), ("b", 3), ("a", 3),
                      ("a", 4), ("b", 4)]                               # one window per backend per round
    assert count(schedule("echo", lambda b, u: 1000, answer_repeat=3), "capacity", 100) == 3


def test_a_backend_that_cannot_rank_is_not_measured_for_nothing():
    # b leaves connections unanswered at 10 and more: no set-rate windows, no windows past the usual three
    log = schedule("echo", lambda b, u: 1000, unserved={"b"})
    assert [count(log, "rate", u, "b") for u in (1, 10, 100, 1000)] == [0, 0, 0, 0]
    assert [count(log, "capacity", u, "b") for u in (10, 100, 1000)] == [3, 3, 3]
    assert count(log, "rate", 100, "a") == 5
    # a broadcast backend that delivered nothing in its first window is not measured again at that count,
    # unless other processes were busy during that window (they can starve any server for a while)
    log = schedule("broadcast", lambda b, u: 0 if b == "b" else 1000)
    assert [count(log, "capacity", u, "b") for u in (10, 100, 1000)] == [1, 1, 1]
    assert [count(log, "capacity", u, "a") for u in (10, 100, 1000)] == [3, 3, 3]
    assert not_worth_measuring({"repeats": 3}, "capacity", 1, False, [{"requests": 0, "disturbed": False}])
    assert not not_worth_measuring({"repeats": 3}, "capacity", 1, False, [{"requests": 0, "disturbed": True}])
