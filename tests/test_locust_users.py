"""The project's locustfile under the real ``locust`` CLI, as a user runs it: stopping
users is never a failure, and with no class named only the users for the server's mode
run (the others stand aside with one message per process). Both the native engine's
users and the pure-Python ones (``SOCKBENCH_ENGINE=python``).
"""

from __future__ import annotations

import csv
import os
import subprocess
import time
from pathlib import Path

import pytest

from bench.loadgen import engine
from bench.loadgen.sequence import probe_line
from bench.loadgen.mode_probe import BROADCAST, ECHO, ProbeError, probe
from bench.procs.children import LOCUSTFILE, free_port
from locustproc import finish, logs, start_locust

pytestmark = pytest.mark.timeout(150)

RUN_TIMEOUT_S = 60.0
STAND_ASIDE = "stand aside"
ENGINES = ["python", pytest.param("native", marks=pytest.mark.skipif(
    engine._native is None and os.environ.get("CI") != "true", reason="the native engine is not built here"))]


def start(tmp_path: Path, name: str, engine_name: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "SOCKBENCH_ENGINE": engine_name}
    return start_locust(tmp_path, name, *args, "--loglevel", "INFO", locustfile=LOCUSTFILE, env=env)


def csv_rows(prefix: Path) -> dict[str, dict[str, str]]:
    with open(f"{prefix}_stats.csv", newline="") as fh:
        return {row["Name"]: row for row in csv.DictReader(fh) if row["Name"] != "Aggregated"}


def headless(address: str, users: int, seconds: float, prefix: Path, *classes: str) -> list[str]:
    # the default exit code on error (1): a failure anywhere fails the run
    return ["--headless", "--host", address, "-u", str(users), "-r", str(users), "-t", f"{seconds:g}s",
            "--only-summary", "--csv", str(prefix), *classes]


@pytest.mark.parametrize("engine_name", ENGINES)
@pytest.mark.xdist_group("timing")  # a thousand deliveries within Locust's 3 s, spawn included
def test_stopping_broadcast_users_is_not_a_failure(serve, tmp_path, engine_name):
    # 50 users that stop together while lines are in flight: each closes its own
    # connection under its reader. Before the fix, the pure-Python users counted
    # OSError(9, 'Bad file descriptor') for most runs and Locust exited 1.
    server = serve("gevent", "--mode", "broadcast")
    prefix = tmp_path / "run"
    proc = start(tmp_path, "locust", engine_name,
                        *headless(f"{server.host}:{server.port}", 50, 3, prefix, "BroadcastUser"))
    [status] = finish([proc], tmp_path, RUN_TIMEOUT_S)
    text = logs(tmp_path)
    assert status == 0, text
    assert "Bad file descriptor" not in text
    rows = csv_rows(prefix)
    assert int(rows["broadcast"]["Request Count"]) > 1000, rows
    assert int(rows["broadcast"]["Failure Count"]) == 0, rows


@pytest.mark.parametrize("engine_name", ENGINES)
@pytest.mark.parametrize("mode", [ECHO, BROADCAST])
def test_no_class_named_runs_only_the_servers_mode(serve, tmp_path, engine_name, mode):
    # Both classes run unless one is named; before the fix, against a broadcast server the
    # echo users counted thousands of protocol errors, and against an echo server the
    # broadcast users reported echoes as deliveries.
    server = serve("gevent", "--mode", mode)
    prefix = tmp_path / "run"
    proc = start(tmp_path, "locust", engine_name,
                        *headless(f"{server.host}:{server.port}", 10, 3, prefix))
    [status] = finish([proc], tmp_path, RUN_TIMEOUT_S)
    text = logs(tmp_path)
    assert status == 0, text
    rows = csv_rows(prefix)
    assert set(rows) == {mode}, rows
    assert int(rows[mode]["Request Count"]) > 100 and int(rows[mode]["Failure Count"]) == 0, rows
    other = "BroadcastUser" if mode == ECHO else "EchoUser"
    [notice] = [line for line in text.splitlines() if STAND_ASIDE in line]
    assert f"({other}) stand aside" in notice


def test_no_class_named_with_master_and_two_workers(serve, tmp_path):
    # each worker probes the server itself; its echo users stand aside, said once per worker
    server = serve("gevent", "--mode", "broadcast")
    prefix, port = tmp_path / "run", free_port()
    engine_name = "native" if engine.available() else "python"
    master = start(tmp_path, "master", engine_name, *headless(
        f"{server.host}:{server.port}", 12, 4, prefix), "--master", "--master-bind-host", "127.0.0.1",
        "--master-bind-port", str(port), "--expect-workers", "2", "--expect-workers-max-wait", "30")
    workers = [start(tmp_path, f"worker{n}", engine_name, "--worker", "--master-host", "127.0.0.1",
                            "--master-port", str(port)) for n in (1, 2)]
    statuses = finish([master, *workers], tmp_path, RUN_TIMEOUT_S)
    assert statuses == [0, 0, 0], logs(tmp_path)
    rows = csv_rows(prefix)
    assert set(rows) == {BROADCAST}, rows
    assert int(rows[BROADCAST]["Failure Count"]) == 0, rows
    # Locust's dispatcher may give one worker only one class: a worker with echo users
    # says so once, a worker without them says nothing
    notices = [sum(STAND_ASIDE in line for line in (tmp_path / f"worker{n}.log").read_text(
        errors="replace").splitlines()) for n in (1, 2)]
    assert 1 <= sum(notices) and max(notices) == 1, logs(tmp_path)


@pytest.mark.parametrize("engine_name", ENGINES)
def test_probe_lines_in_a_busy_room_are_not_failures(serve, tmp_path, engine_name):
    # another Locust process probing while this one's users are in the room
    server = serve("gevent", "--mode", "broadcast")
    prefix = tmp_path / "run"
    proc = start(tmp_path, "locust", engine_name,
                        *headless(f"{server.host}:{server.port}", 5, 3, prefix, "BroadcastUser"))
    deadline = time.monotonic() + 2.5
    probes = 0
    while time.monotonic() < deadline:
        assert probe(server.host, server.port, 2.0) == BROADCAST
        probes += 1
        time.sleep(0.1)
    [status] = finish([proc], tmp_path, RUN_TIMEOUT_S)
    assert probes >= 5
    assert status == 0, logs(tmp_path)
    rows = csv_rows(prefix)
    assert int(rows["broadcast"]["Failure Count"]) == 0, rows


@pytest.mark.timeout(30)
@pytest.mark.parametrize("backend", ["select", "asyncio", "gevent"])
def test_probe_tells_echo_from_broadcast(serve, backend):
    for mode in (ECHO, BROADCAST):
        server = serve(backend, "--mode", mode)
        assert probe(server.host, server.port, 2.0) == mode


@pytest.mark.timeout(30)
def test_probe_without_a_server_says_why():
    with pytest.raises(ProbeError, match="refused"):
        probe("127.0.0.1", free_port(), 1.0)


@pytest.mark.timeout(30)
def test_probe_line_is_skipped_by_the_native_engine(serve):
    if engine._native is None:
        pytest.skip("the native engine is not built here")
    server = serve("gevent", "--mode", "broadcast")
    import socket
    with engine.Engine() as eng, socket.create_connection((server.host, server.port), timeout=5) as sender:
        eng.add_broadcast(server.host, server.port, 64, 0.0, 2.0, 0.0)
        time.sleep(0.3)  # joined
        sender.sendall(probe_line(b"test.1") * 20)
        time.sleep(0.3)
        eng.sync()
        counts = eng.harvest()["broadcast"]
    assert counts.failed == 0, counts.failures
