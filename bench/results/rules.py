"""The rules that judge the points of a run (:class:`bench.results.schema.Results`): which
points may rank, the one tie rule, and picking a winner with its margin. Pure;
:mod:`bench.results.figures` gives each question's figures and
:mod:`bench.results.analysis` asks these questions of a whole run.

- A point **may rank** only when it ran, served its load (not *failing*), the server and
  not the load generator was the limit (not *generator-bound*), other processes did not
  disturb it (not *disturbed*), and, in broadcast, it sent enough lines to mean something.
  A point that may not rank is never a pick, a runner-up or the reference of a ratio, on
  any question: capacity, server CPU per request, latency or memory.
- **The tie rule** (:func:`separated`, the only place it is written): a figure ranks above
  another only when it is better by at least :data:`MIN_EFFECT` (10 %) in every repeat
  kept and in the median. Figures measured in the same rounds (the program measures every
  backend once per round, so a busy moment of the machine hits a round's windows alike)
  are compared round by round (:func:`gap`): each round's ratio between the two, the
  interval of those ratios (:func:`interval`), and its worse end must be 10 % or more in
  favour of the better. Figures without common rounds compare their own intervals: the
  worse end of the better one's beats the better end of the other's by 10 %. Otherwise
  they tie. A figure with no spread of its own (one memory slope, one ladder step) has
  the interval its producer gives it.
- **The answer is a tier** (:func:`pick`): the best figure and every figure that ties with
  it *or, from less than* :data:`TIER_SPAN` *behind it, with another member of the tier*,
  and every figure whose median is better than a member's, so that two backends which
  cannot be told apart are never split between "pick" and "behind".
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Sequence

from bench.results.summary import Point

# The minimum effect: a figure ranks above another only when it is better by at least this
# share (10 %), whatever the intervals say. Below it a difference is not worth a
# recommendation, and the noise between runs on a shared machine is of this size, so a pair
# inside it always ties and never flips between "pick" and "tie" from run to run.
MIN_EFFECT = 0.10
DISTURBED = "disturbed by other processes"


# -- may a point rank? -------------------------------------------------------------------------

def why_not_ranked(p: Point) -> str | None:
    """None when the point may rank; else the short reason shown next to it.

    A disturbed point ranks on nothing, server CPU per request included: a point measured
    while other processes competed for the core is not evidence for a recommendation, even
    on the figure that waiting for the CPU inflates least (cache and scheduler effects still
    reach it), and it was measured again before it was called disturbed."""
    if p.error:
        return "did not run"
    if not p.capacity.median:
        return "served nothing"
    if p.flags.failing:
        return "failing: " + ("; ".join(p.notes) or "failures")
    if p.flags.generator_bound:
        return "load-generator-bound"
    if p.flags.disturbed:
        return DISTURBED
    if p.flags.too_few_lines:
        return "too few lines sent to rank"
    return None


def flag_labels(p: Point) -> list[str]:
    """Short labels for tables and charts: error, failing, generator-bound, disturbed, too few lines."""
    if p.error:
        return ["error"]
    f = p.flags
    marked = (("failing", f.failing), ("generator-bound", f.generator_bound), ("disturbed", f.disturbed),
              ("too few lines", f.too_few_lines))
    return [label for label, on in marked if on]


# -- picking ------------------------------------------------------------------------------------

# From this many repeats on, the one farthest from the median is left out of the interval.
ROBUST_FROM = 5
# A figure joins the best's tier through another member only from less than this factor
# behind the best (:func:`pick`).
TIER_SPAN = 2.0


def interval(samples: Sequence[float]) -> tuple[float, float]:
    """The interval of a figure's repeats: their range, ``(min, max)``, without the one
    repeat farthest from their median when there are at least :data:`ROBUST_FROM`.

    Why this interval, with this tie rule and the tier (:func:`pick`): measured on the
    windows of 14 default runs at quiet hours (11 with six windows at the answer's points,
    3 with three), the three echo answer lines (CPU per round trip at 100, capacity at
    1000, p99 at the set rate) named the same tier in 14, 12 and 11 runs; the range of all
    windows with the earlier rule (ranges that do not overlap and medians 10 % apart, ties
    with the best only) named the same tied set in 9, 8 and 12. A window disturbed by
    other processes is measured again before this (:mod:`bench.results.points`); the
    repeat left out here is the one stray window that no such check catches.

    Raises:
        ValueError: no samples.
    """
    if not samples:
        raise ValueError("a figure needs at least one sample")
    kept = sorted(float(v) for v in samples)
    if len(kept) >= ROBUST_FROM:
        mid = statistics.median(kept)
        kept.remove(max(kept, key=lambda v: abs(v - mid)))
    return kept[0], kept[-1]


@dataclass(frozen=True)
class Figure:
    """One backend's figure for a question: its central value (the median of its repeats),
    its interval (:func:`interval`, or what the figure's producer says for a figure
    without repeats) and, when known, the round of each repeat."""

    backend: str
    value: float
    lo: float
    hi: float
    samples: int = 1
    # (round, sample) per repeat when the repeats were taken in the program's interleaved
    # rounds: two figures with PAIRED_FROM rounds in common are compared round by round
    rounds: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class Apart:
    """A tier member separated from the best, which joined through ``through`` (tied with
    it, or ``by_median``: ranked above it by median): the best
    beats ``backend`` by ``factor`` (:func:`gap`, >= 1 + :data:`MIN_EFFECT`) in every
    round kept (``by_round``), else every window kept of the best beats every window kept
    of ``backend`` by it."""

    backend: str
    through: str
    factor: float
    by_round: bool = False  # the factor is the worst of the rounds' ratios (:func:`gap`)
    # joined because its median is better than member ``through``'s, not by a tie with it
    by_median: bool = False


@dataclass
class Pick:
    """The answer to one question over some backends.

    ``winner`` is None when no figure could rank. ``tied`` are the other members of the
    winner's tier (:func:`pick`; the answer is then a tie among them all), best first.
    ``runner_up`` is the best figure outside the tier, and ``margin`` the advantage of the
    tier's weakest member over it, as a factor >= 1 (higher-is-better: weakest/runner-up;
    lower: runner-up/weakest; None when a member known only as a lower bound is below
    the runner-up); without a tie that is the winner's own margin.
    ``apart`` are the members that the winner's figure *is* separated from, which joined
    the tier only through another member (:func:`pick`): the answer says so, since the
    windows do rank them below the winner.
    """

    winner: Figure | None
    tied: list[Figure] = field(default_factory=list)
    runner_up: Figure | None = None
    margin: float | None = None
    apart: list[Apart] = field(default_factory=list)

    @property
    def is_tie(self) -> bool:
        return bool(self.tied)

    def names(self) -> list[str]:
        """The winner and everything tied with it."""
        return ([self.winner.backend] if self.winner else []) + [f.backend for f in self.tied]


def separated(better: Figure, worse: Figure, higher_is_better: bool = True) -> bool:
    """The tie rule: ``better`` ranks above ``worse`` only when it is better by at least
    :data:`MIN_EFFECT` both in its median and by :func:`gap` (round by round when the two
    were measured in the same rounds, else between their intervals' nearer ends). So every
    repeat kept beats the other's by at least the minimum effect, and a pair whose medians
    are less than that apart always ties."""
    medians = better.value / worse.value if higher_is_better else worse.value / better.value
    return medians >= 1 + MIN_EFFECT and gap(better, worse, higher_is_better) >= 1 + MIN_EFFECT


# Two figures with at least this many rounds in common are compared round by round.
PAIRED_FROM = 3


def round_ratios(better: Figure, worse: Figure, higher_is_better: bool = True) -> list[float]:
    """``better``'s advantage over ``worse`` in each round both were measured in (> 1:
    better in that round); empty when they share fewer than :data:`PAIRED_FROM` rounds."""
    a, b = dict(better.rounds), dict(worse.rounds)
    common = sorted(set(a) & set(b))
    if len(common) < PAIRED_FROM or any(a[r] <= 0 or b[r] <= 0 for r in common):
        return []
    return [a[r] / b[r] if higher_is_better else b[r] / a[r] for r in common]


def gap(better: Figure, worse: Figure, higher_is_better: bool = True) -> float:
    """How far ``better`` is ahead of ``worse``, as a factor (below 1 when it is not).

    Measured in the same rounds (:func:`round_ratios`): the worse end of the interval of the
    rounds' ratios (:func:`interval`: without the one farthest from their median from
    :data:`ROBUST_FROM` rounds on). Why round by round: on a shared machine a busy moment
    slows every backend of the round alike (measured on a default run's windows at 100
    connections: CPU per round trip of every backend 1.6-1.9x higher in the same two of six
    rounds), so two backends' ranges overlap while each round ranks them the same way.
    Otherwise: the gap between the intervals' nearer ends, ``better.lo / worse.hi``
    (higher-is-better) or ``worse.lo / better.hi``; 0 when the divisor is not positive."""
    ratios = round_ratios(better, worse, higher_is_better)
    if ratios:
        return interval(ratios)[0]
    if higher_is_better:
        return better.lo / worse.hi if worse.hi > 0 else 0.0
    return worse.lo / better.hi if better.hi > 0 else 0.0


def tied(a: Figure, b: Figure, higher_is_better: bool = True) -> bool:
    """Neither ranks above the other (:func:`separated`)."""
    first, second = (a, b) if (a.value >= b.value) == higher_is_better else (b, a)
    return not separated(first, second, higher_is_better)


def pick(figures: list[Figure], higher_is_better: bool = True) -> Pick:
    """The best figure and its tier, and the runner-up (see :class:`Pick`).

    The tier starts with the best figure and takes in every figure that is not
    :func:`separated` from one of its members, until none is left to take: if b cannot be
    told from the best, and c cannot be told from b, the answer does not put c behind.
    Only figures with repeats join through a member other than the best: the windows of
    one run spread less than the same backend's windows differ between runs, so a gap
    between c and the best that b straddles is not one the next run repeats. A figure
    without repeats (a memory slope, a ladder's held step up to the failed one) has exact
    bounds, and a chain of such bounds one grid step apart would tie the ladder's top with
    its bottom; it joins only by tying with the best. And nothing joins through another
    member from further than :data:`TIER_SPAN` behind the best: the chain is there for the
    answer's stability, not as evidence, and one erratic backend's wide windows must not
    tie threading at 2.5x behind with the best (measured: over 14 quiet default runs, the
    three echo answers named the same tier in 14, 12 and 11 runs with the bound, in 14, 10
    and 14 without it, where threading joined the throughput tier three times).
    Last, every figure whose median is better than a member's joins (the tier is a prefix of
    the ranking by median).
    The runner-up is the best figure outside the tier; the margin is the tier's weakest
    median against it, so "ahead of X by N" holds for every member.
    """
    usable = [f for f in figures if f.value is not None and f.value > 0]
    if not usable:
        return Pick(None)
    ordered = sorted(usable, key=lambda f: f.value, reverse=higher_is_better)
    best = ordered[0]
    tier = [best]
    link: dict[str, str] = {}  # member -> the member it tied with when it joined
    grew = True
    while grew:
        grew = False
        for f in ordered:
            behind = best.value / f.value if higher_is_better else f.value / best.value
            through = tier if f.samples > 1 and behind < TIER_SPAN else tier[:1]
            joins = next((t for t in through if (t is best or t.samples > 1) and tied(t, f, higher_is_better)), None)
            if f not in tier and joins is not None:
                tier.append(f)
                link[f.backend] = joins.backend
                grew = True
    # The tier is a prefix of the ranking by median: a figure whose median is better than a
    # member's is in it too (measured round by round, two members can each tie with the best
    # while one of them ranks below a figure that does not; the answer never puts that
    # figure behind the member it beats).
    last = max(ordered.index(f) for f in tier)
    by_median = set()
    for f in ordered[:last]:
        if f not in tier:
            tier.append(f)
            link[f.backend] = ordered[last].backend
            by_median.add(f.backend)
    tier.sort(key=ordered.index)
    apart = [Apart(f.backend, link[f.backend], gap(best, f, higher_is_better),
                   bool(round_ratios(best, f, higher_is_better)), f.backend in by_median)
             for f in tier[1:] if separated(best, f, higher_is_better)]
    rest = [f for f in ordered if f not in tier]
    runner = rest[0] if rest else None
    margin = None
    if runner is not None:
        weakest = tier[-1]
        margin = weakest.value / runner.value if higher_is_better else runner.value / weakest.value
        # a member known only as a lower bound (a ladder that never failed) may sit below
        # the runner-up: then no margin holds for the whole tier
        margin = margin if margin >= 1 else None
    return Pick(tier[0], tier[1:], runner, margin, apart)

