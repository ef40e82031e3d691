"""PNG charts of a results document, one per question, each readable without the tables.

One function ``(doc, path) -> Path`` per chart, listed in :data:`CHARTS` with its caption.
Drawn on ``matplotlib.figure.Figure`` with the Agg canvas: no pyplot, no global state.
Conventions that hold in every chart:

- a backend keeps its colour and marker across charts (the config's backend order);
- the x axis is connections, log scale, ticked at the measured counts;
- a point that may not rank is drawn hollow, with a grey ring for *disturbed*, a black
  square for *load-generator-bound* and a red X for *failing* (the legend says which);
- error bars show the range of the repeats; points that did not run are not drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from bench.results import analysis
from bench.results.figures import per_request, set_rate_disturbed, slo_disturbed, unit
from bench.results.formatting import fmt_rate, fmt_us
from bench.results.schema import Results
from bench.results.summary import Point, Samples

COLORS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#000000")
MARKERS = ("o", "s", "^", "D", "v", "P", "*", "h")
DPI = 100
LEGEND = {"fontsize": 8, "loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "borderaxespad": 0.0}
# Room on the right of each plot for its legend (a fixed layout: the constrained layout
# engine costs seconds per chart on a busy 2-core machine).
LEGEND_ROOM = 2.4  # inches
PLOT_WIDTH = 5.6   # inches
MARKS = {  # flag label -> how it is drawn over a point
    "disturbed": {"marker": "o", "markersize": 16, "markerfacecolor": "none", "markeredgecolor": "gray",
                  "markeredgewidth": 2.0},
    "generator-bound": {"marker": "s", "markersize": 15, "markerfacecolor": "none",
                        "markeredgecolor": "black", "markeredgewidth": 1.8},
    "failing": {"marker": "X", "markersize": 11, "color": "red", "markeredgecolor": "white"},
    "too few lines": {"marker": "d", "markersize": 14, "markerfacecolor": "none",
                      "markeredgecolor": "purple", "markeredgewidth": 1.5},
}

Value = Callable[[Point], "tuple[float, float, float] | None"]  # (value, lo, hi) or None
Labels = Callable[[Point], list[str]]  # the marks drawn over a point


def _style(doc: Results) -> dict[str, tuple[str, str]]:
    return {b: (COLORS[i % len(COLORS)], MARKERS[i % len(MARKERS)]) for i, b in enumerate(doc.backends())}


def _figure(ncols: int) -> Figure:
    width = ncols * (PLOT_WIDTH + LEGEND_ROOM)
    fig = Figure(figsize=(width, 4.4), dpi=DPI)
    fig.subplots_adjust(left=0.9 / width, right=1 - LEGEND_ROOM / width, bottom=0.17, top=0.86,
                        wspace=(LEGEND_ROOM + 0.9) / PLOT_WIDTH)
    FigureCanvasAgg(fig)
    return fig


def _si(v: float, _pos: Any = None) -> str:
    for div, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:g}{suffix}"
    return f"{v:g}"


def _log_y(ax, fmt: Callable[[float], str]) -> None:
    """A log y axis labelled by ``fmt``. On an axis spanning less than a decade matplotlib
    labels minor ticks in its own notation ("6x10^1"); here they read as the major ones do,
    at 2 and 5 only, so that they do not crowd."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt(v)))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: fmt(v) if _leading_digit(v) in (2, 5) else ""))


def _leading_digit(v: float) -> int:
    return int(f"{v:.0e}"[0]) if v > 0 else 0


def _users_axis(ax, users: list[int]) -> None:
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(users))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.set_xlabel("connections (log scale)")
    if users:
        ax.set_xlim(min(users) / 1.6, max(users) * 1.6)
    ax.grid(True, which="major", alpha=0.3)


