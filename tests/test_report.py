"""Rendering is a pure function of results.json: charts, report.md, report.html, the
terminal summary, the ``bench report`` command, and the analysis rules behind them."""

from __future__ import annotations

import copy
import io
import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from bench.results import analysis
from bench.results import report
from bench.results import schema as results

FIXTURE = Path(__file__).parent / "fixtures" / "results_small.json"
HOSTILE = "<script>alert(1)</script>"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def doc() -> dict:
    return results.load(FIXTURE)


@pytest.fixture(scope="module")
def rendered(doc, tmp_path_factory) -> dict[str, Path]:
    return report.render_report(doc, tmp_path_factory.mktemp("report"))


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def md_rows(md: str, mode: str) -> list[list[str]]:
    """Data rows of the first table under '## <mode>'."""
    section = md.split(f"\n## {mode}\n", 1)[1]
    rows = []
    for line in section.lstrip("\n").split("\n\n", 1)[0].splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line.strip("|"))])
    return rows[1:]  # drop the header


# -- the fixture itself -------------------------------------------------------------------

def test_fixture_is_schema_1_and_covers_the_cases(doc) -> None:
    results.validate(doc)
    runs = doc["runs"]
    assert {r["backend"] for r in runs} == {"blocking", "threading", "select", "gevent", "asyncio"}
    assert {r["mode"] for r in runs} == {"echo", "broadcast"}
    assert {r["users"] for r in runs} == {1, 10, 100}
    assert any(r["loadgen"]["saturated"] for r in runs)
    assert any(r["failures_by_kind"]["timeout"] and analysis.is_failing(r) for r in runs)
    assert any(r["error"] for r in runs)


# -- files --------------------------------------------------------------------------------

def test_render_writes_charts_and_reports(rendered) -> None:
    assert set(rendered) == {"report.md", "report.html", "throughput", "latency", "memory", "broadcast"}
    for name in ("throughput", "latency", "memory", "broadcast"):
        path = rendered[name]
        assert path.parent.name == "charts" and path.suffix == ".png"
        width, height = png_size(path)
        assert 600 <= width <= 4000 and 300 <= height <= 2000, (name, width, height)
        assert path.stat().st_size > 10_000          # a drawn chart, not an empty canvas
    assert rendered["report.md"].stat().st_size > 1000
    assert rendered["report.html"].stat().st_size > 10_000


def test_markdown_has_one_row_per_backend_per_load_per_mode(doc, rendered) -> None:
    md = rendered["report.md"].read_text(encoding="utf-8")
    for mode in ("echo", "broadcast"):
        rows = md_rows(md, mode)
        keys = [(r[0], int(r[1])) for r in rows]
        expected = [(b, u) for u in (1, 10, 100)
                    for b in ("blocking", "threading", "select", "gevent", "asyncio")]
        assert sorted(keys) == sorted(expected) and len(keys) == len(set(keys)), mode


def test_flags_are_shown(rendered) -> None:
    md = rendered["report.md"].read_text(encoding="utf-8")
    flags = {(r[0], int(r[1])): r[-1] for r in md_rows(md, "echo")}
    assert "generator-bound" in flags[("asyncio", 100)]
    assert "failing" in flags[("blocking", 10)]
    assert flags[("blocking", 100)].startswith("error: server exited before READY")
    assert "tie" in flags[("gevent", 10)] and "tie" in flags[("asyncio", 10)]
    assert "best" in flags[("select", 1)]
    html_text = rendered["report.html"].read_text(encoding="utf-8")
    for flag in ("generator-bound", "failing", "tie", "error"):
        assert f'class="flag flag-{flag}"' in html_text


