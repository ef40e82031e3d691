"""The rooms of bench/ hold: code that supervises processes never imports Locust or
gevent (importing them monkey-patches the interpreter: signals, sleep, subprocess).
Only bench/loadgen (and bench/locustfile.py, which Locust loads) run inside Locust."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import bench

pytestmark = pytest.mark.timeout(120)

BENCH = Path(bench.__file__).parent
# Modules that run inside the Locust process, and may import it.
INSIDE_LOCUST = ("bench.loadgen", "bench.locustfile")
# bench.loadgen modules that are pure (shared with the supervisor and the tests).
PURE_LOADGEN = ("bench.loadgen.sequence", "bench.loadgen.mode_probe", "bench.loadgen.engine",
                "bench.loadgen.pyengine", "bench.loadgen.pyengine_conn", "bench.loadgen.pyengine_loop",
                "bench.loadgen.program", "bench.loadgen.slo_ladder", "bench.loadgen.window_rules")


def supervisor_modules() -> list[str]:
    names = [m.name for m in pkgutil.walk_packages([str(BENCH)], prefix="bench.")]
    return sorted(n for n in names + ["bench"] if not n.startswith(INSIDE_LOCUST) and n != "bench.__main__")


def test_the_supervisor_list_is_not_empty() -> None:
    found = supervisor_modules()
    assert "bench.cli" in found and "bench.procs.server" in found and "bench.compare.runner" in found
    assert not any(n.startswith("bench.loadgen") for n in found)


# One fresh interpreter probes every module named in argv: a forked child imports the
# module and reports, as one JSON line, the Locust and gevent modules then loaded (or the
# import's error). A module found clean is then imported by the parent too, so later
# children start warm; the parent itself never holds Locust or gevent, so any child that
# loads them is seen.
_PROBE = """
import json, os, sys, traceback
def heavy():
    return sorted(m for m in sys.modules if m.split(".")[0] in ("locust", "gevent"))
for module in sys.argv[1:]:
    assert not heavy(), heavy()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            __import__(module)
            report = {"heavy": heavy()}
        except BaseException:
            report = {"error": traceback.format_exc(limit=3)}
        os.write(write, json.dumps([module, report]).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as reply:
        got = json.loads(reply.read())
    os.waitpid(pid, 0)
    print(json.dumps(got), flush=True)
    if got[1].get("heavy") == []:
        __import__(module)
"""


@pytest.fixture(scope="module")
def heavy_imports() -> dict[str, dict]:
    """Module -> ``{"heavy": [...]}``, the Locust and gevent modules in sys.modules after
    importing it (or ``{"error": traceback}``). One interpreter for all: one per module
    cost a CPU-second each on a busy machine."""
    modules = supervisor_modules() + list(PURE_LOADGEN) + ["bench.locustfile"]
    out = subprocess.run([sys.executable, "-c", _PROBE, *modules], capture_output=True, text=True, timeout=100)
    assert out.returncode == 0, out.stderr
    found = dict(json.loads(line) for line in out.stdout.splitlines())
    assert list(found) == modules, out.stderr
    return found


def _heavy_imports(heavy_imports: dict[str, dict], module: str) -> list[str]:
    report = heavy_imports[module]
    assert "error" not in report, f"importing {module} failed:\n{report.get('error')}"
    return report["heavy"]


@pytest.mark.parametrize("module", supervisor_modules() + list(PURE_LOADGEN))
def test_no_supervisor_module_imports_locust_or_gevent(heavy_imports, module: str) -> None:
    heavy = _heavy_imports(heavy_imports, module)
    assert not heavy, f"importing {module} loads {heavy[:3]}"


def test_the_probe_sees_an_import_of_locust(heavy_imports) -> None:
    """The check above can fail: importing the locustfile does load Locust."""
    heavy = _heavy_imports(heavy_imports, "bench.locustfile")
    assert "locust" in heavy and "gevent" in heavy
