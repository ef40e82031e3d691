"""``bench reliability``: run the fault cases x backends matrix, the broadcast soak and
the leak check, and render the outcome as Markdown (the README's "Reliability" section).

The cases are the very functions the tests run (:mod:`bench.reliability.cases`); this module
only runs them, collects outcomes and renders them. Rendering is a pure function of the
collected results.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

from bench.reliability.cases import CASES
from bench.reliability.faults import NotApplicable, ServerPool
from bench.reliability.soak import DEFAULT_SOAK_RATE, LEAK_TOLERANCE, LeakResult, SoakResult, broadcast_soak, leak_check

PASS, FAIL, NA = "pass", "FAIL", "n/a"


@dataclass
class Outcome:
    status: str  # PASS, FAIL or NA
    note: str
    seconds: float


@dataclass
class Report:
    """Everything one run found; :func:`render_markdown` draws it."""

    backends: list[str]
    cases: dict[str, dict[str, Outcome]] = field(default_factory=dict)
    soak: dict[str, SoakResult | str] = field(default_factory=dict)  # str: n/a or error
    leak: dict[str, LeakResult | str] = field(default_factory=dict)
    soak_params: tuple[int, float, float] = (0, 0.0, 0.0)  # clients, seconds, rate
    leak_connections: int = 0
    command: str = ""
    seconds: float = 0.0


def run_case(case: Callable, backend: str) -> Outcome:
    """Run one case against ``backend``; never raises."""
    servers = ServerPool()
    t0 = time.monotonic()
    try:
        note = case(servers, backend)
        status = PASS
    except NotApplicable as exc:
        status, note = NA, str(exc)
    except AssertionError as exc:
        status, note = FAIL, str(exc).splitlines()[0] if str(exc) else "assertion failed"
    except Exception as exc:  # a crash in the scenario is a failure to report, not to raise
        status, note = FAIL, f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    finally:
        problems = servers.finish()
    if problems and status == PASS:
        status, note = FAIL, problems[0].splitlines()[0]
    return Outcome(status, note, round(time.monotonic() - t0, 1))


def run_all(backends: list[str], soak_clients: int, soak_seconds: float, soak_rate: float,
            leak_connections: int, cases: list[str] | None = None,
            progress: Callable[[str], None] = print) -> Report:
    """The whole matrix, then the soak and the leak check per backend."""
    t0 = time.monotonic()
    report = Report(backends=list(backends), soak_params=(soak_clients, soak_seconds, soak_rate),
                    leak_connections=leak_connections)
    for name, case in CASES.items():
        if cases is not None and name not in cases:
            continue
        row = report.cases.setdefault(name, {})
        for backend in backends:
            row[backend] = outcome = run_case(case, backend)
            progress(f"{name:45} {backend:10} {outcome.status:5} {outcome.seconds:5.1f}s  {outcome.note}")
    for backend in backends:
        report.soak[backend] = _guarded(lambda s: broadcast_soak(s, backend, soak_clients, soak_seconds, soak_rate))
        progress(f"soak {backend:10} {_short(report.soak[backend])}")
        report.leak[backend] = _guarded(lambda s: leak_check(s, backend, leak_connections))
        progress(f"leak {backend:10} {_short(report.leak[backend])}")
    report.seconds = round(time.monotonic() - t0, 1)
    return report


def _guarded(fn: Callable) -> object:
    servers = ServerPool()
    try:
        return fn(servers)
    except NotApplicable as exc:
        return f"n/a: {exc}"
    except Exception as exc:
        return f"error: {type(exc).__name__}: {exc}".splitlines()[0]
    finally:
        servers.finish()


def _short(result: object) -> str:
    return str(result.as_dict()) if hasattr(result, "as_dict") else str(result)


# -- rendering (pure) ------------------------------------------------------------------

_MARK = {PASS: "pass", FAIL: "**FAIL**", NA: "n/a"}


def render_markdown(report: Report) -> str:
    """The Reliability section: cases x backends, the soak and the leak figures."""
    backends = report.backends
    out = ["| case | " + " | ".join(backends) + " |", "|---|" + "---|" * len(backends)]
    reasons: dict[str, int] = {}
    failures = []
    for name, row in report.cases.items():
        cells = []
        for b in backends:
            o = row.get(b)
            if o is None:
                cells.append("")
                continue
            cell = _MARK[o.status]
            if o.status == NA:
                n = reasons.setdefault(o.note, len(reasons) + 1)
                cell += f" [{n}]"
            if o.status == FAIL:
                failures.append(f"- {name} / {b}: {o.note}")
            cells.append(cell)
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    for note, n in reasons.items():
        out.append(f"\n[{n}] {note}.")
    if failures:
        out += ["", "Failures:", *failures]

    clients, seconds, rate = report.soak_params
    if report.soak:
        out += ["", f"Broadcast soak: {clients} clients for {seconds:g} s, {rate:g} lines/s into the room "
                "(each line to every other client); for every client that stayed connected, "
                "lines lost, duplicated or reordered per sender:", "",
                "| backend | lines sent | deliveries | lost | dup/reordered | clients dropped | outcome |",
                "|---|---|---|---|---|---|---|"]
        for b, r in report.soak.items():
            if isinstance(r, SoakResult):
                out.append(f"| {b} | {r.sent:,} | {r.delivered:,} | {r.lost} | {r.out_of_order} | "
                           f"{r.dropped_clients} | {'pass' if r.ok else '**FAIL**'} |")
            else:
                out.append(f"| {b} | | | | | | {r} |")
    if report.leak:
        out += ["", f"Leak check: server RSS after each of three cycles of {report.leak_connections:,} "
                f"connections opened (one echo each) and closed; pass if the last is within "
                f"{LEAK_TOLERANCE:.0%} of the first:", "",
                "| backend | before | cycle 1 | cycle 2 | cycle 3 | growth | outcome |",
                "|---|---|---|---|---|---|---|"]
        for b, r in report.leak.items():
            if isinstance(r, LeakResult):
                cyc = " | ".join(f"{x:.1f} MB" for x in r.rss_mb)
                out.append(f"| {b} | {r.baseline_mb:.1f} MB | {cyc} | {r.growth:+.1%} | "
                           f"{'pass' if r.ok else '**FAIL**'} |")
            else:
                out.append(f"| {b} | | | | | | {r} |")
    if report.command:
        out += ["", f"Produced by `{report.command}` in {report.seconds:g} s."]
    return "\n".join(out) + "\n"


def all_passed(report: Report) -> bool:
    """No case failed, and every soak and leak result that ran is ok."""
    if any(o.status == FAIL for row in report.cases.values() for o in row.values()):
        return False
    for r in list(report.soak.values()) + list(report.leak.values()):
        if isinstance(r, str) and not r.startswith("n/a"):
            return False
        if not isinstance(r, str) and not r.ok:
            return False
    return True


__all__ = ["DEFAULT_SOAK_RATE", "Report", "Outcome", "run_all", "run_case", "render_markdown", "all_passed"]
