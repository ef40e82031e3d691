"""The harness shared by the fault tests and ``bench reliability``: start a real
``bench serve`` subprocess on port 0 (:class:`bench.procs.server.ServerProcess`), talk to it with timed sockets, and model what the
wire contract says a server must answer.

No pytest here: a scenario signals failure with ``AssertionError`` and a case that a
concurrency model cannot run with :class:`NotApplicable` (the tests turn it into a skip,
the command into "n/a" in its table).
"""

from __future__ import annotations

import signal
import socket
import time
from dataclasses import dataclass
from typing import Callable

from bench.procs.server import ServerProcess, ServerStartError

# Seconds to wait for the READY line (startup is ~0.2 s; this covers a loaded machine).
READY_TIMEOUT = 10.0
# Seconds any one operation on a test socket may take before the scenario fails.
SOCKET_TIMEOUT = 5.0
# The contract: SIGTERM/SIGINT end the server within 2 s.
STOP_DEADLINE = 2.0

ONE_AT_A_TIME = "the blocking backend serves one client at a time (others wait in the backlog)"


class NotApplicable(Exception):
    """This case cannot apply to this concurrency model; the message says why."""


# A server here is a :class:`bench.procs.server.ServerProcess`.
Server = ServerProcess


def start_server(backend: str, *flags: str, quiet: bool = True, nofile: int | None = None,
                 port: int = 0) -> Server:
    """Start ``bench serve BACKEND --port 0 FLAGS...`` and wait for READY. ``backend``
    may also name a variant (:data:`servers.backends.VARIANTS`, e.g. ``asyncio+uvloop``).

    Args:
        nofile: if given, the server's open-files limit (soft and hard).

    Raises:
        AssertionError: READY did not come (the message carries the server's stderr).
    """
    try:
        return ServerProcess.serve(backend, *flags, quiet=quiet, nofile=nofile, port=port,
                                   ready_timeout=READY_TIMEOUT)
    except ServerStartError as exc:
        raise AssertionError(str(exc)) from None


# A factory with start_server's signature; tests pass one that also cleans up.
StartFn = Callable[..., Server]


class ServerPool:
    """A :data:`StartFn` that remembers its servers, to stop and judge them afterwards.

    The rule every server is judged by: still running at the end, it must exit 0 on
    SIGTERM; and its stderr must hold no traceback.
    """

    def __init__(self) -> None:
        self.started: list[Server] = []

    def __call__(self, backend: str, *flags: str, **kw) -> Server:
        server = start_server(backend, *flags, **kw)
        self.started.append(server)
        return server

    def finish(self) -> list[str]:
        """Stop every server still running and release them all; return the problems
        found (empty when every server behaved)."""
        problems = []
        for server in self.started:
            running = server.proc.poll() is None
            status = server.stop(signal.SIGTERM) if running else server.proc.returncode
            text = server.stderr()
            if "Traceback" in text:
                problems.append("traceback on the server's stderr:\n" + text[-2000:])
            elif running and status != 0:
                problems.append(f"server exited {status} on SIGTERM; stderr:\n{text[-2000:]}")
            server.close()
        self.started.clear()
        return problems


def connect(address: tuple[str, int], timeout: float = SOCKET_TIMEOUT,
            rcvbuf: int | None = None) -> socket.socket:
    """A TCP connection to ``address`` with ``timeout`` on every operation.

    Args:
        rcvbuf: if given, SO_RCVBUF set before connecting (shrinks the TCP window, so a
            client that stops reading backs up into the server sooner).
    """
    sock = socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET)
    try:
        sock.settimeout(timeout)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


def join_room(socks: list[socket.socket], prefix: bytes, timeout: float = 15.0) -> None:
    """Prove every client has joined a broadcast room.

    Client k sends ``PREFIX k\\n`` (again every 0.3 s, since a line sent before a
    receiver joined goes nowhere) until client 0 receives it (client 1, for client 0).
    The markers stay in the receivers' streams; callers skip or drain them.

    Raises:
        AssertionError: a client never joined within ``timeout``, or the server closed
            the receiving client meanwhile.
    """
    for k, sender in enumerate(socks):
        probe = socks[1] if k == 0 else socks[0]
        marker = b"%s %d\n" % (prefix, k)
        deadline = time.monotonic() + timeout
        seen = b""
        probe.settimeout(0.3)
        try:
            while marker not in seen:
                sender.sendall(marker)
                try:
                    while marker not in seen:
                        chunk = probe.recv(65536)
                        if not chunk:
                            raise AssertionError(f"the server closed a client while client {k} was joining")
                        seen = seen[-64:] + chunk  # a marker may straddle two reads
                except socket.timeout:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"client {k} never joined the room") from None
        finally:
            probe.settimeout(SOCKET_TIMEOUT)


def reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets an RST, and no TIME_WAIT is left behind."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    except OSError:
        pass
    sock.close()


