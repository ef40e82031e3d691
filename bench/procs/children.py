"""Child processes: command lines, start, watch, stop (``bench ui``, ``bench worker``,
the compare runner's Locust process and :class:`bench.procs.server.ServerProcess`).

Each child runs in its own session (so its own process group): a Ctrl-C in the
terminal reaches only ``bench``, which then stops every child in order, and anything
a child started itself goes with it. On Linux a child also gets SIGTERM if ``bench``
dies without cleaning up (``PR_SET_PDEATHSIG``), so a ``kill -9`` of ``bench`` leaves
no load generator behind.

Stopping is SIGTERM to the child's process group, a grace period, then SIGKILL.
"""

from __future__ import annotations

import collections
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Callable, Iterable, Sequence, TextIO

import bench

# The locustfile every Locust process here loads: the project's echo and broadcast users.
LOCUSTFILE = str(Path(bench.__file__).with_name("locustfile.py"))
# The locustfile of a ``bench compare`` mode: Locust runs the measurement schedule.
COMPARE_LOCUSTFILE = str(Path(bench.__file__).with_name("loadgen") / "compare_locustfile.py")
# Each line of its stdout that starts with this carries one JSON object of the schedule.
EVENT_PREFIX = "sockbench-event "
# The user class in LOCUSTFILE that matches each server mode.
USER_CLASS = {"echo": "EchoUser", "broadcast": "BroadcastUser"}
# Seconds a child gets to exit after SIGTERM before SIGKILL. Locust's master tells its
# workers to quit and prints its stats; a server closes its connections: ~0.5 s each.
STOP_GRACE_S = 5.0
# Seconds to wait for Locust's web UI to accept connections (imports take ~1.5 s;
# on a loaded 2-core machine several Locust processes start at once).
WEB_READY_TIMEOUT_S = 45.0
# Lines of a child's output kept to explain why it failed.
TAIL_LINES = 20
# Exit status of ``bench ui`` / ``bench worker`` when a child fails to start or dies.
EXIT_STARTUP = 1
# Locust's own default master port: where ``bench ui`` listens for workers and where
# ``bench worker`` looks for the master.
DEFAULT_MASTER_PORT = 5557

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    """libc's prctl, resolved now: the child may only call it, not look it up (after
    fork, with relay threads in the parent, a lookup could wait on a lock forever)."""
    if sys.platform != "linux":
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


# Popen's preexec_fn for a child that must die with ``bench`` (None off Linux).
DIE_WITH_PARENT = _die_with_parent if _PRCTL is not None else None


def bench_command(*args: str) -> list[str]:
    """``bench ARGS...`` with this interpreter, so PATH does not matter."""
    return [sys.executable, "-m", "bench", *args]


def locust_command(*args: str, locustfile: str = LOCUSTFILE) -> list[str]:
    """``locust -f LOCUSTFILE ARGS...`` with this interpreter (the project's locustfile
    unless ``locustfile`` is given)."""
    return [sys.executable, "-m", "locust", "-f", locustfile, *args]


def compare_locust_command(spec_path: Path, csv_prefix: Path, html_path: Path) -> list[str]:
    """One headless Locust process that runs a ``bench compare`` mode's schedule
    (:mod:`bench.loadgen.compare_locustfile`) from ``spec_path``, then quits, leaving its
    statistics in ``csv_prefix``_stats.csv (and the other CSV files) and ``html_path``.
    ``-u 0``: the schedule spawns and stops every window's users itself."""
    return locust_command("--headless", "-u", "0", "-r", "1", "--only-summary", "--loglevel", "WARNING",
                          "--sockbench-program", str(spec_path), "--csv", str(csv_prefix),
                          "--html", str(html_path), locustfile=COMPARE_LOCUSTFILE)


def locust_worker_command(master_host: str, master_port: int, loglevel: str = "WARNING") -> list[str]:
    """``locust --worker`` joining the master at ``master_host:master_port``."""
    return locust_command("--worker", "--master-host", master_host, "--master-port", str(master_port),
                          "--loglevel", loglevel)


