"""What a run says, in sentences: the answer ("which model for which case"), a pick or an
explicit tie for every (mode, load), and the caveats. Pure: no I/O, no plotting; the rules
live in :mod:`bench.results.rules`, the figures per question in :mod:`bench.results.figures`,
and every sentence here is built from them.

A point that may not rank (:func:`bench.results.rules.why_not_ranked`: did not run,
failing, generator-bound, disturbed by other processes, too few lines) is never a pick,
a runner-up or the reference of a ratio, and the sentence at its load says why.
"""

from __future__ import annotations

from typing import Callable

from bench.results.figures import (capacity_figures, cost_figures, memory_figures, memory_slope,  # noqa: F401
                                   per_request, question_reason, set_rate_figures, shared_step, slo_figures,
                                   slo_lower_bound, unit, SharedStep, SHARED_STEP_TRIES)
from bench.results.formatting import (connections, fmt_bytes, fmt_cost, fmt_rate, fmt_ratio, fmt_rps, fmt_us,
                                      join_names)
from bench.results.config import answer_counts, reference_users
from bench.results.rules import MIN_EFFECT, Figure, Lead, Pick, flag_labels, pick, why_not_ranked
from bench.results.schema import Results

INSTALL_HINT = ("install a C compiler and the Python headers (e.g. apt-get install gcc python3-dev), "
                "then run pip install -e . again")


def engine_name(doc: Results) -> str:
    return doc.loadgen.engine


# -- per (mode, load) ---------------------------------------------------------------------------

def _excluded(doc: Results, mode: str, users: int) -> str:
    parts = [f"{p.backend} ({why})" for p in doc.points_at(mode, users) if (why := why_not_ranked(p))]
    return f" Not ranked: {', '.join(parts)}." if parts else ""


def _round_for_round(p: Pick) -> str:
    return " round for round" if p.margin_by_round else ""


def _margin(p: Pick, noun: str) -> str:
    if p.runner_up is None:
        return ""
    return f" ({fmt_ratio(p.margin)} {p.runner_up.backend}'s {noun}{_round_for_round(p)})"


def _lead(lead: Lead) -> str:
    return f"by {fmt_ratio(lead.factor)}{' round for round' if lead.by_round else ' or more'}"


def apart_clause(p: Pick) -> str:
    """What the tie hides, as a clause: the members that the winner's windows do beat, in
    the tier by their median ("" when there are none)."""
    if p.winner is None or not p.apart:
        return ""
    said = [f"{a.backend} {_lead(a.lead)} (in the tier: its median is better than {a.above}'s)" for a in p.apart]
    return f"; {p.winner.backend} beats {join_names(said)}"


def behind_clause(p: Pick, show: Callable[[Figure], str] = lambda f: f.backend) -> str:
    """How a tie's runner-up (named by ``show``) is behind: the whole tier by the margin,
    or, when it ties with a member other than the winner, the winner's lead and the
    members it ties with ("" without a runner-up)."""
    if p.winner is None or p.runner_up is None:
        return ""
    shown = show(p.runner_up)
    if p.runner_up_ties and p.runner_up_lead is not None:
        return (f", ahead of {shown}: {p.winner.backend} beats it {_lead(p.runner_up_lead)}, "
                f"and it ties with {join_names(p.runner_up_ties)}")
    if p.margin is None:
        return ""
    return f", all ahead of {shown} by at least {fmt_ratio(p.margin)}{_round_for_round(p)}"


def load_pick(doc: Results, mode: str, users: int) -> Pick:
    """The verdict at one (mode, users): capacity over the points that may rank."""
    return pick(capacity_figures(doc, mode, users), higher_is_better=True)


