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
  another only when it is better by at least :data:`MIN_EFFECT` (15 %) and the windows
  say so beyond their noise. Figures measured in the same rounds (the program measures
  every backend once per round, so a busy moment of the machine hits a round's windows
  alike) are compared round by round (:func:`round_ratios`): the median of the rounds'
  ratios must be at least the minimum effect, and the one-sided 95 % confidence bound of
  their geometric mean (:func:`paired_bound`) above 1, so that the rounds rank the pair
  the same way beyond their spread. Figures without common rounds compare their own
  intervals: the medians and the worse end of the better one's interval against the
  better end of the other's must be the minimum effect apart. Otherwise they tie. A
  figure with no spread of its own (one memory slope, one ladder step) has the interval
  its producer gives it.
- **The answer is a tier** (:func:`pick`): the best figure, every figure that ties with
  it, and every figure whose median is better than a member's, so that the answer never
  puts a backend behind one whose median it beats. The best figure outside the tier is
  the runner-up; when it ties with a member other than the best, the answer says so.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Sequence

from bench.results.summary import Point

# The minimum effect: a figure ranks above another only when it is better by at least this
# share (15 %), whatever the windows say. Below it a difference is not worth a
# recommendation, nor one the next run repeats: a pair's median round-by-round ratio moves
# between runs by 0.1 and more (six default runs at quiet hours, eight rounds at the
# answer's points: gevent against gevent-callback at 1000 connections 1.01-1.17x). Over
# those runs the throughput answer at 1000 connections named the same tier (gevent and
# gevent-callback) in 5 with 15 %, in 4 with 10 %.
MIN_EFFECT = 0.15
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


def interval(samples: Sequence[float]) -> tuple[float, float]:
    """The interval of a figure's repeats: their range, ``(min, max)``, without the one
    repeat farthest from their median when there are at least :data:`ROBUST_FROM`.

    It is what a figure shows as its range, and what figures not measured in the same
    rounds are compared on (:func:`separated`). A window disturbed by other processes is
    measured again before this (:mod:`bench.results.points`); the repeat left out here is
    the one stray window that no such check catches.

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
class Lead:
    """How far the best figure is ahead of another that it is :func:`separated` from:
    ``factor`` (:func:`gap`), the median of the rounds' ratios when the two were measured
    in the same rounds (``by_round``), else the gap between their intervals."""

    factor: float
    by_round: bool = False


@dataclass(frozen=True)
class Apart:
    """A tier member that the best figure is separated from: it is in the tier only because
    its median is better than member ``above``'s (:func:`pick`)."""

    backend: str
    above: str
    lead: Lead


@dataclass
class Pick:
    """The answer to one question over some backends.

    ``winner`` is None when no figure could rank. ``tied`` are the other members of the
    winner's tier (:func:`pick`; the answer is then a tie among them all), best first.
    ``runner_up`` is the best figure outside the tier, and ``margin`` the advantage of the
    tier over it, as a factor >= 1: when every member was measured in the same rounds as
    the runner-up (``margin_by_round``), the least of the members' medians of the rounds'
    ratios (:func:`gap`); otherwise the tier's weakest median against the runner-up's
    (higher-is-better: weakest/runner-up; lower: runner-up/weakest); None when a member
    known only as a lower bound is below the runner-up. Without a tie that is the
    winner's own margin. ``runner_up_lead`` is
    the winner's lead over the runner-up, and ``runner_up_ties`` the members other than the
    winner that the runner-up ties with: then the tier is not ahead of it as a whole, and
    the answer says so.
    ``apart`` are the members that the winner's figure *is* separated from, in the tier
    by their median (:class:`Apart`): the answer says so, since the windows do rank them
    below the winner.
    """

    winner: Figure | None
    tied: list[Figure] = field(default_factory=list)
    runner_up: Figure | None = None
    margin: float | None = None
    apart: list[Apart] = field(default_factory=list)
    runner_up_lead: Lead | None = None
    runner_up_ties: list[str] = field(default_factory=list)
    margin_by_round: bool = False  # the margin is the least median of rounds' ratios

    @property
    def is_tie(self) -> bool:
        return bool(self.tied)

    def names(self) -> list[str]:
        """The winner and everything tied with it."""
        return ([self.winner.backend] if self.winner else []) + [f.backend for f in self.tied]


