"""The loop thread of the pure-Python load engine (:mod:`bench.loadgen.pyengine`): a
``selectors`` loop over non-blocking sockets, a timer heap, and the lifecycle of each
connection (connect, open, read, write, time out, fail and reconnect after a pause).

:class:`EngineLoop` owns the engine's state; :class:`bench.loadgen.pyengine.PythonEngine`
adds the caller's side (add, remove, harvest, close). One lock guards everything: the loop
holds it except while it waits in ``select``, and callers take it to queue a command and
wake the loop. A connection's own state and wire rules are in :mod:`bench.loadgen.pyengine_conn`.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import os
import random
import selectors
import socket
import threading
import time

from bench.loadgen.engine import REQUEST_NAMES
from bench.loadgen.pyengine_conn import CONNECTING, GONE, INF, JOIN_GRACE_S, NEW, OPEN, PAUSE, Conn, Tally, kind_of

RECONNECT_PAUSE_S = 0.05  # after a failure: a few reconnects a second, never a spin
IDLE_WAIT_S = 0.2         # longest select wait; commands wake the loop at once anyway
TIMERS_PER_PASS = 4096    # so a timer that stays due cannot starve the sockets
RECV_BYTES = 65536


class EngineLoop:
    """The engine's state and the thread that serves its connections (started here)."""

    _serial = itertools.count(1)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._synced = threading.Condition(self._lock)
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._conns: dict[int, Conn] = {}
        self._new: list[Conn] = []
        self._gone: list[Conn] = []
        self._ids = itertools.count(1)
        self._tally = {name: Tally() for name in REQUEST_NAMES}
        self._heap: list[tuple[float, int, Conn]] = []
        self._tie = itertools.count()
        self._commands = self._done = 0
        self._bc_rate, self._bc_silence, self._bc_dirty = 0.0, 0.0, False
        self._open_broadcast = 0
        self._rng = random.Random()
        # sender ids "<pid>.p<serial>.<conn id hex>": a receiver here knows its own senders
        self.prefix = b"%x.p%d." % (os.getpid(), next(self._serial))
        self._stop = self._closed = False
        self._thread = threading.Thread(target=self._run, name="sockbench-pyengine", daemon=True)
        self._thread.start()
    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:  # full (the loop is awake anyway) or closed
            pass

    # -- the loop thread ------------------------------------------------------------------

    def _run(self) -> None:
        self._lock.acquire()
        try:
            while not self._stop:
                now = time.monotonic()
                wait = IDLE_WAIT_S if not self._heap else min(IDLE_WAIT_S, max(0.0, self._heap[0][0] - now))
                if self._new or self._gone or self._bc_dirty:
                    wait = 0.0
                self._lock.release()
                try:
                    events = self._sel.select(wait)
                finally:
                    self._lock.acquire()
                now = time.monotonic()
                self._run_commands(now)
                for key, mask in events:
                    conn = key.data
                    if conn is None:
                        self._drain_wake()
                    elif conn.sock is key.fileobj:  # not closed earlier in this batch
                        self._on_event(conn, mask, now)
                if events:
                    now = time.monotonic()
                for _ in range(TIMERS_PER_PASS):
                    if not self._heap or self._heap[0][0] > now:
                        break
                    due, _, conn = heapq.heappop(self._heap)
                    if conn.deadline == due and conn.state != GONE:  # else a stale entry
                        conn.deadline = INF
                        self._on_timer(conn, now)
        finally:
            for conn in list(self._conns.values()) + self._gone:
                self._close_socket(conn)
            self._sel.close()
            self._wake_r.close()
            self._synced.notify_all()
            self._lock.release()

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    def _run_commands(self, now: float) -> None:
        new, self._new = self._new, []
        for conn in new:
            if conn.id in self._conns:  # not removed before it started
                self._connect(conn, now)
        gone, self._gone = self._gone, []
        for conn in gone:
            self._close_socket(conn)
            conn.state = GONE
        if self._bc_dirty:
            self._bc_dirty = False
            for c in self._conns.values():
                if c.kind != "broadcast":
                    continue
                changed = c.rate != self._bc_rate
                c.rate, c.silence = self._bc_rate, self._bc_silence
                if c.state != OPEN:
                    continue
                if changed:  # a new schedule from now; a closed-loop line in flight is let go
                    c.awaiting = False
                    c.next_send = now + self._phase(c.rate)
                c.last_rx = now
                self._reschedule(c)
        self._done = self._commands
        self._synced.notify_all()

    def _phase(self, rate: float) -> float:
        """A random start within one interval: connections opened together send apart."""
        return self._rng.random() / rate if rate > 0 else 0.0

    def _set_deadline(self, c: Conn, due: float) -> None:
        if due != c.deadline:
            c.deadline = due
            if due != INF:
                heapq.heappush(self._heap, (due, next(self._tie), c))

    def _reschedule(self, c: Conn) -> None:
        if c.state != PAUSE:  # a pause keeps the deadline fail() set
            self._set_deadline(c, c.due())

    def _close_socket(self, c: Conn) -> None:
        if c.sock is not None:
            try:
                self._sel.unregister(c.sock)
            except (KeyError, ValueError):
                pass
            c.sock.close()
            c.sock = None
        if c.state == OPEN and c.kind == "broadcast":
            self._open_broadcast -= 1
        c.reset_buffers()

    def _connect(self, c: Conn, now: float) -> None:
        c.wait_start, c.state = now, CONNECTING
        try:
            c.sock = socket.socket(c.family, socket.SOCK_STREAM)
            c.sock.setblocking(False)
            c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            err = c.sock.connect_ex(c.addr)
            self._sel.register(c.sock, selectors.EVENT_WRITE, c)
        except OSError as exc:  # e.g. out of descriptors: counted, retried after the pause
            self.fail(c, kind_of(exc.errno), now, now)
            return
        if err == 0:
            self._opened(c, now)
        elif err in (errno.EINPROGRESS, errno.EAGAIN):
            self._reschedule(c)
        else:
            self.fail(c, kind_of(err), now, now)

    def _opened(self, c: Conn, now: float) -> None:
        assert c.sock is not None
        c.state, c.last_rx = OPEN, now
        self._sel.modify(c.sock, selectors.EVENT_READ, c)
        if c.kind == "echo":
            if c.rate > 0:
                c.next_send = now + self._phase(c.rate)
            elif not c.echo_send(now, now):
                return
        else:
            self._open_broadcast += 1
            c.seen.clear()
            c.next_send = now + (self._phase(c.rate) if c.rate > 0 else JOIN_GRACE_S)
        self._reschedule(c)

    def _on_event(self, c: Conn, mask: int, now: float) -> None:
        assert c.sock is not None
        if c.state == CONNECTING:
            err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.fail(c, kind_of(err), now, c.wait_start)
            else:
                self._opened(c, now)
            return
        if mask & selectors.EVENT_READ:
            try:
                data = c.sock.recv(RECV_BYTES)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError as exc:
                self.fail(c, kind_of(exc.errno), now, c.wait_began(now))
                return
            if data == b"":  # the server closed the connection
                self.fail(c, "reset", now, c.wait_began(now))
                return
            if data and not (c.echo_received(data, now) if c.kind == "echo"
                             else c.broadcast_received(data, now)):
                return
        if mask & selectors.EVENT_WRITE and c.want_write and not c.flush(now):
            return
        self._reschedule(c)

    def _on_timer(self, c: Conn, now: float) -> None:
        if c.state in (PAUSE, NEW):
            self._connect(c, now)
            return
        if c.state == CONNECTING:
            if now >= c.wait_start + c.timeout:
                self.fail(c, "timeout", now, c.wait_start)
                return
        elif c.state == OPEN and not (c.echo_timer(now) if c.kind == "echo"
                                      else c.broadcast_timer(now, alone=self._open_broadcast < 2)):
            return
        self._reschedule(c)

    # -- what a connection calls back (pyengine_conn.Host) ------------------------------

    def tally(self, kind: str) -> Tally:
        return self._tally[kind]

    def fail(self, c: Conn, kind: str, now: float, since: float) -> None:
        """Count one failure, drop the connection, connect again after a pause."""
        self._tally[c.kind].record_fail(kind, (now - since) * 1e6)
        self._close_socket(c)
        c.state = PAUSE
        self._set_deadline(c, now + RECONNECT_PAUSE_S)

    def watch_write(self, c: Conn, on: bool) -> None:
        assert c.sock is not None
        self._sel.modify(c.sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if on else 0), c)

    def release(self, sender: bytes, seq: int, now: float) -> None:
        """A closed-loop sender of this engine whose line reached a receiver sends its next."""
        if not sender.startswith(self.prefix):
            return
        try:
            s = self._conns.get(int(sender[len(self.prefix):], 16))
        except ValueError:
            return
        if s is None or s.state != OPEN or not s.awaiting or s.seq != seq:
            return
        s.awaiting = False
        if s.broadcast_send(now):
            self._reschedule(s)