def load_sentence(doc: Results, mode: str, users: int) -> tuple[Pick, str]:
    """The pick (or explicit tie) at one (mode, users), with capacity, cost, p99 at the set
    rate and memory per connection in one sentence."""
    at = f"at {connections(users)}"
    if engine_name(doc) != "native":
        return Pick(None), f"{at}: no ranking: the pure-Python load generator ran; {INSTALL_HINT}."
    cap = load_pick(doc, mode, users)
    if cap.winner is None:
        return cap, f"{at}: no backend could be ranked.{_excluded(doc, mode, users)}"
    w = doc.point(mode, users, cap.winner.backend)
    assert w is not None
    if cap.is_tie:
        ranges = ", ".join(f"{f.backend} {fmt_rps(f.lo)}–{fmt_rps(f.hi)}" for f in [cap.winner] + cap.tied)
        head = (f"{at}: tie between {join_names(cap.names())} on capacity (ranges of the windows: {ranges} "
                f"{unit(mode)})")
        head += behind_clause(cap) + apart_clause(cap)
    else:
        head = (f"{at}: {cap.winner.backend}: {fmt_rps(cap.winner.value)} {unit(mode)}"
                f"{_margin(cap, 'capacity')}")
        if cap.runner_up is None:
            head += ", the only backend ranked"
    cost = w.cost_us.median
    parts = [head, f"{fmt_cost(cost)} server CPU {per_request(mode)}" if cost else ""]
    if w.set_rate:
        parts.append(f"p99 {fmt_us(w.set_rate.p99)} at {fmt_rate(w.set_rate.offered_per_s)} req/s offered"
                     + ("" if w.set_rate.kept_up else " (fell behind it)"))
    if w.slo and w.slo.held_deliveries_per_s:
        parts.append(f"held {'≥ ' if slo_lower_bound(w) else ''}{fmt_rate(w.slo.held_deliveries_per_s)} "
                     f"deliveries/s at p99 ≤ "
                     f"{doc.config.slo_ms:g} ms")
    slope = memory_slope(doc, mode, cap.winner.backend, "idle" if mode == "echo" else "active")
    if slope is not None:
        parts.append(f"{fmt_bytes(max(0.0, slope.bytes_per_conn))} per "
                     f"{'idle' if mode == 'echo' else 'active'} connection")
    return cap, "; ".join(x for x in parts if x) + "." + _excluded(doc, mode, users)


# -- the answer ---------------------------------------------------------------------------------

def _why_none(doc: Results, mode: str, users: int | None, question: str) -> str:
    """Why no backend ranked on a question at (mode, users): the reasons, grouped."""
    if users is None:
        return ""
    groups: dict[str, list[str]] = {}
    for p in doc.points_at(mode, users):
        reason = question_reason(p, question)
        if reason is None and question == "slo":
            reason = "held no step"
        if reason is not None:
            groups.setdefault(reason.split(":")[0], []).append(p.backend)
    return " (" + "; ".join(f"{why}: {', '.join(names)}" for why, names in groups.items()) + ")" if groups else ""


def _answer(case: str, p: Pick, fmt: Callable[[float], str], why_none: str = "",
            at_least: frozenset[str] = frozenset(), tie_clause: str = "") -> str:
    """One answer line; a figure of a backend in ``at_least`` is a lower bound ("≥");
    ``tie_clause`` ends the line of a tie."""
    def show(f: Figure) -> str:
        return ("≥ " if f.backend in at_least else "") + fmt(f.value)

    if p.winner is None:
        return f"{case}: no backend could be ranked{why_none}."
    if p.is_tie:
        vals = ", ".join(f"{f.backend} {show(f)}" for f in [p.winner] + p.tied)
        ahead = behind_clause(p, lambda f: f"{f.backend} ({show(f)})")
        return f"{case}: tie between {join_names(p.names())} ({vals}){ahead}{apart_clause(p)}{tie_clause}."
    text = f"{case}: {p.winner.backend} ({show(p.winner)})"
    if p.runner_up is not None:
        margin = (f"a margin of at least {fmt_ratio(p.margin)}"
                  if p.winner.backend in at_least and p.runner_up.backend not in at_least
                  else f"a {fmt_ratio(p.margin)} margin")
        text += f", {margin} over {p.runner_up.backend} ({show(p.runner_up)}){_round_for_round(p)}"
    else:
        text += ", the only backend ranked"
    return text + "."


