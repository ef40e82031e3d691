"""The slowloris cases: a client that dribbles a line byte by byte, or starts one and
goes silent, is cut by ``--line-timeout`` / ``--idle-timeout`` with its ``ERR`` line while
a well-behaved client keeps getting prompt echoes. Listed in
:data:`bench.reliability.cases.CASES`; each is ``case(start, backend) -> note``.
"""

from __future__ import annotations

import socket
import threading
import time

from bench.reliability.faults import StartFn, connect, echoes, read_exactly, read_until_eof, reset

# The slowloris cases' timeout (seconds): short enough for a test, and an order of
# magnitude above the 0.1 s dribble interval.
SHORT_TIMEOUT = 1.0
# A timeout may strike this much late (the sweep runs every tenth of it, plus load).
TIMEOUT_SLACK = 1.5


def _dribble_until_cut(sock: socket.socket, interval: float, budget: float) -> tuple[float, bytes]:
    """Send one byte every ``interval`` s (never a newline) until the server answers;
    return (seconds it took, what it sent before closing)."""
    t0 = time.monotonic()
    sock.settimeout(interval)
    while time.monotonic() - t0 < budget:
        try:
            sock.send(b"z")
        except OSError:
            break
        try:
            data = sock.recv(4096)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return time.monotonic() - t0, b""
        sock.settimeout(2.0)
        rest, _ = read_until_eof(sock) if data else (b"", "eof")
        return time.monotonic() - t0, data + rest
    raise AssertionError(f"dribbling client still connected after {budget} s")


def _slowloris(start: StartFn, backend: str, which: str) -> str:
    t = SHORT_TIMEOUT
    flags = ["--line-timeout", str(t), "--idle-timeout", "0"] if which == "line" else \
            ["--idle-timeout", str(t), "--line-timeout", "0"]
    server = start(backend, *flags)
    other = None
    if backend != "blocking":
        other = connect(server.address)
        other.sendall(b"hi\n")
        assert read_exactly(other, 3) == b"hi\n"
    slow = connect(server.address)
    stop = threading.Event()
    worst = [0.0]
    failures: list[str] = []

    def chat() -> None:  # the well-behaved client: a line every 0.1 s, answered quickly
        n = 0
        while not stop.is_set():
            line = b"line %d\n" % n
            t0 = time.monotonic()
            try:
                other.sendall(line)
                got = read_exactly(other, len(line))
            except (OSError, AssertionError) as exc:
                failures.append(f"well-behaved client: {exc}")
                return
            if got != line:
                failures.append(f"well-behaved client got {got!r}")
                return
            worst[0] = max(worst[0], time.monotonic() - t0)
            n += 1
            stop.wait(0.1)

    chatter = threading.Thread(target=chat, daemon=True) if other else None
    if chatter:
        chatter.start()
    try:
        if which == "line":
            took, got = _dribble_until_cut(slow, 0.1, t + 5)
        else:
            slow.sendall(b"z")  # a started line, then silence
            slow.settimeout(t + 5)
            t0 = time.monotonic()
            got, _ = read_until_eof(slow)
            took = time.monotonic() - t0
    finally:
        stop.set()
        if chatter:
            chatter.join(5)
        reset(slow)
    want = b"ERR line timeout\n" if which == "line" else b"ERR idle timeout\n"
    assert got == want, f"slow client got {got!r}, want {want!r}"
    assert t * 0.9 <= took <= t + TIMEOUT_SLACK, f"cut after {took:.2f} s with a {t} s timeout"
    assert not failures, failures[0]
    if other is not None:
        other.sendall(b"after\n")
        assert read_exactly(other, 6) == b"after\n", "well-behaved client lost after the cut"
        reset(other)
        assert worst[0] < 0.5, f"well-behaved client waited {worst[0]:.2f} s for an echo"
        return f"cut after {took:.2f} s; other client's worst echo {worst[0] * 1000:.0f} ms"
    echoes(server.address)
    return f"cut after {took:.2f} s; next client served"


def slowloris_line_timeout(start: StartFn, backend: str) -> str:
    """A client dribbling a byte every 0.1 s, never finishing a line, is cut by
    --line-timeout 1 (idle timeout off); a well-behaved client is unaffected."""
    return _slowloris(start, backend, "line")


def slowloris_idle_timeout(start: StartFn, backend: str) -> str:
    """A client that starts a line and goes silent is cut by --idle-timeout 1
    (line timeout off); a well-behaved client is unaffected."""
    return _slowloris(start, backend, "idle")
