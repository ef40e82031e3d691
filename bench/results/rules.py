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
  another only when their intervals do not overlap *and* it is better by at least
  :data:`MIN_EFFECT`. Otherwise they tie. A figure's interval is the range (min-max) of its
  repeats (:func:`interval`); a figure with no spread of its own (one memory slope, one
  ladder step) has the interval its producer gives it, and the minimum effect still holds.
"""

from __future__ import annotations

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

def interval(samples: Sequence[float]) -> tuple[float, float]:
    """The interval of a figure's repeats: their range, ``(min, max)``.

    Chosen by measurement over the windows of four quiet default runs (12 per backend and
    question: CPU per round trip and p99 at the set rate at 100 connections, capacity at
    1000), resampled into runs of 3, 5, 6 and 7 windows. With 5 windows, two runs named the
    same tied set with probability 0.68-0.82 when intervals were min-max, but only 0.11-0.23
    with intervals robust to one outlier window (median ± 1.5 MAD, the range without the
    lowest and highest window, the range without the window farthest from the median); with
    7 windows, 0.86-0.97 against 0.22-0.70; with 6 (the default where the answer's picks are
    taken), 0.79-0.93 for min-max; with 3, about 0.35. The windows of one backend differ from
    run to run by as much as an outlier does (the machine is shared), so an interval that
    drops the odd window calls differences that the next run does not repeat. Outliers from
    other processes are handled before this: such windows are measured again and, if still
    disturbed, left out (:mod:`bench.results.points`).

    Raises:
        ValueError: no samples.
    """
    if not samples:
        raise ValueError("a figure needs at least one sample")
    return float(min(samples)), float(max(samples))


@dataclass(frozen=True)
class Figure:
    """One backend's figure for a question: its central value (the median of its repeats)
    and its interval (:func:`interval`, or what the figure's producer says for a figure
    without repeats)."""

    backend: str
    value: float
    lo: float
    hi: float
    samples: int = 1


@dataclass
class Pick:
    """The answer to one question over some backends.

    ``winner`` is None when no figure could rank. ``tied`` are the figures the winner is not
    :func:`separated` from (the answer is then a tie among them all). ``runner_up`` is the
    best figure that does not tie with the winner, and ``margin`` the winner's advantage
    over it as a factor >= 1 (higher-is-better: winner/runner-up; lower: runner-up/winner).
    """

    winner: Figure | None
    tied: list[Figure] = field(default_factory=list)
    runner_up: Figure | None = None
    margin: float | None = None

    @property
    def is_tie(self) -> bool:
        return bool(self.tied)

    def names(self) -> list[str]:
        """The winner and everything tied with it."""
        return ([self.winner.backend] if self.winner else []) + [f.backend for f in self.tied]


def separated(better: Figure, worse: Figure, higher_is_better: bool = True) -> bool:
    """The tie rule: ``better`` ranks above ``worse`` only when their intervals do not
    overlap and ``better`` is better by at least :data:`MIN_EFFECT` (as a factor:
    better/worse for higher-is-better figures, worse/better for lower-is-better ones).
    Intervals that touch overlap."""
    if better.hi < worse.lo or worse.hi < better.lo:
        hi, lo = (better.value, worse.value) if higher_is_better else (worse.value, better.value)
        return lo > 0 and hi >= (1 + MIN_EFFECT) * lo
    return False


def tied(a: Figure, b: Figure, higher_is_better: bool = True) -> bool:
    """Neither ranks above the other (:func:`separated`)."""
    first, second = (a, b) if (a.value >= b.value) == higher_is_better else (b, a)
    return not separated(first, second, higher_is_better)


def pick(figures: list[Figure], higher_is_better: bool = True) -> Pick:
    """The best figure, those tied with it, and the runner-up (see :class:`Pick`)."""
    usable = [f for f in figures if f.value is not None and f.value > 0]
    if not usable:
        return Pick(None)
    ordered = sorted(usable, key=lambda f: f.value, reverse=higher_is_better)
    winner = ordered[0]
    ties = [f for f in ordered[1:] if not separated(winner, f, higher_is_better)]
    rest = [f for f in ordered[1:] if f not in ties]
    runner = rest[0] if rest else None
    margin = None
    if runner is not None:
        margin = winner.value / runner.value if higher_is_better else runner.value / winner.value
    return Pick(winner, ties, runner, margin)
