"""Reports of a results document: ``report.md``, a self-contained ``report.html`` and a
terminal summary, all from the same sentences and rows.

The answer ("which model for which case") comes first, then a pick or explicit tie per
(mode, load), the charts, the tables, the caveats and the environment (which names the
load engine that ran). :func:`render_report` is the only function that writes; strings
from the run are escaped for the output they land in (``html.escape``; ``|``/``<`` in
Markdown; plain ``Text``, never markup, in rich).
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.table import Table
from rich.text import Text

from bench.results import analysis, charts
from bench.results.analysis import fmt_bytes, fmt_ratio, fmt_rps, fmt_us
from bench.results.schema import Doc, Point


def _clean(text: Any) -> str:
    """Run strings (errors quote commands in backquotes) without literal backticks."""
    return str(text).replace("`", "'")


# -- rows ------------------------------------------------------------------------------------

def _verdict_labels(doc: Doc, p: Point) -> list[str]:
    """The point's flags, then "pick" or "tie" when the verdict at its load names it
    (with "by CPU" when that verdict ranks on server CPU per request)."""
    labels = analysis.flag_labels(p)
    verdict, question = analysis.load_pick(doc, p["mode"], int(p["users"]))
    if verdict.winner and p["backend"] in verdict.names():
        labels.append(("tie" if verdict.is_tie else "pick") + (" by CPU" if question == "cost" else ""))
    return labels


def _vs_best(doc: Doc, p: Point) -> str:
    """Capacity as a ratio to the capacity pick; "–" for points that may not rank and at
    loads whose verdict is not on capacity."""
    verdict, question = analysis.load_pick(doc, p["mode"], int(p["users"]))
    if analysis.why_not_ranked(p) or question != "capacity" or verdict.winner is None:
        return "–"
    return fmt_ratio(p["capacity"]["median"] / verdict.winner.value)


def columns(mode: str) -> list[tuple[str, Callable[[Doc, Point], str]]]:
    """(header, cell) of a mode's table."""
    def cap(doc: Doc, p: Point) -> str:
        c = p["capacity"]
        return "–" if not c.get("median") else f"{fmt_rps(c['median'])} ({fmt_rps(c['lo'])}–{fmt_rps(c['hi'])})"

    def cost(doc: Doc, p: Point) -> str:
        return analysis.fmt_cost((p.get("cost_us") or {}).get("median")) if (p.get("cost_us") or {}).get("median") else "–"

    def p99(doc: Doc, p: Point) -> str:
        return fmt_us(p["latency_us"]["p99"]) if (p.get("latency_us") or {}).get("p99") else "–"

    def failures(doc: Doc, p: Point) -> str:
        n = int(p.get("failures") or 0)
        extra = f", {p['unanswered']} unanswered" if p.get("unanswered") else ""
        return f"{n:,}{extra}"

    cols: list[tuple[str, Callable[[Doc, Point], str]]] = [
        ("conns", lambda doc, p: str(p["users"])),
        ("backend", lambda doc, p: p["backend"]),
        (f"capacity {analysis.unit(mode)} (range)", cap),
        ("vs best", _vs_best),
        (f"server CPU {analysis.per_request(mode)}", cost),
        ("p99 closed loop", p99),
    ]
    if mode == "echo":
        def at_rate(doc: Doc, p: Point) -> str:
            sr = p.get("set_rate")
            if not sr:
                return "–"
            return f"{fmt_us(sr['p99'])} @ {analysis.fmt_rate(sr['offered_per_s'])}/s" + ("" if sr["kept_up"] else " (behind)")
        cols.append(("p99 at set rate", at_rate))
    else:
        def held(doc: Doc, p: Point) -> str:
            slo = p.get("slo") or {}
            v = slo.get("held_deliveries_per_s")
            if slo and not v:
                return "none held"
            if not v:
                return "–"
            # a lower bound when the climb ended without the server failing a step
            bound = (" (load generator's limit)" if slo.get("generator_bound")
                     else " (top of the climb)" if slo.get("ceiling_reached") else "")
            return f"{'≥ ' if bound else ''}{analysis.fmt_rate(v)}/s{bound}"
        cols.append(("held at p99 target", held))
        cols.append(("lost", lambda doc, p: f"{int(p.get('lost') or 0):,}"))
    cols += [
        ("failures", failures),
        ("server RSS", lambda doc, p: fmt_bytes((p.get("memory") or {}).get("active_rss_bytes"))),
        ("other CPU", lambda doc, p: "–" if p.get("other_cpu_percent") is None else f"{p['other_cpu_percent']:.0f} %"),
        ("flags", lambda doc, p: ", ".join(_verdict_labels(doc, p)) + (f": {_clean(p['error'])}" if p.get("error") else "")),
    ]
    return cols