class Child:
    """One supervised subprocess whose merged stdout/stderr is relayed line by line.

    Until :meth:`relay` is called, lines are only kept (the last :data:`TAIL_LINES`),
    so a startup failure can be explained in one line instead of a screenful of logs.

    Args:
        name: what to call it in messages ("server", "Locust", "worker 2").
        argv: the command.
        out: where relayed lines go.
        skip: lines containing any of these are never relayed (noise).
        on_line: called with every line (in the relay thread), before it is kept or relayed.
    """

    def __init__(self, name: str, argv: Sequence[str], out: TextIO = sys.stderr,
                 skip: Iterable[str] = (), on_line: Callable[[str], None] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self._out = out
        self._skip = tuple(skip)
        self._tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._relaying = False
        self._lock = threading.Lock()
        self._on_line = on_line
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=DIE_WITH_PARENT,
        )
        self._thread = threading.Thread(target=self._pump, name=f"relay-{name}", daemon=True)
        self._thread.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def relay(self) -> None:
        """From now on, write the child's lines to ``out`` (after the ones kept so far)."""
        with self._lock:
            self._relaying = True
            for line in self._tail:
                self._write(line)

    def tail(self) -> str:
        """The last non-blank line the child printed ('' if none)."""
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)  # let the pump read what a dead child left
        with self._lock:
            for line in reversed(self._tail):
                if line.strip():
                    return line.strip()
        return ""

    def _pump(self) -> None:
        for raw in iter(self.proc.stdout.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            if self._on_line is not None:
                self._on_line(line)
            with self._lock:
                self._tail.append(line)
                if self._relaying:
                    self._write(line)
        self.proc.stdout.close()

    def _write(self, line: str) -> None:
        if any(s in line for s in self._skip):
            return
        try:
            self._out.write(line + "\n")
            self._out.flush()
        except (OSError, ValueError):
            pass


def stop_processes(procs: Sequence[subprocess.Popen], grace: float = STOP_GRACE_S,
                   group: bool = False, sig: int = signal.SIGTERM) -> None:
    """SIGTERM (or ``sig``) every process still running (its whole process group when
    ``group``: a child started in its own session), wait up to ``grace`` seconds for all
    of them together, SIGKILL those left, and reap them all. The one stop rule of
    ``bench``."""
    def send(proc: subprocess.Popen, sig: int) -> None:
        try:
            os.killpg(proc.pid, sig) if group else proc.send_signal(sig)
        except (ProcessLookupError, PermissionError):
            pass

    for proc in procs:
        if proc.poll() is None:
            send(proc, sig)
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for proc in procs:
        # Only a process not yet reaped: once reaped its pid (the group id) may already
        # belong to an unrelated process. What a reaped leader left in its group is not
        # ours to chase; our children exit on SIGTERM with their leader.
        if proc.poll() is None:
            send(proc, signal.SIGKILL)
            proc.wait()


def stop_all(children: Sequence[Child], grace: float = STOP_GRACE_S) -> None:
    """SIGTERM every child's group (in the order given), wait up to ``grace`` seconds
    for all of them, SIGKILL the groups of those still running, and reap them."""
    stop_processes([child.proc for child in children], grace, group=True)


def wait_for_port(host: str, port: int, timeout: float, alive: Callable[[], bool]) -> bool:
    """Poll until ``host:port`` accepts a TCP connection; False on timeout or once
    ``alive()`` turns false."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def wait_for_workers(web_url: str, count: int, timeout: float) -> bool:
    """Poll a Locust master's web API until ``count`` workers have connected.

    A swarm started before any worker has joined does not start at all (the master
    refuses it, yet the web API reports success), so ``bench ui --workers N`` waits
    for them before printing the URL. False on timeout.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(web_url + "stats/requests", timeout=2) as reply:
                if json.load(reply).get("worker_count", 0) >= count:
                    return True
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    return False


def watch(children: Sequence[Child], interval: float = 0.2) -> Child:
    """Block until one of ``children`` exits; return it. Signals interrupt the wait."""
    while True:
        for child in children:
            if not child.alive():
                return child
        time.sleep(interval)


def connect_host(host: str) -> str:
    """The address to connect to for a listener bound to ``host`` (wildcards -> loopback)."""
    if host in ("", "0.0.0.0", "*"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def url_host(host: str) -> str:
    """``host`` as it goes in a URL (IPv6 in brackets)."""
    return f"[{host}]" if ":" in host else host


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (the kernel's pick)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