def _p99s(shared: SharedStep) -> str:
    """Each room's p99 at the shared step, with the step it was taken at when higher."""
    return ", ".join(f"{f.backend} {fmt_us(f.value)}"
                     + (f" (at {fmt_rate(shared.above[f.backend])} deliveries/s)" if f.backend in shared.above else "")
                     for f in shared.figures)


def shared_step_clause(shared: SharedStep | None) -> str:
    """For a fan-out tie on the rate that p99 does not settle, what its members did at the
    highest step they all held, as a clause: each one's p99 there, and why it does not
    rank them ("" when fewer than two held it)."""
    if shared is None:
        return ""
    names = [f.backend for f in shared.figures]
    return (f"; {join_names(names)} held {fmt_rate(shared.rate)} deliveries/s, the highest step "
            f"{'both' if len(names) == 2 else 'all'} held, p99 there {_p99s(shared)} ({shared.why_not})")


def fan_out_answer(doc: Results, users: int) -> str:
    """The answer's fan-out line: the room that holds the highest send rate at the p99
    target (:func:`bench.results.figures.slo_figures`), and, among rooms that tie on that
    rate, the one with the lowest p99 at the highest step they all held
    (:func:`bench.results.figures.shared_step`)."""
    case = f"Chat fan-out at p99 ≤ {doc.config.slo_ms:g} ms ({users} clients in one room)"
    rate_pick = pick(slo_figures(doc, users))
    bounds = frozenset(p.backend for p in doc.points_at("broadcast", users) if slo_lower_bound(p))

    def show(v: float, backend: str) -> str:
        return ("≥ " if backend in bounds else "") + f"{fmt_rate(v)} deliveries/s"

    shared = shared_step(doc, users, rate_pick)
    if shared is None or shared.low is None:
        return _answer(case, rate_pick, lambda v: f"{fmt_rate(v)} deliveries/s", _why_none(doc, "broadcast", users, "slo"),
                       at_least=bounds, tie_clause=shared_step_clause(shared))
    low, figures = shared.low, shared.figures
    by_name = {f.backend: f for f in [rate_pick.winner] + rate_pick.tied if f is not None}
    first, rest = low.names(), [f.backend for f in figures if f.backend not in low.names()]
    head = join_names([f"{b} ({show(by_name[b].value, b)})" for b in first])
    if len(first) > 1:
        head = f"tie between {head}"
    they = "it" if len(first) == 1 else "they"
    others = join_names([f"{b} ({show(by_name[b].value, b)})" for b in rest])
    both = "both" if len(figures) == 2 else "all"
    stand_in = (f"; a p99 at a higher step stands for the shared one, tried fewer than {SHARED_STEP_TRIES} "
                "times there: a room's p99 rises with its rate" if shared.above else "")
    text = (f"{case}: {head}. On the rate held {they} tie{'s' if they == 'it' else ''} with {others}; "
            f"at {fmt_rate(shared.rate)} deliveries/s, the highest step {both} held, "
            f"{'its' if they == 'it' else 'their'} p99 is the lowest: {_p99s(shared)}, a {fmt_ratio(low.margin)} "
            f"margin over {low.runner_up.backend} ({SHARED_STEP_TRIES} or more tries each{stand_in})"
            f"{apart_clause(low)}.")
    runner = rate_pick.runner_up
    if runner is None:
        return text
    text += f" Next on the rate: {runner.backend} ({show(runner.value, runner.backend)})"
    if rate_pick.runner_up_ties and rate_pick.runner_up_lead is not None:
        return (text + f", which {rate_pick.winner.backend} beats {_lead(rate_pick.runner_up_lead)} and which "
                f"ties with {join_names(rate_pick.runner_up_ties)}.")
    if rate_pick.margin is None:
        return text + "."
    return text + f", at least {fmt_ratio(rate_pick.margin)} behind {both}{_round_for_round(rate_pick)}."


