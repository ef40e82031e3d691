"""Pure parts of ``bench perf``: medians, ratios measured in one run, the tables, and the
client's percentile over harvested buckets. (The benchmark itself is run on purpose,
never as a test; tests/test_perf_fresh_clone.py runs a small one end to end.)"""

from __future__ import annotations

import re

import pytest

from bench.perf.client import percentile
from bench.perf.table import (
    CEILING,
    UVLOOP_REFERENCE,
    flagship_rows,
    loadgen_rows,
    markdown,
    median,
    medians,
    plain,
    ratio,
    render,
)

SIZES = {"rounds": 3, "seconds": 3.0, "few": 100, "many": 10_000, "idle": 5_000, "window": 3.0,
         "fan_conns": 100, "fan_senders": 10}


def _result() -> dict:
    g, u, c, s = "gevent", UVLOOP_REFERENCE, CEILING, "select"
    values = {
        "echo": {g: [90_000, 100_000, None], u: [100_000, 125_000, 110_000], c: [200_000, 190_000, 210_000],
                 s: [80_000, 70_000, 75_000]},
        "echo-cpu": {g: [100_000], u: [125_000], c: [250_000], s: [90_000]},
        "p99": {g: [2_000], u: [1_500], c: [900], s: [3_000]},
        "p99-mean": {g: [1.6], u: [1.4], c: [1.2], s: [2.0]},
        "many": {g: [85_000, 80_000, 90_000], u: [99_000], c: [180_000], s: [None]},
        "many-p99": {g: [150_000], u: [120_000], c: [60_000], s: [None]},
        "many-p99-mean": {g: [1.3], u: [1.2], c: [1.1], s: [None]},
        "idle": {g: [2.5, 2.7, 2.6], s: [1.0]},
        "disconnect": {g: [20.0], s: [40.0]},
        "broadcast": {g: [6_000], s: [4_000]},
        "errors": {s: ["echo 10000: could not open 10,000 idle clients"]},
    }
    return {"servers": [g, u, c, s], "sizes": SIZES, "values": values, "machine": "test box",
            "nofile": "soft raised to the hard limit 20000",
            "skipped": ["the uvloop rows: uvloop is not installed"],
            "loadgen": {"conns": 100, "rounds": [{"engine": 100_000, "locust": 80_000, "echoload": 90_000},
                                                 {"engine": 120_000, "locust": 84_000, "echoload": 100_000}]}}


def _row(rows: list[list[str]], label: str) -> list[str]:
    return next(r for r in rows if r[0].strip() == label)


def test_median_and_ratio_ignore_missing_values() -> None:
    assert median([3, None, 1, 2]) == 2 and median([None]) is None
    assert ratio(50, 100) == 0.5 and ratio(None, 100) is None and ratio(5, 0) is None
    assert medians({"echo": {"a": [1, 3]}, "errors": {"a": ["x"]}}) == {"echo": {"a": 2}}


def test_flagship_rows_are_ratios_of_medians_of_the_same_run() -> None:
    rows = flagship_rows(_result())
    assert rows[0] == ["", "gevent", UVLOOP_REFERENCE, CEILING, "select"]
    # gevent's echo median is 95,000 (the failed round is left out); the ceiling's 200,000
    assert _row(rows, "echo round trips/s, 100 conns")[1:] == ["95,000", "110,000", "200,000", "75,000"]
    assert _row(rows, "x the C echo server (ceiling)")[1:] == ["0.47", "0.55", "1.00", "0.38"]
    assert _row(rows, "x bare uvloop Protocol")[1] == "0.86"
    assert _row(rows, "x bare uvloop Protocol, per CPU-second")[1] == "0.80"
    # the scale ratio is each server's rate at 10,000 over its own at 100
    assert _row(rows, "x own rate at 100 conns")[1:] == ["0.89", "0.90", "0.90", "-"]
    assert [r[1] for r in rows if r[0].strip() == "p99 ms"] == ["2.0", "150.0"]
    assert [r[1] for r in rows if r[0].strip() == "p99 / Little's-law mean"] == ["1.60", "1.30"]
    assert _row(rows, "server KiB per idle conn (5,000 idle)")[1:] == ["2.6", "-", "-", "1.0"]
    assert _row(rows, "worst round trip ms while 5,000 leave at once")[1:] == ["20", "-", "-", "40"]
    # broadcast: each backend against the best of the others
    assert _row(rows, "x best other backend")[1:] == ["1.50", "-", "-", "0.67"]


