"""Reports of a results document: ``report.md``, a self-contained ``report.html`` and a
terminal summary, all from the same rows.

:func:`render_report` is the only function that writes (the chart PNGs and the two
reports under ``out_dir``); everything else returns strings. Every string that comes from
the run (backend names, errors, environment values) is escaped for the output it lands
in: ``html.escape`` in HTML, ``|``/``<`` escaped in Markdown tables, plain ``Text``
(never markup) in rich.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.table import Table
from rich.text import Text

from bench.results import analysis
from bench.results import charts
from bench.results.analysis import fmt_bytes, fmt_ratio, fmt_rps, fmt_us
from bench.results.schema import Doc, Run


CHART_CAPTIONS = {
    "throughput": "Throughput vs users, one line per backend",
    "latency": "Latency percentiles vs users (p50 solid, p99 dashed; µs, log scale)",
    "memory": "Server memory per connection",
    "broadcast": "Broadcast: lines lost (solid) and delivered out of order (dotted) per backend",
}


# -- rows ------------------------------------------------------------------------------------

def _pct(v: Any) -> str:
    return "–" if v is None else f"{v:.0f} %"


def columns(mode: str) -> list[tuple[str, Callable[[Doc, Run], str]]]:
    """(header, cell function) for a mode's table; broadcast adds deliveries/s and lost."""
    def ratio(doc: Doc, run: Run) -> str:
        return fmt_ratio(analysis.ratios_to_best(doc, run["mode"], int(run["users"])).get(run["backend"]))

    def lat(key: str) -> Callable[[Doc, Run], str]:
        return lambda doc, run: fmt_us((run.get("latency_us") or {}).get(key)) if run.get("requests") else "–"

    def failures(doc: Doc, run: Run) -> str:
        n = run.get("failures") or 0
        if not n:
            return "0"
        kinds = ", ".join(f"{k} {v}" for k, v in (run.get("failures_by_kind") or {}).items() if v)
        return f"{n:,} ({analysis.failure_rate(run):.0%}{'; ' + kinds if kinds else ''})"

    cols: list[tuple[str, Callable[[Doc, Run], str]]] = [
        ("backend", lambda doc, run: str(run["backend"])),
        ("users", lambda doc, run: str(run["users"])),
        ("deliveries/s" if mode == "broadcast" else "req/s", lambda doc, run: fmt_rps(run.get("rps"))),
        ("vs best", ratio),
        ("p50", lat("p50")),
        ("p99", lat("p99")),
        ("failures", failures),
        ("server CPU", lambda doc, run: _pct((run.get("server") or {}).get("cpu_percent"))),
        ("server RSS", lambda doc, run: fmt_bytes((run.get("server") or {}).get("rss_bytes") or None)),
        ("RSS/conn", lambda doc, run: fmt_bytes((run.get("server") or {}).get("rss_per_conn_bytes"))),
        ("loadgen CPU", lambda doc, run: _pct((run.get("loadgen") or {}).get("cpu_percent"))),
    ]
    if mode == "broadcast":  # lost lines next to the failures
        after = [h for h, _ in cols].index("failures") + 1
        cols.insert(after, ("lost", lambda doc, run: "–" if run.get("lost") is None else f"{run['lost']:,}"))
    # A run that errored has no figures: every metric cell is a dash.
    cols = cols[:2] + [(h, _unless_error(f)) for h, f in cols[2:]]
    cols.append(("flags", lambda doc, run: ", ".join(analysis.flags(doc, run))
                 + (f": {run['error']}" if analysis.has_error(run) else "")))
    return cols


def _unless_error(cell: Callable[[Doc, Run], str]) -> Callable[[Doc, Run], str]:
    return lambda doc, run: "–" if analysis.has_error(run) else cell(doc, run)


