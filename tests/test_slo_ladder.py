"""The broadcast latency-target ladder's walk (bench.loadgen.slo_ladder), on a stand-in
program whose windows hold or fail by rule: it climbs until a step fails, retries a failed
step once unless it missed by far, stops at a generator-bound step and at its hard stop, and
confirms each top where asked; and how the ladder's windows fold into held steps and a
limit (bench.results.points, bench.results.figures)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest

from bench.loadgen.program import Target
from bench.loadgen.slo_ladder import FAR_MISS, MAX_EXTENSIONS, MAX_STEPS_UP, climb
from bench.loadgen.window_rules import generator_bound
from bench.results.figures import slo_disturbed, slo_figures, slo_limit
from bench.results.rules import pick
from bench.results.summary import Point
from bench.results.windows import MeasuredWindow

try:
    from tests import report_docs as docs
except ImportError:  # pytest run from inside tests/
    import report_docs as docs  # type: ignore[no-redef]

pytestmark = pytest.mark.timeout(10)

SPEC = {"slo_factor": 2.0, "slo_grid_base": 1000.0, "slo_top_fraction": 1000.0, "slo_start_fraction": 0.5,
        "min_lines": 1, "window_s": 1.0, "slo_ms": 10.0, "slo_confirm_tries": 2}


@dataclass
class FakeProgram:
    """Windows decided by ``outcome(backend, step) -> (held, generator_bound)``; a failed
    window's p99 is ``miss_p99`` (just above the 10 ms target unless a test says otherwise)."""

    outcome: Callable[[str, int], tuple[bool, bool]]
    spec: dict[str, Any] = field(default_factory=lambda: dict(SPEC))
    targets: list[Target] = field(default_factory=lambda: [Target("a", "127.0.0.1", 1, 1),
                                                           Target("b", "127.0.0.1", 2, 2)])
    steps: list[tuple[str, int]] = field(default_factory=list)
    tags: list[tuple[str, int, str | None]] = field(default_factory=list)
    miss_p99: int = 12_000

    def window(self, target: Target, users: int, kind: str, repeat: int, rate: float = 0.0,
               ladder: str | None = None) -> dict[str, Any]:
        assert kind == "slo" and rate > 0
        self.steps.append((target.backend, repeat))
        self.tags.append((target.backend, repeat, ladder))
        held, bound = self.outcome(target.backend, repeat)
        return {"held": held, "generator_bound": bound, "lost": 0,
                "latency_us": {"p99": 2_000 if held else self.miss_p99}}


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


def test_the_first_try_of_a_step_is_the_climb_and_the_second_a_retry():
    program = FakeProgram(lambda b, k: (k <= 3, False), targets=[Target("a", "127.0.0.1", 1, 1)])
    climb(program, 10, {"a": capacity(8000)})
    assert program.tags == [("a", 2, "climb"), ("a", 3, "climb"), ("a", 4, "climb"), ("a", 4, "retry")]


def test_a_step_missed_by_far_is_not_tried_again():
    # p99 three times the target: a second try would not hold either
    program = FakeProgram(lambda b, k: (k <= 3, False), targets=[Target("a", "127.0.0.1", 1, 1)],
                          miss_p99=int(FAR_MISS * 10_000) + 1)
    climb(program, 10, {"a": capacity(8000)})
    assert program.tags == [("a", 2, "climb"), ("a", 3, "climb"), ("a", 4, "climb")]


def test_confirming_tries_each_top_the_step_above_and_the_step_below_interleaved_across_backends():
    limits = {"a": 4, "b": 3}
    program = FakeProgram(lambda b, k: (k <= limits[b], False))
    climb(program, 10, {"a": capacity(8000), "b": capacity(8000)}, confirm=True)   # both start at step 2
    confirms = [(b, k) for b, k, tag in program.tags if tag == "confirm"]
    # two rounds; in each, every backend's step below its top, its top and the failed step above it
    assert confirms == [("a", 3), ("a", 4), ("a", 5), ("b", 2), ("b", 3), ("b", 4)] * 2
    assert all(tag != "confirm" for _, _, tag in program.tags[:-len(confirms)])   # after the climb


