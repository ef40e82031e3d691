"""Reports of a results document: ``report.md``, a self-contained ``report.html`` and a
terminal summary, all from the same sentences (:mod:`bench.results.analysis`) and rows
(:mod:`bench.results.tables`).

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
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from bench.results import analysis, charts
from bench.results.schema import Results
from bench.results.tables import clean as _clean
from bench.results.tables import config_items, environment_items, locust_links, memory_table, table


# -- markdown --------------------------------------------------------------------------------

def _md(text: Any) -> str:
    return (_clean(text).replace("&", "&amp;").replace("<", "&lt;").replace("|", "\\|")
            .replace("\r", " ").replace("\n", " "))


def _md_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(_md(h) for h in headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return out + ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]


def render_markdown(doc: Results, chart_files: dict[str, str]) -> str:
    """report.md; ``chart_files`` maps chart names to paths relative to the report."""
    lines = [f"# sockbench report {_md(doc.run_id)}", "", "## Which model for which case", ""]
    lines += [f"- {_md(a)}" for a in analysis.answers(doc)] + [""]
    lines += ["## At each load", ""]
    for mode, sentences in analysis.verdicts(doc).items():
        lines += [f"**{_md(mode)}**", ""] + [f"- {_md(s)}" for s in sentences] + [""]
    lines += ["## Charts", ""]
    for name, rel in chart_files.items():
        lines += [f"![{charts.CHARTS[name][1]}]({rel})", ""]
    for mode in doc.modes():
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
.flag-pick{background:#d9f2e3}.flag-tie{background:#e3e9f7}.flag-generator-bound{background:#fff0c2}
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


def render_html(doc: Results, chart_pngs: dict[str, bytes]) -> str:
    """report.html: inline CSS, charts as base64 data URIs, no external resource."""
    title = f"sockbench report {doc.run_id}"
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
    for mode in doc.modes():
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

def render_report(doc: Results, out_dir: Path) -> dict[str, Path]:
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


def print_summary(doc: Results, console: Console) -> None:
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
