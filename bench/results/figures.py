"""One figure per backend for each question a run answers, from the points that may rank
on it (:func:`bench.results.rules.why_not_ranked`). Pure; :mod:`bench.results.analysis`
turns the figures into picks and sentences.

Every question ranks on its own figure's repeats, with the one tie rule
(:func:`bench.results.rules.separated`; repeated figures carry the round of each repeat, so
two backends measured in the same rounds are compared round by round):

- **capacity** at a connection count: closed-loop requests/s (echo round trips, broadcast
  deliveries), one sample per capacity window.
- **cost**: server CPU µs per round trip / delivery, one sample per capacity window (the
  server's CPU time over the window divided by the requests it served in it).
- **latency at a set rate** (echo): p99 at one offered rate for every backend, one sample
  per set-rate window; a backend that fell behind the rate is not ranked on it. Compared
  as ranges, not round by round: a window's p99 at a light load is set by a few stalls of
  its own, which the other backends' windows of the round do not share (measured on a
  default run: one pair's round-by-round ratios spanned 0.18x to 3.9x, against 0.58x to
  1.4x for capacity at 1000 connections).
- **broadcast at a latency target**: the highest room rate held (p99 delivery latency
  within the target, no line lost), on a grid of rates. Its interval runs from that step to
  the lowest failed step above it (:func:`slo_limit`; open-ended when none failed): the
  limit lies between them, so backends one step apart tie and two steps apart rank.
  Backends tied on it are told apart, where they can be, by their p99 at the highest step
  they all held (:func:`shared_step`), compared as ranges of the step's tries.
- **memory per connection**: the slope of server RSS between two connection counts
  (:func:`memory_slope`), idle (echo, one round trip each) and active (during capacity):
  one measurement per side, no spread, so only the minimum effect separates two slopes.

A disturbed point gives no figure for any question. The set rate's and the ladder's own
windows count too: a point whose set-rate windows were disturbed, or whose ladder's limit
(the failed step above the top) was, gives no figure for that question
(:func:`set_rate_disturbed`, :func:`slo_disturbed`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

from bench.results.formatting import join_names
from bench.results.rules import DISTURBED, Figure, Pick, interval, pick, why_not_ranked
from bench.results.schema import Results
from bench.results.summary import Point, Samples

# A memory slope needs two connection counts at least this far apart, the lower one at least
# MEMORY_LOW_USERS (one connection's RSS change is noise of the same size).
MEMORY_MIN_SPAN = 90
MEMORY_LOW_USERS = 10
# Reasons a point that does not rank on capacity may still rank at a set rate or on the ladder:
# a generator that cannot saturate a server can still offer it a set rate, and the ladder's
# windows send enough lines of their own.
SET_RATE_MAY_RANK = (None, "load-generator-bound")
SLO_MAY_RANK = (None, "load-generator-bound", "too few lines sent to rank")


def unit(mode: str) -> str:
    return "deliveries/s" if mode == "broadcast" else "req/s"


def per_request(mode: str) -> str:
    return "per delivery" if mode == "broadcast" else "per round trip"


def _fig(backend: str, samples: Sequence[float], median: float, repeats: Sequence[int]) -> Figure:
    """A figure of repeated windows; ``repeats``: each sample's round (empty when unknown)."""
    assert samples
    rounds = tuple(zip(repeats, map(float, samples))) if len(repeats) == len(samples) else ()
    return Figure(backend, float(median), *interval(samples), len(samples), rounds)


def _samples_fig(backend: str, s: Samples) -> Figure:
    assert s.median is not None
    return _fig(backend, s.samples, s.median, s.repeats)


def capacity_figures(doc: Results, mode: str, users: int) -> list[Figure]:
    return [_samples_fig(p.backend, p.capacity) for p in doc.points_at(mode, users) if why_not_ranked(p) is None]


def cost_figures(doc: Results, mode: str, users: int) -> list[Figure]:
    return [_samples_fig(p.backend, p.cost_us) for p in doc.points_at(mode, users)
            if why_not_ranked(p) is None and p.cost_us.median]


def set_rate_disturbed(p: Point) -> bool:
    return bool(p.flags.disturbed or (p.set_rate and p.set_rate.disturbed))


def slo_disturbed(p: Point) -> bool:
    """Was the ladder's figure measured while other processes were busy: the point, or the
    lowest failed step above the highest held one (the limit; with none held, the lowest
    failed step)? A busy machine makes a step fail, never hold, so a held step that was
    disturbed still held, and only a disturbed failure leaves the limit in doubt."""
    if p.flags.disturbed:
        return True
    if not p.slo:
        return False
    held = p.slo.held_deliveries_per_s
    failed = [s for s in p.slo.steps if not s.held and (held is None or s.deliveries_per_s > held)]
    limit = min(failed, key=lambda s: s.deliveries_per_s, default=None)
    return bool(limit is not None and limit.disturbed)


