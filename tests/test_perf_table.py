"""Pure parts of ``bench perf``: parsing the C clients' JSON, summaries, ratios, tables.
(The benchmark itself is run on purpose, never as a test.)"""

from __future__ import annotations

import pytest

from bench.perf.run import ToolsMissing, find_tools
from bench.perf.table import (
    ToolOutputError,
    broadcast_table,
    cpu_capacity,
    echo_table,
    markdown,
    parse_tool_output,
    per_connection_kib,
    plain,
    ratio,
    render,
    scale_table,
    summarise,
    verdicts,
)

ECHOLOAD_LINE = ('{"conns":100,"size":64,"seconds":3.00,"round_trips":300000,"rps":100000,'
                 '"p50_us":900,"p99_us":2100,"p999_us":4000,"max_us":9000,"errors":0}\n')


def test_parse_tool_output_takes_the_last_json_line() -> None:
    run = parse_tool_output("some warning\n" + ECHOLOAD_LINE + "\n")
    assert run["rps"] == 100000 and run["p99_us"] == 2100


@pytest.mark.parametrize("text", ["", "\n\n", "not json\n", "[1, 2]\n"])
def test_parse_tool_output_refuses_what_is_not_a_result(text: str) -> None:
    with pytest.raises(ToolOutputError):
        parse_tool_output(text)


def test_cpu_capacity_divides_work_by_server_cpu() -> None:
    assert cpu_capacity({"round_trips": 1000, "server_cpu_s": 0.5}) == 2000
    assert cpu_capacity({"lines_per_s": 100, "seconds": 2.0, "server_cpu_s": 0.1}) == pytest.approx(2000)
    assert cpu_capacity({"round_trips": 1000}) is None
    assert cpu_capacity({"round_trips": 1000, "server_cpu_s": 0}) is None


def test_summarise_best_median_and_the_best_runs_p99() -> None:
    runs = [{"rps": 10, "p99_us": 5, "round_trips": 30, "server_cpu_s": 1.0},
            {"rps": 30, "p99_us": 1, "round_trips": 90, "server_cpu_s": 1.0},
            {"rps": 20, "p99_us": 3, "round_trips": 60, "server_cpu_s": 1.0},
            {"error": "connection refused"}]
    s = summarise(runs, "rps")
    assert (s["best"], s["median"], s["p99_us"], s["runs"], s["capacity"]) == (30, 20, 1, 3, 60)
    assert summarise([{"error": "x"}], "rps")["best"] is None


def test_ratio_and_memory_per_connection() -> None:
    assert ratio(50, 100) == 0.5
    assert ratio(None, 100) is None and ratio(5, 0) is None
    run = {"rss_base_kib": 10_000, "rss_idle_kib": 30_000, "rss_active_kib": 50_000}
    assert per_connection_kib(run, "idle", 1000) == 20.0
    assert per_connection_kib(run, "active", 1000) == 40.0
    assert per_connection_kib({"error": "x"}, "idle", 1000) is None


def _result() -> dict:
    echo = {"ceiling": [{"rps": 200_000, "round_trips": 600_000, "server_cpu_s": 3.0}],
            "gevent": [{"rps": 120_000, "round_trips": 360_000, "server_cpu_s": 3.0, "p99_us": 1500}]}
    fan = {"threading": [{"lines_per_s": 1000, "deliveries_per_s": 99_000}],
           "gevent": [{"lines_per_s": 3000, "deliveries_per_s": 297_000}]}
    scale = {"gevent": {"1000": {"rps": 90_000, "p99_us": 2000, "rss_base_kib": 20_000,
                                 "rss_idle_kib": 28_000, "rss_active_kib": 30_000},
                        "10000": {"error": "server did not print READY"}}}
    return {"echo": echo, "broadcast": fan, "scale": scale, "machine": "test box",
            "nofile": "soft 20000, hard 20000", "loadgen": {"echoload": 100_000.0, "locust": None}}


def test_tables_show_ratios_to_the_reference() -> None:
    echo = echo_table(_result()["echo"])
    assert echo[0][0] == "server" and echo[2][:3] == ["gevent", "120,000", "0.60"]
    assert echo[2][4] == "0.60"  # CPU capacity ratio
    fan = broadcast_table(_result()["broadcast"])
    assert fan[2][:3] == ["gevent", "3,000", "3.00"]
    scale = scale_table(_result()["scale"])
    assert scale[1] == ["gevent", "1,000", "90,000", "2,000", "8.0", "10.0", ""]
    assert scale[2][2] == "-" and "READY" in scale[2][-1]


def test_markdown_and_plain_tables() -> None:
    rows = [["a", "bb"], ["ccc", "d"]]
    assert markdown(rows) == "| a | bb |\n|---|---|\n| ccc | d |"
    assert plain(rows).splitlines() == ["a    bb", "ccc  d"]
    assert markdown([]) == plain([]) == ""


def test_render_states_each_target_without_asserting_it() -> None:
    text = render(_result())
    assert "open-files limit: soft 20000" in text
    assert "## Echo" in text and "## Many connections" in text and "## Broadcast" in text
    lines = verdicts(_result())
    assert any("gevent / ceiling" in line and "0.60" in line for line in lines)
    assert any("gevent / threading" in line and "3.00" in line for line in lines)


def test_find_tools_names_the_directory_when_they_are_missing(tmp_path) -> None:
    with pytest.raises(ToolsMissing, match=str(tmp_path)):
        find_tools(tmp_path)
    for name in ("ceiling", "echoload", "fanload"):
        (tmp_path / name).write_text("#!/bin/sh\n")
        (tmp_path / name).chmod(0o755)
    assert set(find_tools(tmp_path)) == {"ceiling", "echoload", "fanload"}