def _plot(ax, doc: Results, mode: str, value: Value, style: dict[str, tuple[str, str]],
          labels_of: Labels = analysis.flag_labels) -> set[str]:
    """One line per backend over the connection counts; returns the flag labels drawn."""
    marks: set[str] = set()
    for backend in doc.backends(mode):
        xs, ys, lo, hi = [], [], [], []
        flagged = []
        for users in doc.user_counts(mode):
            p = doc.point(mode, users, backend)
            if p is None or p.error:
                continue
            v = value(p)
            if v is None or v[0] <= 0:
                continue
            xs.append(users)
            ys.append(v[0])
            lo.append(max(0.0, v[0] - v[1]))
            hi.append(max(0.0, v[2] - v[0]))
            labels = labels_of(p)
            if labels:
                flagged.append((users, v[0], labels))
        if not xs:
            continue
        color, marker = style[backend]
        ax.errorbar(xs, ys, yerr=[lo, hi], linestyle="-", marker=marker, color=color, linewidth=2,
                    markersize=7, capsize=3, label=backend)
        for x, y, labels in flagged:
            for label in labels:
                ax.plot([x], [y], linestyle="none", zorder=5, **MARKS[label])
                marks.add(label)
    return marks


def _legend(ax, marks: set[str]) -> None:
    handles, labels = ax.get_legend_handles_labels()
    names = {"disturbed": "disturbed (not ranked)", "generator-bound": "load-generator-bound (not ranked)",
             "failing": "failing (not ranked)", "too few lines": "too few lines (not ranked)"}
    for label in sorted(marks):
        handles.append(Line2D([], [], linestyle="none", label=names[label], **MARKS[label]))
    if handles:
        ax.legend(handles=handles, **LEGEND)
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="gray")


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI)
    return path


def _summary_value(samples: Callable[[Point], Samples]) -> Value:
    def value(p: Point) -> tuple[float, float, float] | None:
        s = samples(p)
        if not s.median or s.lo is None or s.hi is None:
            return None
        return float(s.median), float(s.lo), float(s.hi)
    return value


def _per_mode(doc: Results, path: Path, samples: Callable[[Point], Samples], ylabel: str, title: str,
              log_y: bool) -> Path:
    modes = doc.modes()
    fig = _figure(len(modes))
    style = _style(doc)
    for i, mode in enumerate(modes):
        ax = fig.add_subplot(1, len(modes), i + 1)
        marks = _plot(ax, doc, mode, _summary_value(samples), style)
        _users_axis(ax, doc.user_counts(mode))
        if log_y:
            _log_y(ax, _si)
        else:
            ax.yaxis.set_major_formatter(FuncFormatter(_si))
        ax.set_ylabel(ylabel.format(unit=unit(mode), per=per_request(mode)))
        ax.set_title(f"{mode}: {title}")
        _legend(ax, marks)
    return _save(fig, path)


def capacity_chart(doc: Results, path: Path) -> Path:
    return _per_mode(doc, path, lambda p: p.capacity, "{unit} (closed loop)", "capacity vs connections (higher is better)",
                     log_y=False)


def cost_chart(doc: Results, path: Path) -> Path:
    return _per_mode(doc, path, lambda p: p.cost_us, "server CPU µs {per}", "server CPU per request (lower is better)",
                     log_y=True)


def _with_disturbed(disturbed: Callable[[Point], bool]) -> Labels:
    """The point's flags, plus "disturbed" when the question's own windows were."""
    def labels(p: Point) -> list[str]:
        out = analysis.flag_labels(p)
        return out + ["disturbed"] if disturbed(p) and "disturbed" not in out else out
    return labels