def table(doc: Doc, mode: str) -> tuple[list[str], list[list[str]]]:
    """(headers, rows): one row per backend per connection count, counts ascending."""
    cols = columns(mode)
    rows = []
    for users in analysis.user_counts(doc, mode):
        for p in analysis.points_at(doc, mode, users):
            rows.append([cell(doc, p) if not (p.get("error") and 1 < i < len(cols) - 1) else "–"
                         for i, (_, cell) in enumerate(cols)])
    return [h for h, _ in cols], rows


def memory_table(doc: Doc) -> tuple[list[str], list[list[str]]]:
    """Backends x (idle, active echo, active broadcast) memory per connection."""
    def cell(mode: str, backend: str, kind: str) -> str:
        s = analysis.memory_slope(doc, mode, backend, kind)
        return "–" if s is None else f"{fmt_bytes(max(0.0, s.bytes_per_conn))} ({s.lo}→{s.hi})"

    rows = [[b, cell("echo", b, "idle"), cell("echo", b, "active"), cell("broadcast", b, "active")]
            for b in analysis.backends(doc)]
    return ["backend", "idle (echo)", "active (echo)", "active (broadcast)"], rows


def environment_items(doc: Doc) -> list[tuple[str, str]]:
    env = doc.get("environment") or {}
    versions = env.get("versions") or {}
    limit = env.get("open_files_limit")
    engine = analysis.engine_name(doc)
    engine_text = ("native (C, one thread, no Python per request)" if engine == "native"
                   else f"{engine}: a pure-Python load generator; no ranking ({analysis.INSTALL_HINT})")
    return [
        ("run", f"{doc.get('run_id', '?')} ({doc.get('created', '?')})"),
        ("load engine", engine_text),
        ("orchestrator", str((doc.get("loadgen") or {}).get("orchestrator") or "–")),
        ("CPU", f"{env.get('cpu_model', '?')} × {env.get('cpu_count', '?')}"),
        ("RAM", fmt_bytes(env.get("ram_bytes"))),
        ("OS", str(env.get("os", "?"))),
        ("Python", str(env.get("python", "?"))),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items()) or "?"),
        ("open files limit", " / ".join(map(str, limit)) if isinstance(limit, list) else str(limit)),
        ("git commit", str(env.get("git_commit") or "unknown")),
    ]


def locust_links(doc: Doc) -> list[tuple[str, str]]:
    """(label, path relative to the report) of each mode's Locust HTML report and stats CSV."""
    files = (doc.get("loadgen") or {}).get("locust_reports") or {}
    return [(f"{mode}: {kind}", path) for mode, paths in files.items()
            for kind, path in (("Locust report", paths.get("html")), ("Locust statistics (CSV)", paths.get("stats_csv")))
            if path]


def config_items(doc: Doc) -> list[tuple[str, str]]:
    cfg = doc.get("config") or {}
    pin = cfg.get("cpu_pinning")
    users = cfg.get("users") or []
    return [
        ("backends", ", ".join(map(str, cfg.get("backends") or []))),
        ("modes", ", ".join(map(str, cfg.get("modes") or []))),
        ("connections", ", ".join(map(str, users))),
        ("window / warm-up", f"{cfg.get('duration_s', '?')} s / {cfg.get('warmup_s', '?')} s"),
        ("repeats per point", str(cfg.get("repeat", "?"))),
        ("message size", f"{cfg.get('message_bytes', '?')} bytes"),
        ("broadcast latency target", f"p99 ≤ {cfg.get('slo_ms', '?')} ms, no line lost"),
        ("CPU pinning", f"servers on CPU {pin.get('server')}, load generator on CPU {pin.get('loadgen')}"
         if pin else "not pinned"),
    ]


# -- markdown --------------------------------------------------------------------------------

