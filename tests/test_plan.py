"""bench.compare.plan: what a run measures, as data (pure; no processes)."""

from __future__ import annotations

import pytest

from bench.compare.plan import estimate_s, modes_to_run, program_spec, users_for
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
    from servers.backends import BACKENDS
    assert estimate_s(CompareConfig(backends=tuple(BACKENDS))) < 6 * 60


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
