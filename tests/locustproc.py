"""Locust as a real subprocess in tests: start one (its output in ``tmp_path/NAME.log``),
wait for a group of them under one deadline, and show their logs when something fails.

Each process runs in its own session, so a timeout kills its whole group (a master and
what it started) and no Locust outlives the test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from bench.procs.children import LOCUSTFILE, locust_command


def start_locust(tmp_path: Path, name: str, *args: str, locustfile: str = LOCUSTFILE,
                 env: dict[str, str] | None = None) -> subprocess.Popen:
    """``locust -f LOCUSTFILE ARGS...`` with stdout and stderr in ``tmp_path/NAME.log``."""
    with open(tmp_path / f"{name}.log", "wb") as log:
        return subprocess.Popen(locust_command(*args, locustfile=locustfile),
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)


def finish(procs: list[subprocess.Popen], tmp_path: Path, timeout: float) -> list[int]:
    """Wait for every process to exit within ``timeout`` seconds in all and return their
    exit statuses; on timeout kill their groups and fail the test with the logs."""
    deadline = time.monotonic() + timeout
    try:
        for proc in procs:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        pytest.fail(f"Locust did not finish within {timeout:g} s\n{logs(tmp_path)}")
    return [proc.returncode for proc in procs]


def logs(tmp_path: Path) -> str:
    """The tail of every ``*.log`` in ``tmp_path``, for failure messages."""
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                     for p in sorted(tmp_path.glob("*.log")))