def _md(text: Any) -> str:
    return (_clean(text).replace("&", "&amp;").replace("<", "&lt;").replace("|", "\\|")
            .replace("\r", " ").replace("\n", " "))


def _md_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(_md(h) for h in headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return out + ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]


def render_markdown(doc: Doc, chart_files: dict[str, str]) -> str:
    """report.md; ``chart_files`` maps chart names to paths relative to the report."""
    lines = [f"# sockbench report {_md(doc.get('run_id', ''))}", "", "## Which model for which case", ""]
    lines += [f"- {_md(a)}" for a in analysis.answers(doc)] + [""]
    lines += ["## At each load", ""]
    for mode, sentences in analysis.verdicts(doc).items():
        lines += [f"**{_md(mode)}**", ""] + [f"- {_md(s)}" for s in sentences] + [""]
    lines += ["## Charts", ""]
    for name, rel in chart_files.items():
        lines += [f"![{charts.CHARTS[name][1]}]({rel})", ""]
    for mode in analysis.modes(doc):
        lines += [f"## {_md(mode)}", ""] + _md_table(*table(doc, mode)) + [""]
    lines += ["## Memory per connection", ""] + _md_table(*memory_table(doc)) + [""]
    lines += ["## Caveats", ""] + [f"- {_md(c)}" for c in analysis.caveats(doc)] + [""]
    if locust_links(doc):
        lines += ["## Locust's statistics", ""] + [f"- [{_md(k)}]({v})" for k, v in locust_links(doc)] + [""]
    lines += ["## Environment", ""] + [f"- {k}: {_md(v)}" for k, v in environment_items(doc)] + [""]
    lines += ["## Config", ""] + [f"- {k}: {_md(v)}" for k, v in config_items(doc)] + [""]
    return "\n".join(lines)


