"""The rules that judge the points of a run (:class:`bench.results.schema.Results`): which
points may rank, the tie rule, and picking a winner with its margin. Pure;
:mod:`bench.results.analysis` asks these questions of a whole run.

- A point **may rank** only when it ran, served its load (not *failing*), the server and
  not the load generator was the limit (not *generator-bound*), other processes did not
  disturb it (not *disturbed*), and, in broadcast, it sent enough lines to mean something.
  A point that may not rank is never a pick, a runner-up or the reference of a ratio, on
  any question: capacity, server CPU per request, latency or memory.
- **The tie rule**: two figures tie when the ranges ``[lo, hi]`` of their repeats overlap;
  when either has a single sample there is no measured spread, so they tie within
  :data:`SINGLE_SAMPLE_TIE` of the larger.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.results.summary import Point

# With one sample per side we have no spread to compare; pyperf calls differences under
# ~5 % noise on an unquiet machine, so we borrow that margin.
SINGLE_SAMPLE_TIE = 0.05
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

@dataclass(frozen=True)
class Figure:
    """One backend's figure for a question: its central value and the range of its repeats."""

    backend: str
    value: float
    lo: float
    hi: float
    samples: int = 1


@dataclass
class Pick:
    """The answer to one question over some backends.

    ``winner`` is None when no figure could rank. ``tied`` are the figures whose range
    overlaps the winner's (the answer is then a tie among them all). ``runner_up`` is the
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


def tied(a: Figure, b: Figure) -> bool:
    """The tie rule (module docstring)."""
    if a.samples >= 2 and b.samples >= 2:
        return a.lo <= b.hi and b.lo <= a.hi
    top = max(abs(a.value), abs(b.value))
    return top == 0 or abs(a.value - b.value) <= SINGLE_SAMPLE_TIE * top


def pick(figures: list[Figure], higher_is_better: bool = True) -> Pick:
    """The best figure, those tied with it, and the runner-up (see :class:`Pick`)."""
    usable = [f for f in figures if f.value is not None and f.value > 0]
    if not usable:
        return Pick(None)
    ordered = sorted(usable, key=lambda f: f.value, reverse=higher_is_better)
    winner = ordered[0]
    ties = [f for f in ordered[1:] if tied(f, winner)]
    rest = [f for f in ordered[1:] if f not in ties]
    runner = rest[0] if rest else None
    margin = None
    if runner is not None:
        margin = winner.value / runner.value if higher_is_better else runner.value / winner.value
    return Pick(winner, ties, runner, margin)
