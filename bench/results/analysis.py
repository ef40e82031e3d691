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
from typing import Any, Iterable

from bench.results.config import MODES
from bench.results.schema import Doc, Run


# A backend that fails more than 1 request in 100 is not one to pick, whatever its
# throughput; below that, a few timeouts at shutdown or one reset should not disqualify it.
FAILURE_TOLERANCE = 0.01

# Other processes using more than this % of a core during a window make it suspect:
# the measured pair waited for CPU, and neither CPU % nor the saturation flag shows it.
BUSY_MACHINE_PERCENT = 20.0

# pyperf calls differences under ~5 % noise on an unquiet machine; with a single sample
# per side we have no measured spread, so we borrow that margin.
SINGLE_SAMPLE_TIE = 0.05


# -- per-run predicates -------------------------------------------------------------------

def has_error(run: Run) -> bool:
    """True when the scenario could not run (``error`` is set)."""
    return bool(run.get("error"))


def failure_rate(run: Run) -> float:
    """failures / (requests + failures); 0.0 when nothing was attempted."""
    failures = run.get("failures") or 0
    attempts = (run.get("requests") or 0) + failures
    return failures / attempts if attempts else 0.0


def timeouts(run: Run) -> int:
    """Requests that got no answer within the users' request timeout."""
    return int((run.get("failures_by_kind") or {}).get("timeout") or 0)


def is_failing(run: Run) -> bool:
    """More than :data:`FAILURE_TOLERANCE` of the attempts failed, or users went unserved.

    The second rule matters because failures are counted per request: a user the
    server never answers fails once per request timeout (seconds), while a served user
    completes thousands of requests meanwhile. So the blocking backend at 10 users (one
    served, nine waiting in the backlog) fails only ~0.03% of its requests; timeouts from
    at least :data:`FAILURE_TOLERANCE` of the users (and at least one) flag it.
    """
    unserved = timeouts(run) >= max(1.0, FAILURE_TOLERANCE * int(run.get("users") or 0))
    return failure_rate(run) > FAILURE_TOLERANCE or unserved


def failure_note(run: Run) -> str:
    """Why a failing run is excluded: ``4% failures`` or ``18 timeouts``."""
    rate = failure_rate(run)
    if rate > FAILURE_TOLERANCE:
        return f"{rate:.0%} failures"
    return f"{timeouts(run):,} timeouts: users left unserved"


def is_generator_bound(run: Run) -> bool:
    """The load generator saturated, so the server was not the limit."""
    return bool((run.get("loadgen") or {}).get("saturated"))


def is_usable(run: Run) -> bool:
    """Ran, served requests, and did not fail beyond the tolerance."""
    return not has_error(run) and (run.get("rps") or 0) > 0 and not is_failing(run)


def rps_range(run: Run) -> tuple[float, float]:
    """(min, max) of ``rps_samples``; (rps, rps) when there are none."""
    samples = [s for s in (run.get("rps_samples") or []) if s is not None]
    if not samples:
        rps = float(run.get("rps") or 0.0)
        return rps, rps
    return float(min(samples)), float(max(samples))


def tied(a: Run, b: Run) -> bool:
    """The tie rule (see the module docstring): overlapping sample ranges, or within 5 %
    of the larger rps when either run has a single sample."""
    if len(a.get("rps_samples") or []) >= 2 and len(b.get("rps_samples") or []) >= 2:
        a_lo, a_hi = rps_range(a)
        b_lo, b_hi = rps_range(b)
        return a_lo <= b_hi and b_lo <= a_hi
    ra, rb = float(a.get("rps") or 0.0), float(b.get("rps") or 0.0)
    top = max(ra, rb)
    return top == 0 or abs(ra - rb) <= SINGLE_SAMPLE_TIE * top


# -- grouping -------------------------------------------------------------------------------

def _ordered(seen: Iterable[Any], preferred: Iterable[Any]) -> list[Any]:
    seen = list(dict.fromkeys(seen))
    first = [x for x in preferred if x in seen]
    return first + [x for x in seen if x not in first]


def modes(doc: Doc) -> list[str]:
    """Modes present in the runs, echo before broadcast."""
    return _ordered((r["mode"] for r in doc["runs"]), MODES)


def backends(doc: Doc, mode: str | None = None) -> list[str]:
    """Backends present (in ``mode`` if given), in the config's order, then first seen."""
    seen = [r["backend"] for r in doc["runs"] if mode is None or r["mode"] == mode]
    return _ordered(seen, (doc.get("config") or {}).get("backends") or [])


