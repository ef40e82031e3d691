"""``bench compare`` end to end: real servers, real Locust, a real results.json.

Short on purpose (two backends, small user counts, ~1.5 s windows): this checks the
pipeline and the honesty of its figures' shape, not the figures themselves.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.results import schema as results

pytestmark = pytest.mark.timeout(120)


def _compare(out: Path, *args: str, timeout: float = 100) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", "compare", "--out", str(out), *args],
                          capture_output=True, text=True, timeout=timeout)


def test_short_compare_writes_valid_results_with_microsecond_percentiles(tmp_path):
    proc = _compare(tmp_path, "--backends", "asyncio,gevent", "--users", "2,8",
                    "--duration", "1.5", "--warmup", "0.5")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    [results_path] = tmp_path.glob("*/results.json")
    doc = json.loads(results_path.read_text())
    results.validate(doc)
    assert doc["config"]["backends"] == ["asyncio", "gevent"]
    assert "cpu_model" in doc["environment"] and doc["environment"]["versions"]["locust"]
    runs = {(r["backend"], r["mode"], r["users"]): r for r in doc["runs"]}
    assert set(runs) == {(b, m, u) for b in ("asyncio", "gevent") for m in ("echo", "broadcast") for u in (2, 8)}
    for key, run in runs.items():
        assert run["error"] is None, key
        assert run["requests"] > 0, key
        lat = run["latency_us"]
        assert all(isinstance(lat[p], int) for p in results.PERCENTILES), key
        assert 0 < lat["p50"] <= lat["p99"] <= lat["max"], key
        assert lat["p50"] < lat["max"], key
        assert lat["p50"] < 1_000_000, key  # a loopback round trip is far below a second
        assert run["failures"] == 0, key
        assert run["server"]["rss_bytes"] > 0
        assert isinstance(run["loadgen"]["saturated"], bool)
        if run["mode"] == "broadcast":
            assert run["lost"] == 0, key
            assert run["deliveries_per_s"] == run["rps"] > 0
    assert (results_path.parent / "report.html").exists()
    assert str(results_path.parent) in proc.stdout.replace("\n", "")


@pytest.mark.parametrize("args, message", [
    (["--backends", "nope"], "unknown backend"),
    (["--users", "0"], "at least 1"),
    (["--duration", "soon"], "expected a number"),
    (["--duration", "inf"], "must be positive"),  # a run that would never end
    (["--workers", "-1"], "0 or more"),
    (["--cpus", "0:99"], "not available"),
])
def test_bad_flags_get_one_line_and_exit_2(tmp_path, args, message):
    proc = _compare(tmp_path, *args, timeout=30)
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())  # nothing written


def test_a_server_that_does_not_start_comes_back_as_error_stages(tmp_path):
    from bench.compare import runner
    from bench.compare.plan import Group, Stage

    group = Group("no-such-backend", "echo", 0, (Stage(1, 0.1, 0.1, 10.0), Stage(2, 0.1, 0.1, 10.0)))
    raws = runner.run_group(group, runner.RunnerOptions(workdir=tmp_path))
    assert [r["users"] for r in raws] == [1, 2]
    assert all("failed to start" in r["error"] for r in raws)
    assert all(r["tally"]["requests"] == 0 and r["window_s"] == 0.0 for r in raws)
