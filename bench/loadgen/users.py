"""Locust users that speak the line protocol over one persistent TCP connection.

* :class:`EchoUser`: closed loop. Send one line of ``--message-bytes`` (newline
  included), wait for it to come back whole, repeat.
* :class:`BroadcastUser`: joins the room; a sender sends ``--broadcast-rate`` lines
  per second, each a sequenced line (:mod:`bench.loadgen.sequence`); a reader greenlet
  times every line it receives (send to receipt, wall clock, so it works across
  processes on one machine) and counts per sender the sequence gaps (lost lines) and
  lines older than one already seen (out of order).

Each user checks first that the server is in its mode (:mod:`bench.loadgen.server_mode`)
and stands aside when it is not. A user that Locust stops is not a failure: what its
connection reports while it closes is not counted. What both users share (options, the
connection, standing aside, counting failures) is :class:`bench.loadgen.line_user.LineUser`.

Every round trip or delivery fires Locust's ``events.request`` (type ``tcp``, name
``echo`` or ``broadcast``) and is also recorded in microseconds in
:data:`bench.results.tally.BOOK`. Every wait (connect, send, reply, a silent broadcast
room) has a timeout, ``--request-timeout``; a failure is counted by kind
(timeout, reset, refused, protocol), the connection is dropped and made again.
"""

from __future__ import annotations

import itertools
import os
import random
import time

import gevent
from gevent import socket
from gevent.event import Event
from locust import task

from bench.results import tally as latency
from bench.loadgen.line_user import LineUser, ProtocolError, failure_kind, parse_host
from bench.loadgen.sequence import OUT_OF_ORDER, SequenceCheck, format_line, is_probe, parse_line
from bench.loadgen.server_mode import standing_aside
from bench.loadgen.stages import PHASE

# parse_host and failure_kind are part of this module's interface (bench.loadgen.engine_users
# imports parse_host from here); they live with the shared plumbing in bench.loadgen.line_user.
__all__ = ["BroadcastUser", "EchoUser", "LineUser", "ProtocolError", "failure_kind", "parse_host"]

RECV_SIZE = 65536
# How long on_stop waits for a broadcast reader greenlet to end.
READER_STOP_S = 1.0
# After a refused or reset connection, wait this long before connecting again, so a
# dead server costs a few failures per second per user, not a spinning CPU.
RECONNECT_PAUSE_S = 0.05
# A broadcast receiver is "timed out" when it hears nothing for the request timeout
# or for this many expected line intervals, whichever is longer.
SILENT_INTERVALS = 10

_sender_ids = itertools.count(1)


