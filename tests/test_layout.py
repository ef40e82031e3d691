"""The rooms of bench/ hold: code that supervises processes never imports Locust or
gevent (importing them monkey-patches the interpreter: signals, sleep, subprocess).
Only bench/loadgen (and bench/locustfile.py, which Locust loads) run inside Locust."""

from __future__ import annotations

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


def _heavy_imports(module: str) -> list[str]:
    """Locust and gevent modules in sys.modules after importing ``module`` in a fresh
    interpreter."""
    probe = (f"import sys, {module}; "
             "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in ('locust', 'gevent'))))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=100)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


@pytest.mark.parametrize("module", supervisor_modules() + list(PURE_LOADGEN))
def test_no_supervisor_module_imports_locust_or_gevent(module: str) -> None:
    heavy = _heavy_imports(module)
    assert not heavy, f"importing {module} loads {heavy[:3]}"


def test_the_probe_sees_an_import_of_locust() -> None:
    """The check above can fail: importing the locustfile does load Locust."""
    heavy = _heavy_imports("bench.locustfile")
    assert "locust" in heavy and "gevent" in heavy
