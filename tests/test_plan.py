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