class EchoUser(LineUser):
    """One connection, closed loop: a line out, the same line back, repeat."""

    mode = "echo"

    @task
    def echo_forever(self) -> None:
        # One task call runs until Locust stops the user: a loop here costs nothing per
        # round trip, a task per round trip costs Locust's scheduler each time.
        self.idle_if_aside()
        size = self.message_bytes
        payload = b"x" * (size - 1) + b"\n"
        fire, record, perf = self._fire, latency.BOOK.record, time.perf_counter_ns
        while True:
            t0 = perf()  # a failed connect is timed from here
            try:
                sock = self.sock
                if sock is None:
                    sock = self.connect()
                    t0 = perf()  # a round trip is timed without the connect
                sock.sendall(payload)
                reply = sock.recv(RECV_SIZE)
                if reply != payload:
                    reply = self._rest_of_reply(sock, reply, payload)
                elapsed_ns = perf() - t0
            except (OSError, ProtocolError, gevent.Timeout) as exc:
                self.failed("echo", exc, t0)
                gevent.sleep(RECONNECT_PAUSE_S)
                continue
            record(elapsed_ns // 1000)
            fire(request_type="tcp", name="echo", response_time=elapsed_ns / 1e6,
                 response_length=size, exception=None, context={})

    @staticmethod
    def _rest_of_reply(sock: socket.socket, got: bytes, payload: bytes) -> bytes:
        """The reply arrived in pieces (or is wrong): read up to a line's worth and check."""
        buf = bytearray(got)
        while len(buf) < len(payload):
            if buf.startswith(b"ERR"):
                raise ProtocolError(bytes(buf).split(b"\n", 1)[0].decode("ascii", "replace"))
            if not got:
                raise ConnectionResetError("server closed the connection")
            got = sock.recv(RECV_SIZE)
            buf += got
        if bytes(buf) != payload:
            raise ProtocolError(f"reply is not the line sent ({len(buf)} bytes)")
        return bytes(buf)


class BroadcastUser(LineUser):
    """Joins the room, sends at a set rate, times what everyone else sends."""

    mode = "broadcast"

    def on_start(self) -> None:
        super().on_start()
        self.sender_id = f"{os.getpid():x}.{next(_sender_ids)}".encode()
        self.seq = 0
        self.order = SequenceCheck()
        self.broken = Event()
        self.reader: gevent.Greenlet | None = None

    def on_stop(self) -> None:
        # The reader first, and wait for it: closing the socket under a reader still in
        # recv() hands it EBADF, which must not be counted (nor the kill's own exit).
        self.stopping = True
        if self.reader is not None:
            self.reader.kill(block=True, timeout=READER_STOP_S)
        super().on_stop()

    def rate(self) -> float:
        """Lines/s this user sends: the stage's (bench compare) or the option's (web UI form)."""
        if PHASE.controlled:
            return PHASE.rate
        return float(getattr(self.environment.parsed_options, "broadcast_rate", PHASE.rate))

    def room_size(self) -> int:
        """Users in the room: the stage's target, or what this runner has running."""
        if PHASE.controlled:
            return PHASE.users
        runner = self.environment.runner
        return runner.user_count - standing_aside(self.environment) if runner is not None else 0

    def line(self) -> bytes:
        self.seq += 1
        return format_line(self.sender_id, self.seq, time.time_ns() // 1000, self.message_bytes)

    @task
    def broadcast_forever(self) -> None:
        self.idle_if_aside()
        while True:
            started = time.perf_counter_ns()
            try:
                sock = self.connect()
            except OSError as exc:
                self.failed("broadcast", exc, started)
                gevent.sleep(RECONNECT_PAUSE_S)
                continue
            self.broken.clear()
            self.reader = gevent.spawn(self.read_forever, sock)
            # a random phase, so users that start together do not send together
            self.broken.wait(random.random() / max(self.rate(), 1e-3))
            next_send = time.monotonic()
            while not self.broken.is_set():
                started = time.perf_counter_ns()
                try:
                    sock.sendall(self.line())
                except OSError as exc:
                    # When the reader failed first it has already counted this connection
                    # and closed the socket under this sendall: do not count it twice.
                    if not self.broken.is_set():
                        self.broken.set()
                        self.reader.kill(block=False)
                        self.failed("broadcast", exc, started)
                    break
                latency.BOOK.sent_line()
                interval = 1.0 / max(self.rate(), 1e-3)
                next_send = max(next_send + interval, time.monotonic())
                self.broken.wait(max(0.0, next_send - time.monotonic()))
            self.reader.kill(block=True)
            self.drop()
            gevent.sleep(RECONNECT_PAUSE_S)

    def read_forever(self, sock: socket.socket) -> None:
        """Receive lines until the connection fails; record each delivery."""
        fire, book, order = self._fire, latency.BOOK, self.order
        pending = b""
        phase = None
        while True:
            # room size and rate change only with the stage (the controller bumps
            # PHASE.version); without a controller the room is whatever Locust runs now
            if phase != PHASE.version or not PHASE.controlled:
                phase = PHASE.version
                others = self.room_size() - 1
                expected = max(others, 1) * self.rate()  # lines/s reaching this user
                sock.settimeout(max(self.timeout, SILENT_INTERVALS / max(expected, 1e-3)))
            started = time.perf_counter_ns()
            try:
                data = sock.recv(RECV_SIZE)
                if not data:
                    raise ConnectionResetError("server closed the connection")
            except TimeoutError as exc:
                if others < 1 or self.stopping:
                    continue  # alone in the room: silence is right
                book.fail("timeout")  # a silent room: count it, keep listening
                fire(request_type="tcp", name="broadcast", response_time=(time.perf_counter_ns() - started) / 1e6,
                     response_length=0, exception=exc, context={})
                continue
            except OSError as exc:
                self.broken.set()
                self.failed("broadcast", exc, started)  # nothing counted when stopping
                return
            now_us = time.time_ns() // 1000
            lines = (pending + data).split(b"\n")
            pending = lines.pop()
            for raw in lines:
                if is_probe(raw):
                    continue  # another Locust process learning the server's mode
                try:
                    sender, seq, sent_us = parse_line(raw)
                except ValueError:
                    self.broken.set()
                    self.failed("broadcast", ProtocolError(f"unexpected line {raw[:40]!r}"), started)
                    return
                lost = order.see(sender, seq)
                if lost == OUT_OF_ORDER:
                    book.gap(out_of_order=1)
                    continue
                if lost:
                    book.gap(lost=lost)
                lat_us = now_us - sent_us
                book.record(lat_us)
                fire(request_type="tcp", name="broadcast", response_time=lat_us / 1000,
                     response_length=len(raw) + 1, exception=None, context={})