def _reference_users(doc: Results, mode: str) -> int | None:
    return reference_users(doc.user_counts(mode))


def answers(doc: Results) -> list[str]:
    """Which model for which case: one sentence per question, each with its evidence and its
    margin over the runner-up, or the tie."""
    if engine_name(doc) != "native":
        return [f"No ranking: this run used the pure-Python load generator, which is slower than "
                f"several backends; {INSTALL_HINT}, and run bench compare again."]
    out = []
    present = doc.modes()
    if "echo" in present:
        idle = pick(memory_figures(doc, "echo", "idle"), higher_is_better=False)
        out.append(_answer("Many mostly idle connections (least server memory per idle connection)",
                           idle, lambda v: f"{fmt_bytes(v)}/conn",
                           " (needs two connection counts of at least 10, at least 90 apart, that other "
                           "processes did not disturb)"))
        u = _reference_users(doc, "echo")
        if u is not None:
            cost = pick(cost_figures(doc, "echo", u), higher_is_better=False)
            out.append(_answer(f"Highest echo capacity per core (server CPU per round trip at {connections(u)})",
                               cost, lambda v: f"{fmt_cost(v)}, {fmt_rate(1e6 / v)} round trips per CPU-second",
                               _why_none(doc, "echo", u, "cost")))
            top = doc.user_counts("echo")[-1]
            cap = pick(capacity_figures(doc, "echo", top))
            out.append(_answer(f"Highest echo throughput at {connections(top)}", cap,
                               lambda v: f"{fmt_rps(v)} req/s", _why_none(doc, "echo", top, "capacity")))
            rate = next((p.set_rate.offered_per_s for p in doc.points_at("echo", u) if p.set_rate), None)
            if rate:
                lat = pick(set_rate_figures(doc, u), higher_is_better=False)
                out.append(_answer(f"Lowest p99 at {fmt_rate(rate)} req/s over {connections(u)}", lat,
                                   lambda v: f"p99 {fmt_us(v)}", _why_none(doc, "echo", u, "set_rate")))
    if "broadcast" in present:
        u = _reference_users(doc, "broadcast")
        if u is not None:
            out.append(fan_out_answer(doc, u))
    busy = busy_note(doc)
    return out + ([busy] if busy else [])


def busy_note(doc: Results) -> str | None:
    """A closing line for the answer when other processes disturbed some points."""
    ran = [p for p in doc.points if not p.error]
    disturbed = [p for p in ran if p.flags.disturbed]
    if not disturbed:
        return None
    return (f"Other processes took more than 20% of a core during {len(disturbed)} of {len(ran)} points, even "
            "when measured again; those are marked and not ranked on any question. Run again on a quiet "
            "machine for those answers.")


def verdicts(doc: Results) -> dict[str, list[str]]:
    """``{mode: [sentence per connection count, ascending]}``."""
    return {m: [load_sentence(doc, m, u)[1] for u in doc.user_counts(m)] for m in doc.modes()}


# -- caveats ------------------------------------------------------------------------------------

FLAG_TEXTS = {
    "error": "Points that could not run",
    "failing": "Failing points (over 1% failures, timeouts, or connections left unanswered), never ranked",
    "generator-bound": "Load-generator-bound points (the generator, not the server, was the limit), never ranked",
    "disturbed": "Disturbed points (other processes took over 20% of a core even when measured again), "
                 "marked and never ranked",
    "too few lines": "Broadcast points with too few lines sent per window to rank",
}


def _answer_windows(doc: Results) -> str:
    """Where the answer's picks got more windows than the other points, said as a clause."""
    config = doc.config
    if config.answer_windows <= config.repeat:
        return ""
    where = []
    for mode in doc.modes():
        at = answer_counts(doc.user_counts(mode), mode)
        if mode == "echo":
            where += [f"echo capacity at {connections(u)}" for u in at["capacity"]]
            where += [f"the set rate at {connections(u)}" for u in at["rate"]]
    return f" ({config.answer_windows} for {join_names(where)})" if where else ""


