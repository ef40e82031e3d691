"""Pure parts of ``bench perf``: parsing the C clients' output, summarising repeated
measurements, and rendering the tables. No processes, no sockets: tested directly.

A measurement is a dict, as the C tools print it (``echoload``: rps, p50_us, p99_us...;
``fanload``: lines_per_s, deliveries_per_s, p99_us...), plus what ``bench perf`` adds:
``server_cpu_s`` (CPU seconds the server used during the run) and, for the scale
runs, ``rss_base_kib``, ``rss_idle_kib`` and ``rss_active_kib``.
"""

from __future__ import annotations

import json
import statistics
from typing import Any, Iterable

# Ratio targets of issue 7, shown next to the figures (a benchmark states, never asserts).
ECHO_TARGET = 0.5  # gevent vs the C ceiling, 100 connections, 64-byte lines
BROADCAST_TARGET = 2.0  # gevent vs threading, lines relayed per second, fanload 100 10
# The stretch target's reference server in the echo table (see bench/perf/uvloop_echo.py).
UVLOOP_REFERENCE = "uvloop Protocol (bare)"


class ToolOutputError(ValueError):
    """A C client printed something that is not its one-line JSON result."""


def parse_tool_output(stdout: str) -> dict[str, Any]:
    """The JSON object on the last non-empty line of a C tool's stdout.

    Raises:
        ToolOutputError: no line, or not a JSON object.
    """
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        raise ToolOutputError("no output")
    try:
        value = json.loads(lines[-1])
    except json.JSONDecodeError as exc:
        raise ToolOutputError(f"not JSON: {lines[-1][:80]!r}") from exc
    if not isinstance(value, dict):
        raise ToolOutputError(f"not a JSON object: {lines[-1][:80]!r}")
    return value


def cpu_capacity(run: dict[str, Any]) -> float | None:
    """Round trips (or lines) per second of *server CPU*: what the server would do with
    a whole core to itself. Robust when other processes share the machine, since the
    CPU time the server did get is what it is divided by."""
    cpu = run.get("server_cpu_s")
    count = run.get("round_trips")
    if count is None and "lines_per_s" in run:
        count = run["lines_per_s"] * run.get("seconds", 0)
    if not cpu or not count:
        return None
    return count / cpu


def summarise(runs: Iterable[dict[str, Any]], key: str) -> dict[str, Any]:
    """Best and median of ``key`` over repeated runs, and the median CPU capacity.

    Best-of is the throughput estimate (noise from other processes only ever lowers
    a closed-loop figure); the median of the rest shows the spread.
    """
    runs = [r for r in runs if r.get(key) is not None]
    if not runs:
        return {"best": None, "median": None, "capacity": None, "runs": 0}
    values = [r[key] for r in runs]
    best_run = max(runs, key=lambda r: r[key])
    capacities = [c for c in (cpu_capacity(r) for r in runs) if c]
    return {
        "best": max(values),
        "median": statistics.median(values),
        "capacity": statistics.median(capacities) if capacities else None,
        "p99_us": best_run.get("p99_us"),
        "runs": len(runs),
    }


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is 0."""
    if a is None or not b:
        return None
    return a / b


def per_connection_kib(run: dict[str, Any], which: str, conns: int) -> float | None:
    """Resident memory per connection: (RSS ``which`` - RSS before any client) / conns."""
    base, value = run.get("rss_base_kib"), run.get(f"rss_{which}_kib")
    if base is None or value is None or conns <= 0:
        return None
    return max(0.0, (value - base) / conns)


def _fmt(value: float | None, spec: str = ",.0f", suffix: str = "") -> str:
    return "-" if value is None else format(value, spec) + suffix


def echo_table(echo: dict[str, list[dict[str, Any]]], ceiling: str = "ceiling") -> list[list[str]]:
    """Rows for echo at a fixed connection count, each server against the ceiling."""
    base = summarise(echo.get(ceiling, []), "rps")
    rows = [["server", "best rps", "x ceiling", "CPU-capacity rps", "x ceiling (CPU)", "p99 us"]]
    for name, runs in echo.items():
        s = summarise(runs, "rps")
        rows.append([name, _fmt(s["best"]), _fmt(ratio(s["best"], base["best"]), ".2f"),
                     _fmt(s["capacity"]), _fmt(ratio(s["capacity"], base["capacity"]), ".2f"),
                     _fmt(s.get("p99_us"))])
    return rows


def scale_table(scale: dict[str, dict[str, dict[str, Any]]]) -> list[list[str]]:
    """Rows for the 1k/10k runs: backend -> str(conns) -> one run (or an error)."""
    rows = [["server", "conns", "rps", "p99 us", "KiB/conn idle", "KiB/conn active", "note"]]
    for name, by_conns in scale.items():
        for conns, run in by_conns.items():
            n = int(conns)
            rows.append([name, f"{n:,}", _fmt(run.get("rps")), _fmt(run.get("p99_us")),
                         _fmt(per_connection_kib(run, "idle", n), ".1f"),
                         _fmt(per_connection_kib(run, "active", n), ".1f"),
                         run.get("error", "")])
    return rows


def broadcast_table(fan: dict[str, list[dict[str, Any]]], base: str = "threading") -> list[list[str]]:
    """Rows for fanload: lines relayed per second, each backend against ``base``."""
    ref = summarise(fan.get(base, []), "lines_per_s")
    rows = [["server", "best lines/s", f"x {base}", "deliveries/s", "CPU-capacity lines/s",
             f"x {base} (CPU)", "p99 us"]]
    for name, runs in fan.items():
        s = summarise(runs, "lines_per_s")
        best = max(runs, key=lambda r: r.get("lines_per_s") or 0) if runs else {}
        rows.append([name, _fmt(s["best"]), _fmt(ratio(s["best"], ref["best"]), ".2f"),
                     _fmt(best.get("deliveries_per_s")), _fmt(s["capacity"]),
                     _fmt(ratio(s["capacity"], ref["capacity"]), ".2f"), _fmt(s.get("p99_us"))])
    return rows


def markdown(rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table; the first row is the header."""
    if not rows:
        return ""
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join("---" for _ in rows[0]) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows[1:]]
    return "\n".join(out)


