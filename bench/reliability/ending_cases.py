"""The fault cases about endings: SIGTERM and SIGINT while clients stream echoes, and
SIGTERM with hundreds of busy clients. The server must exit 0 within
:data:`~bench.reliability.faults.STOP_DEADLINE`, every client must see the close (EOF, and
for busy clients never a reset), and no traceback. Same contract as
:mod:`bench.reliability.cases`: ``case(start, backend) -> note``, ``AssertionError`` when
the server breaks the contract.
"""

from __future__ import annotations

import selectors
import signal
import socket
import subprocess
import threading
import time

from bench.reliability.faults import STOP_DEADLINE, StartFn, assert_no_traceback, connect, read_exactly, read_until_eof, reset


def _signal_under_load(start: StartFn, backend: str, sig: int) -> str:
    server = start(backend)
    n = 1 if backend == "blocking" else 30
    socks = [connect(server.address) for _ in range(n)]
    stop = threading.Event()
    results: list[str] = []

    def load(s: socket.socket) -> None:
        s.settimeout(STOP_DEADLINE + 3)
        line = b"load " + b"w" * 50 + b"\n"
        try:
            while not stop.is_set():
                s.sendall(line * 20)
                read_exactly(s, len(line) * 20)
        except (OSError, AssertionError) as exc:
            if isinstance(exc, socket.timeout):
                results.append("timeout")
                return
        try:
            _, how = read_until_eof(s)
            results.append(how)
        except AssertionError:
            results.append("timeout")

    threads = [threading.Thread(target=load, args=(s,), daemon=True) for s in socks]
    for t in threads:
        t.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    server.proc.send_signal(sig)
    try:
        status = server.proc.wait(timeout=STOP_DEADLINE + 3)
    except subprocess.TimeoutExpired:
        status = None
    took = time.monotonic() - t0
    if status is None:
        stop.set()  # the server ignored the signal: end the load now, not after 30 joins
    join_deadline = time.monotonic() + STOP_DEADLINE + 5
    for t in threads:
        t.join(max(0.0, join_deadline - time.monotonic()))
    stop.set()
    for s in socks:
        reset(s)
    assert status is not None, f"still running {STOP_DEADLINE + 3} s after {signal.Signals(sig).name}"
    assert status == 0, f"exit status {status}"
    assert took <= STOP_DEADLINE, f"took {took:.2f} s to exit"
    assert len(results) == n and "timeout" not in results, f"clients did not all see the close: {results}"
    assert_no_traceback(server)
    return f"exit 0 in {took:.2f} s; {n} clients saw the close"


def sigterm_under_load(start: StartFn, backend: str) -> str:
    """SIGTERM while clients stream echoes: exit 0 within 2 s, every client sees EOF
    (or a reset), no traceback."""
    return _signal_under_load(start, backend, signal.SIGTERM)


def sigint_under_load(start: StartFn, backend: str) -> str:
    """SIGINT, as SIGTERM."""
    return _signal_under_load(start, backend, signal.SIGINT)


def sigterm_busy_clients(start: StartFn, backend: str, clients: int = 500) -> str:
    """500 clients keep echo requests in flight (one test thread drives them all);
    SIGTERM after 1 s: exit 0 within 2 s, and every client sees EOF, not one a reset
    (closing a socket with unread input sends RST: the server must not)."""
    server = start(backend)
    n = 1 if backend == "blocking" else clients
    socks = [connect(server.address) for _ in range(n)]
    burst = (b"busy " + b"b" * 58 + b"\n") * 10
    selector = selectors.DefaultSelector()
    owed: dict[socket.socket, int] = {}
    outcome: dict[socket.socket, str] = {}

    def send(s: socket.socket) -> None:
        try:
            owed[s] += s.send(burst)
        except BlockingIOError:
            pass
        except OSError:
            outcome[s] = "reset"

    for s in socks:
        s.setblocking(False)
        owed[s] = 0
        selector.register(s, selectors.EVENT_READ)
        send(s)
    signalled_at = exited_at = None
    t0 = time.monotonic()
    deadline = t0 + 1.0 + STOP_DEADLINE + 3
    try:
        while len(outcome) < n and time.monotonic() < deadline:
            if signalled_at is None and time.monotonic() - t0 >= 1.0:
                server.proc.send_signal(signal.SIGTERM)
                signalled_at = time.monotonic()
            if signalled_at is not None and exited_at is None and server.proc.poll() is not None:
                exited_at = time.monotonic()
            for key, _ in selector.select(0.05):
                s = key.fileobj
                try:
                    data = s.recv(65536)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    data, outcome[s] = b"", "reset"
                if not data:
                    outcome.setdefault(s, "eof")
                    selector.unregister(s)
                    s.close()  # as a client does once the server has closed
                    continue
                owed[s] -= len(data)
                if owed[s] <= 0 and s not in outcome:
                    send(s)  # a busy client: the next burst at once
        try:
            status = server.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            status = None
        if exited_at is None:
            exited_at = time.monotonic()
    finally:
        selector.close()
        for s in socks:
            reset(s)
    assert signalled_at is not None, "the clients never got going"
    assert status is not None, "still running after SIGTERM"
    took = exited_at - signalled_at
    resets = sum(1 for how in outcome.values() if how == "reset")
    assert status == 0, f"exit status {status} after SIGTERM"
    assert took <= STOP_DEADLINE + 0.5, f"took {took:.2f} s to exit"
    assert resets == 0, f"{resets} of {n} busy clients were reset instead of closed"
    assert len(outcome) == n, f"{n - len(outcome)} of {n} clients never saw the close"
    assert_no_traceback(server)
    return f"{n} busy clients: all saw EOF, none a reset; exit 0 in {took:.2f} s"