def _ladder_note(doc: Results) -> str | None:
    """How the broadcast ladder's top is found and confirmed, when the run has broadcast."""
    if "broadcast" not in doc.modes():
        return None
    at = [u for u in answer_counts(doc.user_counts("broadcast"), "broadcast")["slo"]
          if any(s.tries for p in doc.points_at("broadcast", u) if p.slo for s in p.slo.steps)]
    confirmed = (f" At {connections(at[0])} each backend's top step, the step above it and the step below "
                 "it were tried again after the climb, interleaved across backends, and a step held when it "
                 "held in most of its tries (its first try and these)." if at else "")
    return (f"Broadcast at the latency target steps the room's send rate on one grid "
            f"({doc.config.slo_factor:g}x per step) until a step fails (a failed step is tried once more "
            "unless it missed by far)."
            f"{confirmed} The limit lies between the highest step held and the failed one above it, so "
            "backends one step apart tie on the rate; tied backends are then compared on their p99 at the "
            f"highest step they all held (from {SHARED_STEP_TRIES} tries each, as ranges), and the lowest "
            "p99 there is the pick; a room that tried that step fewer times stands in with its p99 at the "
            f"lowest higher step it held in {SHARED_STEP_TRIES} tries, which may win but never lose (a room's "
            "p99 rises with its rate).")


def caveats(doc: Results) -> list[str]:
    """What a reader must keep in mind: how the figures were taken, then this run's flags."""
    config = doc.config
    pin_note = (f"servers on CPU {', '.join(map(str, config.server_cpus or ()))}, load generator on CPU "
                f"{', '.join(map(str, config.loadgen_cpus or ()))}" if config.cpu_pinning else "CPUs not pinned")
    out = [
        "Loopback only: no network in the path, so latencies are far below what clients across a real "
        "network would see.",
        f"One machine ({pin_note}): the servers and the load generator share its memory bus and kernel.",
        f"Capacity is closed loop (one line in flight per connection); latency at the set rate is open loop, "
        f"timed from each line's intended send time. Each point is {config.repeat} "
        f"windows of {config.duration_s:g} s{_answer_windows(doc)}, one per round, and each round measures "
        f"every backend once, so a busy moment of the machine hits a round's windows alike. A backend ranks "
        f"above another only when it is better by at least {MIN_EFFECT:.0%} round for round (the median of the "
        "rounds' ratios between the two) and the rounds rank the two the same way beyond their spread (the "
        "one-sided 95% confidence bound of the ratios' geometric mean is above 1). p99 at the set rate, whose "
        "stalls are each window's own, and windows not taken in the same rounds compare ranges: the medians "
        f"and the nearer ends of their ranges must be {MIN_EFFECT:.0%} apart. Otherwise they tie. "
        "A tie names the whole tier: the best backend, every backend tied with it, and every backend whose "
        "median is better than a member's; when the runner-up ties with a member other than the best, the "
        "answer says so. Each question ranks on its own figure: "
        "capacity on the windows' rates, CPU per request on each window's CPU time per request, p99 on each set-rate window's p99, "
        f"memory on the slopes (one per backend, compared directly).",
        "Server CPU per request is the server process's user+system CPU over a window divided by the "
        "requests served in it; it is the steadiest figure on a busy machine.",
    ]
    ladder = _ladder_note(doc)
    if ladder:
        out.append(ladder)
    flagged: dict[str, list[str]] = {}
    for p in doc.points:
        for label in flag_labels(p):
            flagged.setdefault(label, []).append(f"{p.backend} {p.mode} @ {p.users}")
    for label, where in flagged.items():
        out.append(f"{FLAG_TEXTS[label]}: {', '.join(where)}.")
    return out
