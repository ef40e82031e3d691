"""The fault cases, each a function ``case(start, backend) -> note`` that runs one
scenario against a fresh server and raises ``AssertionError`` if the server breaks the
contract (or :class:`~bench.reliability.faults.NotApplicable` where the model cannot take part).

Shared by ``tests/test_faults.py`` and ``bench reliability``: a case is written once.
"""

from __future__ import annotations

import random
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Callable

import psutil

from bench.reliability.faults import (
    ONE_AT_A_TIME,
    STOP_DEADLINE,
    NotApplicable,
    StartFn,
    assert_no_traceback,
    check_framing,
    connect,
    echoes,
    join_room,
    read_exactly,
    read_until_eof,
    reset,
)
from bench.procs.children import bench_command

# --max-line for the framing cases: small, so limit-sized lines are cheap to send.
SMALL_MAX_LINE = 64
# The slowloris cases' timeout (seconds): short enough for a test, and an order of
# magnitude above the 0.1 s dribble interval.
SHORT_TIMEOUT = 1.0
# A timeout may strike this much late (the sweep runs every tenth of it, plus load).
TIMEOUT_SLACK = 1.5


def _two_clients(backend: str) -> None:
    if backend == "blocking":
        raise NotApplicable(ONE_AT_A_TIME)


def framing_edges(start: StartFn, backend: str) -> str:
    """Lines exactly at and one past --max-line, with and without a newline; NUL,
    invalid UTF-8 and CRLF relayed verbatim."""
    m = SMALL_MAX_LINE
    server = start(backend, "--max-line", str(m))
    cases = [
        (b"a" * (m - 1) + b"\n", [], "exactly max-line with newline"),
        (b"b" * m + b"\n", [], "one past max-line with newline"),
        (b"c" * (m - 1), [], "max-line minus one, unterminated"),
        (b"d" * m, [], "max-line unterminated"),
        (b"e" * (m + 1), [], "one past max-line, unterminated"),
        (b"\x00\xff\xfe\xc3(\x80\r\n" + bytes(range(10)) + b"\n", [1, 3, 7], "NUL / invalid UTF-8 / CRLF"),
        (b"x" * (m - 2) + b"\r\n", [m - 2], "CRLF exactly at the limit, split between CR and LF"),
        (b"ok\n" + b"f" * (m - 1) + b"\n", [2, 5, 40], "limit-sized line after a short one, chunked"),
        (b"ok\nfine\n" + b"g" * (m + 5) + b"\n", [], "good lines in the same write as an over-long one"),
    ]
    for payload, cuts, what in cases:
        try:
            check_framing(server.address, payload, cuts, m)
        except AssertionError as exc:
            raise AssertionError(f"{what}: {exc}") from None
    echoes(server.address)
    return f"{len(cases)} edge streams"


def framing_fuzz(start: StartFn, backend: str, examples: int = 40, seed: int = 6) -> str:
    """Random streams (random bytes, many NULs and newlines, random chunking) checked
    against the contract's model. A fixed seed: the hypothesis version lives in the tests."""
    m = SMALL_MAX_LINE
    server = start(backend, "--max-line", str(m))
    rng = random.Random(seed)
    for i in range(examples):
        n = rng.randrange(0, 4 * m)
        alphabet = rng.choice([b"\n\x00\xff", b"ab\n", bytes(range(256)), b"\r\n\x80\xc3 x"])
        payload = bytes(rng.choices(alphabet, k=n))
        cuts = sorted(rng.sample(range(1, n), min(n - 1, rng.randrange(0, 6)))) if n > 1 else []
        try:
            check_framing(server.address, payload, cuts, m)
        except AssertionError as exc:
            raise AssertionError(f"example {i} payload={payload!r} cuts={cuts}: {exc}") from None
    echoes(server.address)
    return f"{examples} random streams"


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


