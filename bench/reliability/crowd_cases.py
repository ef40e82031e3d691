"""The fault cases about crowds: resets mid-broadcast, connection bursts, floods past
--max-clients, running out of descriptors, and a burst to a listener that keeps up.
Same contract as :mod:`bench.reliability.cases` (which lists every case in ``CASES``):
``case(start, backend) -> note``, ``AssertionError`` when the server breaks the contract.
Endings (signals under load) are in :mod:`bench.reliability.ending_cases`.
"""

from __future__ import annotations

import re
import socket
import threading
import time

import psutil

from bench.reliability.faults import (
    NotApplicable,
    StartFn,
    assert_no_traceback,
    connect,
    echoes,
    join_room,
    needs_two_clients,
    read_exactly,
    read_until_eof,
    reset,
)


def reset_mid_broadcast(start: StartFn, backend: str) -> str:
    """While a sender streams 5,000 lines, one receiver resets (RST) and one vanishes
    (closes with unread data); the remaining receiver gets every line, in order."""
    needs_two_clients(backend)
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
    needs_two_clients(backend)
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


def broadcast_burst_reader_keeps_up(start: StartFn, backend: str, count: int = 300_000) -> str:
    """One sender writes ``seq 1 300000`` (2 MB) into a broadcast room at once; one
    listener reads as fast as it can. It must get every line: a receiver is judged on
    what its socket refused, not on what the server had not yet offered it. (2 MB: past
    --max-output-buffer, yet well within what a reading client keeps up with even on a
    busy machine; a much larger burst can make a briefly descheduled reader a real slow
    consumer.)"""
    needs_two_clients(backend)
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
