"""The native engine under real Locust: Locust's own CSV shows exactly the engine's
counts (one process, and a master fed by two workers), and with
``SOCKBENCH_ENGINE=python`` the pure-Python users run instead.

Skipped when the extension is not built here (a failure under ``CI=true``), except the
fallback test, which needs no extension.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest

from bench.procs.children import free_port, locust_command
from locustproc import finish, logs, start_locust

try:
    from tests.test_engine import require_engine
except ImportError:  # pytest run from inside tests/
    from test_engine import require_engine

pytestmark = pytest.mark.timeout(120)

LOCUSTFILE = str(Path(__file__).parent / "fixtures" / "engine_locustfile.py")
RUN_TIMEOUT_S = 60.0


def start(tmp_path: Path, name: str, *args: str, env: dict[str, str]) -> subprocess.Popen:
    return start_locust(tmp_path, name, *args, "--loglevel", "WARNING", locustfile=LOCUSTFILE, env=env)


def wait_all(procs: list[subprocess.Popen], tmp_path: Path) -> None:
    for status in finish(procs, tmp_path, RUN_TIMEOUT_S):
        assert status == 0, logs(tmp_path)


def csv_rows(prefix: Path) -> dict[str, dict[str, str]]:
    with open(f"{prefix}_stats.csv", newline="") as fh:
        return {row["Name"]: row for row in csv.DictReader(fh)}


def reports(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]


def headless(address: str, users: int, user_class: str, prefix: Path, *extra: str) -> list[str]:
    return ["--headless", "--host", address, "-u", str(users), "-r", "200", "-t", "7s",
            "--stop-timeout", "0", "--exit-code-on-error", "0", "--only-summary",
            "--csv", str(prefix), *extra, user_class]


def run_env(out: Path, stop_after: float, **extra: str) -> dict[str, str]:
    out.mkdir()
    return {**os.environ, "ENGINE_TEST_OUT": str(out), "ENGINE_TEST_STOP_AFTER": str(stop_after), **extra}


def assert_csv_equals_engine(rows: dict[str, dict[str, str]], name: str, requests: int, failures: int) -> None:
    assert int(rows[name]["Request Count"]) == requests + failures
    assert int(rows[name]["Failure Count"]) == failures
    assert int(rows["Aggregated"]["Request Count"]) == requests + failures


@pytest.mark.parametrize("mode, user_class, users, extra", [
    ("echo", "EchoUser", 20, ()),
    ("broadcast", "BroadcastUser", 6, ("--broadcast-rate", "20")),
])
def test_csv_counts_equal_the_engine_one_process(serve, tmp_path, mode, user_class, users, extra):
    require_engine()
    server = serve("asyncio", "--mode", mode)
    out, prefix = tmp_path / "out", tmp_path / "run"
    env = run_env(out, stop_after=3.0)
    proc = start(tmp_path, "locust", *headless(f"{server.host}:{server.port}", users, user_class,
                                                      prefix, *extra), env=env)
    wait_all([proc], tmp_path)
    [report] = reports(out)
    assert report["engine"] == "native" and report["echo_class"] == "EngineEchoUser"
    totals = report["totals"][mode]
    assert totals["requests"] > (1000 if mode == "echo" else 100)
    assert_csv_equals_engine(csv_rows(prefix), mode, totals["requests"], totals["failures"])


def test_csv_counts_equal_the_engine_master_and_two_workers(serve, tmp_path):
    require_engine()
    server = serve("asyncio", "--mode", "echo")
    out, prefix = tmp_path / "out", tmp_path / "run"
    env = run_env(out, stop_after=2.5)
    port = free_port()
    master = start(tmp_path, "master", *headless(
        f"{server.host}:{server.port}", 20, "EchoUser", prefix, "--master", "--master-bind-host", "127.0.0.1",
        "--master-bind-port", str(port), "--expect-workers", "2", "--expect-workers-max-wait", "30"), env=env)
    workers = [start(tmp_path, f"worker{n}", "--worker", "--master-host", "127.0.0.1",
                            "--master-port", str(port), env=env) for n in (1, 2)]
    wait_all([master, *workers], tmp_path)
    by_pid = {int(p.stem): json.loads(p.read_text()) for p in out.glob("*.json")}
    assert set(by_pid) == {master.pid, *(w.pid for w in workers)}
    worker_totals = [by_pid[w.pid]["totals"]["echo"] for w in workers]
    assert all(t["requests"] > 500 for t in worker_totals), worker_totals
    assert by_pid[master.pid]["totals"]["echo"]["requests"] == 0  # the master runs no users
    assert_csv_equals_engine(csv_rows(prefix), "echo", sum(t["requests"] for t in worker_totals),
                             sum(t["failures"] for t in worker_totals))


def test_python_fallback_runs_the_pure_python_users(serve, tmp_path):
    server = serve("asyncio", "--mode", "echo")
    out, prefix = tmp_path / "out", tmp_path / "run"
    env = run_env(out, stop_after=2.0, SOCKBENCH_ENGINE="python")
    proc = start(tmp_path, "locust", *headless(f"{server.host}:{server.port}", 5, "EchoUser", prefix),
                        env=env)
    wait_all([proc], tmp_path)
    [report] = reports(out)
    assert report["engine"] == "python" and report["echo_class"] == "EchoUser"
    assert report["totals"]["echo"]["requests"] == 0  # no engine, nothing harvested
    rows = csv_rows(prefix)
    assert int(rows["echo"]["Request Count"]) > 100
    assert int(rows["echo"]["Failure Count"]) == 0


@pytest.mark.xdist_group("timing")  # the engine must hold each stage's rate
def test_stage_windows_fill_the_microsecond_book(serve, tmp_path):
    require_engine()
    from bench.results.tally import StageTally

    server = serve("asyncio", "--mode", "broadcast")
    out = tmp_path / "result.json"
    stages = [{"users": 4, "warmup": 0.5, "duration": 1.5, "rate": 50.0},
              {"users": 6, "warmup": 0.5, "duration": 1.5, "rate": 100.0}]
    # Its path only: importing it here would load Locust (and gevent's patches) into pytest.
    locustfile = importlib.util.find_spec("bench.loadgen.engine_locustfile").origin
    with open(tmp_path / "locust.log", "wb") as log:
        proc = subprocess.Popen(locust_command(
            "--headless", "--host", f"{server.host}:{server.port}", "-u", "4", "-r", "200",
            "--stop-timeout", "0", "--exit-code-on-error", "0", "--only-summary", "--loglevel", "WARNING",
            "--sockbench-stages", json.dumps(stages), "--sockbench-out", str(out), "EngineBroadcastUser",
            locustfile=locustfile), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
    wait_all([proc], tmp_path)
    result = json.loads(out.read_text())["stages"]
    for stage, window in zip(stages, result):
        tally = StageTally()
        tally.add_wire(window["tally"])
        seconds = window["t_end"] - window["t_start"]
        users, rate = stage["users"], stage["rate"]
        assert window["users_reached"] == users
        assert sum(tally.failures.values()) == 0, tally.failures
        # the engine followed the stage's rate, and only the window was filed
        assert tally.sent == pytest.approx(users * rate * seconds, rel=0.15)
        assert tally.requests == pytest.approx((users - 1) * tally.sent, rel=0.15)
        assert tally.hist.get_total_count() == tally.requests
        assert 0 < tally.hist.get_value_at_percentile(50) < 200_000  # µs
