"""``bench compare`` end to end: real servers, the real Locust process running the
measurement schedule with the native engine (and once with the pure-Python one), a real
results.json, report and Locust statistics.

Short on purpose (two backends, two small connection counts, 0.2 s windows): this checks
the pipeline and the shape of its figures, not the figures themselves.
"""

from __future__ import annotations

import csv
import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.loadgen import engine
from bench.loadgen.program import DROPPED_SUFFIX, locust_name
from bench.results import schema as results

pytestmark = pytest.mark.timeout(150)

needs_engine = pytest.mark.skipif(not engine.available(), reason=engine.why_unavailable() or "engine")


def _compare(out: Path, *args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", "compare", "--out", str(out), *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


@needs_engine
def test_short_compare_writes_every_question_into_results_and_report(tmp_path):
    proc = _compare(tmp_path, "--backends", "asyncio,threading", "--users", "4,16",
                    "--duration", "0.2", "--warmup", "0.1", "--repeat", "2")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    [path] = tmp_path.glob("*/results.json")
    doc = json.loads(path.read_text())
    results.validate(doc)
    assert doc["loadgen"]["engine"] == "native"
    assert "Load engine: native" in proc.stdout.replace("\n", " ")
    points = {(p["backend"], p["mode"], p["users"]): p for p in doc["points"]}
    assert set(points) == {(b, m, u) for b in ("asyncio", "threading") for m in ("echo", "broadcast") for u in (4, 16)}
    for key, p in points.items():
        assert p["error"] is None, key
        assert len(p["capacity"]["samples"]) >= 1 and p["capacity"]["median"] > 0, key
        assert p["windows"] == 2, key                            # one capacity window per repeat
        assert p["cost_us"]["median"] > 0, key                   # server CPU per request
        assert 0 < p["latency_us"]["p50"] <= p["latency_us"]["p99"] < 2_000_000, key
        assert set(p["flags"]) == {"failing", "generator_bound", "disturbed", "too_few_lines"}
        assert p["memory"]["active_rss_bytes"] > 0, key
        if p["mode"] == "echo":
            assert p["memory"]["idle_rss_bytes"] > 0 and p["unanswered"] == 0, key
            sr = p["set_rate"]
            assert sr and sr["offered_per_s"] > 0 and sr["p99"] >= sr["p50"] > 0, key
        else:
            assert p["lost"] == 0 and p["sent"] > 0, key
            slo = p["slo"]
            assert slo and slo["steps"] and all(s["deliveries_per_s"] > 0 for s in slo["steps"]), key
    # one offered rate for every backend at a connection count
    for users in (4, 16):
        rates = {points[(b, "echo", users)]["set_rate"]["offered_per_s"] for b in ("asyncio", "threading")}
        assert len(rates) == 1
    kinds = {w["kind"] for w in doc["windows"]}
    assert kinds == {"idle", "capacity", "rate", "slo"}
    md = (path.parent / "report.md").read_text()
    assert md.index("## Which model for which case") < md.index("## At each load")
    assert str((path.parent / "report.html").resolve()) in proc.stdout.replace("\n", "")
    _check_locust_statistics(doc, path.parent, md)


def _check_locust_statistics(doc: dict, run_dir: Path, md: str) -> None:
    """Locust ran every window: its stats CSV of each mode has one entry per window name
    (request type: the mode) whose request count is the sum of those windows' requests and
    failures in results.json; report.md links Locust's CSV and HTML report."""
    assert doc["loadgen"]["orchestrator"] == f"Locust {importlib.metadata.version('locust')}"
    expected: dict[tuple[str, str], int] = {}
    for w in doc["windows"]:
        key = (w["mode"], locust_name(w))
        expected[key] = expected.get(key, 0) + w["requests"] + sum(w["failures"].values())
    found: dict[tuple[str, str], int] = {}
    for mode, files in doc["loadgen"]["locust_reports"].items():
        assert (run_dir / files["html"]).stat().st_size > 0 and f"]({files['html']})" in md
        assert f"]({files['stats_csv']})" in md
        with open(run_dir / files["stats_csv"], newline="") as fh:
            for row in csv.DictReader(fh):
                if row["Name"] != "Aggregated" and not row["Name"].endswith(DROPPED_SUFFIX):
                    assert row["Type"] == mode
                    found[(row["Type"], row["Name"])] = int(row["Request Count"])
    assert set(doc["loadgen"]["locust_reports"]) == {"echo", "broadcast"}
    assert found == expected


def test_without_the_native_engine_the_python_engine_measures_and_the_report_says_so(tmp_path):
    env = {**os.environ, "SOCKBENCH_ENGINE": "python"}
    proc = _compare(tmp_path, "--quick", "--backends", "select,gevent", env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    # one line: which engine runs instead and what to install for the native one
    [line] = [ln for ln in proc.stderr.splitlines() if "load engine" in ln]
    assert "pure-Python load engine runs instead" in line and "C compiler" in line and "pip install -e ." in line
    assert "Load engine: python" in proc.stdout.replace("\n", " ")
    [path] = tmp_path.glob("*/results.json")
    doc = json.loads(path.read_text())
    results.validate(doc)
    assert doc["loadgen"]["engine"] == "python"
    points = {(p["backend"], p["mode"], p["users"]): p for p in doc["points"]}
    assert set(points) == {(b, m, u) for b in ("select", "gevent") for m in ("echo", "broadcast") for u in (10, 100)}
    for key, p in points.items():  # the Python engine measured every point, without failures or loss
        assert p["error"] is None and p["capacity"]["median"] > 0, key
        assert not p["flags"]["failing"], key
        if p["mode"] == "broadcast":
            assert p["lost"] == 0 and p["sent"] > 0, key
    md = (path.parent / "report.md").read_text()
    assert "No ranking" in md and "pure-Python load generator" in md
    assert "C compiler" in md and "pip install -e ." in md


def test_out_under_a_file_is_one_error_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = _compare(blocker / "reports", "--backends", "asyncio", "--quick", timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("bench compare: error: cannot make a run folder under") and "Not a directory" in line


@needs_engine
def test_ctrl_c_stops_everything_and_removes_the_unfinished_run_folder(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "bench", "compare", "--out", str(tmp_path), "--backends",
                             "asyncio,threading", "--users", "4", "--repeat", "5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("*/logs/*.program.json")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert list(tmp_path.glob("*/logs/*.program.json")), "the run never started measuring"
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err and "removed" in err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("args, message", [
    (["--backends", "nope"], "unknown backend"),
    (["--users", "0"], "at least 1"),
    (["--duration", "soon"], "expected a number"),
    (["--duration", "inf"], "must be positive"),  # a run that would never end
    (["--slo-ms", "0"], "must be positive"),
    (["--cpus", "0:99"], "not available"),
])
def test_bad_flags_get_one_line_and_exit_2(tmp_path, args, message):
    proc = _compare(tmp_path, *args, timeout=30)
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())  # nothing written