def test_a_walk_down_that_ends_on_a_held_step_is_confirmed_there():
    program = FakeProgram(lambda b, k: (k <= 4, False), targets=[Target("a", "127.0.0.1", 1, 1)])
    climb(program, 10, {"a": capacity(64000)}, confirm=True)   # starts at step 5, which fails
    assert [(k, tag) for _, k, tag in program.tags if tag == "confirm"] == [(4, "confirm"), (5, "confirm")] * 2


def test_a_failed_step_that_the_confirmation_holds_sends_the_climb_on():
    # b fails step 4 on the climb (two tries) but holds it on both confirmations: its limit
    # is above 4, so it tries 5 (fails, then its confirmations fail too) and stops there.
    # a's confirmations agree with its climb: nothing more for a.
    tries: dict[tuple[str, int], int] = {}
    outcomes: list[bool] = []

    def outcome(b: str, k: int) -> tuple[bool, bool]:
        n = tries[(b, k)] = tries.get((b, k), 0) + 1
        held = n > 2 if (b, k) == ("b", 4) else k <= {"a": 4, "b": 3}[b]  # b's 4: the confirmations hold
        outcomes.append(held)
        return held, False

    program = FakeProgram(outcome)
    climb(program, 10, {"a": capacity(8000), "b": capacity(8000)}, confirm=True)
    after = program.tags[program.tags.index(("a", 3, "confirm")):]
    assert after == [("a", 3, "confirm"), ("a", 4, "confirm"), ("a", 5, "confirm"),
                     ("b", 2, "confirm"), ("b", 3, "confirm"), ("b", 4, "confirm")] * 2 + [
        ("b", 5, "climb"), ("b", 5, "confirm"), ("b", 5, "confirm")]        # no step below on the climb on
    point = ladder_point("b", {k: [(held, tag) for (b, kk, tag), held in zip(program.tags, outcomes)
                                   if b == "b" and kk == k] for k in (2, 3, 4, 5)})
    assert point.slo.held_deliveries_per_s == point.slo.steps[2].deliveries_per_s   # step 4
    assert not point.slo.ceiling_reached and math.isfinite(slo_limit(point))


def test_the_climb_past_a_confirmed_step_is_bounded():
    # every confirmation holds whatever the climb saw: the climb goes on at most MAX_EXTENSIONS steps
    tries: dict[int, int] = {}

    def outcome(b: str, k: int) -> tuple[bool, bool]:
        n = tries[k] = tries.get(k, 0) + 1
        return (k <= 3 or n > 2 or (k > 4 and n > 1)), False

    program = FakeProgram(outcome, targets=[Target("a", "127.0.0.1", 1, 1)])
    climb(program, 10, {"a": capacity(8000)}, confirm=True)
    climbed = [k for _, k, tag in program.tags if tag == "climb" and k > 4]
    assert climbed == list(range(5, 5 + MAX_EXTENSIONS))


def test_no_confirmation_when_no_step_held():
    program = FakeProgram(lambda b, k: (False, False), targets=[Target("a", "127.0.0.1", 1, 1)])
    climb(program, 10, {"a": capacity(8000)}, confirm=True)
    assert all(tag != "confirm" for _, _, tag in program.tags)


def test_a_top_that_fails_its_confirmations_has_the_step_under_its_new_top_confirmed():
    # a climbs 2, 3, 4 and fails 5 twice: top 4. The confirmations fail 4 (1 of 3 tries
    # held) and hold 3: its top is now 3, so the step under it, 2, is confirmed too. b's
    # confirmations agree with its climb: nothing more for b.
    tries: dict[tuple[str, int], int] = {}

    def outcome(b: str, k: int) -> tuple[bool, bool]:
        n = tries[(b, k)] = tries.get((b, k), 0) + 1
        if b == "a" and k == 4:
            return n == 1, False
        return k <= {"a": 4, "b": 3}[b], False

    program = FakeProgram(outcome)
    climb(program, 10, {"a": capacity(8000), "b": capacity(8000)}, confirm=True)
    confirms = [(b, k) for b, k, tag in program.tags if tag == "confirm"]
    assert confirms == [("a", 3), ("a", 4), ("a", 5), ("b", 2), ("b", 3), ("b", 4)] * 2 + [("a", 2)] * 2
    assert all(tag != "climb" for _, _, tag in program.tags[-4:])            # no new step tried