def half_close(start: StartFn, backend: str) -> str:
    """After shutdown(SHUT_WR) the server answers every complete line it received
    (1,000 of them, ~50 KB, plus an unfinished one it must drop), then closes."""
    server = start(backend)
    lines = [b"half-close %05d %s\n" % (i, b"y" * 30) for i in range(1000)]
    sock = connect(server.address)
    sock.sendall(b"".join(lines) + b"unfinished")
    sock.shutdown(socket.SHUT_WR)
    got, how = read_until_eof(sock)
    reset(sock)
    assert got == b"".join(lines), f"got {len(got)} of {len(b''.join(lines))} bytes back"
    assert how == "eof", "closed with a reset, not a FIN"
    echoes(server.address)
    return f"{len(lines)} lines answered, then EOF"


def reset_mid_broadcast(start: StartFn, backend: str) -> str:
    """While a sender streams 5,000 lines, one receiver resets (RST) and one vanishes
    (closes with unread data); the remaining receiver gets every line, in order."""
    _two_clients(backend)
    server = start(backend, "--mode", "broadcast")
    sender, keeper, resetter, vanisher = (connect(server.address) for _ in range(4))
    _join([sender, keeper, resetter, vanisher])
    total = 5000
    lines = [b"B %06d %s\n" % (i, b"q" * 40) for i in range(total)]
    received = bytearray()

    def read_all() -> None:
        want = sum(map(len, lines))
        received.extend(read_exactly(keeper, want))

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    for i in range(0, total, 100):
        sender.sendall(b"".join(lines[i:i + 100]))
        if i == 1000:
            reset(resetter)
        if i == 2500:
            vanisher.close()
    reader.join(15)
    assert bytes(received) == b"".join(lines), f"receiver got {len(received)} bytes, lines lost or reordered"
    sender.sendall(b"done\n")
    assert read_exactly(keeper, 5) == b"done\n"
    for s in (sender, keeper):
        reset(s)
    assert server.proc.poll() is None, "server died"
    assert_no_traceback(server)
    return f"{total} lines delivered in order past an RST and a vanished peer"


def _join(socks: list[socket.socket]) -> None:
    """Prove every client has joined the broadcast room, then drain the join markers so
    data reads start clean."""
    join_room(socks, b"join")
    # drain every join marker so data reads start clean
    time.sleep(0.2)
    for s in socks:
        s.settimeout(0.05)
        try:
            while s.recv(65536):
                pass
        except (socket.timeout, BlockingIOError):
            pass
        s.settimeout(5.0)


def connect_burst(start: StartFn, backend: str, total: int = 1000) -> str:
    """1,000 connections opened and dropped in bursts of 100 (half RST, a quarter after
    sending half a line, a quarter FIN), then the server still echoes."""
    server = start(backend)
    done = 0
    while done < total:
        socks = []
        for _ in range(min(100, total - done)):
            socks.append(connect(server.address))
        for i, s in enumerate(socks):
            if i % 4 == 1:
                try:
                    s.send(b"half a li")
                except OSError:
                    pass
            if i % 2 == 0:
                reset(s)
            else:
                s.close()
        done += len(socks)
    echoes(server.address, tries=10.0)
    assert server.proc.poll() is None, "server died"
    assert_no_traceback(server)
    return f"{total} connects/disconnects, then served"


def max_clients_flood(start: StartFn, backend: str, limit: int = 10, excess: int = 50) -> str:
    """With --max-clients 10 and 10 clients in, 50 more each get ``ERR server full``
    and EOF; the 10 keep being served; a freed slot is usable again."""
    _two_clients(backend)
    server = start(backend, "--max-clients", str(limit))
    members = []
    for i in range(limit):
        s = connect(server.address)
        s.sendall(b"m%d\n" % i)
        assert read_exactly(s, len(b"m%d\n" % i)) == b"m%d\n" % i
        members.append(s)
    extra = [connect(server.address) for _ in range(excess)]
    for i, s in enumerate(extra):
        got, _ = read_until_eof(s)
        assert got == b"ERR server full\n", f"excess client {i} got {got!r}"
        reset(s)
    for i, s in enumerate(members):
        s.sendall(b"again\n")
        assert read_exactly(s, 6) == b"again\n", f"member {i} not served after the flood"
    reset(members.pop())
    echoes(server.address)
    for s in members:
        reset(s)
    return f"{excess} excess clients refused; members served; freed slot reused"


