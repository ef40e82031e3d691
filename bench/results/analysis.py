"""Pure analysis of a results document (``bench.results.schema`` schema 1): no I/O, no plotting.

Everything the report, the charts and the terminal summary say about a run is decided
here, so the rules can be unit-tested on hand-built documents:

- **usable / failing / generator-bound**: a run with an ``error`` did not run at all; a run
  whose failures exceed :data:`FAILURE_TOLERANCE` of its attempts, or whose timeouts show
  users left unserved (see :func:`is_failing`), is *failing*; a run whose
  ``loadgen.saturated`` is true is *generator-bound*: the load generator, not the server,
  was the limit, so its throughput is a lower bound and any ranking involving it is not
  trustworthy.
- **ratios**: each run's ``rps`` divided by the highest ``rps`` among the runs of the same
  mode and user count that did not error (see :func:`ratios_to_best`).
- **the tie rule** (:func:`tied`): two runs tie when the ranges ``[min, max]`` of their
  ``rps_samples`` overlap (each has two or more samples: the difference is within the
  run-to-run spread); when either has a single sample there is no spread to compare, so
  they tie when they are within :data:`SINGLE_SAMPLE_TIE` (5 %) of the larger ``rps``.
- **the recommendation** (:func:`recommend`): per mode and user count, the best backend
  among the non-failing, non-generator-bound runs, compared with the next backend that
  does not tie with it, in one sentence; "tie" when it ties; a caution when a
  generator-bound run came close to it; "no ranking" when every usable run was
  generator-bound.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The rules and the formatting live in their own modules; they are named here too, so
# that `analysis.X` reaches everything a report decides.
from bench.results.formatting import connections, fmt_bytes, fmt_ratio, fmt_rps, fmt_us  # noqa: F401
from bench.results.rules import (  # noqa: F401
    FAILURE_TOLERANCE,
    SINGLE_SAMPLE_TIE,
    backends,
    best_run,
    failure_note,
    failure_rate,
    flags,
    group_runs,
    has_error,
    is_failing,
    is_generator_bound,
    is_usable,
    modes,
    ratios_to_best,
    rps_range,
    runs_at,
    tied,
    timeouts,
    user_counts,
)
from bench.results.schema import Doc, Run

# Other processes using more than this % of a core during a window make it suspect:
# the measured pair waited for CPU, and neither CPU % nor the saturation flag shows it.
BUSY_MACHINE_PERCENT = 20.0


def observed_loadgen_ceiling(doc: Doc) -> dict[str, Any] | None:
    """The highest echo throughput of a generator-bound point: what the load generator,
    flat out, could drive in this run. None when no echo point was generator-bound.

    Returns:
        ``{"rps", "backend", "users", "processes"}`` of that point.
    """
    bound = [r for r in doc["runs"] if r["mode"] == "echo" and is_generator_bound(r)
             and not has_error(r) and r.get("rps")]
    if not bound:
        return None
    top = max(bound, key=lambda r: r["rps"])
    processes = (top.get("loadgen") or {}).get("processes") or 1
    return {"rps": top["rps"], "backend": top["backend"], "users": top["users"], "processes": processes}


# -- recommendation ------------------------------------------------------------------------

@dataclass
class Recommendation:
    """The verdict at one (mode, users) point. ``sentence`` is what reports print."""

    mode: str
    users: int
    winner: str | None
    tied_with: list[str] = field(default_factory=list)
    compared_with: str | None = None
    ratio: float | None = None
    generator_bound: bool = False      # the ranking at this point is not trustworthy
    sentence: str = ""


def recommend(doc: Doc, mode: str, users: int) -> Recommendation:
    """The recommendation sentence for one point, e.g. "at 1000 connections, gevent: 2.1x
    threading's throughput, p99 3.0 ms vs 41 ms."  See the module docstring for the rule."""
    runs = runs_at(doc, mode, users)
    at = f"at {connections(users)}"
    what = "delivery rate" if mode == "broadcast" else "throughput"
    usable = [r for r in runs if is_usable(r)]
    excluded = [r for r in runs if has_error(r) or is_failing(r)]
    excluded_note = ""
    if excluded:
        parts = [f"{r['backend']} ({'error' if has_error(r) else failure_note(r)})" for r in excluded]
        excluded_note = " Excluded: " + ", ".join(parts) + "."
    if not usable:
        idle = [r for r in runs if not has_error(r) and not is_failing(r)]
        if idle:
            why = " (a broadcast room of one has no one to deliver to)" if mode == "broadcast" and users == 1 else ""
            text = f"{at}, nothing was measured{why}; no ranking."
        else:
            text = f"{at}, no backend served the load without failures."
        return Recommendation(mode, users, None, sentence=text + excluded_note)
    clean = [r for r in usable if not is_generator_bound(r)]
    if not clean:
        # Every backend that kept up saturated the load generator: their figures are
        # lower bounds of one size, and ranking them would rank noise.
        names = [f"{r['backend']} (≥ {fmt_rps(r['rps'])})" for r in sorted(usable, key=lambda r: -r["rps"])]
        fastest = _lowest_p99(usable)
        text = (f"{at}, no ranking: every backend that served the load was load-generator-bound "
                f"({_join(names)} {_unit(mode)}), so the generator, not the server, was the limit. "
                f"Lowest p99 among them: {fastest['backend']} ({fmt_us(_p99(fastest))}). "
                "More Locust workers, or `bench perf`'s C clients, can separate them.")
        return Recommendation(mode, users, None, [], None, None, True, text + excluded_note)
    winner = max(clean, key=lambda r: r["rps"])
    ties = [r for r in usable if r is not winner and tied(r, winner)]
    # A generator-bound run above the winner is a lower bound, not a comparison point.
    above = [r for r in usable if r is not winner and r not in ties and r["rps"] > winner["rps"]]
    others = sorted((r for r in usable if r is not winner and r not in ties and r not in above),
                    key=lambda r: r["rps"], reverse=True)
    rival = others[0] if others else None
    bound = [r for r in [winner] + ties + above if is_generator_bound(r)]

    if ties:
        head = f"{at}, {_join([winner['backend']] + [r['backend'] for r in ties])} tie on {what}"
    else:
        head = f"{at}, {winner['backend']}"
    ratio = None
    if rival is not None:
        ratio = winner["rps"] / rival["rps"]
        body = (f": {fmt_ratio(ratio)} {rival['backend']}'s {what}, "
                f"p99 {fmt_us(_p99(winner))} vs {fmt_us(_p99(rival))}.")
    elif ties:
        body = "."
    elif above:
        body = " is the only backend measured below the load generator's limit."
    else:
        body = " is the only backend that served the load without failures."
    if ties:
        fastest = _lowest_p99([winner] + ties)
        body += f" Lowest p99 among them: {fastest['backend']} ({fmt_us(_p99(fastest))})."
    caution = ""
    if bound:
        names = [f"{r['backend']} (≥ {fmt_rps(r['rps'])} {_unit(mode)})" for r in bound]
        caution = (f" Caution: {_join(names)} {'was' if len(names) == 1 else 'were'} "
                   "load-generator-bound here (the generator, not the server, was the limit), "
                   "so this ranking is not trustworthy.")
    return Recommendation(mode, users, winner["backend"], [r["backend"] for r in ties],
                          rival["backend"] if rival else None, ratio, bool(bound),
                          head + body + caution + excluded_note)


