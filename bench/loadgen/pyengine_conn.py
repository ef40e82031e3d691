"""One connection of the pure-Python load engine: its state and its bytes, by the wire
rules ``_loop.c`` follows (echo: every byte back as sent; broadcast: sequenced lines from
:mod:`bench.loadgen.sequence`, checked per sender). The engine
(:mod:`bench.loadgen.pyengine`) owns the selector, the timers and the counts; a
connection calls back into it through :class:`Host` to fail, to count and to release a
closed-loop sender. Everything here runs on the engine's thread, under its lock.
"""

from __future__ import annotations

import errno
import math
import socket
import time
from collections import Counter, deque
from typing import Protocol

from bench.loadgen.engine import FAILURE_KINDS, Counts
from bench.loadgen.sequence import PROBE_PREFIX, format_line

MAX_LINE = 65536
MAX_US = 60_000_000  # latencies are clamped to 1 µs .. 60 s, as the native engine's
JOIN_GRACE_S = 0.1   # a closed-loop room member waits this long for the others to join
CATCH_UP_BURST = 64  # open-loop echo behind schedule sends at most this many per timer
INF = math.inf
NEW, CONNECTING, OPEN, PAUSE, GONE = range(5)


def kind_of(err: int | None) -> str:
    """The failure kind of a socket error number."""
    if err == errno.ECONNREFUSED:
        return "refused"
    return "timeout" if err == errno.ETIMEDOUT else "reset"  # reset, broken pipe, no fds, ...


class Tally:
    """What one request name counted since the last harvest (exact µs histograms)."""

    def __init__(self) -> None:
        self.ok = self.bytes = self.sent = self.lost = self.duplicated = self.out_of_order = 0
        self.sum_us = self.min_us = self.max_us = self.fail_sum_us = 0
        self.fail = dict.fromkeys(FAILURE_KINDS, 0)
        self.hist: Counter[int] = Counter()
        self.fail_hist: Counter[int] = Counter()

    def record_ok(self, us: float, nbytes: int) -> None:
        v = min(max(int(us), 1), MAX_US)
        self.min_us = min(self.min_us, v) if self.ok else v
        self.max_us = max(self.max_us, v)
        self.ok += 1
        self.bytes += nbytes
        self.sum_us += v
        self.hist[v] += 1

    def record_fail(self, kind: str, us: float) -> None:
        v = min(max(int(us), 1), MAX_US)
        self.fail[kind] += 1
        self.fail_sum_us += v
        self.fail_hist[v] += 1

    def counts(self) -> Counts:
        return Counts(requests=self.ok, failures=dict(self.fail), bytes=self.bytes, sent=self.sent,
                      lost=self.lost, duplicated=self.duplicated, out_of_order=self.out_of_order,
                      sum_us=self.sum_us, min_us=self.min_us, max_us=self.max_us,
                      failure_sum_us=self.fail_sum_us, latency_us=sorted(self.hist.items()),
                      failure_latency_us=sorted(self.fail_hist.items()))


class Host(Protocol):
    """What a connection needs from its engine."""

    prefix: bytes  # this engine's sender ids start with it

    def tally(self, kind: str) -> Tally: ...

    def fail(self, c: Conn, kind: str, now: float, since: float) -> None: ...

    def watch_write(self, c: Conn, on: bool) -> None: ...

    def release(self, sender: bytes, seq: int, now: float) -> None: ...