# -- html ------------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5rem auto;max-width:1200px;
padding:0 1rem;color:#222;line-height:1.45}
h1{font-size:1.5rem}h2{margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
.scroll{max-width:100%;overflow-x:auto}
table{border-collapse:collapse;margin:.6rem 0 1.2rem;font-size:.82rem;max-width:100%}
th,td{border:1px solid #ccc;padding:.2rem .4rem;text-align:right;white-space:normal;overflow-wrap:anywhere}
th{background:#f2f4f7}td:nth-child(2),th:nth-child(2),td.flags{text-align:left}
tr.users-start td{border-top:2px solid #888}
.flag{display:inline-block;border-radius:3px;padding:0 .3rem;margin:.05rem .2rem .05rem 0;font-size:.78rem}
.flag-pick,.flag-pick-by-CPU{background:#d9f2e3}.flag-tie,.flag-tie-by-CPU{background:#e3e9f7}.flag-generator-bound{background:#fff0c2}
.flag-disturbed{background:#e6e6e6}.flag-failing,.flag-error{background:#fbd9d9}
figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #eee}figcaption{color:#555;font-size:.9rem}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.15rem 1rem}dt{font-weight:600}dd{margin:0}
ul.answer li{margin:.3rem 0}
"""


def _h(text: Any) -> str:
    return html.escape(_clean(text), quote=True)


def _html_table(headers: list[str], rows: list[list[str]], flags_col: int | None = None,
                group_col: int | None = None) -> str:
    out = ['<div class="scroll"><table>',
           "<thead><tr>" + "".join(f"<th>{_h(h)}</th>" for h in headers) + "</tr></thead>", "<tbody>"]
    previous = None
    for row in rows:
        starts = group_col is not None and previous is not None and row[group_col] != previous
        previous = row[group_col] if group_col is not None else None
        cells = [('<td class="flags">' + _flags_html(c) + "</td>") if i == flags_col else f"<td>{_h(c)}</td>"
                 for i, c in enumerate(row)]
        out.append(('<tr class="users-start">' if starts else "<tr>") + "".join(cells) + "</tr>")
    return "\n".join(out + ["</tbody>", "</table></div>"])


def _flags_html(cell: str) -> str:
    head, sep, detail = cell.partition(": ")
    badges = "".join(f'<span class="flag flag-{_h(f.replace(" ", "-"))}">{_h(f)}</span>'
                     for f in head.split(", ") if f)
    return badges + (f" {_h(detail)}" if sep else "")


def _dl(items: list[tuple[str, str]]) -> str:
    return "<dl>" + "".join(f"<dt>{_h(k)}</dt><dd>{_h(v)}</dd>" for k, v in items) + "</dl>"


def render_html(doc: Doc, chart_pngs: dict[str, bytes]) -> str:
    """report.html: inline CSS, charts as base64 data URIs, no external resource."""
    title = f"sockbench report {doc.get('run_id', '')}"
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{_h(title)}</title>", f"<style>{CSS}</style></head><body>", f"<h1>{_h(title)}</h1>",
             "<h2>Which model for which case</h2>",
             '<ul class="answer">' + "".join(f"<li>{_h(a)}</li>" for a in analysis.answers(doc)) + "</ul>",
             "<h2>At each load</h2>"]
    for mode, sentences in analysis.verdicts(doc).items():
        parts.append(f"<h3>{_h(mode)}</h3><ul>" + "".join(f"<li>{_h(s)}</li>" for s in sentences) + "</ul>")
    parts.append("<h2>Charts</h2>")
    for name, png in chart_pngs.items():
        caption = charts.CHARTS[name][1]
        parts.append(f'<figure><img src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}" '
                     f'alt="{_h(caption)}"><figcaption>{_h(caption)}</figcaption></figure>')
    for mode in analysis.modes(doc):
        headers, rows = table(doc, mode)
        parts.append(f"<h2>{_h(mode)}</h2>" + _html_table(headers, rows, flags_col=len(headers) - 1, group_col=0))
    parts.append("<h2>Memory per connection</h2>" + _html_table(*memory_table(doc)))
    parts.append("<h2>Caveats</h2><ul>" + "".join(f"<li>{_h(c)}</li>" for c in analysis.caveats(doc)) + "</ul>")
    if locust_links(doc):
        parts.append("<h2>Locust's statistics</h2><ul>" + "".join(
            f'<li><a href="{_h(v)}">{_h(k)}</a></li>' for k, v in locust_links(doc)) + "</ul>")
    parts.append("<h2>Environment</h2>" + _dl(environment_items(doc)))
    parts.append("<h2>Config</h2>" + _dl(config_items(doc)))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# -- entry points ----------------------------------------------------------------------------

def render_report(doc: Doc, out_dir: Path) -> dict[str, Path]:
    """Write ``charts/<name>.png``, ``report.md`` and ``report.html`` under ``out_dir``;
    returns ``{"report.md": path, "report.html": path, <chart name>: path, ...}``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    chart_paths = charts.render_charts(doc, out_dir / "charts")
    md_path = out_dir / "report.md"
    md_path.write_text(render_markdown(doc, {n: p.relative_to(out_dir).as_posix() for n, p in chart_paths.items()}),
                       encoding="utf-8")
    html_path = out_dir / "report.html"
    html_path.write_text(render_html(doc, {n: p.read_bytes() for n, p in chart_paths.items()}), encoding="utf-8")
    return {"report.md": md_path, "report.html": html_path, **chart_paths}


def summary_console() -> Console:
    """The terminal's console: rich decides the width."""
    return Console()


# The terminal table keeps the columns that answer the questions.
TERMINAL_COLUMNS = ("conns", "backend", "vs best", "p99 at set rate", "held at p99 target", "flags")


def print_summary(doc: Doc, console: Console) -> None:
    """The answer, the per-load picks and a compact table per mode (plain text, never markup)."""
    console.print(Text("Which model for which case", style="bold"))
    for a in analysis.answers(doc):
        console.print(Text(f"  • {_clean(a)}"))
    console.print()
    for mode, sentences in analysis.verdicts(doc).items():
        headers, rows = table(doc, mode)
        keep = [i for i, h in enumerate(headers) if h in TERMINAL_COLUMNS or h.startswith(("capacity", "server CPU"))]
        t = Table(title=mode, title_style="bold", header_style="bold")
        for i in keep:
            t.add_column(headers[i], justify="left" if headers[i] in ("backend", "flags") else "right",
                         overflow="fold")
        previous = None
        for row in rows:
            if previous is not None and row[0] != previous:
                t.add_section()
            t.add_row(*(Text(_clean(row[i])) for i in keep))
            previous = row[0]
        console.print(t)
        for s in sentences:
            console.print(Text(f"  {_clean(s)}"))
        console.print()
    console.print(Text(f"load engine: {dict(environment_items(doc))['load engine']}"))