def separated(better: Figure, worse: Figure, higher_is_better: bool = True) -> bool:
    """The tie rule: does ``better`` rank above ``worse``?

    Measured in the same rounds (:func:`round_ratios`, :data:`PAIRED_FROM` or more): the
    median of the rounds' ratios is at least 1 + :data:`MIN_EFFECT`, and the one-sided 95 %
    confidence bound of their geometric mean (:func:`paired_bound`) is above 1. Why round
    by round: on a shared machine a busy moment slows every backend of the round alike
    (measured on a default run's windows at 100 connections: CPU per round trip of every
    backend 1.6-1.9x higher in the same two of six rounds), so two backends' ranges overlap
    while each round ranks them the same way. Why a median and a confidence bound rather
    than the worst round (the rule before): the worst of more rounds only gets worse, so
    more windows gave more ties; the median and the bound get steadier. Six default runs
    at quiet hours, eight rounds at the answer's points, re-ranked by both: CPU per round
    trip at 100 connections named gevent and gevent-callback, 1.16-1.36x ahead of select
    and asyncio round for round, in all six by this rule; the worst round named the
    four-way tie gevent, gevent-callback, select, asyncio in all six.

    Otherwise (an older results file, a figure without rounds, p99 at the set rate, whose
    stalls are each window's own): the medians are the minimum effect apart, and so are the
    intervals' nearer ends (:func:`gap`). A pair whose medians are less than the minimum
    effect apart always ties."""
    ratios = round_ratios(better, worse, higher_is_better)
    if ratios:
        return statistics.median(ratios) >= 1 + MIN_EFFECT and paired_bound(ratios) > 1.0
    medians = better.value / worse.value if higher_is_better else worse.value / better.value
    return medians >= 1 + MIN_EFFECT and gap(better, worse, higher_is_better) >= 1 + MIN_EFFECT


# Two figures with at least this many rounds in common are compared round by round.
PAIRED_FROM = 3

# Student's t, one-sided 95 %, by degrees of freedom (rounds in common - 1); from 20 on the
# value at 20 (a little wider than the true bound, never narrower).
_T95 = (0.0, 6.314, 2.920, 2.353, 2.132, 2.015, 1.943, 1.895, 1.860, 1.833, 1.812, 1.796, 1.782, 1.771,
        1.761, 1.753, 1.746, 1.740, 1.734, 1.729, 1.725)


def paired_bound(ratios: Sequence[float]) -> float:
    """The one-sided 95 % lower confidence bound of the geometric mean of ``ratios`` (each
    > 0, at least two): exp(mean - t * standard error) of their logarithms, Student's t
    with len(ratios) - 1 degrees of freedom. Above 1: the rounds rank the pair one way
    beyond their spread."""
    if len(ratios) < 2:
        raise ValueError("a confidence bound needs at least two ratios")
    logs = [math.log(r) for r in ratios]
    spread = statistics.stdev(logs) / math.sqrt(len(logs))
    return math.exp(statistics.fmean(logs) - _T95[min(len(logs) - 1, len(_T95) - 1)] * spread)


def round_ratios(better: Figure, worse: Figure, higher_is_better: bool = True) -> list[float]:
    """``better``'s advantage over ``worse`` in each round both were measured in (> 1:
    better in that round); empty when they share fewer than :data:`PAIRED_FROM` rounds."""
    a, b = dict(better.rounds), dict(worse.rounds)
    common = sorted(set(a) & set(b))
    if len(common) < PAIRED_FROM or any(a[r] <= 0 or b[r] <= 0 for r in common):
        return []
    return [a[r] / b[r] if higher_is_better else b[r] / a[r] for r in common]


def gap(better: Figure, worse: Figure, higher_is_better: bool = True) -> float:
    """How far ``better`` is ahead of ``worse``, as a factor (below 1 when it is not): the
    factor of :func:`lead`."""
    return lead(better, worse, higher_is_better).factor


