"""The two long checks behind the reliability figures: a broadcast soak (nothing lost,
duplicated or reordered per sender) and a leak check (resident memory over cycles of
connections). Both are bounded in clients and seconds and use loopback only.

Each takes a ``start`` factory (see :func:`bench.reliability.faults.start_server`) and returns a
result object; neither raises on a bad outcome (the caller judges ``ok``), only
:class:`~bench.reliability.faults.NotApplicable` for the blocking backend's soak.
"""

from __future__ import annotations

import selectors
import socket
import time
from dataclasses import asdict, dataclass

import psutil

from bench.loadgen.sequence import SequenceCheck, format_line, parse_line
from bench.reliability.faults import (
    ONE_AT_A_TIME,
    NotApplicable,
    StartFn,
    connect,
    echoes,
    join_room,
    read_exactly,
    reset,
)

# Lines per second sent into the room, summed over all senders (one line per client per
# second with 200 clients). Each line fans out to 199 receivers: ~40,000 deliveries/s,
# which one Python client process reading all 200 sockets sustains on 2 cores alongside
# the slowest server with room to spare (500 lines/s also passed on threading).
DEFAULT_SOAK_RATE = 200
# Bytes per soak line (a sequenced line, :mod:`bench.loadgen.sequence`): a chat-sized line.
SOAK_LINE = 48
# After sending stops, how long receivers get to catch up before what is missing counts
# as lost.
DRAIN_SECONDS = 10.0
# The leak check's allowance: RSS after the last cycle within 10% of the first.
LEAK_TOLERANCE = 0.10


@dataclass
class SoakResult:
    backend: str
    clients: int
    seconds: float
    rate: float  # lines/s sent, measured
    sent: int  # lines sent into the room
    delivered: int  # lines received, all receivers
    lost: int
    out_of_order: int  # duplicated or reordered
    dropped_clients: int  # disconnected by the server during the soak (excluded)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.out_of_order == 0 and self.dropped_clients == 0

    def as_dict(self) -> dict:
        return asdict(self) | {"ok": self.ok}


def broadcast_soak(start: StartFn, backend: str, clients: int = 200, seconds: float = 60.0,
                   rate: float = DEFAULT_SOAK_RATE) -> SoakResult:
    """``clients`` clients in a broadcast room; lines sent round-robin at ``rate`` per
    second for ``seconds``; every receiver checks each sender's sequence numbers."""
    if backend == "blocking":
        raise NotApplicable(ONE_AT_A_TIME)
    server = start(backend, "--mode", "broadcast", "--max-clients", str(clients + 10),
                   "--idle-timeout", "0")
    socks = [connect(server.address) for _ in range(clients)]
    try:
        join_room(socks, b"J")  # the soak reader skips these markers: not sequenced lines
        return _soak(socks, backend, seconds, rate)
    finally:
        for s in socks:
            reset(s)


def _soak(socks: list[socket.socket], backend: str, seconds: float, rate: float) -> SoakResult:
    n = len(socks)
    sel = selectors.DefaultSelector()
    for i, s in enumerate(socks):
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, i)
    # one check per receiver; every sender's numbers start at 0 and the receivers are
    # in the room before the first line, so any gap is a lost line
    checks = [SequenceCheck(first_seq=0) for _ in range(n)]
    names = [b"%d" % k for k in range(n)]
    sent = [0] * n
    buffers = [b""] * n
    alive = [True] * n
    delivered = 0

    def receive(timeout: float) -> None:
        nonlocal delivered
        for key, _ in sel.select(timeout):
            r = key.data
            try:
                data = socks[r].recv(262144)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                alive[r] = False
                sel.unregister(socks[r])
                continue
            chunks = (buffers[r] + data).split(b"\n")
            buffers[r] = chunks.pop()
            check = checks[r]
            for line in chunks:
                try:
                    sender, seq, _ = parse_line(line)
                except ValueError:
                    continue  # a join marker
                check.see(sender, seq)
                delivered += 1

    receive(0.2)  # leftovers of the join phase
    delivered = 0
    t0 = time.monotonic()
    total = 0
    sender = 0
    while (elapsed := time.monotonic() - t0) < seconds:
        due = int(elapsed * rate) - total
        for _ in range(max(0, due)):
            if alive[sender]:
                line = format_line(names[sender], sent[sender], time.time_ns() // 1000, SOAK_LINE)
                socks[sender].settimeout(5.0)
                socks[sender].sendall(line)
                socks[sender].setblocking(False)
                sent[sender] += 1
            total += 1
            sender = (sender + 1) % n
        receive(0.005)
    took = time.monotonic() - t0

    def caught_up(r: int) -> bool:
        return all(checks[r].missing(names[s], sent[s]) == 0 for s in range(n) if s != r)

    deadline = time.monotonic() + DRAIN_SECONDS
    while time.monotonic() < deadline:
        if all(caught_up(r) for r in range(n) if alive[r]):
            break
        receive(0.05)
    lost = disorder = 0
    for r in range(n):
        if alive[r]:
            lost += checks[r].lost + sum(checks[r].missing(names[s], sent[s]) for s in range(n) if s != r)
            disorder += checks[r].out_of_order
    sel.close()
    return SoakResult(backend, n, round(took, 1), round(sum(sent) / took, 1), sum(sent), delivered,
                      lost, disorder, alive.count(False))


@dataclass
class LeakResult:
    backend: str
    connections: int  # per cycle
    rss_mb: list[float]  # after each cycle
    baseline_mb: float  # before the first cycle

    @property
    def growth(self) -> float:
        """RSS after the last cycle relative to the first."""
        return self.rss_mb[-1] / self.rss_mb[0] - 1

    @property
    def ok(self) -> bool:
        return self.growth <= LEAK_TOLERANCE

    def as_dict(self) -> dict:
        return asdict(self) | {"growth": round(self.growth, 4), "ok": self.ok}


def _rss_mb(proc: psutil.Process) -> float:
    return round(proc.memory_info().rss / 2**20, 2)


def leak_check(start: StartFn, backend: str, connections: int = 1000, cycles: int = 3) -> LeakResult:
    """Open ``connections`` clients (each echoes one line, so the server has set it up
    fully), close them all (RST), measure the server's RSS; ``cycles`` times.

    The blocking backend cannot hold them at once: it gets them one after another.
    """
    server = start(backend, "--max-clients", str(connections + 10))
    proc = psutil.Process(server.pid)
    echoes(server.address)
    baseline = _rss_mb(proc)
    rss = []
    line = b"leak check line\n"
    for _ in range(cycles):
        if backend == "blocking":
            for _ in range(connections):
                s = connect(server.address)
                s.sendall(line)
                read_exactly(s, len(line))
                reset(s)
        else:
            socks = []
            for _ in range(connections):
                s = connect(server.address)
                s.sendall(line)
                socks.append(s)
            for s in socks:
                read_exactly(s, len(line))
            for s in socks:
                reset(s)
        # The server has seen every reset once a fresh client is served and the
        # connection count is back to the listener's.
        echoes(server.address)
        _settle(proc)
        rss.append(_rss_mb(proc))
    return LeakResult(backend, connections, rss, baseline)


def _settle(proc: psutil.Process, timeout: float = 5.0) -> None:
    """Wait until the server holds no client connection (it has processed the resets)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conns = [c for c in proc.net_connections(kind="tcp") if c.status != psutil.CONN_LISTEN]
        except (psutil.Error, AttributeError):
            time.sleep(0.5)
            return
        if not conns:
            return
        time.sleep(0.05)
