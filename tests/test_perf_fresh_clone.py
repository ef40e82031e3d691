"""``bench perf`` on a fresh clone: the repository's tracked files alone, in a directory
with no ``shared/`` beside it (so no C reference tools), run with the installed
interpreter. The native engine is built in the copy as ``pip install`` would.

These run the real benchmark at its smallest; they check that it runs and what it
prints, never how fast anything is.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.loadgen import engine as engine_mod
from bench.procs.machine import PROJECT_ROOT

# Makes `import uvloop` fail in every process that has this directory on PYTHONPATH.
NO_UVLOOP = '''
import importlib.abc, sys

class _NoUvloop(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "uvloop" or name.startswith("uvloop."):
            raise ModuleNotFoundError("No module named 'uvloop'", name="uvloop")
        return None

sys.meta_path.insert(0, _NoUvloop())
'''


def _require_engine() -> None:
    reason = engine_mod.why_unavailable()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI builds the native engine, but: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tracked files of this checkout under ``box/sockbench`` (nothing beside it),
    with the native engine built in place."""
    _require_engine()
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=PROJECT_ROOT, capture_output=True, timeout=30)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    root = tmp_path_factory.mktemp("box") / "sockbench"
    for name in listed.stdout.decode().split("\0"):
        src = PROJECT_ROOT / name
        if name and src.is_file():  # a file deleted in the working tree is not copied
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / name)
    assert not (root.parent / "shared").exists()
    build = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=root,
                           capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stderr[-2000:]
    return root


def _perf(root: Path, *args: str, pythonpath: list[Path] = (), timeout: float = 150) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, [*pythonpath, root]))}
    env.pop("SOCKBENCH_ENGINE", None)
    return subprocess.run([sys.executable, "-m", "bench", "perf", *args, "--out", str(root / "reports")],
                          cwd=root, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.timeout(240)
def test_bench_perf_quick_runs_on_a_fresh_clone(clone: Path) -> None:
    proc = _perf(clone, "--quick", "--only", "gevent")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "Traceback" not in proc.stderr
    assert "open-files limit: " in out.splitlines()[0]
    # the table: the flagship, the bare uvloop reference and the C echo server, each with
    # a figure at 100 connections and the ratios measured in this run
    header = next(line for line in out.splitlines() if line.lstrip().startswith("gevent"))
    assert "uvloop Protocol (bare)" in header and "ceiling" in header
    echo = next(line for line in out.splitlines() if line.startswith("echo round trips/s, 100 conns"))
    assert "-" not in echo.split("conns", 1)[1], echo  # every server served
    for label in ("x the C echo server (ceiling)", "x bare uvloop Protocol", "p99 / Little's-law mean",
                  "echo round trips/s, 1,000 conns", "x own rate at 100 conns",
                  "server KiB per idle conn (1,000 idle)", "worst round trip ms while 1,000 leave at once",
                  "broadcast lines/s"):
        assert label in out, label
    # the load generator's own ceiling, without echoload (no tools beside the clone)
    assert "Locust with the engine" in out and "the engine alone" in out
    assert "echoload (C" not in out
    assert list((clone / "reports").glob("perf-*.json")) and list((clone / "reports").glob("perf-*.md"))


@pytest.mark.timeout(120)
def test_bench_perf_without_uvloop_skips_its_rows_in_one_line(clone: Path, tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(NO_UVLOOP)
    proc = _perf(clone, "--quick", "--only", "gevent", "--skip", "scale", "idle", "disconnect",
                 "broadcast", "loadgen", pythonpath=[tmp_path])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "ModuleNotFoundError" not in proc.stderr
    said = [line for line in proc.stdout.splitlines() if "uvloop" in line]
    assert len(said) == 1 and said[0].startswith("skipping the uvloop rows"), said
    assert "echo round trips/s, 100 conns" in proc.stdout


@pytest.mark.timeout(120)
def test_bench_perf_against_another_checkout_adds_its_flagship_column(clone: Path, tmp_path: Path) -> None:
    # another checkout: a copy of the clone's servers package whose entry point leaves a
    # mark when it runs, so the test sees that the column ran this copy, not the clone's
    other = tmp_path / "other"
    shutil.copytree(clone / "servers", other / "servers")
    entry = other / "servers" / "__main__.py"
    entry.write_text("open(__file__ + '.ran', 'w').close()\n" + entry.read_text())
    proc = _perf(clone, "--quick", "--only", "gevent", "--skip", "scale", "idle", "disconnect",
                 "broadcast", "loadgen", "--against", str(other))
    assert proc.returncode == 0, proc.stderr[-3000:]
    header = next(line for line in proc.stdout.splitlines() if line.lstrip().startswith("gevent"))
    assert header.split()[:3] == ["gevent", "gevent", "@"] and "other" in header
    echo = next(line for line in proc.stdout.splitlines() if line.startswith("echo round trips/s, 100 conns"))
    assert "-" not in echo.split("conns", 1)[1], echo  # both gevent columns served
    assert (other / "servers" / "__main__.py.ran").exists()
    assert not (clone / "servers" / "__main__.py.ran").exists()
    result = next(r for r in (json.loads(f.read_text()) for f in (clone / "reports").glob("perf-*.json"))
                  if "against" in r)
    assert result["against"] == {"gevent @ other": {"backend": "gevent", "checkout": str(other.resolve())}}
    assert result["values"]["echo"]["gevent @ other"][0] > 0


@pytest.mark.timeout(60)
def test_bench_perf_without_the_engine_says_so_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, engine_mod.ENV_VAR: "python"}
    proc = subprocess.run([sys.executable, "-m", "bench", "perf", "--quick", "--out", str(tmp_path)],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=50)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "bench perf: error: it drives the servers with the native engine, and "
        f"{engine_mod.ENV_VAR}=python chooses the pure-Python users"]
    assert not list(tmp_path.iterdir())
