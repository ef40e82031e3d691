"""The broadcast latency-target ladder of ``bench compare``: for each backend, the highest
room send rate whose p99 delivery latency holds the target (:func:`climb`).

Every backend steps on one grid of room rates (deliveries/s ``base * factor**k``, the same
for all, so equal results mean the same step). A backend starts at the highest step at or
below ``slo_start_fraction`` of its own closed-loop capacity and climbs until a step fails;
if its first step fails it walks down instead, at most :data:`MAX_STEPS_DOWN` steps and
never below the rate that sends ``min_lines`` in three windows. Backends take one step per
round (interleaved), and a step fails only when it fails twice, unless its first try missed
by far (p99 above :data:`FAR_MISS` times the target, or a line lost: a second try would not
hold either). The second try is marked "retry" and the first "climb": only first tries are
an unbiased sample of a step (a retry happens only after a failure), so only they count
where the step's outcome is decided (:mod:`bench.results.points`).

Where a pick is taken (``confirm``), the climb's result is then confirmed
(:func:`_confirm`): each backend whose climb ended on a server failure tries its top step
and the step above ``slo_confirm_tries`` more times, interleaved across backends, so each
of the two steps has a majority of three tries (with the climb's first) to decide it.
A backend whose climb ended without one (its hard stop, the load generator's limit) tries
its top step as many times. Each backend also tries the step below its top as many times
(when it climbed through it; and the step below that one when the confirmations move its
top down a step): rooms whose tops are the same step or one step apart tie
on the rate, and are compared on their p99 at the highest step they all held, from three
tries each (:func:`bench.results.figures.shared_step`).
When that majority finds the failed step held after all, the backend's limit is above
it, so the climb goes on: the next step is tried and confirmed the same way, at most
:data:`MAX_EXTENSIONS` times (a limit that none of these finds is shown as a lower bound).

A step fails when p99 passes the target, a line is lost, or too few of the offered
deliveries arrive (:func:`bench.loadgen.window_rules.held`: a server that cannot keep up
fails, whatever its latency). A step that misses while the load generator's CPU was
saturated and the server's was not is *generator-bound*: the ladder stops there without
calling it the server's limit (the window says ``generator_bound``). The climb has a hard
stop, so it always ends: no step above ``slo_top_fraction`` of the fastest backend's
closed-loop capacity, nor more than :data:`MAX_STEPS_UP` steps above the start; a backend
that holds the last step allowed has not shown its limit.

Pure: no Locust, no gevent; it measures through :meth:`bench.loadgen.program.Program.window`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from bench.loadgen.window_rules import served_capacity

if TYPE_CHECKING:
    from bench.loadgen.program import Program

# A backend that holds nothing this many steps below its start holds "none".
MAX_STEPS_DOWN = 2
# The climb's hard stop in steps above a backend's start (with the grid's top).
MAX_STEPS_UP = 10
# A first try whose p99 is above this many times the target is not tried again.
FAR_MISS = 2.0
# Steps climbed past a failed step that the confirmation found held.
MAX_EXTENSIONS = 2

State = tuple[int, int, bool]  # (next step, direction: +1 up / -1 down / 0 first, any step held)


def climb(program: Program, users: int, capacity: dict[str, list[dict[str, Any]]], confirm: bool = False) -> None:
    """Run the ladder at ``users`` for every backend whose ``capacity`` windows (closed
    loop, per backend) all served; each window is emitted by the program as it is measured.
    With ``confirm``, each top is then confirmed (:func:`_confirm`)."""
    spec = program.spec
    served = served_capacity(capacity, users)
    if not served:
        return
    factor, base = float(spec["slo_factor"]), float(spec["slo_grid_base"])
    top = float(spec["slo_top_fraction"]) * max(served.values())

    def rate(k: int) -> float:  # deliveries/s of grid step k
        return base * factor ** k

    # the lowest step that can send min_lines within its longest window (3 windows):
    # below it no step can hold, so the ladder never goes there
    floor_rate = float(spec["min_lines"]) / (3 * float(spec["window_s"])) * (users - 1)
    lowest = max(0, math.ceil(math.log(max(floor_rate, base) / base, factor)))
    state: dict[str, State] = {}
    start: dict[str, int] = {}
    for b, cap in served.items():
        first = cap * float(spec["slo_start_fraction"])
        k = max(lowest, int(math.floor(math.log(max(first, base) / base, factor))))
        state[b], start[b] = (k, 0, False), k
    targets = {t.backend: t for t in program.targets}
    # backend -> (top held step, the step above it that failed), or (top held step,) when
    # the climb ended without a failure above it
    ends: dict[str, tuple[int, ...]] = {}
    firsts: dict[tuple[str, int], bool] = {}   # (backend, step) -> did the step's first try hold
    while state:
        for b in [t.backend for t in program.targets if t.backend in state]:
            k, direction, held_any = state[b]
            w = program.window(targets[b], users, "slo", k, rate(k) / (users - 1), "climb")
            firsts[(b, k)] = bool(w["held"])
            if not w["held"] and not _far_miss(w, spec):  # a step fails only when it fails twice
                w = program.window(targets[b], users, "slo", k, rate(k) / (users - 1), "retry")
            following = _next(w, state[b], start[b], lowest, rate(k + 1) > top)
            if following is None:
                del state[b]
                if w["held"] and direction < 0:
                    ends[b] = (k, k + 1)       # walked down to a held step
                elif not w["held"] and held_any and not w.get("generator_bound"):
                    ends[b] = (k - 1, k)       # climbed to a failed step
                elif w["held"] or held_any:
                    # the climb's hard stop or the generator's limit: no failed step to
                    # confirm, but the top step's tries let rooms that tie there be
                    # compared on their p99 (bench.results.figures.shared_step)
                    ends[b] = (k if w["held"] else k - 1,)
            else:
                state[b] = following
    if confirm and ends:
        _confirm(program, users, ends, rate, int(spec.get("slo_confirm_tries", 0)), top, firsts)


def _far_miss(w: dict[str, Any], spec: dict[str, Any]) -> bool:
    """Did a try miss the target by far: p99 above FAR_MISS times it, or a line lost?"""
    p99 = (w.get("latency_us") or {}).get("p99", 0)
    return bool(w.get("lost")) or p99 > FAR_MISS * float(spec["slo_ms"]) * 1000.0


def _confirm(program: Program, users: int, ends: dict[str, tuple[int, ...]], rate: Any, tries: int,
             top: float, firsts: dict[tuple[str, int], bool]) -> None:
    """Try each backend's top step and the failed step above it ``tries`` more times: one
    round per try, every backend's steps in each round (interleaved, so a slow moment of
    the machine falls on several backends, not on one backend's every try). A backend whose
    climb ended without a failed step (``ends`` holds its top step only) tries that step.
    The step under each backend's top is tried as often, in the same rounds, when the climb
    went through it: with the tops, every step where tied rooms are compared on their p99
    has three tries. ``firsts``: whether the first try of each step climbed held (a step
    not in it was never tried: the start of a climb, or below a walk down).

    A step is then decided by the majority of its first try and these (as
    :mod:`bench.results.points` decides it). A failed step that holds by majority sends the
    climb on: the step above it was never tried, so that backend tries it (a first try, then
    ``tries`` confirmations), and so on while the step tried holds, up to
    :data:`MAX_EXTENSIONS` steps and never above ``top`` (rate/s). A top that fails by
    majority, over a step under it that holds, moves the backend's top down a step: the step
    under that one, tried once on the climb, is confirmed too, so the new top also has its
    step below with three tries (once: a top that falls two steps is left as it is)."""
    targets = {t.backend: t for t in program.targets}
    order = [t.backend for t in program.targets]
    below = {b: ks[0] - 1 for b, ks in ends.items() if (b, ks[0] - 1) in firsts}
    # the steps each backend confirms in this pass, ascending: below its top, its top, above it
    steps = {b: ([below[b]] if b in below else []) + list(ks) for b, ks in ends.items()}
    top_only = {b for b, ks in ends.items() if len(ks) == 1}  # nothing failed above: no climb on
    held: dict[tuple[str, int], int] = {}                    # (backend, step) -> confirmations held
    moved_down: set[str] = set()                               # their last confirmation was below the top

    def majority(b: str, k: int) -> bool:
        return 2 * (int(firsts.get((b, k), False)) + held.get((b, k), 0)) > tries + 1

    for extension in range(MAX_EXTENSIONS + 1):
        for _ in range(tries):
            for b in [b for b in order if b in steps]:
                for k in steps[b]:
                    w = program.window(targets[b], users, "slo", k, rate(k) / (users - 1), "confirm")
                    held[(b, k)] = held.get((b, k), 0) + int(bool(w["held"]))
        if extension == MAX_EXTENSIONS:
            return
        following: dict[str, list[int]] = {}
        for b in [b for b in order if b in steps and b not in moved_down]:
            last = steps[b][-1]
            if b not in top_only and majority(b, last) and rate(last + 1) <= top:
                k = last + 1                                 # the climb goes on
                w = program.window(targets[b], users, "slo", k, rate(k) / (users - 1), "climb")
                firsts[(b, k)] = bool(w["held"])
                following[b] = [k]
            elif (extension == 0 and b in below and not majority(b, ends[b][0]) and majority(b, below[b])
                  and (b, below[b] - 1) in firsts):
                following[b] = [below[b] - 1]                # the top moved down a step
                moved_down.add(b)
        if not following:
            return
        steps = following


def _next(w: dict[str, Any], now: State, start: int, lowest: int, above_top: bool) -> State | None:
    """The backend's next step after window ``w`` at step ``now``; None: its ladder ends."""
    k, direction, held_any = now
    if w["held"]:
        if direction < 0 or above_top or k + 1 - start > MAX_STEPS_UP:
            return None        # walked down to a held step, or at the hard stop
        return (k + 1, 1, True)
    if w.get("generator_bound"):
        return None            # the load generator's limit, not the server's: stop here
    if held_any or k <= lowest or start - k >= MAX_STEPS_DOWN:
        return None            # the step above the last held one failed, or none held
    return (k - 1, -1, False)
