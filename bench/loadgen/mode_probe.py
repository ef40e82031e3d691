"""Does the server at HOST:PORT echo or broadcast? One probe, two connections. Pure:
plain sockets and ``select`` (cooperative under gevent's patching, blocking elsewhere), so
the Locust users (:mod:`bench.loadgen.server_mode`) and the supervisor (``bench ui
--target``) share it.

B connects, then A; A sends a probe line (:func:`bench.loadgen.sequence.probe_line`), again
every :data:`RESEND_S` until an answer, since B may join the room after the first one
arrives. A gets its line back: the server echoes. B gets it: the server broadcasts.
Anything else either of them receives is a room's traffic and skipped.
"""

from __future__ import annotations

import itertools
import os
import select
import socket
import time

from bench.loadgen.sequence import probe_line

ECHO, BROADCAST = "echo", "broadcast"
# Seconds between probe lines: B joins the room asynchronously on some backends.
RESEND_S = 0.1
RECV_SIZE = 65536

_tokens = itertools.count(1)


class ProbeError(Exception):
    """The probe learned nothing: the message says why (refused, ERR line, no answer)."""


def probe(host: str, port: int, timeout: float) -> str:
    """:data:`ECHO` or :data:`BROADCAST`: what the server at ``host:port`` does with a line.
    Opens two connections for at most ``timeout`` seconds (plus the connects).

    Raises:
        ProbeError: the server refused, closed, sent ``ERR`` or never answered.
    """
    line = probe_line(f"{os.getpid():x}.{next(_tokens)}".encode())
    deadline = time.monotonic() + timeout
    try:
        b = socket.create_connection((host, port), timeout=timeout)
        try:
            a = socket.create_connection((host, port), timeout=timeout)
            try:
                return _exchange(a, b, line, deadline)
            finally:
                a.close()
        finally:
            b.close()
    except OSError as exc:
        raise ProbeError(exc.strerror or str(exc) or type(exc).__name__) from None


def _exchange(a: socket.socket, b: socket.socket, line: bytes, deadline: float) -> str:
    pending = {a: b"", b: b""}
    next_send = 0.0
    while True:
        now = time.monotonic()
        if now >= deadline:
            raise ProbeError("no answer to a probe line")
        if now >= next_send:
            a.sendall(line)
            next_send = now + RESEND_S
        ready, _, _ = select.select(list(pending), [], [], min(RESEND_S, deadline - now))
        for sock in ready:
            data = sock.recv(RECV_SIZE)
            if not data:
                raise ProbeError("the server closed the probe connection")
            lines = (pending[sock] + data).split(b"\n")
            pending[sock] = lines.pop()
            for raw in lines:
                if raw.startswith(b"ERR"):
                    raise ProbeError(f"the server answered {raw.decode('ascii', 'replace')!r}")
                if raw + b"\n" == line:
                    return ECHO if sock is a else BROADCAST
                # anything else is the room's traffic (other users, other probes): skip
