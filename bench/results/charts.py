"""PNG charts of a results document, one function ``(doc, path) -> Path`` per chart.

Drawn on ``matplotlib.figure.Figure`` with the Agg canvas: no pyplot, no global state,
no display. Conventions that hold in every chart, so a reader learns them once:

- a backend keeps its colour and marker across charts (the config's backend order);
- the x axis is users (= open connections), log scale, ticked at the measured counts;
- a large black-edged hollow square around a point marks it load-generator-bound (the
  generator, not the server, was the limit: its throughput is only a lower bound), a red X marks a point with more
  than 1 % failures; both are explained in the legend;
- runs with an ``error`` are not drawn (the tables list them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from bench.results import analysis
from bench.results.schema import Doc, Run


# Colour-blind-safe (Okabe-Ito) colours and distinct markers, in backend order.
COLORS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#000000")
MARKERS = ("o", "s", "^", "D", "v", "P", "*", "h")
DPI = 110
# Legends sit outside the axes, right of the plot, so they never hide a point.
LEGEND = {"fontsize": 8, "loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "borderaxespad": 0.0}


def _style(doc: Doc) -> dict[str, tuple[str, str]]:
    return {b: (COLORS[i % len(COLORS)], MARKERS[i % len(MARKERS)])
            for i, b in enumerate(analysis.backends(doc))}


def _new_figure(ncols: int) -> Figure:
    fig = Figure(figsize=(7.6 * ncols, 4.6), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _users_axis(ax, users: list[int]) -> None:
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(users))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.set_xlabel("users (concurrent connections, log scale)")
    if users:
        ax.set_xlim(min(users) / 1.6, max(users) * 1.6)
    ax.grid(True, which="major", alpha=0.3)


def _si(v: float, _pos: Any = None) -> str:
    for div, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:g}{suffix}"
    return f"{v:g}"


def _us_ticks(v: float, _pos: Any = None) -> str:
    return f"{v:,.0f}" if v >= 1 else f"{v:g}"


def _flag_markers(ax, points: list[tuple[float, float, Run]]) -> None:
    """Overlay the generator-bound and failing markers on (x, y, run) points."""
    for x, y, run in points:
        if analysis.is_generator_bound(run):
            ax.plot([x], [y], linestyle="none", marker="s", markersize=15, markerfacecolor="none",
                    markeredgecolor="black", markeredgewidth=1.8, zorder=5)
        if analysis.is_failing(run):
            ax.plot([x], [y], linestyle="none", marker="X", markersize=11, color="red",
                    markeredgecolor="white", zorder=6)


def _flag_legend_handles(runs: list[Run]) -> list[Line2D]:
    handles = []
    if any(analysis.is_generator_bound(r) for r in runs):
        handles.append(Line2D([], [], linestyle="none", marker="s", markersize=12, markerfacecolor="none",
                              markeredgecolor="black", markeredgewidth=1.8,
                              label="load-generator-bound\n(server was not the limit)"))
    if any(analysis.is_failing(r) for r in runs):
        handles.append(Line2D([], [], linestyle="none", marker="X", markersize=10, color="red",
                              label=f"failing (> {analysis.FAILURE_TOLERANCE:.0%} failures\nor users left unserved)"))
    return handles


def _series(doc: Doc, mode: str, value: Callable[[Run], float | None],
            positive: bool) -> dict[str, list[tuple[float, float, Run]]]:
    """{backend: [(users, value, run)]} skipping errored runs and missing values
    (and values <= 0 when the axis is logarithmic)."""
    out: dict[str, list[tuple[float, float, Run]]] = {}
    for backend, per_users in analysis.group_runs(doc).get(mode, {}).items():
        pts = []
        for users, run in per_users.items():
            if analysis.has_error(run):
                continue
            v = value(run)
            if v is None or (positive and v <= 0):
                continue
            pts.append((users, float(v), run))
        out[backend] = pts
    return out


def _plot_series(ax, doc: Doc, mode: str, value: Callable[[Run], float | None], *,
                 log_y: bool, linestyle: str = "-", label_suffix: str = "",
                 style: dict[str, tuple[str, str]] | None = None) -> list[Run]:
    style = style or _style(doc)
    drawn: list[Run] = []
    for backend, pts in _series(doc, mode, value, positive=log_y).items():
        if not pts:
            continue
        color, marker = style[backend]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        ax.plot(xs, ys, linestyle=linestyle, marker=marker, color=color, linewidth=2, markersize=7,
                label=f"{backend}{label_suffix}")
        _flag_markers(ax, pts)
        drawn.extend(p[2] for p in pts)
    return drawn


def _empty(ax, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=12, color="gray")


def _finish(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI)
    return path


def _legend(ax, runs: list[Run], extra: list[Line2D] | None = None) -> None:
    handles, labels = ax.get_legend_handles_labels()
    more = (extra or []) + _flag_legend_handles(runs)
    if handles or more:
        ax.legend(handles + more, labels + [h.get_label() for h in more], **LEGEND)


def throughput_chart(doc: Doc, path: Path) -> Path:
    """Throughput vs users, one line per backend, one panel per mode (echo: round trips/s,
    linear y from 0; broadcast: deliveries/s, log y since it grows with users²)."""
    mode_list = analysis.modes(doc)
    fig = _new_figure(len(mode_list))
    for i, mode in enumerate(mode_list):
        ax = fig.add_subplot(1, len(mode_list), i + 1)
        broadcast = mode == "broadcast"
        drawn = _plot_series(ax, doc, mode, lambda r: r.get("rps"), log_y=broadcast)
        _users_axis(ax, analysis.user_counts(doc, mode))
        if broadcast:
            ax.set_yscale("log")
            ax.set_ylabel("deliveries per second (log scale)")
            ax.set_title("broadcast: deliveries/s vs users (higher is better)")
        else:
            ax.set_ylim(bottom=0)
            ax.set_ylabel("round trips per second")
            ax.set_title(f"{mode}: throughput vs users (higher is better)")
        ax.yaxis.set_major_formatter(FuncFormatter(_si))
        if not drawn:
            _empty(ax)
        _legend(ax, drawn)
    return _finish(fig, path)


def _latency_panel(ax, doc: Doc, mode: str, title: str) -> None:
    style = _style(doc)
    drawn = _plot_series(ax, doc, mode, lambda r: (r.get("latency_us") or {}).get("p50"),
                         log_y=True, linestyle="-", style=style)
    drawn_p99 = _plot_series(ax, doc, mode, lambda r: (r.get("latency_us") or {}).get("p99"),
                             log_y=True, linestyle="--", label_suffix="_p99", style=style)
    # Backends appear once in the legend (by colour); the line style says the percentile.
    handles = [Line2D([], [], color=style[b][0], marker=style[b][1], linewidth=2, label=b)
               for b in analysis.backends(doc, mode)
               if any(r["backend"] == b for r in drawn + drawn_p99)]
    handles += [Line2D([], [], color="dimgray", linestyle="-", linewidth=2, label="p50 (solid)"),
                Line2D([], [], color="dimgray", linestyle="--", linewidth=2, label="p99 (dashed)")]
    handles += _flag_legend_handles(drawn + drawn_p99)
    _users_axis(ax, analysis.user_counts(doc, mode))
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(_us_ticks))
    ax.set_ylabel("latency, µs (log scale)")
    ax.set_title(title)
    if not drawn + drawn_p99:
        _empty(ax)
    ax.legend(handles=handles, **LEGEND)


def latency_chart(doc: Doc, path: Path) -> Path:
    """p50 (solid) and p99 (dashed) latency in µs vs users, log y, one panel per mode."""
    mode_list = analysis.modes(doc)
    fig = _new_figure(len(mode_list))
    for i, mode in enumerate(mode_list):
        ax = fig.add_subplot(1, len(mode_list), i + 1)
        what = "delivery latency" if mode == "broadcast" else "round-trip latency"
        _latency_panel(ax, doc, mode, f"{mode}: {what} vs users (lower is better)")
    return _finish(fig, path)


def memory_chart(doc: Doc, path: Path) -> Path:
    """Server memory per connection (KiB, ``server.rss_per_conn_bytes``) vs users, one line
    per backend and one panel per mode; points without a per-connection figure are skipped."""
    mode_list = analysis.modes(doc)
    fig = _new_figure(len(mode_list))
    for i, mode in enumerate(mode_list):
        ax = fig.add_subplot(1, len(mode_list), i + 1)
        drawn = _plot_series(ax, doc, mode,
                             lambda r: _kib((r.get("server") or {}).get("rss_per_conn_bytes")),
                             log_y=False)
        _users_axis(ax, analysis.user_counts(doc, mode))
        ax.set_ylim(bottom=0)
        ax.set_ylabel("server RSS per connection, KiB")
        ax.set_title(f"{mode}: memory per connection (lower is better)")
        if not drawn:
            _empty(ax, "no per-connection memory figures")
        _legend(ax, drawn)
    return _finish(fig, path)


def _kib(n: float | None) -> float | None:
    return None if n is None else n / 1024


def _has_delivery_counts(run: Run) -> bool:
    return run["mode"] == "broadcast" and (run.get("lost") is not None or run.get("out_of_order") is not None)


def broadcast_chart(doc: Doc, path: Path) -> Path:
    """Broadcast only: lines lost (solid) and lines delivered out of order (dotted) vs
    users, one colour per backend, linear y from 0: what the throughput and latency
    charts cannot show, whether each backend delivered every line, in order."""
    fig = _new_figure(1)
    ax = fig.add_subplot(1, 1, 1)
    style = _style(doc)
    drawn = _plot_series(ax, doc, "broadcast", lambda r: r.get("lost"), log_y=False, style=style)
    drawn_ooo = _plot_series(ax, doc, "broadcast", lambda r: r.get("out_of_order"), log_y=False,
                             linestyle=":", label_suffix=" out of order", style=style)
    _users_axis(ax, analysis.user_counts(doc, "broadcast") or [1])
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(FuncFormatter(_si))
    ax.set_ylabel("lines (in the measured windows)")
    ax.set_title("broadcast: lines lost and out of order vs users (lower is better)")
    handles = [Line2D([], [], color=style[b][0], marker=style[b][1], linewidth=2, label=b)
               for b in analysis.backends(doc, "broadcast")
               if any(r["backend"] == b for r in drawn + drawn_ooo)]
    handles.append(Line2D([], [], color="dimgray", linestyle="-", linewidth=2, label="lost (solid)"))
    if drawn_ooo:
        handles.append(Line2D([], [], color="dimgray", linestyle=":", linewidth=2, label="out of order (dotted)"))
    handles += _flag_legend_handles(drawn + drawn_ooo)
    if not drawn + drawn_ooo:
        _empty(ax)
    elif not any(r.get("lost") for r in drawn) and not any(r.get("out_of_order") for r in drawn_ooo):
        ax.set_ylim(0, 1)
        _empty(ax, "every line delivered, in order")
    ax.legend(handles=handles, **LEGEND)
    return _finish(fig, path)


CHARTS: dict[str, Callable[[Doc, Path], Path]] = {
    "throughput": throughput_chart,
    "latency": latency_chart,
    "memory": memory_chart,
    "broadcast": broadcast_chart,
}


def render_charts(doc: Doc, charts_dir: Path) -> dict[str, Path]:
    """Draw every chart that has data into ``charts_dir``; ``{name: path}`` in CHARTS order.
    The broadcast chart is drawn only when broadcast runs carry lost or out-of-order counts."""
    out = {}
    for name, draw in CHARTS.items():
        if name == "broadcast" and not any(_has_delivery_counts(r) for r in doc["runs"]):
            continue
        out[name] = draw(doc, Path(charts_dir) / f"{name}.png")
    return out