def set_rate_figures(doc: Results, users: int) -> list[Figure]:
    """p99 at the set rate of echo points that served the load, kept up, and were not disturbed."""
    out = []
    for p in doc.points_at("echo", users):
        sr = p.set_rate
        if sr and sr.kept_up and not set_rate_disturbed(p) and why_not_ranked(p) in SET_RATE_MAY_RANK:
            out.append(_fig(p.backend, sr.p99_samples, sr.p99, ()))  # compared as ranges: see the docstring
    return out


def slo_limit(p: Point) -> float:
    """Deliveries/s of the lowest step above the held one that failed: the limit of ``p``'s
    room lies below it. When the held step is the last one tried and one of its tries
    failed (the majority held), the limit is taken to lie below the next step of the grid:
    the room is at its limit there, and a step higher would not hold. Infinite when no step
    above the held one failed (the climb's top, or the load generator's limit)."""
    held = p.slo.held_deliveries_per_s if p.slo else None
    if not p.slo or held is None:
        return math.inf
    steps = p.slo.steps
    above = [s.deliveries_per_s for s in steps
             if not s.held and not s.generator_bound and s.deliveries_per_s > held]
    top = steps[-1]
    if not above and len(steps) >= 2 and top.held_with_a_failed_try:
        return top.deliveries_per_s * top.deliveries_per_s / steps[-2].deliveries_per_s  # one grid step up
    return min(above, default=math.inf)


def slo_lower_bound(p: Point) -> bool:
    """The rate ``p`` held at the latency target is a lower bound: its climb ended without
    the server failing a step (the load generator's limit, or the top of the climb)."""
    return bool(p.slo and (p.slo.generator_bound or p.slo.ceiling_reached))


def slo_figures(doc: Results, users: int) -> list[Figure]:
    """Broadcast deliveries/s held at the latency target, with the interval up to the failed
    step above it (:func:`slo_limit`)."""
    out = []
    for p in doc.points_at("broadcast", users):
        held = p.slo.held_deliveries_per_s if p.slo else None
        if held and not slo_disturbed(p) and why_not_ranked(p) in SLO_MAY_RANK:
            out.append(Figure(p.backend, float(held), float(held), slo_limit(p), 1))
    return out


# A ladder step's p99 ranks backends tied on the ladder (shared_step) only from this
# many counted tries each (its first try and confirmations): one try's p99 is one window's,
# with that window's own stalls.
SHARED_STEP_TRIES = 3


@dataclass(frozen=True)
class SharedStep:
    """Rooms tied on the rate held, compared at the highest step they all held (``rate``):
    each one's p99 there (``figures``, lowest first; the median of the step's counted tries,
    their range as the interval, compared as ranges like the set rate's p99, and the number
    of tries as ``samples``). ``above``: rooms whose p99 stands in from a higher step, that
    step's rate by backend. ``low``: the pick on those p99s when they settle the tie, else
    None, and ``why_not`` says why (:func:`shared_step`)."""

    rate: float
    figures: list[Figure]
    above: dict[str, float]
    low: Pick | None
    why_not: str = ""


def same_step(a: float, b: float) -> bool:
    """Two ladder rates are the same step: every backend steps on one grid."""
    return math.isclose(a, b, rel_tol=1e-6)


def _step_p99(p: Point, rate: float) -> tuple[float, Figure] | None:
    """``p``'s p99 at the held step of ``rate``, or, when that step has fewer than
    :data:`SHARED_STEP_TRIES` counted tries, at the lowest higher step it held with that
    many (else the lowest held step from ``rate`` up); with the rate of the step it comes
    from. None when it held no step from ``rate`` up."""
    held = [s for s in (p.slo.steps if p.slo else ()) if s.held
            and (same_step(s.deliveries_per_s, rate) or s.deliveries_per_s > rate)]
    held.sort(key=lambda s: s.deliveries_per_s)
    if not held:
        return None
    step = next((s for s in held if (s.tries or 1) >= SHARED_STEP_TRIES), held[0])
    return step.deliveries_per_s, _fig(p.backend, step.p99_tries or (step.p99_us,), step.p99_us, ())


