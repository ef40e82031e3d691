"""The rules that judge runs of a results document (``bench.results.schema``): usable,
failing, generator-bound, the tie rule, ratios to the best, the flags of a table row,
and the document's runs grouped once by mode, backend and users. Pure; see
:mod:`bench.results.analysis` for what the rules mean together.
"""

from __future__ import annotations

from typing import Any, Iterable

from bench.results.config import MODES
from bench.results.schema import Doc, Run


# A backend that fails more than 1 request in 100 is not one to pick, whatever its
# throughput; below that, a few timeouts at shutdown or one reset should not disqualify it.
FAILURE_TOLERANCE = 0.01

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
