"""Shared test helpers: real ``bench serve`` subprocesses and timed test sockets.

Every server is a real subprocess on port 0; its address comes from the ``READY
HOST:PORT`` line it prints first. Every socket made here has a timeout, so a hung
server fails a test instead of hanging the run.
"""

from __future__ import annotations

import select
import socket
import sys
import time
from typing import Callable, Iterator

import pytest

from bench.reliability import faults
from bench.reliability.faults import SOCKET_TIMEOUT, NotApplicable, ServerPool, reset  # noqa: F401  (reset: used by tests)
from bench.procs.children import bench_command  # noqa: F401  (used by tests)
from servers import backends, runtime

# The fault, soak and leak tests hold thousands of client sockets: raise this process's
# open-files soft limit to the hard limit once, for the whole session.
runtime.raise_open_files_limit()

# Every backend must pass the same conformance suite.
BACKENDS = list(backends.BACKENDS)
# The backends plus their variants (asyncio on uvloop), for the cases where a variant's
# own I/O code has been known to differ.
VARIANTS = BACKENDS + list(backends.VARIANTS)


@pytest.fixture
def serve() -> Iterator[ServerPool]:
    """A factory: ``serve(backend, *flags, quiet=True, nofile=None)`` -> a running
    :class:`bench.reliability.faults.Server` (``bench serve`` on port 0, READY read).

    On teardown each server still running gets SIGTERM and must exit 0, and no server's
    stderr may hold a traceback (:meth:`bench.reliability.faults.ServerPool.finish`).
    """
    pool = ServerPool()
    yield pool
    problems = pool.finish()
    if problems:
        pytest.fail("\n".join(problems))


def run_or_skip(fn: Callable, *args, **kw):
    """Run a :mod:`bench.reliability.cases` scenario; :class:`NotApplicable` becomes a skip
    with its reason (e.g. the blocking model cannot hold two clients at once)."""
    try:
        return fn(*args, **kw)
    except NotApplicable as exc:
        pytest.skip(str(exc))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each backend's name in turn."""
    return request.param


@pytest.fixture(params=VARIANTS)
def variant(request: pytest.FixtureRequest) -> str:
    """Each backend's name, then each variant's (``asyncio+uvloop``), in turn."""
    if request.param in backends.VARIANTS:
        pytest.importorskip("uvloop")
    return request.param


# Locust and gevent run only in subprocesses. Imported here they would monkey-patch this
# process (sleep, sockets, subprocess, signals) for every later test, and under xdist a
# worker so patched dies in gevent's LoopExit.
KEPT_OUT = ("gevent", "locust")


def _kept_out_loaded() -> list[str]:
    return [name for name in KEPT_OUT if name in sys.modules]


def pytest_collection_finish(session: pytest.Session) -> None:
    """Stop the run if collecting the tests (importing a test module) loaded them, or if
    xdist's groups are not applied (each worker would build the shared fixtures, and the
    timing tests would run beside each other)."""
    loaded = _kept_out_loaded()
    if loaded:
        raise pytest.UsageError(f"collecting the tests imported {', '.join(loaded)} into the pytest "
                                "process; import only pure modules at a test module's top")
    if getattr(session.config.option, "loadgroup", False):  # xdist workers under --dist loadgroup
        ungrouped = [item.nodeid for item in session.items
                     if item.get_closest_marker("xdist_group") and "@" not in item.nodeid]
        if ungrouped:
            raise pytest.UsageError(f"--dist loadgroup did not group {ungrouped[0]} (a pytest newer than "
                                    "this pytest-xdist supports? see pyproject's test extra)")


@pytest.fixture(autouse=True)
def _keep_locust_and_gevent_out() -> Iterator[None]:
    """Fail the test that brings Locust or gevent into the pytest process."""
    before = _kept_out_loaded()
    yield
    brought = [name for name in _kept_out_loaded() if name not in before]
    if brought:
        pytest.fail(f"this test imported {', '.join(brought)} into the pytest process; "
                    "run that code in a subprocess or import a pure module")


