"""Pure parts of ``bench perf``: medians and ratios of the probes' values, and the tables.
No processes, no sockets: tested directly.

A result (``reports/perf-<time>.json``) holds ``values`` as :func:`bench.perf.probes.measure`
returns them (``{key: {server: [value per round]}}``), the ``sizes`` they were measured
at, the ``servers`` in column order, with ``bench perf --against`` also ``against``
(``{column: {"backend", "checkout"}}``: a backend as another checkout serves it) and,
when run, ``loadgen``: the load generator's own ceiling,
``{"conns": N, "rounds": [{"engine": rps, "locust": rps, "echoload": rps}, ...]}``.
"""

from __future__ import annotations

import statistics
from typing import Any, Iterable

CEILING = "ceiling"
UVLOOP_REFERENCE = "uvloop Protocol (bare)"
REFERENCES = (CEILING, UVLOOP_REFERENCE)


def median(values: Iterable[float | None]) -> float | None:
    """Median of the values that are not None; None when there are none."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is 0."""
    if a is None or not b:
        return None
    return a / b


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def medians(values: dict[str, dict[str, list[Any]]]) -> dict[str, dict[str, float | None]]:
    """``{key: {server: median over rounds}}`` (the ``errors`` notes are left out)."""
    return {key: {name: median(v) for name, v in by_name.items()}
            for key, by_name in values.items() if key != "errors"}


def flagship_rows(result: dict[str, Any]) -> list[list[str]]:
    """The table: one column per server (the flagship first), one row per figure.

    Ratios are of medians measured in the same run: to the C echo server (the physical
    limit), to the bare uvloop Protocol server, of a server's rate at ``many``
    connections to its own rate at ``few``, of p99 to the Little's-law mean
    (connections / rate) and, for broadcast, to the best other backend.
    """
    names: list[str] = result["servers"]
    sizes: dict[str, Any] = result["sizes"]
    med = medians(result.get("values", {}))

    def row(label: str, key: str, spec: str = ".2f", scale: float = 1.0) -> list[str]:
        m = med.get(key, {})
        return [label] + [fmt(None if m.get(n) is None else m[n] * scale, spec) for n in names]

    def ratio_row(label: str, key: str, to: str | None = None, key_to: str | None = None) -> list[str]:
        m, base = med.get(key, {}), med.get(key_to or key, {})
        return [label] + [fmt(ratio(m.get(n), base.get(to or n))) for n in names]

    few, many = sizes["few"], sizes["many"]
    rows = [["", *names]]
    if "echo" in med:
        rows.append(row(f"echo round trips/s, {few} conns", "echo", ",.0f"))
        if CEILING in names:
            rows.append(ratio_row("  x the C echo server (ceiling)", "echo", CEILING))
        if UVLOOP_REFERENCE in names:
            rows.append(ratio_row("  x bare uvloop Protocol", "echo", UVLOOP_REFERENCE))
        rows.append(row("  round trips per server CPU-second", "echo-cpu", ",.0f"))
        if UVLOOP_REFERENCE in names:
            rows.append(ratio_row("  x bare uvloop Protocol, per CPU-second", "echo-cpu", UVLOOP_REFERENCE))
        rows.append(row("  p99 ms", "p99", ".1f", 1e-3))
        rows.append(row("  p99 / Little's-law mean", "p99-mean"))
    if "many" in med:
        rows.append(row(f"echo round trips/s, {many:,} conns", "many", ",.0f"))
        rows.append(ratio_row(f"  x own rate at {few} conns", "many", key_to="echo"))
        rows.append(row("  p99 ms", "many-p99", ".1f", 1e-3))
        rows.append(row("  p99 / Little's-law mean", "many-p99-mean"))
    if "idle" in med:
        rows.append(row(f"server KiB per idle conn ({sizes['idle']:,} idle)", "idle", ".1f"))
    if "disconnect" in med:
        rows.append(row(f"worst round trip ms while {sizes['idle']:,} leave at once", "disconnect", ".0f"))
    if "broadcast" in med:
        fan = med["broadcast"]
        rows.append(row(f"broadcast lines/s, {sizes['fan_conns']} members, {sizes['fan_senders']} sending",
                        "broadcast", ",.0f"))
        # another checkout's column is the same backend: not an "other" of anyone's
        twins = {column: info["backend"] for column, info in result.get("against", {}).items()}

        def others(n: str) -> set[str]:
            return set(fan) - {n, twins.get(n, n)} - set(twins)

        best_other = {n: max((fan[o] for o in others(n) if fan[o] is not None), default=None) for n in names}
        rows.append(["  x best other backend"] + [fmt(ratio(fan.get(n), best_other[n])) for n in names])
    return rows


def loadgen_rows(loadgen: dict[str, Any]) -> list[list[str]]:
    """The load generator's own ceiling: each client's median rate against the same C
    echo server, and ratios per round (then their median)."""
    rounds = loadgen.get("rounds", [])

    def med(client: str) -> float | None:
        return median(r.get(client) for r in rounds)

    def per_round(a: str, b: str) -> float | None:
        return median(ratio(r.get(a), r.get(b)) for r in rounds)

    rows = [["client (one process, pinned)", "round trips/s", "x the engine alone", "x echoload"]]
    has_c = any(r.get("echoload") for r in rounds)
    for client, label in (("engine", "the engine alone"), ("locust", "Locust with the engine"),
                          ("echoload", "echoload (C reference client)")):
        if client == "echoload" and not has_c:
            continue
        rows.append([label, fmt(med(client), ",.0f"), fmt(per_round(client, "engine")),
                     fmt(per_round(client, "echoload")) if has_c else "-"])
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


def render(result: dict[str, Any], table=markdown) -> str:
    """The whole report: the facts of the run, the servers' table, the load generator's
    table, the skipped parts and any errors."""
    sizes = result.get("sizes", {})
    parts = [f"bench perf: {result.get('machine', '')}",
             f"open-files limit: {result.get('nofile', '?')}",
             f"{sizes.get('rounds', '?')} interleaved round(s), {sizes.get('seconds', '?')} s per load run, "
             "medians shown; ratios are between figures of this run", ""]
    if result.get("values"):
        parts += ["## Servers (native engine client, 64-byte lines)", "", table(flagship_rows(result)), ""]
    if result.get("loadgen"):
        lg = result["loadgen"]
        parts += [f"## Load generator, {lg.get('conns', 100)} echo connections against "
                  f"{lg.get('server', 'the C echo server')}", "", table(loadgen_rows(lg)), ""]
    for line in result.get("skipped", []):
        parts.append(f"- skipped: {line}")
    for name, notes in result.get("values", {}).get("errors", {}).items():
        parts.append(f"- {name}: " + "; ".join(sorted(set(notes))))
    return "\n".join(parts).rstrip() + "\n"