def set_rate_chart(doc: Results, path: Path) -> Path:
    fig = _figure(1)
    ax = fig.add_subplot(1, 1, 1)

    def value(p: Point) -> tuple[float, float, float] | None:
        sr = p.set_rate
        if not sr or not sr.p99:
            return None
        return float(sr.p99), float(sr.p99_lo), float(sr.p99_hi)

    marks = _plot(ax, doc, "echo", value, _style(doc), _with_disturbed(set_rate_disturbed))
    users = doc.user_counts("echo")
    _users_axis(ax, users)
    _log_y(ax, fmt_us)
    ax.set_ylabel("p99 round trip at the set rate")
    rates = []
    for u in users:
        r = next((p.set_rate.offered_per_s for p in doc.points_at("echo", u) if p.set_rate), None)
        if r:
            rates.append(f"{u}: {fmt_rate(r)}/s")
    ax.set_title("echo: p99 at one offered rate per connection count (lower is better)\nrates: " + ", ".join(rates),
                 fontsize=10)
    _legend(ax, marks)
    return _save(fig, path)


def memory_chart(doc: Results, path: Path) -> Path:
    """Bars: server memory per connection (RSS slope), idle and active, per backend."""
    fig = _figure(1)
    ax = fig.add_subplot(1, 1, 1)
    series = [("echo", "idle", "idle (echo, one round trip each)"), ("echo", "active", "active (echo capacity)"),
              ("broadcast", "active", "active (broadcast capacity)")]
    names = doc.backends()
    width = 0.8 / len(series)
    drawn = False
    spans = set()
    for i, (mode, kind, label) in enumerate(series):
        xs, ys = [], []
        for j, b in enumerate(names):
            s = analysis.memory_slope(doc, mode, b, kind)
            if s is not None:
                xs.append(j + (i - (len(series) - 1) / 2) * width)
                ys.append(max(0.0, s.bytes_per_conn) / 1024)
                spans.add(f"{s.lo}→{s.hi}")
        if xs:
            ax.bar(xs, ys, width=width, label=label, color=COLORS[i])
            drawn = True
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=20)
    ax.set_ylabel("KiB per connection")
    ax.set_title("memory per connection: RSS slope over " + (", ".join(sorted(spans)) or "–")
                 + " connections (lower is better)", fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    if drawn:
        ax.legend(**LEGEND)
    else:
        ax.text(0.5, 0.5, "needs two connection counts >= 10, at least 90 apart", ha="center", va="center",
                transform=ax.transAxes, color="gray")
    return _save(fig, path)


def slo_chart(doc: Results, path: Path) -> Path:
    fig = _figure(1)
    ax = fig.add_subplot(1, 1, 1)

    def value(p: Point) -> tuple[float, float, float] | None:
        held = p.slo.held_deliveries_per_s if p.slo else None
        return (float(held), float(held), float(held)) if held else None

    marks = _plot(ax, doc, "broadcast", value, _style(doc), _with_disturbed(slo_disturbed))
    _users_axis(ax, doc.user_counts("broadcast"))
    _log_y(ax, _si)
    ms = doc.config.slo_ms
    ax.set_ylabel(f"deliveries/s held at p99 ≤ {ms:g} ms")
    ax.set_title(f"broadcast: highest room rate with p99 ≤ {ms:g} ms and no line lost (higher is better)",
                 fontsize=10)
    _legend(ax, marks)
    return _save(fig, path)


# name -> (draw, caption, which mode it needs)
CHARTS: dict[str, tuple[Callable[[Results, Path], Path], str, str | None]] = {
    "capacity": (capacity_chart, "Capacity vs connections (closed loop; bars: range of the repeats)", None),
    "latency": (set_rate_chart, "Echo p99 at one offered rate per connection count", "echo"),
    "cost": (cost_chart, "Server CPU µs per request (round trip or delivery)", None),
    "memory": (memory_chart, "Server memory per connection (RSS slope), idle and active", None),
    "slo": (slo_chart, "Broadcast: highest rate held at the latency target", "broadcast"),
}


def render_charts(doc: Results, charts_dir: Path) -> dict[str, Path]:
    """Draw every chart whose mode is in the run; ``{name: path}`` in :data:`CHARTS` order."""
    present = set(doc.modes())
    return {name: draw(doc, Path(charts_dir) / f"{name}.png")
            for name, (draw, _caption, mode) in CHARTS.items() if mode is None or mode in present}