def shared_step(doc: Results, users: int, p: Pick) -> SharedStep | None:
    """For a fan-out tie on the rate (``p``, :func:`slo_figures`), the tied rooms' p99 at the
    highest step they all held, the lowest member's top; None without a tie or when fewer
    than two members held it. The lowest p99 there is the pick (``low``) when every member
    has it from at least :data:`SHARED_STEP_TRIES` counted tries and its tier leaves some
    member out.

    Why: the rate held is known to one grid step (1.5x), and a room near the target holds
    or misses a step by chance: asyncio's p99 sat at 7-10 ms from 2.2M to 7.5M
    deliveries/s at 100 clients (eight default runs), so its top moved between 3.3M and
    5.0M, one step below gevent's or two, and the answer between "gevent" and "a tie".
    Where both held, gevent's p99 was 1.5-5 ms in every try: the room with the lower p99
    at the rate both held has the headroom the grid cannot show.

    A member that tried the shared step fewer times (a step it climbed through once, well
    below its own top) stands in with its p99 at the lowest higher step it held in that
    many tries: a room's p99 rises with its rate, so a lower p99 at a higher rate is at
    least as low at the shared step. Such a figure may only win: a higher step is no
    evidence that the room is worse lower down."""
    if not p.is_tie or p.winner is None:
        return None
    rate = min(f.value for f in [p.winner] + p.tied)
    names = p.names()
    found = {q.backend: got for q in doc.points_at("broadcast", users)
             if q.backend in names and (got := _step_p99(q, rate))}
    if len(found) < 2:
        return None
    figures = sorted((f for _, f in found.values()), key=lambda f: f.value)
    above = {b: r for b, (r, _) in found.items() if not same_step(r, rate)}
    shared = SharedStep(rate, figures, above, None)
    if len(found) < len(names) or any(f.samples < SHARED_STEP_TRIES for f in figures):
        return replace(shared, why_not=f"fewer than {SHARED_STEP_TRIES} tries each: not ranked on it")
    low = pick(figures, higher_is_better=False)
    if low.runner_up is None or low.margin is None:
        return replace(shared, why_not="a tie there too")
    losing = [b for b in above if b not in low.names()]
    if losing:
        return replace(shared, why_not=f"not ranked on it: {join_names(losing)} tried it fewer than "
                       f"{SHARED_STEP_TRIES} times, and a p99 from a higher step can show a room ahead, not behind")
    return replace(shared, low=low)


def question_reason(p: Point, question: str) -> str | None:
    """Why ``p`` gives no figure for ``question`` ("capacity", "cost", "set_rate", "slo");
    None when it does (or, for "slo", when it held no step: the caller says so)."""
    reason = why_not_ranked(p)
    if question == "set_rate" and reason in SET_RATE_MAY_RANK:
        sr = p.set_rate
        return (DISTURBED if set_rate_disturbed(p) else
                "fell behind the offered rate" if sr and not sr.kept_up else None)
    if question == "slo" and reason in SLO_MAY_RANK:
        return DISTURBED if slo_disturbed(p) else None
    return reason


@dataclass(frozen=True)
class Slope:
    """Server memory per connection: (RSS at ``hi`` - RSS at ``lo``) / (hi - lo)."""

    bytes_per_conn: float
    lo: int
    hi: int


def memory_slope(doc: Results, mode: str, backend: str, kind: str = "idle",
                 undisturbed: bool = False) -> Slope | None:
    """The RSS slope of ``backend`` between the lowest connection count >= MEMORY_LOW_USERS and
    the highest, over points that served their load (and, with ``undisturbed``, that other
    processes did not disturb); None without two such counts at least
    :data:`MEMORY_MIN_SPAN` apart. ``kind``: "idle" or "active"."""
    known = []
    for users in doc.user_counts(mode):
        p = doc.point(mode, users, backend)
        if p is None or p.error or p.flags.failing or (undisturbed and p.flags.disturbed):
            continue
        rss = p.memory.idle_rss_bytes if kind == "idle" else p.memory.active_rss_bytes
        if rss and users >= MEMORY_LOW_USERS:
            known.append((users, int(rss)))
    if len(known) < 2 or known[-1][0] - known[0][0] < MEMORY_MIN_SPAN:
        return None
    (lo, rss_lo), (hi, rss_hi) = known[0], known[-1]
    return Slope((rss_hi - rss_lo) / (hi - lo), lo, hi)


def memory_figures(doc: Results, mode: str, kind: str) -> list[Figure]:
    """Memory per connection of every backend that may rank on it: the slope over points that
    other processes did not disturb (still busy after re-measuring), so a disturbed point
    recommends nothing, like every other figure of a disturbed point, and the slope spans the
    counts that are left (the memory table still shows the slope over every count)."""
    out = []
    for b in doc.backends(mode):
        s = memory_slope(doc, mode, b, kind, undisturbed=True)
        if s is not None:
            v = max(1.0, s.bytes_per_conn)  # a slope at or below zero is "nothing measurable"
            out.append(Figure(b, v, v, v, 1))
    return out