@pytest.mark.parametrize("outcome, top", [
    (lambda b, k: (True, False), 2 + MAX_STEPS_UP),       # held every step up to the hard stop
    (lambda b, k: (k < 4, k >= 4), 3),                    # stopped by the load generator, not the server
])
def test_a_climb_that_ended_without_a_server_failure_confirms_its_top_step_and_the_one_below(outcome, top):
    program = FakeProgram(outcome, targets=[Target("a", "127.0.0.1", 1, 1)])
    climb(program, 10, {"a": capacity(8000)}, confirm=True)
    confirms = [k for _, k, tag in program.tags if tag == "confirm"]
    assert confirms == [top - 1, top] * 2                    # no step above it, and no climb after
    assert program.tags[-1] == ("a", top, "confirm")


def test_the_step_below_the_top_is_confirmed_only_when_the_climb_went_through_it():
    # a starts at step 2 and fails step 3: its top is its start, the step below never tried
    program = FakeProgram(lambda b, k: (k <= 2, False), targets=[Target("a", "127.0.0.1", 1, 1)])
    climb(program, 10, {"a": capacity(8000)}, confirm=True)
    assert [k for _, k, tag in program.tags if tag == "confirm"] == [2, 3] * 2


# -- folding the ladder's windows -------------------------------------------------------------

def slo_window(step: int, held: bool, ladder: str | None, backend: str = "a",
               disturbed: bool = False) -> MeasuredWindow:
    rate = 1000.0 * 1.5 ** step
    return docs.window("slo", rate, users=100, repeat=step, offered=rate, held=held, sent=500,
                       lines=rate / 99, p99=2000 if held else 12_000, mode="broadcast", backend=backend,
                       ladder=ladder, disturbed=disturbed)


def ladder_point(backend: str, tries: dict[int, list[tuple]]) -> Point:
    """A broadcast point at 100 whose ladder tried step k: ``(held, ladder mark[, disturbed])`` each."""
    extra = [slo_window(k, t[0], t[1], backend, *t[2:]) for k, ts in tries.items() for t in ts]
    return docs.point(backend, "broadcast", 100, [500_000] * 3, sent=500, extra=extra)


def test_a_confirmed_step_is_held_by_the_majority_of_its_first_try_and_confirmations():
    p = ladder_point("a", {
        12: [(True, "climb")],
        13: [(True, "climb"), (False, "confirm"), (False, "confirm")],              # 1 of 3: not held
        # the retry is not counted: 1 of 3
        14: [(False, "climb"), (True, "retry"), (False, "confirm"), (True, "confirm")],
    })
    steps = {round(s.deliveries_per_s): s for s in p.slo.steps}
    assert [(s.held, s.tries, s.held_tries) for s in p.slo.steps] == [(True, None, None), (False, 3, 1), (False, 3, 1)]
    assert p.slo.held_deliveries_per_s == pytest.approx(1000 * 1.5 ** 12)    # the top moved down a step
    assert slo_limit(p) == pytest.approx(1000 * 1.5 ** 13)
    assert steps[round(1000 * 1.5 ** 13)].p99_us == 12_000                     # the median of the tries counted
    q = ladder_point("b", {13: [(False, "climb"), (True, "confirm"), (True, "confirm")],
                           14: [(False, "climb"), (False, "retry"), (False, "confirm"), (False, "confirm")]})
    assert q.slo.held_deliveries_per_s == pytest.approx(1000 * 1.5 ** 13)    # held 2 of 3