def test_ratios_recommendation_and_caveats_appear(rendered) -> None:
    md = rendered["report.md"].read_text(encoding="utf-8")
    echo = {(r[0], int(r[1])): r for r in md_rows(md, "echo")}
    assert echo[("asyncio", 100)][3] == "1.00x"
    assert echo[("threading", 100)][3] == "0.45x"          # 21,930 / 48,300
    assert "Throughput ratio to the best backend" in md
    assert "at 100 connections, gevent: 1.2x select's throughput, p99 3.0 ms vs 5.1 ms." in md
    assert "asyncio (≥ 48,300 req/s) was load-generator-bound" in md
    assert "at 10 connections, asyncio and gevent tie on throughput" in md
    for word in ("Loopback", "One machine", "coordinated omission", "whole milliseconds"):
        assert word in md
    html_text = rendered["report.html"].read_text(encoding="utf-8")
    assert "at 100 connections, gevent: 1.2x select&#x27;s throughput" in html_text


def test_html_is_self_contained(rendered) -> None:
    html_text = rendered["report.html"].read_text(encoding="utf-8")
    assert html_text.count('src="data:image/png;base64,') == 4
    assert not re.search(r'(src|href)="(?!data:)', html_text)
    assert "<link" not in html_text and "@import" not in html_text and "url(" not in html_text
    assert "<style>" in html_text


# -- hostile strings ----------------------------------------------------------------------

def hostile_doc(doc: dict) -> dict:
    bad = copy.deepcopy(doc)
    for run in bad["runs"]:
        if run["backend"] == "select":
            run["backend"] = HOSTILE
        if run["error"]:
            run["error"] = "boom <img src=x onerror=alert(2)> | pipe"
    bad["config"]["backends"] = [HOSTILE if b == "select" else b for b in bad["config"]["backends"]]
    bad["environment"]["cpu_model"] = "<b>cpu</b>"
    bad["run_id"] = "<i>run</i>"
    return bad


def test_html_and_markdown_escape_run_strings(doc, tmp_path) -> None:
    paths = report.render_report(hostile_doc(doc), tmp_path)
    html_text = paths["report.html"].read_text(encoding="utf-8")
    assert "<script>" not in html_text and "<img src=x" not in html_text and "<b>cpu" not in html_text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html_text
    assert "&lt;i&gt;run&lt;/i&gt;" in html_text
    md = paths["report.md"].read_text(encoding="utf-8")
    assert "<script>" not in md and "<img" not in md
    assert "&lt;script>alert(1)&lt;/script>" in md
    # The pipe in the error did not split the table row.
    assert len(md_rows(md, "echo")) == 15


def test_print_summary_prints_tables_and_recommendations(doc) -> None:
    out = io.StringIO()
    report.print_summary(hostile_doc(doc), Console(file=out, width=250, color_system=None))
    text = out.getvalue()
    assert HOSTILE in text                       # printed literally, not eaten as markup
    assert "generator-bound" in text and "failing" in text
    assert "at 100 connections, gevent: 1.2x" in text
    assert text.count("asyncio") >= 6


# -- bench report CLI ---------------------------------------------------------------------

def run_bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", "report", *args],
                          capture_output=True, text=True, timeout=90)


def test_cli_renders_next_to_results_file(tmp_path) -> None:
    results_path = tmp_path / "run" / "results.json"
    results_path.parent.mkdir()
    results_path.write_text(FIXTURE.read_text(encoding="utf-8"), encoding="utf-8")
    proc = run_bench(str(results_path))
    assert proc.returncode == 0, proc.stderr
    for name in ("report.html", "report.md", "charts/throughput.png", "charts/latency.png",
                 "charts/memory.png", "charts/broadcast.png"):
        assert (results_path.parent / name).is_file(), name
    assert "report.html" in proc.stdout and "gevent" in proc.stdout


def test_cli_takes_the_run_folder(tmp_path) -> None:
    results_path = tmp_path / "run" / "results.json"
    results_path.parent.mkdir()
    results_path.write_text(FIXTURE.read_text(encoding="utf-8"), encoding="utf-8")
    proc = run_bench(str(results_path.parent))
    assert proc.returncode == 0, proc.stderr
    assert (results_path.parent / "report.html").is_file()