# -- running in parallel (pytest-xdist, ``--dist loadgroup``) ------------------------------
#
# Most tests wait on servers and subprocesses, so several xdist workers share the 2 cores.
# Tests marked ``xdist_group("timing")`` hold a rate or a deadline measured on the clock
# (an open-loop engine, a server's exit within 2 s): they run one at a time on one worker.

# Modules of long tests (subprocess pipelines, Locust, Chromium): queued first, so the
# run never ends waiting on one of them alone.
LONG_FIRST = ("test_perf_fresh_clone.py", "test_compare_e2e.py", "test_ui_browser.py",
              "test_distributed.py", "test_engine_locust.py", "test_locust_users.py",
              "test_report_browser.py", "test_soak.py", "test_ui_target.py")


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Queue the long modules first, and put the tests that share a module-scoped fixture
    in one xdist group, so the fixture (a built clone, a rendered report) is made once."""
    items.sort(key=lambda item: item.path.name not in LONG_FIRST)  # stable: order kept within
    for item in items:
        if item.get_closest_marker("xdist_group"):
            continue
        fixturedefs = getattr(item, "_fixtureinfo", None)
        shared = sorted(name for name, defs in (fixturedefs.name2fixturedefs.items() if fixturedefs else ())
                        if defs and defs[-1].scope == "module")
        if shared:
            item.add_marker(pytest.mark.xdist_group(f"{item.path.name}:{shared[0]}"))


# Sockets made by connect() during the current test; closed when it ends.
_test_sockets: list[socket.socket] = []


@pytest.fixture(autouse=True)
def _close_test_sockets() -> Iterator[None]:
    """Close every socket a test opened with :func:`connect`, pass or fail."""
    yield
    while _test_sockets:
        _test_sockets.pop().close()


def connect(address: tuple[str, int], timeout: float = SOCKET_TIMEOUT,
            rcvbuf: int | None = None) -> socket.socket:
    """:func:`bench.reliability.faults.connect`, closed automatically when the test ends."""
    sock = faults.connect(address, timeout, rcvbuf)
    _test_sockets.append(sock)
    return sock


class LineReader:
    """Reads lines from a socket, keeping what was received past the last line.

    Args:
        sock: a socket with a timeout (recv raising ``socket.timeout`` fails the read).
        skip: lines starting with this prefix are dropped (e.g. sync lines).
    """

    def __init__(self, sock: socket.socket, skip: bytes | None = None) -> None:
        self.sock = sock
        self.skip = skip
        self.buffer = bytearray()

    def _fill(self) -> bool:
        """Receive more; False on EOF (a reset counts as EOF)."""
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            return False
        self.buffer += data
        return True

    def line(self) -> bytes:
        """The next line, terminator included. Raises EOFError if the peer closed first."""
        while True:
            end = self.buffer.find(b"\n")
            while end < 0:
                if not self._fill():
                    raise EOFError(f"EOF after {bytes(self.buffer[:80])!r}")
                end = self.buffer.find(b"\n")
            line = bytes(self.buffer[: end + 1])
            del self.buffer[: end + 1]
            if self.skip is None or not line.startswith(self.skip):
                return line

    def lines(self, n: int) -> list[bytes]:
        """Exactly the next ``n`` lines."""
        return [self.line() for _ in range(n)]

    def exactly(self, n: int) -> bytes:
        """Exactly the next ``n`` bytes (no skipping)."""
        while len(self.buffer) < n:
            if not self._fill():
                raise EOFError(f"EOF after {len(self.buffer)} of {n} bytes")
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    def at_eof(self) -> bool:
        """True if the peer closed (FIN or RST) with nothing more unread."""
        return not self.buffer and not self._fill()

    def drain(self) -> bytes:
        """Everything until EOF or reset (used on a connection the server cut)."""
        while self._fill():
            pass
        data = bytes(self.buffer)
        self.buffer.clear()
        return data


def nothing_arrives(sock: socket.socket, within: float) -> bool:
    """True if no byte (and no EOF) arrives on ``sock`` within ``within`` seconds.

    Only for asserting an absence; never use it to wait for something to happen.
    """
    readable, _, _ = select.select([sock], [], [], within)
    return not readable


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes; return its last value.

    Only where there is no reply or line to await (e.g. the server noticing a close).
    """
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