def _p99(run: Run) -> float | None:
    return (run.get("latency_us") or {}).get("p99")


def _lowest_p99(runs: list[Run]) -> Run:
    """The run with the lowest p99 (runs without one last)."""
    return min(runs, key=lambda r: _p99(r) if _p99(r) is not None else float("inf"))


def _unit(mode: str) -> str:
    return "deliveries/s" if mode == "broadcast" else "req/s"


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def recommendations(doc: Doc) -> dict[str, list[Recommendation]]:
    """``{mode: [Recommendation per user count, ascending]}``."""
    return {mode: [recommend(doc, mode, u) for u in user_counts(doc, mode)] for mode in modes(doc)}


# -- caveats -------------------------------------------------------------------------------

def caveats(doc: Doc) -> list[str]:
    """What a reader must keep in mind, the run-specific ones (generator-bound and failing
    points) after the general ones."""
    config = doc.get("config") or {}
    pin = config.get("cpu_pinning") or None
    pin_note = (f" (server on CPU {', '.join(map(str, pin.get('server', [])))}, load generator on CPU "
                f"{', '.join(map(str, pin.get('loadgen', [])))})" if pin else " (CPUs not pinned)")
    out = [
        "Loopback only: no network in the path, so latencies are far below what clients across "
        "a real network would see, and the ranking may change when the network dominates.",
        "One machine: the server and the load generator share its cores, memory bus and kernel"
        + pin_note + ".",
        "Closed-loop clients: each user waits for its reply before sending the next line, so "
        "a slow server is sent less work (coordinated omission); tail latencies under overload "
        "are understated and throughput is what the clients could extract, not an offered load.",
        "Locust rounds latencies under 100 ms to whole milliseconds; the µs percentiles here come "
        "from the project's own HDR histogram, recorded per request and merged across processes.",
    ]
    bound = [r for r in doc["runs"] if is_generator_bound(r) and not has_error(r)]
    if bound:
        points = ", ".join(f"{r['backend']} {r['mode']} @ {r['users']}" for r in bound)
        out.append(f"Load-generator-bound points (throughput is a lower bound; do not rank them): {points}.")
    ceiling = doc.get("loadgen_ceiling")
    if ceiling and ceiling.get("locust_rps"):
        out.append(f"Load generator ceiling measured in this run: Locust ~{fmt_rps(ceiling['locust_rps'])} "
                   f"req/s, C client ~{fmt_rps(ceiling.get('c_client_rps'))} req/s against "
                   f"{ceiling.get('backend', '?')}.")
    observed = observed_loadgen_ceiling(doc)
    if observed is not None:
        out.append(f"Load generator ceiling: saturated, Locust reached at most {fmt_rps(observed['rps'])} echo "
                   f"req/s in this run ({observed['backend']} at {observed['users']} users, "
                   f"{observed['processes']} Locust process(es)). Echo figures near it measure Locust, not "
                   "the server; `bench perf` compares Locust with a C client against the same server.")
    failing = [r for r in doc["runs"] if not has_error(r) and is_failing(r)]
    if failing:
        points = ", ".join(f"{r['backend']} {r['mode']} @ {r['users']} ({failure_note(r)})" for r in failing)
        out.append(f"Points with more than {FAILURE_TOLERANCE:.0%} failures, or with users left unserved, "
                   f"are never recommended: {points}.")
    busy = busy_machine_note(doc)
    if busy:
        out.append(busy)
    errors = [r for r in doc["runs"] if has_error(r)]
    if errors:
        points = ", ".join(f"{r['backend']} {r['mode']} @ {r['users']}" for r in errors)
        out.append(f"Scenarios that could not run: {points}.")
    return out


def busy_machine_note(doc: Doc) -> str | None:
    """A warning when other processes used more than :data:`BUSY_MACHINE_PERCENT` of a
    core during some windows (``other_cpu_percent``); None on a quiet run."""
    busy = [r for r in doc["runs"] if (r.get("other_cpu_percent") or 0) > BUSY_MACHINE_PERCENT]
    if not busy:
        return None
    worst = max(r["other_cpu_percent"] for r in busy)
    return (f"Other processes used up to {worst:.0f}% of a core during {len(busy)} of {len(doc['runs'])} "
            "points; those figures are suspect (rerun on a quiet machine).")