def test_cli_out_dir(tmp_path) -> None:
    proc = run_bench(str(FIXTURE), "--out", str(tmp_path / "elsewhere"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "elsewhere" / "report.html").is_file()


@pytest.mark.parametrize("content", [None, "not json {", json.dumps({"schema": 99}),
                                     json.dumps({"schema": 1, "run_id": "x", "created": "x",
                                                 "environment": {}, "config": {},
                                                 "runs": [{"backend": "b"}]})])
def test_cli_bad_input_is_one_line_exit_1(tmp_path, content) -> None:
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    proc = run_bench(str(path))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench report: error:"), proc.stderr


# -- analysis rules -----------------------------------------------------------------------

def mk(backend: str, rps: float, samples=None, users: int = 10, mode: str = "echo", *,
       p99: int = 500, failures: int = 0, saturated: bool = False, error: str | None = None) -> dict:
    return {"backend": backend, "mode": mode, "users": users, "rps": rps,
            "rps_samples": samples if samples is not None else [rps],
            "requests": int(rps * 10), "failures": failures,
            "latency_us": {"p50": p99 // 2, "p90": p99, "p99": p99, "p999": p99, "max": p99},
            "server": {"cpu_percent": 50.0, "rss_bytes": 1 << 24, "rss_per_conn_bytes": None},
            "loadgen": {"cpu_percent": 50.0, "saturated": saturated}, "error": error}


def mkdoc(*runs: dict) -> dict:
    return {"config": {"backends": [r["backend"] for r in runs]}, "runs": list(runs)}


@pytest.mark.parametrize("a, b, expected", [
    (mk("x", 100, [90, 100, 110]), mk("y", 115, [108, 115, 120]), True),    # ranges overlap
    (mk("x", 100, [95, 100, 105]), mk("y", 115, [110, 115, 120]), False),   # disjoint ranges
    (mk("x", 100), mk("y", 104.9), True),                                   # one sample: within 5 %
    (mk("x", 100), mk("y", 106), False),                                    # one sample: beyond 5 %
    (mk("x", 100, [100]), mk("y", 103, [90, 103, 110]), True),              # mixed: 5 % rule
])
def test_tie_rule(a, b, expected) -> None:
    assert analysis.tied(a, b) is expected
    assert analysis.tied(b, a) is expected


def test_ratios_to_best_skip_errors() -> None:
    d = mkdoc(mk("a", 200), mk("b", 100), mk("c", 0, [], error="no"))
    assert analysis.ratios_to_best(d, "echo", 10) == {"a": 1.0, "b": 0.5, "c": None}


def test_recommendation_sentence_and_ratio() -> None:
    d = mkdoc(mk("threading", 10_000, p99=41_000, users=1000), mk("gevent", 21_000, p99=3000, users=1000))
    rec = analysis.recommend(d, "echo", 1000)
    assert rec.winner == "gevent" and rec.compared_with == "threading" and not rec.generator_bound
    assert rec.sentence == "at 1000 connections, gevent: 2.1x threading's throughput, p99 3.0 ms vs 41 ms."


def test_recommendation_says_tie() -> None:
    d = mkdoc(mk("a", 100), mk("b", 103), mk("c", 50))
    rec = analysis.recommend(d, "echo", 10)
    assert rec.winner == "b" and rec.tied_with == ["a"]
    assert rec.sentence.startswith("at 10 connections, b and a tie on throughput: 2.1x c's throughput")


def test_recommendation_skips_failing_and_flags_generator_bound() -> None:
    d = mkdoc(mk("fast_but_failing", 500, failures=1000), mk("bound", 300, saturated=True),
              mk("clean", 200), mk("slow", 100))
    rec = analysis.recommend(d, "echo", 10)
    assert rec.winner == "clean" and rec.compared_with == "slow" and rec.generator_bound
    assert "bound (≥ 300 req/s) was load-generator-bound" in rec.sentence
    assert "not trustworthy" in rec.sentence
    assert "Excluded: fast_but_failing (17% failures)" in rec.sentence
    assert analysis.flags(d, d["runs"][0]) == ["failing", "best"]


def test_recommendation_when_everything_is_generator_bound() -> None:
    # Lower bounds of one size cannot be ranked: no winner, and the sentence says why.
    d = mkdoc(mk("a", 300, saturated=True, p99=900), mk("b", 100, saturated=True, p99=400))
    rec = analysis.recommend(d, "echo", 10)
    assert rec.winner is None and rec.generator_bound
    assert "no ranking" in rec.sentence and "load-generator-bound" in rec.sentence
    assert "Lowest p99 among them: b" in rec.sentence


def test_users_left_unserved_make_a_run_failing() -> None:
    # The blocking backend at 10 users: one user served (thousands of requests), nine
    # timing out once per request timeout: a tiny failure *rate*, but users unserved.
    blocking = mk("blocking", 13000, failures=18, users=10)
    blocking["failures_by_kind"] = {"timeout": 18}
    assert analysis.failure_rate(blocking) < analysis.FAILURE_TOLERANCE
    assert analysis.is_failing(blocking)
    rec = analysis.recommend(mkdoc(blocking, mk("gevent", 30000)), "echo", 10)
    assert rec.winner == "gevent" and "blocking (18 timeouts" in rec.sentence
    healthy = mk("gevent", 30000, failures=3, users=1000)
    healthy["failures_by_kind"] = {"timeout": 3}   # 3 of 1000 users: below 1%
    assert not analysis.is_failing(healthy)


def test_recommendation_when_nothing_served() -> None:
    d = mkdoc(mk("a", 10, failures=500), mk("b", 0, [], error="did not start"))
    rec = analysis.recommend(d, "echo", 10)
    assert rec.winner is None and "no backend served the load" in rec.sentence


def test_caveats_name_generator_bound_points(doc) -> None:
    text = "\n".join(analysis.caveats(doc))
    assert "asyncio echo @ 100" in text
    assert "Loopback" in text and "coordinated omission" in text and "HDR histogram" in text


def test_observed_loadgen_ceiling_is_the_fastest_generator_bound_echo_point(doc) -> None:
    doc = copy.deepcopy(doc)  # the fixture is shared by the module
    bound = [r for r in doc["runs"] if r["mode"] == "echo" and analysis.is_generator_bound(r)
             and not analysis.has_error(r)]
    assert bound, "the fixture has a generator-bound echo point"
    top = max(bound, key=lambda r: r["rps"])
    observed = analysis.observed_loadgen_ceiling(doc)
    assert observed is not None
    assert (observed["backend"], observed["users"], observed["rps"]) == (top["backend"], top["users"], top["rps"])
    assert any("Load generator ceiling" in c and analysis.fmt_rps(top["rps"]) in c
               for c in analysis.caveats(doc))
    for run in doc["runs"]:
        run["loadgen"]["saturated"] = False
    assert analysis.observed_loadgen_ceiling(doc) is None


def test_a_busy_machine_is_a_caveat_of_the_report(doc) -> None:
    quiet = copy.deepcopy(doc)
    for run in quiet["runs"]:
        run["other_cpu_percent"] = 1.0
    assert analysis.busy_machine_note(quiet) is None
    busy = copy.deepcopy(quiet)
    busy["runs"][0]["other_cpu_percent"] = analysis.BUSY_MACHINE_PERCENT + 15
    note = analysis.busy_machine_note(busy)
    assert note and f"{analysis.BUSY_MACHINE_PERCENT + 15:.0f}% of a core" in note and "suspect" in note
    assert note in analysis.caveats(busy)


def test_broadcast_chart_shows_lost_and_out_of_order_lines_only_when_runs_carry_them(doc, tmp_path) -> None:
    from bench.results import charts

    with_ooo = copy.deepcopy(doc)
    for run in with_ooo["runs"]:
        if run["mode"] == "broadcast" and run["lost"] is not None:
            run["out_of_order"] = 3
    drawn = charts.render_charts(with_ooo, tmp_path / "a")
    assert "broadcast" in drawn and drawn["broadcast"].stat().st_size > 10_000
    without = copy.deepcopy(doc)
    for run in without["runs"]:
        run["lost"] = run["out_of_order"] = None
    assert "broadcast" not in charts.render_charts(without, tmp_path / "b")
    echo_only = copy.deepcopy(doc)
    echo_only["runs"] = [r for r in echo_only["runs"] if r["mode"] == "echo"]
    assert set(charts.render_charts(echo_only, tmp_path / "c")) == {"throughput", "latency", "memory"}