def plain(rows: list[list[str]]) -> str:
    """A fixed-width text table for the terminal."""
    if not rows:
        return ""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def verdicts(result: dict[str, Any]) -> list[str]:
    """One line per issue-7 target, stating the measured figure (never asserting)."""
    lines = []
    echo = result.get("echo", {})
    if "ceiling" in echo and "gevent" in echo:
        c, g = summarise(echo["ceiling"], "rps"), summarise(echo["gevent"], "rps")
        lines.append(f"gevent / ceiling, echo {result.get('echo_conns', 100)} conns: "
                     f"{_fmt(ratio(g['best'], c['best']), '.2f')} by best rps, "
                     f"{_fmt(ratio(g['capacity'], c['capacity']), '.2f')} by CPU capacity "
                     f"(target >= {ECHO_TARGET})")
        fastest = max((n for n in echo if n not in ("ceiling", UVLOOP_REFERENCE)),
                      key=lambda n: summarise(echo[n], "rps")["capacity"] or 0, default=None)
        if fastest and UVLOOP_REFERENCE in echo:
            u = summarise(echo[UVLOOP_REFERENCE], "rps")
            f = summarise(echo[fastest], "rps")
            lines.append(f"stretch: fastest backend by CPU capacity is {fastest}: "
                         f"{_fmt(ratio(f['capacity'], u['capacity']), '.2f')} x the bare uvloop "
                         f"Protocol server by CPU capacity, {_fmt(ratio(f['best'], u['best']), '.2f')} "
                         "by best rps (target 1.0)")
    fan = result.get("broadcast", {})
    if "gevent" in fan and "threading" in fan:
        g, t = summarise(fan["gevent"], "lines_per_s"), summarise(fan["threading"], "lines_per_s")
        lines.append(f"broadcast gevent / threading, lines/s: {_fmt(ratio(g['best'], t['best']), '.2f')} "
                     f"(target >= {BROADCAST_TARGET})")
    return lines


def render(result: dict[str, Any], table=markdown) -> str:
    """The whole report: header facts, the three tables, the verdict lines."""
    parts = [f"bench perf: {result.get('machine', '')}",
             f"open-files limit: {result.get('nofile', '?')}", ""]
    if result.get("echo"):
        parts += [f"## Echo, {result.get('echo_conns', 100)} connections, "
                  f"{result.get('size', 64)}-byte lines", "", table(echo_table(result["echo"])), ""]
    if result.get("scale"):
        parts += ["## Many connections (echo)", "", table(scale_table(result["scale"])), ""]
    if result.get("broadcast"):
        parts += [f"## Broadcast, fanload {result.get('fan_conns', 100)} {result.get('fan_senders', 10)}",
                  "", table(broadcast_table(result["broadcast"])), ""]
    if result.get("loadgen"):
        parts += ["## Load generator ceiling (same server, same run)", "",
                  table([["client", "rps"]] + [[k, _fmt(v)] for k, v in result["loadgen"].items()]), ""]
    parts += [f"- {line}" for line in verdicts(result)]
    return "\n".join(parts).rstrip() + "\n"
