"""What a run says, in sentences: the answer ("which model for which case"), a pick or an
explicit tie for every (mode, load), and the caveats. Pure: no I/O, no plotting; the rules
live in :mod:`bench.results.rules` and every sentence here is built from them.

The questions and where their figures come from (:mod:`bench.results.points`):

- **capacity** at a connection count: closed-loop requests/s (echo round trips, broadcast
  deliveries), one sample per repeat; ties when the repeats' ranges overlap.
- **cost**: server CPU µs per round trip / delivery: what ranks honestly on a busy or
  small machine; shown next to every capacity.
- **latency at a set rate** (echo): p99 at one offered rate for every backend; a backend
  that fell behind the rate is not ranked on it.
- **broadcast at a latency target**: the highest room rate whose p99 delivery latency held
  the target with no line lost, on a grid of rates: equal steps tie.
- **memory per connection**: the slope of server RSS between two connection counts
  (:func:`memory_slope`), idle (echo, one round trip each) and active (during capacity).
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.results.formatting import (connections, fmt_bytes, fmt_cost, fmt_rate, fmt_ratio,  # noqa: F401
                                      fmt_rps, fmt_us, join_names)
from bench.results.rules import (Figure, Pick, backends, flag_labels, modes, pick, point,  # noqa: F401
                                 points_at, user_counts, why_not_ranked)
from bench.results.schema import Doc, Point

# A memory slope needs two connection counts at least this far apart, the lower one at least
# MEMORY_LOW_USERS (one connection's RSS change is noise of the same size).
MEMORY_MIN_SPAN = 90
MEMORY_LOW_USERS = 10
# One memory measurement per side: slopes within this share of each other tie.
MEMORY_TIE = 0.10
INSTALL_HINT = ("install a C compiler and the Python headers (e.g. apt-get install gcc python3-dev), "
                "then run pip install -e . again")


def unit(mode: str) -> str:
    return "deliveries/s" if mode == "broadcast" else "req/s"


def per_request(mode: str) -> str:
    return "per delivery" if mode == "broadcast" else "per round trip"


def engine_name(doc: Doc) -> str:
    return str((doc.get("loadgen") or {}).get("engine") or "unknown")


# -- figures per question ---------------------------------------------------------------------

def _fig(backend: str, summary: dict, ) -> Figure:
    samples = summary.get("samples") or []
    return Figure(backend, float(summary["median"]), float(summary["lo"]), float(summary["hi"]), len(samples))


def capacity_figures(doc: Doc, mode: str, users: int) -> list[Figure]:
    return [_fig(p["backend"], p["capacity"]) for p in points_at(doc, mode, users) if why_not_ranked(p) is None]


def cost_figures(doc: Doc, mode: str, users: int) -> list[Figure]:
    return [_fig(p["backend"], p["cost_us"]) for p in points_at(doc, mode, users)
            if why_not_ranked(p, "cost") is None and (p.get("cost_us") or {}).get("median")]


def set_rate_figures(doc: Doc, users: int) -> list[Figure]:
    """p99 at the set rate of echo points that served the load, kept up, and were not disturbed."""
    out = []
    for p in points_at(doc, "echo", users):
        sr = p.get("set_rate")
        reason = why_not_ranked(p)
        if sr and sr.get("kept_up") and not sr.get("disturbed") and reason in (None, "load-generator-bound"):
            out.append(Figure(p["backend"], float(sr["p99"]), float(sr["p99_lo"]), float(sr["p99_hi"]),
                              len(sr.get("p99_samples") or [])))
    return out


def slo_figures(doc: Doc, users: int) -> list[Figure]:
    """Broadcast deliveries/s held at the latency target (grid values: equal steps tie)."""
    out = []
    for p in points_at(doc, "broadcast", users):
        slo = p.get("slo") or {}
        held = slo.get("held_deliveries_per_s")
        if held and why_not_ranked(p) in (None, "load-generator-bound", "too few lines sent to rank"):
            out.append(Figure(p["backend"], float(held), float(held), float(held), 1))
    return out


@dataclass(frozen=True)
class Slope:
    """Server memory per connection: (RSS at ``hi`` - RSS at ``lo``) / (hi - lo)."""

    bytes_per_conn: float
    lo: int
    hi: int


def memory_slope(doc: Doc, mode: str, backend: str, kind: str = "idle") -> Slope | None:
    """The RSS slope of ``backend`` between the lowest connection count >= MEMORY_LOW_USERS and
    the highest, over points that served their load; None without two such counts at least
    :data:`MEMORY_MIN_SPAN` apart. ``kind``: "idle" or "active"."""
    key = "idle_rss_bytes" if kind == "idle" else "active_rss_bytes"
    known = []
    for users in user_counts(doc, mode):
        p = point(doc, mode, users, backend)
        if p is None or p.get("error") or (p.get("flags") or {}).get("failing"):
            continue
        rss = (p.get("memory") or {}).get(key)
        if rss and users >= MEMORY_LOW_USERS:
            known.append((users, int(rss)))
    if len(known) < 2 or known[-1][0] - known[0][0] < MEMORY_MIN_SPAN:
        return None
    (lo, rss_lo), (hi, rss_hi) = known[0], known[-1]
    return Slope((rss_hi - rss_lo) / (hi - lo), lo, hi)


def memory_figures(doc: Doc, mode: str, kind: str) -> list[Figure]:
    out = []
    for b in backends(doc, mode):
        s = memory_slope(doc, mode, b, kind)
        if s is not None:
            v = max(1.0, s.bytes_per_conn)  # a slope at or below zero is "nothing measurable"
            out.append(Figure(b, v, v * (1 - MEMORY_TIE / 2), v * (1 + MEMORY_TIE / 2), 2))
    return out


# -- per (mode, load) ---------------------------------------------------------------------------

def _excluded(doc: Doc, mode: str, users: int, question: str = "capacity") -> str:
    parts = [f"{p['backend']} ({why_not_ranked(p, question)})" for p in points_at(doc, mode, users)
             if why_not_ranked(p, question)]
    return f" Not ranked: {', '.join(parts)}." if parts else ""


def _margin(p: Pick, noun: str) -> str:
    if p.runner_up is None:
        return ""
    return f" ({fmt_ratio(p.margin)} {p.runner_up.backend}'s {noun})"


def load_pick(doc: Doc, mode: str, users: int) -> tuple[Pick, str]:
    """The verdict at one (mode, users) and what it ranks on: "capacity", or "cost" when
    capacity cannot rank (nothing rankable, or one clean backend among disturbed ones)."""
    figures = capacity_figures(doc, mode, users)
    cap = pick(figures, higher_is_better=True)
    disturbed_out = any(why_not_ranked(p) == "disturbed by other processes" for p in points_at(doc, mode, users))
    if cap.winner is None or (len(figures) < 2 and disturbed_out):
        return pick(cost_figures(doc, mode, users), higher_is_better=False), "cost"
    return cap, "capacity"


def load_sentence(doc: Doc, mode: str, users: int) -> tuple[Pick, str]:
    """The pick (or explicit tie) at one (mode, users), with capacity, cost, p99 at the set
    rate and memory per connection in one sentence."""
    at = f"at {connections(users)}"
    if engine_name(doc) != "native":
        return Pick(None), f"{at}: no ranking: the pure-Python load generator ran; {INSTALL_HINT}."
    cap, question = load_pick(doc, mode, users)
    if question == "cost":
        # one clean backend is no ranking when the others were disturbed: rank on cost instead
        cost = cap
        if cost.winner is None:
            return cap, f"{at}: no backend could be ranked.{_excluded(doc, mode, users)}"
        disturbed = [p["backend"] for p in points_at(doc, mode, users)
                     if why_not_ranked(p) == "disturbed by other processes"]
        why = (f"capacity not ranked ({join_names(disturbed)} disturbed by other processes)" if disturbed
               else "capacity not ranked")
        return cost, (f"{at}: {why}; by server CPU {per_request(mode)}, which waiting for the CPU does not "
                      f"inflate: " + _answer("", cost, fmt_cost, "cost", False)[2:]
                      + _excluded(doc, mode, users, "cost"))
    w = point(doc, mode, users, cap.winner.backend)
    assert w is not None
    if cap.is_tie:
        ranges = ", ".join(f"{f.backend} {fmt_rps(f.lo)}–{fmt_rps(f.hi)}" for f in [cap.winner] + cap.tied)
        head = f"{at}: tie between {join_names(cap.names())} on capacity (repeats overlap: {ranges} {unit(mode)})"
        if cap.runner_up is not None:
            head += f", ahead of {cap.runner_up.backend} by {fmt_ratio(cap.margin)}"
    else:
        head = (f"{at}: {cap.winner.backend}: {fmt_rps(cap.winner.value)} {unit(mode)}"
                f"{_margin(cap, 'capacity')}")
        if cap.runner_up is None:
            head += ", the only backend ranked"
    cost = (w.get("cost_us") or {}).get("median")
    parts = [head, f"{fmt_cost(cost)} server CPU {per_request(mode)}" if cost else ""]
    sr = w.get("set_rate")
    if sr:
        parts.append(f"p99 {fmt_us(sr['p99'])} at {fmt_rate(sr['offered_per_s'])} req/s offered"
                     + ("" if sr.get("kept_up") else " (fell behind it)"))
    slo = w.get("slo")
    if slo and slo.get("held_deliveries_per_s"):
        parts.append(f"held {fmt_rate(slo['held_deliveries_per_s'])} deliveries/s at p99 ≤ "
                     f"{_slo_ms(doc):g} ms")
    slope = memory_slope(doc, mode, cap.winner.backend, "idle" if mode == "echo" else "active")
    if slope is not None:
        parts.append(f"{fmt_bytes(max(0.0, slope.bytes_per_conn))} per "
                     f"{'idle' if mode == 'echo' else 'active'} connection")
    return cap, "; ".join(x for x in parts if x) + "." + _excluded(doc, mode, users)


def _slo_ms(doc: Doc) -> float:
    return float((doc.get("config") or {}).get("slo_ms") or 10.0)


# -- the answer ---------------------------------------------------------------------------------

def _why_none(doc: Doc, mode: str, users: int | None, question: str) -> str:
    """Why no backend ranked on a question at (mode, users): the reasons, grouped."""
    if users is None:
        return ""
    groups: dict[str, list[str]] = {}
    for p in points_at(doc, mode, users):
        reason = why_not_ranked(p, "cost" if question == "cost" else "capacity")
        if reason is None and question == "set_rate":
            sr = p.get("set_rate") or {}
            reason = ("disturbed by other processes" if sr.get("disturbed") else
                      "fell behind the offered rate" if sr and not sr.get("kept_up") else None)
        if reason is None and question == "slo":
            reason = "held no step"
        if reason is not None:
            groups.setdefault(reason.split(":")[0], []).append(p["backend"])
    return " (" + "; ".join(f"{why}: {', '.join(names)}" for why, names in groups.items()) + ")" if groups else ""


def _answer(case: str, p: Pick, fmt, noun: str, higher: bool, why_none: str = "") -> str:
    if p.winner is None:
        return f"{case}: no backend could be ranked{why_none}."
    if p.is_tie:
        vals = ", ".join(f"{f.backend} {fmt(f.value)}" for f in [p.winner] + p.tied)
        return f"{case}: tie between {join_names(p.names())} ({vals})."
    text = f"{case}: {p.winner.backend} ({fmt(p.winner.value)})"
    if p.runner_up is not None:
        text += f", a {fmt_ratio(p.margin)} margin over {p.runner_up.backend} ({fmt(p.runner_up.value)})"
    else:
        text += ", the only backend ranked"
    return text + "."


def _reference_users(doc: Doc, mode: str, prefer: int = 100) -> int | None:
    counts = user_counts(doc, mode)
    if not counts:
        return None
    return prefer if prefer in counts else counts[-1]


def answers(doc: Doc) -> list[str]:
    """Which model for which case: one sentence per question, each with its evidence and its
    margin over the runner-up, or the tie."""
    if engine_name(doc) != "native":
        return [f"No ranking: this run used the pure-Python load generator, which is slower than "
                f"several backends; {INSTALL_HINT}, and run bench compare again."]
    out = []
    present = modes(doc)
    if "echo" in present:
        idle = pick(memory_figures(doc, "echo", "idle"), higher_is_better=False)
        out.append(_answer("Many mostly idle connections (least server memory per idle connection)",
                           idle, lambda v: f"{fmt_bytes(v)}/conn", "memory", False,
                           " (needs two connection counts of at least 10, at least 90 apart)"))
        u = _reference_users(doc, "echo")
        if u is not None:
            cost = pick(cost_figures(doc, "echo", u), higher_is_better=False)
            out.append(_answer(f"Highest echo capacity per core (server CPU per round trip at {connections(u)})",
                               cost, lambda v: f"{fmt_cost(v)}, {fmt_rate(1e6 / v)} round trips per CPU-second",
                               "cost", False, _why_none(doc, "echo", u, "cost")))
            top = user_counts(doc, "echo")[-1]
            cap = pick(capacity_figures(doc, "echo", top))
            out.append(_answer(f"Highest echo throughput at {connections(top)}", cap,
                               lambda v: f"{fmt_rps(v)} req/s", "capacity", True,
                               _why_none(doc, "echo", top, "capacity")))
            p = points_at(doc, "echo", u)
            rate = next((x["set_rate"]["offered_per_s"] for x in p if x.get("set_rate")), None)
            if rate:
                lat = pick(set_rate_figures(doc, u), higher_is_better=False)
                out.append(_answer(f"Lowest p99 at {fmt_rate(rate)} req/s over {connections(u)}", lat,
                                   lambda v: f"p99 {fmt_us(v)}", "p99", False,
                                   _why_none(doc, "echo", u, "set_rate")))
    if "broadcast" in present:
        u = _reference_users(doc, "broadcast")
        if u is not None:
            slo = pick(slo_figures(doc, u))
            out.append(_answer(f"Chat fan-out at p99 ≤ {_slo_ms(doc):g} ms ({u} clients in one room)", slo,
                               lambda v: f"{fmt_rate(v)} deliveries/s", "rate", True,
                               _why_none(doc, "broadcast", u, "slo")))
    busy = busy_note(doc)
    return out + ([busy] if busy else [])


def busy_note(doc: Doc) -> str | None:
    """A closing line for the answer when other processes disturbed some points."""
    ran = [p for p in doc["points"] if not p.get("error")]
    disturbed = [p for p in ran if (p.get("flags") or {}).get("disturbed")]
    if not disturbed:
        return None
    return (f"Other processes took more than 20% of a core during {len(disturbed)} of {len(ran)} points, even "
            "when measured again; those are marked and not ranked on capacity or latency (server CPU per "
            "request still ranks). Run again on a quiet machine for those answers.")


def verdicts(doc: Doc) -> dict[str, list[str]]:
    """``{mode: [sentence per connection count, ascending]}``."""
    return {m: [load_sentence(doc, m, u)[1] for u in user_counts(doc, m)] for m in modes(doc)}


# -- caveats ------------------------------------------------------------------------------------

def caveats(doc: Doc) -> list[str]:
    """What a reader must keep in mind: how the figures were taken, then this run's flags."""
    config = doc.get("config") or {}
    pin = config.get("cpu_pinning") or None
    pin_note = (f"servers on CPU {', '.join(map(str, pin.get('server', [])))}, load generator on CPU "
                f"{', '.join(map(str, pin.get('loadgen', [])))}" if pin else "CPUs not pinned")
    out = [
        "Loopback only: no network in the path, so latencies are far below what clients across a real "
        "network would see.",
        f"One machine ({pin_note}): the servers and the load generator share its memory bus and kernel.",
        f"Capacity is closed loop (one line in flight per connection); latency at the set rate is open loop, "
        f"timed from each line's intended send time. Each point is {config.get('repeat', '?')} interleaved "
        f"windows of {config.get('duration_s', '?')} s; a difference is a ranking only when the windows' "
        "ranges do not overlap.",
        "Server CPU per request is the server process's user+system CPU over a window divided by the "
        "requests served in it; it ranks fairly even on a busy machine.",
    ]
    flagged: dict[str, list[str]] = {}
    for p in doc["points"]:
        for label in flag_labels(p):
            flagged.setdefault(label, []).append(f"{p['backend']} {p['mode']} @ {p['users']}")
    texts = {
        "error": "Points that could not run",
        "failing": "Failing points (over 1% failures, timeouts, or connections left unanswered), never ranked",
        "generator-bound": "Load-generator-bound points (the generator, not the server, was the limit), never ranked",
        "disturbed": "Disturbed points (other processes took over 20% of a core even when measured again), "
                     "marked and never ranked",
        "too few lines": "Broadcast points with too few lines sent per window to rank",
    }
    for label, where in flagged.items():
        out.append(f"{texts[label]}: {', '.join(where)}.")
    return out
