"""Shared test helpers: real ``bench serve`` subprocesses and timed test sockets.

Every server is a real subprocess on port 0; its address comes from the ``READY
HOST:PORT`` line it prints first. Every socket made here has a timeout, so a hung
server fails a test instead of hanging the run.
"""

from __future__ import annotations

import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from bench.ready import parse_ready, read_first_line

# Every backend must pass the same conformance suite.
BACKENDS = ["blocking", "threading", "select", "gevent", "asyncio", "gevent-callback"]

# Seconds to wait for the READY line. Startup is ~0.1 s; this covers a loaded machine.
READY_TIMEOUT = 10.0
# Seconds a test socket waits on any one operation before the test fails.
SOCKET_TIMEOUT = 5.0
# Seconds a server gets to exit after SIGTERM during teardown (the contract says 2).
STOP_TIMEOUT = 5.0


def bench_command(*args: str) -> list[str]:
    """``bench ARGS...`` run with this interpreter, so PATH does not matter."""
    return [sys.executable, "-m", "bench", *args]


class Server:
    """A running ``bench serve`` subprocess.

    Attributes:
        host, port: the address from its READY line.
        proc: the process; stdout is a pipe (only READY is read), stderr a file.
    """

    def __init__(self, proc: subprocess.Popen, stderr_path: Path, host: str, port: int) -> None:
        self.proc = proc
        self.stderr_path = stderr_path
        self.host = host
        self.port = port

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def __iter__(self) -> Iterator:
        """Unpack as ``host, port, proc``."""
        return iter((self.host, self.port, self.proc))

    def stderr(self) -> str:
        """Everything the server wrote to stderr so far."""
        return self.stderr_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Send ``sig`` and wait for the exit status; kill and fail after ``timeout``."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                pytest.fail(f"server did not exit within {timeout} s of signal {sig}; "
                            f"stderr:\n{self.stderr()}")
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode


def start_server(backend: str, *flags: str, stderr_path: Path, quiet: bool = True,
                 port: int = 0) -> Server:
    """Start ``bench serve BACKEND --port PORT FLAGS...`` and wait for its READY line.

    Fails the test (showing the server's stderr) if READY does not come in time.
    """
    args = ["serve", backend, "--port", str(port), *flags]
    if quiet:
        args.append("--quiet")
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(bench_command(*args), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=err)
    line = read_first_line(proc.stdout, READY_TIMEOUT)
    if not line.startswith("READY "):
        proc.kill()
        proc.wait()
        proc.stdout.close()
        pytest.fail(f"`bench {' '.join(args)}` printed {line!r} instead of READY; "
                    f"stderr:\n{stderr_path.read_text(errors='replace')}")
    host, port = parse_ready(line)
    return Server(proc, stderr_path, host, port)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """A factory: ``serve(backend, *flags, quiet=True)`` -> a running :class:`Server`.

    On teardown each server still running gets SIGTERM and must exit 0 with no
    traceback on stderr.
    """
    servers: list[Server] = []

    def start(backend: str, *flags: str, quiet: bool = True, port: int = 0) -> Server:
        path = tmp_path / f"server{len(servers)}.stderr"
        server = start_server(backend, *flags, stderr_path=path, quiet=quiet, port=port)
        servers.append(server)
        return server

    yield start
    failures = []
    for server in servers:
        if server.proc.poll() is not None:
            if server.proc.stdout is not None:
                server.proc.stdout.close()
            continue  # the test stopped it (and checked how) itself
        status = server.stop()
        stderr = server.stderr()
        if status != 0 or "Traceback" in stderr:
            failures.append(f"server exited {status} on SIGTERM; stderr:\n{stderr}")
    if failures:
        pytest.fail("\n".join(failures))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each backend's name in turn."""
    return request.param


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
    """A TCP connection to ``address`` with ``timeout`` on every operation.

    Args:
        rcvbuf: if given, SO_RCVBUF set before connecting (shrinks the TCP window).
    """
    sock = socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET)
    _test_sockets.append(sock)
    sock.settimeout(timeout)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.connect(address)
    return sock


def reset(sock: socket.socket) -> None:
    """Close ``sock`` with SO_LINGER 0, so the peer gets an RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()


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