def user_counts(doc: Doc, mode: str | None = None) -> list[int]:
    """Distinct user counts (in ``mode`` if given), ascending."""
    return sorted({int(r["users"]) for r in doc["runs"] if mode is None or r["mode"] == mode})


# The last document indexed, its number of runs, and its index: a report asks for the
# runs at one (mode, users) once per table cell, chart point and sentence, and they are
# grouped once per document instead of once per question. A document is not changed
# once analysed (a different number of runs is noticed and re-indexed).
_indexed: tuple[Doc, int, dict[str, dict[str, dict[int, Run]]]] | None = None


def group_runs(doc: Doc) -> dict[str, dict[str, dict[int, Run]]]:
    """``{mode: {backend: {users: run}}}``, modes and backends in display order.
    With duplicate scenarios the last one wins. Computed once per document; callers
    only read it."""
    global _indexed
    if _indexed is not None and _indexed[0] is doc and _indexed[1] == len(doc["runs"]):
        return _indexed[2]
    grouped: dict[str, dict[str, dict[int, Run]]] = {}
    for mode in modes(doc):
        grouped[mode] = {b: {} for b in backends(doc, mode)}
    for run in doc["runs"]:
        grouped[run["mode"]][run["backend"]][int(run["users"])] = run
    for per_backend in grouped.values():
        for key in per_backend:
            per_backend[key] = dict(sorted(per_backend[key].items()))
    _indexed = (doc, len(doc["runs"]), grouped)
    return grouped


def runs_at(doc: Doc, mode: str, users: int) -> list[Run]:
    """The runs of one (mode, users) point, in backend display order."""
    grouped = group_runs(doc).get(mode, {})
    return [per[users] for per in grouped.values() if users in per]


# -- ratios, ties, flags -------------------------------------------------------------------

def best_run(runs: list[Run]) -> Run | None:
    """The run with the highest rps among those without an error (None if none)."""
    ran = [r for r in runs if not has_error(r) and (r.get("rps") or 0) > 0]
    return max(ran, key=lambda r: r["rps"]) if ran else None


def ratios_to_best(doc: Doc, mode: str, users: int) -> dict[str, float | None]:
    """``{backend: rps / best rps}`` at one point; None for runs that errored."""
    runs = runs_at(doc, mode, users)
    best = best_run(runs)
    out: dict[str, float | None] = {}
    for run in runs:
        if best is None or has_error(run):
            out[run["backend"]] = None
        else:
            out[run["backend"]] = float(run.get("rps") or 0.0) / float(best["rps"])
    return out


def flags(doc: Doc, run: Run) -> list[str]:
    """Short labels for a table row: "error", "failing", "generator-bound", "best", "tie".

    "best" marks the highest rps at its (mode, users); "tie" marks a run that ties with
    the best (and the best itself, when something ties with it).
    """
    if has_error(run):
        return ["error"]
    out = []
    if is_failing(run):
        out.append("failing")
    if is_generator_bound(run):
        out.append("generator-bound")
    peers = runs_at(doc, run["mode"], int(run["users"]))
    best = best_run(peers)
    if best is not None:
        if best is run:
            out.append("best")
            if any(p is not run and not has_error(p) and tied(p, run) for p in peers):
                out.append("tie")
        elif tied(run, best):
            out.append("tie")
    return out


# -- formatting helpers shared by sentences, tables and charts ------------------------------

def fmt_us(us: float | None) -> str:
    """Microseconds for humans: ``42 µs``, ``3.1 ms``, ``41 ms``, ``1.2 s``."""
    if us is None:
        return "–"
    if us < 1000:
        return f"{us:.0f} µs"
    if us < 10_000:
        return f"{us / 1000:.1f} ms"
    if us < 1_000_000:
        return f"{us / 1000:.0f} ms"
    return f"{us / 1_000_000:.1f} s"


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


def fmt_rps(rps: float | None) -> str:
    """``12,345``; one decimal below 10 (broadcast at low load)."""
    if rps is None:
        return "–"
    return f"{rps:,.1f}" if rps < 10 else f"{rps:,.0f}"


def fmt_bytes(n: float | None) -> str:
    """``512 B``, ``12.3 KiB``, ``41.0 MiB``."""
    if n is None:
        return "–"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def fmt_ratio(ratio: float | None) -> str:
    """``2.1x``; two decimals near 1 so that 1.04x does not read as 1.0x."""
    if ratio is None:
        return "–"
    return f"{ratio:.2f}x" if ratio < 1.095 else f"{ratio:.1f}x"


def connections(users: int) -> str:
    return f"{users} connection" + ("" if users == 1 else "s")


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