class Conn:
    """One echo or broadcast connection. Methods that write or read return False when the
    connection failed (already counted and dropped by the host)."""

    def __init__(self, host: Host, cid: int, kind: str, family: int, addr: tuple, size: int,
                 rate: float, timeout: float, silence: float) -> None:
        self.host, self.id, self.kind, self.family, self.addr = host, cid, kind, family, addr
        self.size, self.rate, self.timeout, self.silence = size, rate, timeout, silence
        self.payload = b"x" * (size - 1) + b"\n"
        self.sock: socket.socket | None = None
        self.state, self.deadline, self.wait_start = NEW, INF, 0.0
        self.out, self.want_write = bytearray(), False
        # echo: intended send times of the lines in flight, room for a timeout's worth at
        # this rate (a full ring means the oldest is overdue); closed loop: one
        self.ring: deque[float] = deque()
        self.ring_cap = min(1 << math.ceil(math.log2(rate * timeout + 2)), 1 << 20) if rate > 0 else 1
        self.in_pos = 0
        # broadcast: a line split across reads, this member's own sequence, and per sender
        # the highest sequence number received
        self.part = b""
        self.seq, self.sent_at, self.awaiting = 0, 0.0, False
        self.next_send, self.last_rx = INF, 0.0
        self.seen: dict[bytes, int] = {}

    def reset_buffers(self) -> None:
        self.ring.clear()
        self.out.clear()
        self.in_pos, self.part, self.awaiting, self.want_write = 0, b"", False, False

    def wait_began(self, now: float) -> float:
        """When the oldest thing this connection waits for began (a failure is timed from it)."""
        if self.state == CONNECTING:
            return self.wait_start
        if self.kind == "echo" and self.ring:
            return self.ring[0]
        return self.sent_at if self.kind == "broadcast" and self.awaiting else now

    def due(self) -> float:
        """When this connection's next timer is due (INF: none; a pause keeps its own)."""
        due = INF
        if self.state == CONNECTING:
            due = self.wait_start + self.timeout
        elif self.state == OPEN and self.kind == "echo":
            if self.ring:
                due = self.ring[0] + self.timeout
            if self.rate > 0:
                due = min(due, self.next_send)
        elif self.state == OPEN:
            due = self.next_send
            if self.awaiting:
                due = min(due, self.sent_at + self.timeout)
            if self.silence > 0:
                due = min(due, self.last_rx + self.silence)
        return due

    def send(self, data: bytes, now: float) -> bool:
        """Queue bytes and write what the socket takes now."""
        self.out += data
        return self.flush(now)

    def flush(self, now: float) -> bool:
        assert self.sock is not None
        while self.out:
            try:
                n = self.sock.send(self.out)
            except (BlockingIOError, InterruptedError):
                if not self.want_write:
                    self.want_write = True
                    self.host.watch_write(self, True)
                return True
            except OSError as exc:
                self.host.fail(self, kind_of(exc.errno), now, self.wait_began(now))
                return False
            del self.out[:n]
        if self.want_write:
            self.want_write = False
            self.host.watch_write(self, False)
        return True

    # -- echo -----------------------------------------------------------------------------

    def echo_send(self, t0: float, now: float) -> bool:
        """Send one line whose latency will be timed from ``t0``."""
        if len(self.ring) >= self.ring_cap:  # the oldest line in flight is overdue
            self.host.fail(self, "timeout", now, self.ring[0])
            return False
        self.ring.append(t0)
        self.host.tally("echo").sent += 1
        return self.send(self.payload, now)

    def echo_timer(self, now: float) -> bool:
        """The timer of an open echo connection is due: the oldest line's timeout, or (open
        loop) the lines due by now, each timed from its intended send time."""
        if self.ring and now >= self.ring[0] + self.timeout:
            self.host.fail(self, "timeout", now, self.ring[0])
            return False
        if self.rate > 0:
            interval = 1.0 / self.rate
            for _ in range(CATCH_UP_BURST):  # behind schedule: a burst at most, then yield
                if self.next_send > now:
                    break
                if not self.echo_send(self.next_send, now):
                    return False
                self.next_send += interval
        return True

    def echo_received(self, data: bytes, now: float) -> bool:
        """Check the bytes against the line sent, time each whole one."""
        off, n = 0, len(data)
        while off < n:
            if not self.ring:  # nothing in flight: the server sent something unasked
                self.host.fail(self, "protocol", now, now)
                return False
            take = min(self.size - self.in_pos, n - off)
            if data[off:off + take] != self.payload[self.in_pos:self.in_pos + take]:  # ERR, garbage
                self.host.fail(self, "protocol", now, self.ring[0])
                return False
            off += take
            self.in_pos += take
            if self.in_pos < self.size:
                break
            self.in_pos = 0
            self.host.tally("echo").record_ok((now - self.ring.popleft()) * 1e6, self.size)
            if self.rate <= 0 and not self.echo_send(now, now):
                return False
        return True

    # -- broadcast ------------------------------------------------------------------------

    def broadcast_send(self, now: float) -> bool:
        self.seq += 1
        sender = self.host.prefix + b"%x" % self.id
        line = format_line(sender, self.seq, time.time_ns() // 1000, self.size)
        self.host.tally("broadcast").sent += 1
        self.sent_at, self.awaiting = now, self.rate <= 0
        return self.send(line, now)

    def broadcast_timer(self, now: float, alone: bool) -> bool:
        """The timer of an open room member is due: a silent room, a closed-loop line nobody
        here received in time, or the next line to send. ``alone``: no other member of this
        engine is open, so a closed-loop line would never be released."""
        tally = self.host.tally("broadcast")
        if self.silence > 0 and now >= self.last_rx + self.silence:  # count it, keep listening
            tally.record_fail("timeout", (now - self.last_rx) * 1e6)
            self.last_rx = now
        if self.awaiting and now >= self.sent_at + self.timeout:  # count it, send the next
            tally.record_fail("timeout", (now - self.sent_at) * 1e6)
            self.awaiting, self.next_send = False, now
        if self.awaiting or self.next_send > now:
            return True
        if self.rate > 0:  # no catch-up bursts: a late line moves the schedule
            following = self.next_send + 1.0 / self.rate
            self.next_send = following if following > now else now + 1.0 / self.rate
        elif alone:
            self.next_send = now + JOIN_GRACE_S
            return True
        else:
            self.next_send = INF  # until a receiver here releases it
        return self.broadcast_send(now)

    def broadcast_received(self, data: bytes, now: float) -> bool:
        wall_us = time.time_ns() // 1000
        self.last_rx = now
        buf, pos = self.part + data, 0
        while (nl := buf.find(b"\n", pos)) >= 0:
            line, pos = buf[pos:nl], nl + 1
            if not self._broadcast_line(line, now, wall_us) or self.sock is None:
                return False
        self.part = buf[pos:]
        if len(self.part) >= MAX_LINE:
            self.host.fail(self, "protocol", now, now)
            return False
        return True

    def _broadcast_line(self, line: bytes, now: float, wall_us: int) -> bool:
        """One whole line "<sender> <seq> <sent µs> x...": check its sequence, time it."""
        if line.startswith(PROBE_PREFIX):
            return True
        fields = line.split(b" ", 3)
        if len(fields) < 3 or not fields[0] or not fields[1].isdigit() or not fields[2].isdigit():
            self.host.fail(self, "protocol", now, now)  # an ERR line, or not a broadcast line
            return False
        sender, seq = fields[0], int(fields[1])
        tally, last = self.host.tally("broadcast"), self.seen.get(sender)
        if last is not None:
            if seq == last:
                tally.duplicated += 1
                return True
            if seq < last:
                tally.out_of_order += 1
                return True
            tally.lost += seq - last - 1
        self.seen[sender] = seq
        tally.record_ok(wall_us - int(fields[2]), len(line) + 1)
        self.host.release(sender, seq, now)
        return True