def fd_exhaustion(start: StartFn, backend: str, nofile: int = 64, clients: int = 120) -> str:
    """With RLIMIT_NOFILE 64 and 120 clients connecting, accept backs off (server CPU
    measured over 1 s stays under 50%), logs once for the burst, and serves again once
    the clients leave."""
    if backend == "blocking":
        raise NotApplicable("the blocking loop holds one connection at a time, so clients "
                            "cannot exhaust its descriptors")
    server = start(backend, nofile=nofile, quiet=False)
    proc = psutil.Process(server.pid)
    held = [connect(server.address) for _ in range(clients)]  # the backlog completes them
    time.sleep(0.5)  # let the server run into the limit
    cpu0 = proc.cpu_times()
    t0 = time.monotonic()
    time.sleep(1.0)
    cpu1 = proc.cpu_times()
    busy = max(0.0, cpu1.user + cpu1.system - cpu0.user - cpu0.system) / (time.monotonic() - t0)
    log = server.stderr()
    # While one burst lasts, exactly one line. (Once the held clients leave, the rest of
    # the backlog is accepted and may exhaust the descriptors again: a new burst.)
    backoffs = log.count("accept failed")
    for s in held:
        reset(s)
    echoes(server.address, tries=10.0)
    log = server.stderr()
    failed = [int(n) for n in re.findall(r"after (\d+) failed accept attempts", log)]
    # Backing off 10 ms doubling to 1 s, ~1.5 s of exhaustion is about 8 attempts.
    assert all(n <= 30 for n in failed), f"{failed} failed accept() calls per burst: spinning"
    assert busy < 0.5, f"server used {busy:.0%} CPU while out of descriptors (spinning)"
    assert backoffs == 1, f"{backoffs} back-off lines for one burst; stderr tail:\n{log[-1500:]}"
    assert "Traceback" not in log, f"traceback:\n{log[-3000:]}"
    return f"CPU {busy:.0%} while exhausted; 1 log line for the burst; served again"


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


def broadcast_burst_reader_keeps_up(start: StartFn, backend: str, count: int = 300_000) -> str:
    """One sender writes ``seq 1 300000`` (2 MB) into a broadcast room at once; one
    listener reads as fast as it can. It must get every line: a receiver is judged on
    what its socket refused, not on what the server had not yet offered it. (2 MB: past
    --max-output-buffer, yet well within what a reading client keeps up with even on a
    busy machine; a much larger burst can make a briefly descheduled reader a real slow
    consumer.)"""
    _two_clients(backend)
    server = start(backend, "--mode", "broadcast")
    sender, listener = connect(server.address), connect(server.address)
    _join([sender, listener])
    data = b"".join(b"%d\n" % i for i in range(1, count + 1))
    got = bytearray()
    listener.settimeout(10.0)

    def read_all() -> None:
        try:
            while len(got) < len(data):
                chunk = listener.recv(1 << 20)
                if not chunk:
                    return
                got.extend(chunk)
        except OSError:
            pass

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    sender.sendall(data)
    reader.join(20)
    for s in (sender, listener):
        reset(s)
    lines = bytes(got).count(b"\n")
    assert len(got) == len(data), f"the listener got {lines:,} of {count:,} lines, then was cut"
    assert bytes(got) == data, "lines lost or reordered"
    assert_no_traceback(server)
    return f"{count:,} lines ({len(data) / 1e6:.1f} MB) all delivered to a reading listener"


def never_reads(start: StartFn, backend: str, seconds: float = 2.0) -> str:
    """A client floods echo requests and never reads the replies: the server's memory
    stays bounded (RSS grows under 16 MiB while the client sends megabytes), others are
    served meanwhile, and SIGTERM still ends the server within 2 s."""
    server = start(backend, "--idle-timeout", "0")
    proc = psutil.Process(server.pid)
    rss0 = proc.memory_info().rss
    flood = connect(server.address)
    flood.setblocking(False)
    block = (b"n" * 1023 + b"\n") * 64
    offered = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        try:
            offered += flood.send(block)
        except BlockingIOError:
            time.sleep(0.01)
    grew = (proc.memory_info().rss - rss0) / 2**20
    if backend != "blocking":
        echoes(server.address)
    t0 = time.monotonic()
    status = server.stop(signal.SIGTERM, timeout=STOP_DEADLINE + 3)
    took = time.monotonic() - t0
    reset(flood)
    assert grew < 16, f"server RSS grew {grew:.1f} MiB while a client did not read"
    assert status == 0 and took <= STOP_DEADLINE, f"SIGTERM: exit {status} after {took:.2f} s"
    assert_no_traceback(server)
    return f"{offered / 2**20:.1f} MiB sent, replies never read; RSS +{grew:.1f} MiB; exit 0 in {took:.2f} s"


