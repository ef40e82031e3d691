"""The agreement check's pair rule (bench.perf.agreement.pair_verdicts), on hand-built
figures: which pairs it checks, and how it reads compare's repeat ranges."""

import dataclasses

import pytest

from bench.perf.agreement import pair_verdicts, round_ratios
from bench.results.rules import Figure

pytestmark = pytest.mark.timeout(10)


def cap(lo: float, hi: float, name: str = "x") -> Figure:
    return Figure(name, (lo + hi) / 2, lo, hi, 2)


def test_only_pairs_the_reference_separates_are_checked() -> None:
    compare = {"a": cap(90, 110), "b": cap(95, 105), "c": cap(40, 50)}
    ref = {"a": 100.0, "b": 105.0, "c": 50.0}  # a and b are 5% apart: not checked
    got = {(f, s): v for f, s, _, v in pair_verdicts(compare, ref, 0.10)}
    assert set(got) == {("a", "c"), ("b", "c")}
    assert got[("a", "c")] == "agrees"


def test_overlapping_ranges_are_a_tie_and_the_reverse_order_disagrees() -> None:
    ref = {"fast": 200.0, "slow": 100.0}
    assert pair_verdicts({"fast": cap(90, 150), "slow": cap(100, 120)}, ref, 0.10)[0][3] == "tie"
    verdict = pair_verdicts({"fast": cap(50, 60), "slow": cap(100, 120)}, ref, 0.10)[0]
    assert verdict[:2] == ("fast", "slow") and verdict[2] == pytest.approx(2.0) and verdict[3] == "disagrees"


def test_a_backend_missing_on_either_side_is_skipped() -> None:
    assert pair_verdicts({"a": cap(1, 2)}, {"a": 1.0, "b": 5.0}, 0.10) == []


def test_each_round_is_read_against_the_sweeps_on_either_side() -> None:
    compare = [{"a": cap(100, 100), "b": cap(60, 60)}, {"a": cap(90, 90)}]
    sweeps = [{"a": 100.0, "b": 50.0}, {"a": 80.0, "b": None}, {"a": 100.0}]
    got = round_ratios(compare, sweeps)
    # round 1: a 100 / mean(100, 80); b 60 / 50 (its after-sweep failed); round 2: a 90 / 90
    assert got["a"] == pytest.approx([100 / 90, 1.0])
    assert got["b"] == pytest.approx([1.2])


def test_ranges_apart_by_less_than_the_minimum_effect_are_a_tie() -> None:
    # compare's ranges do not overlap, but its medians are 4% apart: its one tie rule makes no ranking
    ref = {"fast": 200.0, "slow": 100.0}
    assert pair_verdicts({"fast": cap(103, 105), "slow": cap(99, 101)}, ref, 0.10)[0][3] == "tie"


def test_windows_of_the_same_rounds_are_read_round_by_round_as_the_report_does() -> None:
    # ranges that overlap (a busy round 1 for both), but a beats b by 1.25x in every round
    ref = {"a": 120.0, "b": 100.0}
    a = Figure("a", 100.0, 60.0, 101.0, 3, ((0, 100.0), (1, 60.0), (2, 101.0)))
    b = Figure("b", 80.0, 48.0, 82.0, 3, ((0, 80.0), (1, 48.0), (2, 82.0)))
    assert pair_verdicts({"a": a, "b": b}, ref, 0.10)[0][3] == "agrees"
    # without the rounds, the ranges decide: a tie
    plain = {f.backend: dataclasses.replace(f, rounds=()) for f in (a, b)}
    assert pair_verdicts(plain, ref, 0.10)[0][3] == "tie"
