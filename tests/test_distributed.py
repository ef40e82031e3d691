"""Locust master + worker processes on loopback against a real ``bench serve`` (issue 5):
the master's merged result is exactly the sum of what the workers measured, and the
worker commands (``bench worker``, ``bench ui --workers``) start and stop cleanly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from bench.results.tally import StageTally
from bench.procs.ready import read_first_line
from bench.procs.children import LOCUSTFILE, bench_command, locust_command
from locustproc import finish

try:
    from tests.uiproc import UiProcess, assert_all_gone, free_port
except ImportError:  # pytest run from inside tests/
    from uiproc import UiProcess, assert_all_gone, free_port

pytestmark = pytest.mark.timeout(90)

COUNTING_LOCUSTFILE = str(Path(__file__).parent / "fixtures" / "counting_locustfile.py")
# One short measured stage: 4 users, 0.5 s warm-up, 2 s measured. The master then waits
# one worker report interval (bench.loadgen.stages.WORKER_FLUSH_S) before writing its result.
STAGE = {"users": 4, "warmup": 0.5, "duration": 2.0, "rate": 10.0}
# Seconds for a whole distributed run: Locust start (~2 s per process, three at once on
# two cores), workers joining, the stage, the flush, the shutdown.
RUN_TIMEOUT_S = 60.0


def locust(locustfile: str, *args: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(locust_command(*args, locustfile=locustfile),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)


def headless_master(locustfile: str, address: str, port: int, workers: int, out: Path,
                    tmp_path: Path) -> subprocess.Popen:
    """A headless master running :data:`STAGE` with the stage controller, then quitting."""
    return locust(
        locustfile, "--headless", "--master", "--master-bind-host", "127.0.0.1",
        "--master-bind-port", str(port), "--expect-workers", str(workers),
        "--expect-workers-max-wait", "30", "--host", f"tcp://{address}",
        "-u", str(STAGE["users"]), "-r", "100", "--only-summary", "--loglevel", "WARNING",
        "--stop-timeout", "0", "--exit-code-on-error", "0",
        "--sockbench-stages", json.dumps([STAGE]), "--sockbench-out", str(out), "EchoUser",
        log=tmp_path / "master.log")


def wait_all(procs: list[subprocess.Popen], timeout: float, tmp_path: Path) -> None:
    """Every process exits within ``timeout`` seconds in all (else: killed, test failed)."""
    finish(procs, tmp_path, timeout)


def master_tally(out: Path) -> StageTally:
    stages = json.loads(out.read_text())["stages"]
    assert len(stages) == 1 and stages[0]["users_reached"] == STAGE["users"], stages
    tally = StageTally()
    tally.add_wire(stages[0]["tally"])
    return tally


def test_master_result_is_the_sum_of_two_workers(serve, tmp_path: Path) -> None:
    server = serve("asyncio")
    address = f"{server.host}:{server.port}"
    counts = tmp_path / "counts"
    counts.mkdir()
    out = tmp_path / "result.json"
    port = free_port()
    env = {**os.environ, "SOCKBENCH_WORKER_COUNTS": str(counts)}
    master = headless_master(COUNTING_LOCUSTFILE, address, port, 2, out, tmp_path)
    workers = [locust(COUNTING_LOCUSTFILE, "--worker", "--master-host", "127.0.0.1",
                      "--master-port", str(port), "--loglevel", "WARNING",
                      log=tmp_path / f"worker{n}.log", env=env) for n in (1, 2)]
    wait_all([master, *workers], RUN_TIMEOUT_S, tmp_path)
    assert master.returncode == 0, (tmp_path / "master.log").read_text()

    merged = master_tally(out)
    per_worker = {}
    for path in counts.glob("*.json"):
        tally = StageTally()
        tally.add_wire(json.loads(path.read_text()))
        per_worker[path.stem] = tally
    assert sorted(per_worker) == sorted(str(w.pid) for w in workers)
    assert all(t.requests > 0 for t in per_worker.values()), {k: t.requests for k, t in per_worker.items()}
    # The merged result is exactly the sum: requests, failures, and the HDR histograms.
    assert merged.requests > 0
    assert merged.requests == sum(t.requests for t in per_worker.values())
    assert merged.hist.get_total_count() == merged.requests
    assert merged.hist.get_total_count() == sum(t.hist.get_total_count() for t in per_worker.values())
    assert merged.failures == {k: sum(t.failures.get(k, 0) for t in per_worker.values())
                               for k in merged.failures}
    # and its percentiles come from the merged histogram, in microseconds
    slowest = max(t.hist.get_max_value() for t in per_worker.values())
    assert merged.hist.get_max_value() == slowest
    assert 0 < merged.hist.get_value_at_percentile(50) <= slowest


def test_bench_worker_processes_join_a_master(serve, tmp_path: Path) -> None:
    server = serve("gevent")
    out = tmp_path / "result.json"
    port = free_port()
    master = headless_master(LOCUSTFILE, f"{server.host}:{server.port}", port, 2, out, tmp_path)
    with open(tmp_path / "bench-worker.log", "wb") as log:
        worker = subprocess.Popen(
            bench_command("worker", "--master", "127.0.0.1", "--master-port", str(port), "--processes", "2"),
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    wait_all([master, worker], RUN_TIMEOUT_S, tmp_path)
    # the workers leave with their master, and bench worker with them
    assert worker.returncode == 0, (tmp_path / "bench-worker.log").read_text()
    assert master.returncode == 0, (tmp_path / "master.log").read_text()
    merged = master_tally(out)
    assert merged.requests > 0 and merged.hist.get_total_count() == merged.requests


def test_bench_worker_sigterm_stops_its_processes(tmp_path: Path) -> None:
    import psutil

    port = free_port()  # nothing listens: the workers keep trying to reach the master
    worker = subprocess.Popen(bench_command("worker", "--master", "127.0.0.1", "--master-port", str(port),
                                            "--processes", "2"),
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = read_first_line(worker.stdout, 20)  # printed once both are started
        assert "2 worker process(es)" in line
        family = psutil.Process(worker.pid).children(recursive=True)
        assert len(family) == 2
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=20) == 0
        assert_all_gone(family)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        worker.stdout.close()
        worker.stderr.close()


def test_bench_ui_with_workers_stops_everything(tmp_path: Path) -> None:
    """The URL, a swarm through Locust's HTTP API shared by two workers, and Ctrl-C."""
    import urllib.parse
    import urllib.request

    ui = UiProcess(["gevent", "--web-port", str(free_port()), "--workers", "2",
                    "--master-port", str(free_port())], tmp_path)
    try:
        assert len(ui.descendants()) == 4  # server, master, two workers
        form = urllib.parse.urlencode({"user_count": 2, "spawn_rate": 10, "user_classes": "EchoUser"})
        with urllib.request.urlopen(ui.url + "swarm", form.encode(), timeout=10) as reply:
            assert json.load(reply)["success"]

        def stats() -> dict:
            with urllib.request.urlopen(ui.url + "stats/requests", timeout=10) as reply:
                return json.load(reply)

        deadline = time.monotonic() + 30
        while True:
            now = stats()
            if now["worker_count"] == 2 and any(
                    s["name"] == "echo" and s["num_requests"] > 0 for s in now["stats"]):
                break
            assert time.monotonic() < deadline, f"no echo requests from two workers within 30 s: {now}"
            time.sleep(0.5)
    except BaseException:
        ui.kill()
        raise
    assert ui.stop(signal.SIGINT) == 0, ui.stderr()
    assert "Traceback" not in ui.stderr(), ui.stderr()


def test_bench_ui_busy_port_is_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(bench_command("ui", "asyncio", "--web-port", str(port)),
                                capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr.strip() == f"bench ui: error: --web-port: address 127.0.0.1:{port} is already in use"

