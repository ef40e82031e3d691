"""The rules that judge the points of a results document (:mod:`bench.results.schema`,
schema 2): which points may rank, the tie rule, and picking a winner with its margin.
Pure; :mod:`bench.results.analysis` asks these questions of a whole run.

- A point **may rank** only when it ran, served its load (not *failing*), the server and
  not the load generator was the limit (not *generator-bound*), other processes did not
  disturb it (not *disturbed*), and, in broadcast, it sent enough lines to mean something.
  A point that may not rank is never a pick, a runner-up or the reference of a ratio.
  Server CPU per request is the one figure a disturbed point may still rank on (see
  :func:`why_not_ranked`).
- **The tie rule**: two figures tie when the ranges ``[lo, hi]`` of their repeats overlap;
  when either has a single sample there is no measured spread, so they tie within
  :data:`SINGLE_SAMPLE_TIE` of the larger.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from bench.results.config import MODES
from bench.results.schema import Doc, Point

# With one sample per side we have no spread to compare; pyperf calls differences under
# ~5 % noise on an unquiet machine, so we borrow that margin.
SINGLE_SAMPLE_TIE = 0.05


# -- grouping --------------------------------------------------------------------------------

def _ordered(seen: Iterable[str], preferred: Iterable[str]) -> list[str]:
    seen_list = list(dict.fromkeys(seen))
    first = [x for x in preferred if x in seen_list]
    return first + [x for x in seen_list if x not in first]


def modes(doc: Doc) -> list[str]:
    """Modes present, echo before broadcast."""
    return _ordered((p["mode"] for p in doc["points"]), MODES)


def backends(doc: Doc, mode: str | None = None) -> list[str]:
    """Backends present (in ``mode`` if given), in the config's order."""
    seen = [p["backend"] for p in doc["points"] if mode is None or p["mode"] == mode]
    return _ordered(seen, (doc.get("config") or {}).get("backends") or [])


def user_counts(doc: Doc, mode: str | None = None) -> list[int]:
    """Distinct connection counts (in ``mode`` if given), ascending."""
    return sorted({int(p["users"]) for p in doc["points"] if mode is None or p["mode"] == mode})


def points_at(doc: Doc, mode: str, users: int) -> list[Point]:
    """The points of one (mode, users), in backend order."""
    found = {p["backend"]: p for p in doc["points"] if p["mode"] == mode and int(p["users"]) == users}
    return [found[b] for b in backends(doc, mode) if b in found]


def point(doc: Doc, mode: str, users: int, backend: str) -> Point | None:
    return next((p for p in points_at(doc, mode, users) if p["backend"] == backend), None)


# -- may a point rank? -------------------------------------------------------------------------

def why_not_ranked(p: Point, question: str = "capacity") -> str | None:
    """None when the point may rank on ``question``; else the short reason shown next to it.

    ``question`` "cost" (server CPU per request) lets a disturbed point rank: CPU time is
    counted only while the server runs, so other processes taking turns on the core do not
    inflate it (they do lower capacity and raise latency, which a disturbed point never ranks on)."""
    flags = p.get("flags") or {}
    if p.get("error"):
        return "did not run"
    if not (p.get("capacity") or {}).get("median"):
        return "served nothing"
    if flags.get("failing"):
        return "failing: " + ("; ".join(p.get("notes") or []) or "failures")
    if flags.get("generator_bound"):
        return "load-generator-bound"
    if flags.get("disturbed") and question != "cost":
        return "disturbed by other processes"
    if flags.get("too_few_lines"):
        return "too few lines sent to rank"
    return None


def flag_labels(p: Point) -> list[str]:
    """Short labels for tables and charts: error, failing, generator-bound, disturbed, too few lines."""
    if p.get("error"):
        return ["error"]
    flags = p.get("flags") or {}
    names = (("failing", "failing"), ("generator_bound", "generator-bound"), ("disturbed", "disturbed"),
             ("too_few_lines", "too few lines"))
    return [label for key, label in names if flags.get(key)]


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