def table(doc: Doc, mode: str) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) for one mode: one row per backend per user count, ordered by users
    then backend, so the backends at one load sit together."""
    cols = columns(mode)
    rows = []
    grouped = analysis.group_runs(doc).get(mode, {})
    for users in analysis.user_counts(doc, mode):
        for backend in grouped:
            run = grouped[backend].get(users)
            if run is not None:
                rows.append([cell(doc, run) for _, cell in cols])
    return [h for h, _ in cols], rows


def ratio_table(doc: Doc, mode: str) -> tuple[list[str], list[list[str]]]:
    """Backends x users, each cell the rps ratio to the best backend at that load."""
    users = analysis.user_counts(doc, mode)
    per = {u: analysis.ratios_to_best(doc, mode, u) for u in users}
    rows = [[b] + [fmt_ratio(per[u].get(b)) if b in per[u] else "–" for u in users]
            for b in analysis.backends(doc, mode)]
    return ["backend"] + [analysis.connections(u) for u in users], rows


def environment_items(doc: Doc) -> list[tuple[str, str]]:
    env = doc.get("environment") or {}
    versions = env.get("versions") or {}
    limit = env.get("open_files_limit")
    return [
        ("run", f"{doc.get('run_id', '?')} ({doc.get('created', '?')})"),
        ("CPU", f"{env.get('cpu_model', '?')} × {env.get('cpu_count', '?')}"),
        ("RAM", fmt_bytes(env.get("ram_bytes"))),
        ("OS", str(env.get("os", "?"))),
        ("Python", str(env.get("python", "?"))),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items()) or "?"),
        ("open files limit", " / ".join(map(str, limit)) if isinstance(limit, list) else str(limit)),
        ("git commit", str(env.get("git_commit") or "unknown")),
    ]


def config_items(doc: Doc) -> list[tuple[str, str]]:
    cfg = doc.get("config") or {}
    pin = cfg.get("cpu_pinning")
    pin_text = (f"server CPUs {pin.get('server')}, load generator CPUs {pin.get('loadgen')}"
                if pin else "not pinned")
    return [
        ("backends", ", ".join(map(str, cfg.get("backends") or []))),
        ("modes", ", ".join(map(str, cfg.get("modes") or []))),
        ("users", ", ".join(map(str, cfg.get("users") or []))),
        ("duration / warm-up", f"{cfg.get('duration_s', '?')} s / {cfg.get('warmup_s', '?')} s"),
        ("repeats", str(cfg.get("repeat", "?"))),
        ("message size", f"{cfg.get('message_bytes', '?')} bytes"),
        ("broadcast rate", f"{cfg.get('broadcast_rate', '?')} lines/s per user"),
        ("Locust workers", str(cfg.get("workers", 0))),
        ("CPU pinning", pin_text),
    ]


# -- markdown --------------------------------------------------------------------------------

def _md(text: Any) -> str:
    """Escape a run string for a Markdown table cell or line (no raw HTML, no pipes)."""
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace("|", "\\|")
            .replace("\r", " ").replace("\n", " "))


def _md_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(_md(h) for h in headers) + " |",
           "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return out


def render_markdown(doc: Doc, chart_files: dict[str, str]) -> str:
    """report.md; ``chart_files`` maps chart names to paths relative to the report."""
    lines = [f"# sockbench report {_md(doc.get('run_id', ''))}", ""]
    lines += ["## Recommendation", ""]
    for mode, recs in analysis.recommendations(doc).items():
        lines += [f"**{_md(mode)}**", ""] + [f"- {_md(r.sentence)}" for r in recs] + [""]
    for name, rel in chart_files.items():
        lines += [f"![{CHART_CAPTIONS.get(name, name)}]({rel})", ""]
    for mode in analysis.modes(doc):
        lines += [f"## {_md(mode)}", ""] + _md_table(*table(doc, mode)) + [""]
        lines += [f"Throughput ratio to the best backend at each load ({_md(mode)}):", ""]
        lines += _md_table(*ratio_table(doc, mode)) + [""]
    lines += ["## Caveats", ""] + [f"- {_md(c)}" for c in analysis.caveats(doc)] + [""]
    lines += ["## Environment", ""] + [f"- {k}: {_md(v)}" for k, v in environment_items(doc)] + [""]
    lines += ["## Config", ""] + [f"- {k}: {_md(v)}" for k, v in config_items(doc)] + [""]
    return "\n".join(lines)


# -- html ------------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;
padding:0 1rem;color:#222;line-height:1.45}
h1{font-size:1.6rem}h2{margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.6rem 0 1.2rem;font-size:.88rem}
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:right;white-space:nowrap}
th{background:#f2f4f7}td:first-child,th:first-child,th:last-child,td.flags{text-align:left}
td.flags{white-space:normal;max-width:22rem}tr.users-start td{border-top:2px solid #888}
.flag{display:inline-block;border-radius:3px;padding:0 .3rem;margin-right:.2rem;font-size:.8rem}
.flag-best{background:#d9f2e3}.flag-tie{background:#e3e9f7}.flag-generator-bound{background:#fff0c2}
.flag-failing,.flag-error{background:#fbd9d9}
figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #eee}figcaption{color:#555;font-size:.9rem}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.15rem 1rem}dt{font-weight:600}dd{margin:0}
"""