def test_an_unconfirmed_step_is_the_climbs_verdict_and_older_windows_their_last_try():
    # at a count without confirmation a step fails only when it fails twice, as the climb decided
    p = ladder_point("a", {12: [(True, "climb")], 13: [(False, "climb"), (True, "retry")],
                           14: [(False, "climb"), (False, "retry")]})
    assert [s.held for s in p.slo.steps] == [True, True, False] and p.slo.steps[1].tries is None
    old = ladder_point("a", {12: [(True, None)], 13: [(False, None), (True, None)], 14: [(False, None)]})
    assert [s.held for s in old.slo.steps] == [True, True, False]


def test_ladder_tops_one_step_apart_tie_and_two_steps_apart_rank():
    def top(backend: str, k: int) -> Point:
        return ladder_point(backend, {k: [(True, "climb")] * 3, k + 1: [(False, "climb")] * 3})
    one = docs.doc(top("a", 14), top("b", 13))
    assert pick(slo_figures(one, 100)).names() == ["a", "b"]                  # 1.5x apart, a tie
    two = docs.doc(top("a", 15), top("b", 13))
    result = pick(slo_figures(two, 100))
    assert result.names() == ["a"] and result.margin == pytest.approx(1.5 ** 2)
    # a backend that failed no step above its top has an open interval: it ties with anything above
    never_failed = ladder_point("c", {12: [(True, "climb")]})
    assert slo_limit(never_failed) == math.inf
    assert pick(slo_figures(docs.doc(top("a", 15), never_failed), 100)).names() == ["a", "c"]


def test_a_last_step_held_by_a_majority_with_a_failed_try_is_at_the_limit():
    # the climb failed step 14 and its confirmations held it, and so on up to the last step
    # climbed (16): the room is at its limit there, not below an unknown one
    p = ladder_point("s", {13: [(True, "climb")], 14: [(False, "climb"), (True, "confirm"), (True, "confirm")],
                           15: [(False, "climb"), (True, "confirm"), (True, "confirm")],
                           16: [(False, "climb"), (True, "confirm"), (True, "confirm")]})
    assert p.slo.held_deliveries_per_s == pytest.approx(1000 * 1.5 ** 16)
    assert not p.slo.ceiling_reached
    assert slo_limit(p) == pytest.approx(1000 * 1.5 ** 17)       # one grid step up
    # so it no longer ties with a room that held far more
    far = ladder_point("g", {20: [(True, "climb")] * 3, 21: [(False, "climb")] * 3})
    assert pick(slo_figures(docs.doc(far, p), 100)).names() == ["g"]
    # held by every try: nothing failed there, the limit is unknown
    clean = ladder_point("c", {13: [(True, "climb")], 14: [(True, "climb"), (True, "confirm"), (True, "confirm")]})
    assert clean.slo.ceiling_reached and slo_limit(clean) == math.inf


def test_only_a_disturbed_limit_puts_the_ladders_figure_in_doubt():
    # a busy machine makes a step fail, never hold: a disturbed held step is still held
    quiet_limit = ladder_point("a", {12: [(True, "climb", True)], 13: [(True, "climb")], 14: [(False, "climb")] * 2})
    assert not slo_disturbed(quiet_limit) and len(slo_figures(docs.doc(quiet_limit), 100)) == 1
    busy_limit = ladder_point("a", {13: [(True, "climb")], 14: [(False, "climb", True), (False, "retry", True)]})
    assert slo_disturbed(busy_limit) and slo_figures(docs.doc(busy_limit), 100) == []
    # a confirmed step leaves out its disturbed tries while two undisturbed ones remain
    confirmed = ladder_point("a", {13: [(True, "climb")] * 3,
                                   14: [(False, "climb", True), (True, "confirm"), (True, "confirm")]})
    step = confirmed.slo.steps[-1]
    assert step.held and (step.tries, step.held_tries) == (2, 2) and not step.disturbed