BAD_COMMAND_LINES = [
    (["nosuchbackend"], "unknown backend"),
    (["{b}", "--max-clients", "-1"], "negative --max-clients"),
    (["{b}", "--max-line", "-5"], "negative --max-line"),
    (["{b}", "--max-output-buffer", "0"], "zero --max-output-buffer"),
    (["{b}", "--idle-timeout", "-1"], "negative --idle-timeout"),
    (["{b}", "--line-timeout", "nan"], "NaN --line-timeout"),
    (["{b}", "--port", "http"], "non-numeric port"),
    (["{b}", "--port", "70000"], "port out of range"),
]


def bad_command_lines(start: StartFn, backend: str) -> str:
    """Usage errors exit 2 with an ``error:`` line and no traceback; a busy port is one
    line naming the address and a non-zero exit."""
    for args, what in BAD_COMMAND_LINES:
        argv = ["serve", *(a.format(b=backend) for a in args), "--port", "0"] \
            if "--port" not in args else ["serve", *(a.format(b=backend) for a in args)]
        r = subprocess.run(bench_command(*argv), capture_output=True, text=True, timeout=20,
                           stdin=subprocess.DEVNULL)
        assert r.returncode == 2, f"{what}: exit {r.returncode}, stderr {r.stderr!r}"
        assert "error:" in r.stderr and "Traceback" not in r.stderr, f"{what}: stderr {r.stderr!r}"
        assert not r.stdout.startswith("READY"), f"{what}: server started anyway"
    server = start(backend)
    r = subprocess.run(bench_command("serve", backend, "--port", str(server.port)), capture_output=True,
                       text=True, timeout=20, stdin=subprocess.DEVNULL)
    lines = r.stderr.strip().splitlines()
    assert r.returncode not in (0, None), "second server on a busy port exited 0"
    assert len(lines) == 1 and str(server.port) in lines[0], f"busy port: stderr {r.stderr!r}"
    return f"{len(BAD_COMMAND_LINES)} usage errors exit 2; busy port: {lines[0]!r}"


# name -> case, in the order the table shows them.
CASES: dict[str, Callable[[StartFn, str], str]] = {
    "framing edges (limit ±1, NUL, bad UTF-8)": framing_edges,
    "framing fuzz (random bytes and chunks)": framing_fuzz,
    "slowloris vs --line-timeout": slowloris_line_timeout,
    "slowloris vs --idle-timeout": slowloris_idle_timeout,
    "half-close answers, then closes": half_close,
    "RST / vanished peer mid-broadcast": reset_mid_broadcast,
    "1,000 connects and disconnects": connect_burst,
    "flood past --max-clients": max_clients_flood,
    "out of file descriptors": fd_exhaustion,
    "client that never reads (bounded memory)": never_reads,
    "SIGTERM under load": sigterm_under_load,
    "SIGINT under load": sigint_under_load,
    "SIGTERM with 500 busy clients (EOF, no reset)": sigterm_busy_clients,
    "broadcast burst (2 MB) to a listener that keeps up": broadcast_burst_reader_keeps_up,
    "bad command lines, busy port": bad_command_lines,
}

if __name__ == "__main__":  # pragma: no cover - ad-hoc: python -m bench.reliability.cases CASE BACKEND
    from bench.reliability.faults import ServerPool

    pool = ServerPool()
    fn = {f.__name__: f for f in CASES.values()}[sys.argv[1]]
    try:
        print(fn(pool, sys.argv[2]))
    finally:
        for problem in pool.finish():
            print(problem, file=sys.stderr)