def lead(better: Figure, worse: Figure, higher_is_better: bool = True) -> Lead:
    """``better``'s :class:`Lead` over ``worse``. Measured in the same rounds
    (:func:`round_ratios`): the median of the rounds' ratios. Otherwise: the gap between the
    intervals' nearer ends, ``better.lo / worse.hi`` (higher-is-better) or ``worse.lo /
    better.hi``; 0 when the divisor is not positive."""
    ratios = round_ratios(better, worse, higher_is_better)
    if ratios:
        return Lead(statistics.median(ratios), by_round=True)
    if higher_is_better:
        return Lead(better.lo / worse.hi if worse.hi > 0 else 0.0)
    return Lead(worse.lo / better.hi if better.hi > 0 else 0.0)


def tied(a: Figure, b: Figure, higher_is_better: bool = True) -> bool:
    """Neither ranks above the other (:func:`separated`)."""
    first, second = (a, b) if (a.value >= b.value) == higher_is_better else (b, a)
    return not separated(first, second, higher_is_better)


def pick(figures: list[Figure], higher_is_better: bool = True) -> Pick:
    """The best figure and its tier, and the runner-up (see :class:`Pick`).

    The tier is the best figure, every figure that ties with it (:func:`tied`), and every
    figure whose median is better than a member's: the tier is a prefix of the ranking by
    median, so the answer never puts a backend behind one whose median it beats.

    Why ties with the best only, not also ties with another member (a chain: b ties the
    best, c ties b, so c joins, the rule before): with the rounds compared by their median
    and confidence bound (:func:`separated`), a middle backend ties with its neighbours on
    both sides, and the chain then ties backends that the best beats in every run. Six
    default runs, eight rounds: at 1000 connections gevent beat select by 1.22-1.28x round
    for round in every run, while gevent-callback's ratio to select ranged over 1.02-1.23x;
    with the chain the tier was gevent, gevent-callback, select and asyncio in 4 runs and
    gevent and gevent-callback in 1; with ties to the best only, gevent and gevent-callback
    in 5. A runner-up that ties with a member other than the best is said so in the answer
    (``runner_up_ties``), so the answer does not claim the whole tier is ahead of it.

    The runner-up is the best figure outside the tier; the margin is the tier's least
    advantage over it (see :class:`Pick`).
    """
    usable = [f for f in figures if f.value is not None and f.value > 0]
    if not usable:
        return Pick(None)
    ordered = sorted(usable, key=lambda f: f.value, reverse=higher_is_better)
    best = ordered[0]
    tier = [best] + [f for f in ordered[1:] if tied(best, f, higher_is_better)]
    # the prefix of the ranking by median: a figure whose median is better than a member's
    last = max(ordered.index(f) for f in tier)
    apart = [Apart(f.backend, ordered[last].backend, lead(best, f, higher_is_better))
             for f in ordered[:last] if f not in tier]
    tier = ordered[:last + 1]
    rest = ordered[last + 1:]
    runner = rest[0] if rest else None
    result = Pick(tier[0], tier[1:], runner, apart=apart)
    if runner is not None:
        leads = [lead(f, runner, higher_is_better) for f in tier]
        if all(x.by_round for x in leads):
            # measured in the same rounds: the figure the tie rule ranks on, so the margin
            # says what the rule saw (the medians' ratio can be lower, e.g. 1.07x against a
            # runner-up that every round puts 1.2x behind)
            margin, result.margin_by_round = min(x.factor for x in leads), True
        else:
            weakest = tier[-1]
            margin = weakest.value / runner.value if higher_is_better else runner.value / weakest.value
        # a member known only as a lower bound (a ladder that never failed) may sit below
        # the runner-up: then no margin holds for the whole tier
        result.margin = margin if margin >= 1 else None
        result.runner_up_lead = leads[0]   # the best's (tier[0])
        result.runner_up_ties = [f.backend for f in tier[1:] if tied(f, runner, higher_is_better)]
    return result
