"""Run ``bench ui`` / ``bench worker`` as real subprocesses for tests, and prove that
stopping them leaves no process behind.

Every wait here has a timeout; a hung child fails the test instead of the run.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from bench.procs.ready import read_first_line
from bench.procs.children import bench_command, free_port  # noqa: F401  (free_port: used by tests)

# Locust's web UI takes ~2 s to start (imports); a busy 2-core machine, several times that.
UI_READY_TIMEOUT_S = 60.0
# bench ui stops its children with SIGTERM and a 5 s grace before SIGKILL.
UI_STOP_TIMEOUT_S = 20.0
URL_RE = re.compile(r"^Locust web UI: (http://\S+)$")


class UiProcess:
    """A running ``bench ui``: ``url``, the ``target`` line, and the process."""

    def __init__(self, args: list[str], tmp_path: Path) -> None:
        self.stderr_path = tmp_path / "bench-ui.stderr"
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(bench_command("ui", *args), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=err)
        self.lines: list[str] = []
        self.url = ""
        deadline = time.monotonic() + UI_READY_TIMEOUT_S
        while not self.url:
            line = self._line(deadline)
            if line is None:
                self.kill()
                pytest.fail(f"`bench ui {' '.join(args)}` printed no URL within "
                            f"{UI_READY_TIMEOUT_S:g} s; stdout {self.lines!r}; stderr:\n{self.stderr()}")
            self.lines.append(line)
            match = URL_RE.match(line)
            if match:
                self.url = match.group(1)

    def _line(self, deadline: float) -> str | None:
        """The next stdout line, or None on EOF or at ``deadline`` (bench ui prints no
        empty lines, so '' from read_first_line only ever means that)."""
        return read_first_line(self.proc.stdout, deadline - time.monotonic()) or None

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def descendants(self) -> list[psutil.Process]:
        """Every process below ``bench ui`` (server, Locust, workers)."""
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send ``sig``; return the exit status; fail if any descendant outlives it."""
        family = self.descendants()
        assert family, "bench ui has no child processes to stop"
        self.proc.send_signal(sig)
        try:
            status = self.proc.wait(timeout=UI_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"bench ui did not exit within {UI_STOP_TIMEOUT_S:g} s of signal {sig}")
        assert_all_gone(family)
        self.proc.stdout.close()
        return status

    def kill(self) -> None:
        """Last resort in teardown: SIGKILL ``bench ui`` and everything below it."""
        for child in self.descendants():
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if not self.proc.stdout.closed:
            self.proc.stdout.close()


def assert_all_gone(procs: list[psutil.Process], timeout: float = 5.0) -> None:
    """Fail unless every process in ``procs`` has exited (zombies count as gone)."""
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    alive = [p for p in alive if _running(p)]
    if alive:
        described = [f"{p.pid} {' '.join(_cmdline(p))}" for p in alive]
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        pytest.fail(f"processes left behind: {described}")


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:
        return ["?"]
