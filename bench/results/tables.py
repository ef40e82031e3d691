"""The rows of a report's tables, as strings, shared by report.md, report.html and the
terminal summary. Pure.

Every row shows its point's flags; a point that may not rank is "–" in "vs best", and a
set-rate or ladder figure measured while other processes were busy says "(disturbed)".
"""

from __future__ import annotations

from typing import Any, Callable

from bench.results import analysis
from bench.results.figures import per_request, set_rate_disturbed, slo_disturbed, slo_lower_bound, unit
from bench.results.formatting import fmt_bytes, fmt_cost, fmt_rate, fmt_ratio, fmt_rps, fmt_us
from bench.results.schema import Results
from bench.results.summary import Point

Cell = Callable[[Results, Point], str]


def clean(text: Any) -> str:
    """Run strings (errors quote commands in backquotes) without literal backticks."""
    return str(text).replace("`", "'")


def verdict_labels(doc: Results, p: Point) -> list[str]:
    """The point's flags, then "pick" or "tie" when the verdict at its load names it."""
    labels = analysis.flag_labels(p)
    verdict = analysis.load_pick(doc, p.mode, int(p.users))
    if verdict.winner and p.backend in verdict.names():
        labels.append("tie" if verdict.is_tie else "pick")
    return labels


def vs_best(doc: Results, p: Point) -> str:
    """Capacity as a ratio to the capacity pick; "–" for points that may not rank and at
    loads without a pick."""
    verdict = analysis.load_pick(doc, p.mode, int(p.users))
    if analysis.why_not_ranked(p) or verdict.winner is None or p.capacity.median is None:
        return "–"
    return fmt_ratio(p.capacity.median / verdict.winner.value)


def _capacity(doc: Results, p: Point) -> str:
    c = p.capacity
    return "–" if not c.median else f"{fmt_rps(c.median)} ({fmt_rps(c.lo)}–{fmt_rps(c.hi)})"


def _cost(doc: Results, p: Point) -> str:
    return fmt_cost(p.cost_us.median) if p.cost_us.median else "–"


def _p99(doc: Results, p: Point) -> str:
    return fmt_us(p.latency_us.p99) if p.latency_us and p.latency_us.p99 else "–"


def _failures(doc: Results, p: Point) -> str:
    extra = f", {p.unanswered} unanswered" if p.unanswered else ""
    return f"{p.failures:,}{extra}"


def _at_rate(doc: Results, p: Point) -> str:
    sr = p.set_rate
    if not sr:
        return "–"
    return (f"{fmt_us(sr.p99)} @ {fmt_rate(sr.offered_per_s)}/s" + ("" if sr.kept_up else " (behind)")
            + (" (disturbed)" if set_rate_disturbed(p) and not p.flags.disturbed else ""))


def _held(doc: Results, p: Point) -> str:
    if not p.slo:
        return "–"
    v = p.slo.held_deliveries_per_s
    # a lower bound when the climb ended without the server failing a step
    bound = (" (load generator's limit)" if p.slo.generator_bound
             else " (top of the climb)" if slo_lower_bound(p) else "")
    held = "none held" if not v else f"{'≥ ' if bound else ''}{fmt_rate(v)}/s{bound}"
    return held + (" (disturbed)" if slo_disturbed(p) and not p.flags.disturbed else "")


def _flags(doc: Results, p: Point) -> str:
    return ", ".join(verdict_labels(doc, p)) + (f": {clean(p.error)}" if p.error else "")


def columns(mode: str) -> list[tuple[str, Cell]]:
    """(header, cell) of a mode's table."""
    cols: list[tuple[str, Cell]] = [
        ("conns", lambda doc, p: str(p.users)),
        ("backend", lambda doc, p: p.backend),
        (f"capacity {unit(mode)} (range)", _capacity),
        ("vs best", vs_best),
        (f"server CPU {per_request(mode)}", _cost),
        ("p99 closed loop", _p99),
    ]
    if mode == "echo":
        cols.append(("p99 at set rate", _at_rate))
    else:
        cols.append(("held at p99 target", _held))
        cols.append(("lost", lambda doc, p: f"{p.lost or 0:,}"))
    cols += [
        ("failures", _failures),
        ("server RSS", lambda doc, p: fmt_bytes(p.memory.active_rss_bytes)),
        ("other CPU", lambda doc, p: "–" if p.other_cpu_percent is None else f"{p.other_cpu_percent:.0f} %"),
        ("flags", _flags),
    ]
    return cols


