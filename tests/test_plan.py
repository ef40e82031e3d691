"""bench.compare.plan: scenarios as data (pure; no processes)."""

from __future__ import annotations

import pytest

from bench.compare.plan import PlanOptions, broadcast_rate_for, build_plan, estimate_s

pytestmark = pytest.mark.timeout(10)


def test_every_backend_and_mode_is_one_group_stepping_through_ascending_users():
    groups = build_plan(PlanOptions(backends=("gevent", "asyncio"), users=(100, 1, 10, 10)))
    assert [(g.backend, g.mode) for g in groups] == [
        ("gevent", "echo"), ("gevent", "broadcast"), ("asyncio", "echo"), ("asyncio", "broadcast")]
    assert [s.users for s in groups[0].stages] == [1, 10, 100]
    # a broadcast line goes to every *other* client: one user has no one to reach
    assert [s.users for s in groups[1].stages] == [10, 100]


def test_repeats_are_interleaved_over_backends():
    groups = build_plan(PlanOptions(backends=("a", "b"), modes=("echo",), repeat=2))
    assert [(g.repeat, g.backend) for g in groups] == [(0, "a"), (0, "b"), (1, "a"), (1, "b")]


def test_broadcast_rate_is_capped_by_the_delivery_budget():
    assert broadcast_rate_for(10, 10.0, 20_000) == 10.0            # 900 deliveries/s: under budget
    assert broadcast_rate_for(1000, 10.0, 20_000) == pytest.approx(20_000 / (1000 * 999))
    groups = build_plan(PlanOptions(backends=("x",), modes=("broadcast",), users=(2, 1000)))
    for stage in groups[0].stages:
        assert stage.users * (stage.users - 1) * stage.broadcast_rate <= 20_000 + 1e-6


def test_broadcast_with_only_one_user_plans_nothing():
    assert build_plan(PlanOptions(backends=("x",), modes=("broadcast",), users=(1,))) == []


def test_warmup_and_duration_reach_every_stage_and_the_estimate():
    options = PlanOptions(backends=("x",), modes=("echo",), users=(1, 10), duration_s=3, warmup_s=1)
    groups = build_plan(options)
    assert all((s.warmup_s, s.duration_s) == (1, 3) for s in groups[0].stages)
    assert estimate_s(groups) >= 2 * (1 + 3)
    assert groups[0].stages[0].to_locust() == {"users": 1, "warmup": 1, "duration": 3, "rate": 10.0}