def read_until_eof(sock: socket.socket, limit: int = 1 << 22) -> tuple[bytes, str]:
    """Everything until the peer closes; returns (data, how): ``eof`` or ``reset``.

    Raises:
        AssertionError: the peer neither closed within the socket timeout nor sent
            fewer than ``limit`` bytes.
    """
    chunks = []
    size = 0
    while size < limit:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return b"".join(chunks), "reset"
        except socket.timeout:
            raise AssertionError(f"no EOF within {sock.gettimeout()} s; got {b''.join(chunks)[-80:]!r}")
        if not data:
            return b"".join(chunks), "eof"
        chunks.append(data)
        size += len(data)
    raise AssertionError(f"more than {limit} bytes and no EOF")


def read_exactly(sock: socket.socket, n: int) -> bytes:
    """Exactly ``n`` bytes, or AssertionError on EOF or timeout."""
    buf = bytearray()
    while len(buf) < n:
        try:
            data = sock.recv(n - len(buf))
        except socket.timeout:
            raise AssertionError(f"timed out after {len(buf)} of {n} bytes: {bytes(buf[-80:])!r}")
        if not data:
            raise AssertionError(f"EOF after {len(buf)} of {n} bytes: {bytes(buf[-80:])!r}")
        buf += data
    return bytes(buf)


def echoes(address: tuple[str, int], line: bytes = b"still serving\n", tries: float = 5.0) -> None:
    """A fresh connection gets ``line`` echoed; retries connecting for ``tries`` seconds."""
    deadline = time.monotonic() + tries
    while True:
        try:
            sock = connect(address, timeout=max(0.5, deadline - time.monotonic()))
            try:
                sock.sendall(line)
                got = read_exactly(sock, len(line))
            finally:
                reset(sock)
            assert got == line, f"echo returned {got!r}"
            return
        except (OSError, AssertionError):
            if time.monotonic() >= deadline:
                raise


def assert_no_traceback(server: Server) -> None:
    text = server.stderr()
    assert "Traceback" not in text, f"traceback on the server's stderr:\n{text[-3000:]}"


# -- the framing model -------------------------------------------------------------


@dataclass(frozen=True)
class FramingExpectation:
    """What an echo server with ``max_line`` must answer to a byte stream.

    Attributes:
        send: the bytes worth sending (cut where the line limit is certainly broken,
            so the server never closes with unread input, which would turn its FIN
            into an RST and could destroy the ERR line in flight).
        lines: the complete lines before any violation, each to be echoed.
        too_long: the stream breaks the limit: the answer is every one of ``lines``
            (however the bytes were split), then ``ERR line too long``, then EOF.
    """

    send: bytes
    lines: tuple[bytes, ...]
    too_long: bool


def expect_framing(payload: bytes, max_line: int) -> FramingExpectation:
    """Apply the contract to ``payload``: lines of at most ``max_line`` bytes,
    terminator included; an unterminated run of ``max_line`` bytes already breaks it."""
    lines = []
    start = 0
    while True:
        end = payload.find(b"\n", start)
        run_end = len(payload) if end < 0 else end  # bytes before the terminator
        if run_end - start >= max_line:
            return FramingExpectation(payload[: start + max_line], tuple(lines), True)
        if end < 0:
            return FramingExpectation(payload, tuple(lines), False)
        lines.append(payload[start: end + 1])
        start = end + 1


def check_framing(address: tuple[str, int], payload: bytes, cuts: list[int], max_line: int,
                  err_line: bytes = b"ERR line too long\n") -> None:
    """Send ``payload`` split at ``cuts`` (offsets), half-close, check the answer.

    Raises:
        AssertionError: the server's answer breaks the contract.
    """
    want = expect_framing(payload, max_line)
    data = want.send
    bounds = sorted({c for c in cuts if 0 < c < len(data)}) + [len(data)]
    sock = connect(address)
    try:
        prev = 0
        try:
            for b in bounds:
                sock.sendall(data[prev:b])
                prev = b
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            assert want.too_long, "server closed a connection that broke no limit"
        got, how = read_until_eof(sock)
    finally:
        reset(sock)
    echoed = b"".join(want.lines)
    if not want.too_long:
        assert got == echoed, f"echo mismatch: sent {len(data)} B, want {echoed[:120]!r}, got {got[:120]!r}"
        assert how == "eof", "half-closed client was reset instead of closed"
        return
    assert got.endswith(err_line), f"over-long line: no {err_line!r} at the end of {got[-120:]!r} ({how})"
    before = got[: -len(err_line)]
    assert before == echoed, f"lines before the ERR: want {echoed[-120:]!r}, got {before[-120:]!r}"


def needs_two_clients(backend: str) -> None:
    """A case that needs two clients at once cannot run on the blocking model.

    Raises:
        NotApplicable: ``backend`` is "blocking".
    """
    if backend == "blocking":
        raise NotApplicable(ONE_AT_A_TIME)