def _h(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _html_table(headers: list[str], rows: list[list[str]], flags_col: int | None = None,
                group_col: int | None = None) -> str:
    out = ["<table>", "<thead><tr>" + "".join(f"<th>{_h(h)}</th>" for h in headers) + "</tr></thead>", "<tbody>"]
    previous = None
    for row in rows:
        starts = group_col is not None and previous is not None and row[group_col] != previous
        previous = row[group_col] if group_col is not None else None
        cells = []
        for i, cell in enumerate(row):
            if i == flags_col:
                cells.append('<td class="flags">' + _flags_html(cell) + "</td>")
            else:
                cells.append(f"<td>{_h(cell)}</td>")
        out.append(("<tr class=\"users-start\">" if starts else "<tr>") + "".join(cells) + "</tr>")
    out += ["</tbody>", "</table>"]
    return "\n".join(out)


def _flags_html(cell: str) -> str:
    head, sep, detail = cell.partition(": ")
    badges = "".join(f'<span class="flag flag-{_h(f)}">{_h(f)}</span>' for f in head.split(", ") if f)
    return badges + (f" {_h(detail)}" if sep else "")


def _dl(items: list[tuple[str, str]]) -> str:
    return "<dl>" + "".join(f"<dt>{_h(k)}</dt><dd>{_h(v)}</dd>" for k, v in items) + "</dl>"


def render_html(doc: Doc, chart_pngs: dict[str, bytes]) -> str:
    """report.html: inline CSS, charts as base64 data URIs, no external resource."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>sockbench report {_h(doc.get('run_id', ''))}</title>",
             f"<style>{CSS}</style></head><body>",
             f"<h1>sockbench report {_h(doc.get('run_id', ''))}</h1>", "<h2>Recommendation</h2>"]
    for mode, recs in analysis.recommendations(doc).items():
        parts.append(f"<h3>{_h(mode)}</h3><ul>" + "".join(f"<li>{_h(r.sentence)}</li>" for r in recs) + "</ul>")
    parts.append("<h2>Charts</h2>")
    for name, png in chart_pngs.items():
        data = base64.b64encode(png).decode("ascii")
        caption = CHART_CAPTIONS.get(name, name)
        parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{_h(caption)}">'
                     f"<figcaption>{_h(caption)}</figcaption></figure>")
    for mode in analysis.modes(doc):
        headers, rows = table(doc, mode)
        parts.append(f"<h2>{_h(mode)}</h2>")
        parts.append(_html_table(headers, rows, flags_col=len(headers) - 1, group_col=1))
        parts.append(f"<p>Throughput ratio to the best backend at each load ({_h(mode)}):</p>")
        parts.append(_html_table(*ratio_table(doc, mode)))
    parts.append("<h2>Caveats</h2><ul>" + "".join(f"<li>{_h(c)}</li>" for c in analysis.caveats(doc)) + "</ul>")
    parts.append("<h2>Environment</h2>" + _dl(environment_items(doc)))
    parts.append("<h2>Config</h2>" + _dl(config_items(doc)))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# -- entry points ----------------------------------------------------------------------------

def render_report(doc: Doc, out_dir: Path) -> dict[str, Path]:
    """Write ``charts/<name>.png``, ``report.md`` and ``report.html`` under ``out_dir``.

    Returns:
        ``{"report.md": path, "report.html": path, <chart name>: path, ...}``; chart names
        are those of ``bench.results.charts.CHARTS`` that had data (``broadcast`` only with
        broadcast runs that carry lost or out-of-order counts).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    chart_paths = charts.render_charts(doc, out_dir / "charts")
    md_path = out_dir / "report.md"
    md_path.write_text(render_markdown(doc, {n: p.relative_to(out_dir).as_posix()
                                             for n, p in chart_paths.items()}), encoding="utf-8")
    html_path = out_dir / "report.html"
    html_path.write_text(render_html(doc, {n: p.read_bytes() for n, p in chart_paths.items()}),
                         encoding="utf-8")
    return {"report.md": md_path, "report.html": html_path, **chart_paths}


# The summary table needs about this many columns; narrower consoles would fold every
# cell into several lines, so the table is drawn this wide and the terminal wraps it.
SUMMARY_WIDTH = 150


def summary_console() -> Console:
    """A console at least :data:`SUMMARY_WIDTH` columns wide, for :func:`print_summary`."""
    probe = Console()
    return Console(width=max(probe.width, SUMMARY_WIDTH))


def print_summary(doc: Doc, console: Console) -> None:
    """The per-mode tables and the recommendations, on the terminal. Run strings are
    printed as plain text, never interpreted as rich markup."""
    recommendations = analysis.recommendations(doc)
    for mode in analysis.modes(doc):
        headers, rows = table(doc, mode)
        t = Table(title=f"{mode}", title_style="bold", header_style="bold")
        for i, h in enumerate(headers):
            t.add_column(h, justify="left" if i in (0, len(headers) - 1) else "right",
                         overflow="fold")
        previous = None
        for row in rows:
            if previous is not None and row[1] != previous:
                t.add_section()          # a rule between user counts
            t.add_row(*(Text(c) for c in row))
            previous = row[1]
        console.print(t)
        for rec in recommendations[mode]:
            console.print(Text(f"  {rec.sentence}"))
        console.print()