def test_another_checkouts_column_is_no_other_backend_in_broadcast() -> None:
    result = _result()
    twin = "gevent @ old"
    result["servers"] = ["gevent", twin, UVLOOP_REFERENCE, CEILING, "select"]
    result["against"] = {twin: {"backend": "gevent", "checkout": "/somewhere/old"}}
    for by_name in result["values"].values():
        if "gevent" in by_name:
            by_name[twin] = [v * 2 if isinstance(v, (int, float)) else v for v in by_name["gevent"]]
    rows = flagship_rows(result)
    assert rows[0][1:3] == ["gevent", twin]
    # both gevent columns against select only, and select against gevent (not its twin)
    assert _row(rows, "x best other backend")[1:] == ["1.50", "3.00", "-", "-", "0.67"]
    # every other ratio is per column, as for any server
    assert _row(rows, "x bare uvloop Protocol")[1:3] == ["0.86", "1.73"]


def test_flagship_rows_leave_out_what_was_not_measured() -> None:
    result = _result()
    result["servers"] = ["gevent", "select"]
    result["values"] = {k: v for k, v in result["values"].items() if k in ("echo", "echo-cpu", "p99", "p99-mean")}
    labels = [r[0].strip() for r in flagship_rows(result)]
    assert "x the C echo server (ceiling)" not in labels and "x bare uvloop Protocol" not in labels
    assert not any("10,000" in label or "idle" in label or "broadcast" in label for label in labels)
    assert "echo round trips/s, 100 conns" in labels


def test_loadgen_rows_state_locust_against_the_engine_and_echoload() -> None:
    rows = loadgen_rows(_result()["loadgen"])
    assert rows[0] == ["client (one process, pinned)", "round trips/s", "x the engine alone", "x echoload"]
    # medians of the per-round ratios: Locust 0.80 and 0.70 of the engine, 0.89 and 0.84 of echoload
    assert _row(rows, "Locust with the engine")[1:] == ["82,000", "0.75", "0.86"]
    assert _row(rows, "the engine alone")[1:] == ["110,000", "1.00", "1.16"]
    assert _row(rows, "echoload (C reference client)")[2:] == ["0.87", "1.00"]  # 0.90 and 0.83
    without_c = loadgen_rows({"rounds": [{"engine": 100.0, "locust": 50.0, "echoload": None}]})
    assert [r[0] for r in without_c[1:]] == ["the engine alone", "Locust with the engine"]
    assert _row(without_c, "Locust with the engine")[1:] == ["50", "0.50", "-"]


def test_render_states_figures_skips_and_errors_and_no_goals() -> None:
    text = render(_result())
    assert "open-files limit: soft raised to the hard limit 20000" in text
    assert "## Servers" in text and "## Load generator, 100 echo connections" in text
    assert "- skipped: the uvloop rows: uvloop is not installed" in text
    assert "- select: echo 10000: could not open 10,000 idle clients" in text
    # what a user reads speaks of measured figures, not of goals or issues
    assert not re.search(r"target|stretch|issue|#\d", render(_result(), table=plain), re.I)


def test_markdown_and_plain_tables() -> None:
    rows = [["a", "bb"], ["ccc", "d"]]
    assert markdown(rows) == "| a | bb |\n|---|---|\n| ccc | d |"
    assert plain(rows).splitlines() == ["a    bb", "ccc  d"]
    assert markdown([]) == plain([]) == ""


def test_percentile_over_harvested_buckets() -> None:
    buckets = [(100, 90), (1_000, 9), (50_000, 1), (100, 0)]
    assert percentile(buckets, 0.5) == 100
    assert percentile(buckets, 0.99) == 1_000
    assert percentile(buckets, 1.0) == 50_000
    # batches of the same bucket from two harvests add up
    assert percentile([(5, 1), (7, 2), (5, 2)], 0.5) == 5
    assert percentile([], 0.99) is None