def table(doc: Results, mode: str) -> tuple[list[str], list[list[str]]]:
    """(headers, rows): one row per backend per connection count, counts ascending. A point
    that did not run shows only its connections, backend, failures and flags."""
    cols = columns(mode)
    rows = []
    for users in doc.user_counts(mode):
        for p in doc.points_at(mode, users):
            rows.append([cell(doc, p) if not (p.error and 1 < i < len(cols) - 1) else "–"
                         for i, (_, cell) in enumerate(cols)])
    return [h for h, _ in cols], rows


def memory_table(doc: Results) -> tuple[list[str], list[list[str]]]:
    """Backends x (idle, active echo, active broadcast) memory per connection."""
    def cell(mode: str, backend: str, kind: str) -> str:
        s = analysis.memory_slope(doc, mode, backend, kind)
        return "–" if s is None else f"{fmt_bytes(max(0.0, s.bytes_per_conn))} ({s.lo}→{s.hi})"

    rows = [[b, cell("echo", b, "idle"), cell("echo", b, "active"), cell("broadcast", b, "active")]
            for b in doc.backends()]
    return ["backend", "idle (echo)", "active (echo)", "active (broadcast)"], rows


def environment_items(doc: Results) -> list[tuple[str, str]]:
    env = doc.environment
    versions = env.get("versions") or {}
    limit = env.get("open_files_limit")
    engine = analysis.engine_name(doc)
    engine_text = ("native (C, one thread, no Python per request)" if engine == "native"
                   else f"{engine}: a pure-Python load generator; no ranking ({analysis.INSTALL_HINT})")
    return [
        ("run", f"{doc.run_id} ({doc.created})"),
        ("load engine", engine_text),
        ("orchestrator", doc.loadgen.orchestrator or "–"),
        ("CPU", f"{env.get('cpu_model', '?')} × {env.get('cpu_count', '?')}"),
        ("RAM", fmt_bytes(env.get("ram_bytes"))),
        ("OS", str(env.get("os", "?"))),
        ("Python", str(env.get("python", "?"))),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items()) or "?"),
        ("open files limit", " / ".join(map(str, limit)) if isinstance(limit, list) else str(limit)),
        ("git commit", str(env.get("git_commit") or "unknown")),
    ]


def locust_links(doc: Results) -> list[tuple[str, str]]:
    """(label, path relative to the report) of each mode's Locust HTML report and stats CSV."""
    return [(f"{mode}: {kind}", path) for mode, paths in doc.loadgen.locust_reports.items()
            for kind, path in (("Locust report", paths.get("html")), ("Locust statistics (CSV)", paths.get("stats_csv")))
            if path]


def config_items(doc: Results) -> list[tuple[str, str]]:
    cfg = doc.config
    return [
        ("backends", ", ".join(cfg.backends)),
        ("modes", ", ".join(cfg.modes)),
        ("connections", ", ".join(map(str, sorted(set(cfg.users))))),
        ("window / warm-up", f"{cfg.duration_s} s / {cfg.warmup_s} s"),
        ("repeats per point", str(cfg.repeat)),
        ("message size", f"{cfg.message_bytes} bytes"),
        ("broadcast latency target", f"p99 ≤ {cfg.slo_ms} ms, no line lost"),
        ("CPU pinning", f"servers on CPU {list(cfg.server_cpus or ())}, load generator on CPU "
                        f"{list(cfg.loadgen_cpus or ())}" if cfg.cpu_pinning else "not pinned"),
    ]
