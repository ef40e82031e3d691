"""What both Locust line users share (:mod:`bench.loadgen.users`): the options, one
persistent TCP connection, standing aside when the server is in the other mode, and
counting a failed wait by kind (timeout, refused, reset, protocol) in Locust's stats and
in :data:`bench.results.tally.BOOK`. A user that Locust stops is not a failure: what its
connection reports while it closes is not counted.
"""

from __future__ import annotations

import time

import gevent
from gevent import socket
from locust import User

from bench.results import tally as latency
from bench.results.config import DEFAULT_MESSAGE_BYTES, DEFAULT_REQUEST_TIMEOUT
from bench.loadgen.server_mode import stands_aside, step_back_in

# A user standing aside wakes this often only to let Locust stop it.
IDLE_S = 3600.0

class ProtocolError(Exception):
    """The server sent something the contract does not allow here (e.g. an ERR line)."""


def failure_kind(exc: BaseException) -> str:
    """Classify a failed wait as timeout, refused, reset or protocol."""
    if isinstance(exc, (TimeoutError, socket.timeout, gevent.Timeout)):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ProtocolError):
        return "protocol"
    return "reset"  # ConnectionResetError, BrokenPipeError, EOF, other OSError


def parse_host(host: str | None) -> tuple[str, int]:
    """``HOST:PORT``, ``tcp://HOST:PORT`` or ``[::1]:PORT`` -> (host, port)."""
    if not host:
        raise ValueError("no host: pass --host HOST:PORT")
    text = host.split("://", 1)[-1].rstrip("/")
    name, _, port = text.rpartition(":")
    if not name or not port.isdigit():
        raise ValueError(f"host must be HOST:PORT, got {host!r}")
    return name.strip("[]"), int(port)


class LineUser(User):
    """Shared plumbing: options, one connection, reporting, standing aside, stopping."""

    abstract = True
    mode = ""  # the server mode this user is for: "echo" or "broadcast"
    aside = False  # the server is in the other mode: this user does nothing
    stopping = False  # Locust is stopping this user: nothing it sees now is a failure

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.message_bytes = max(1, getattr(options, "message_bytes", DEFAULT_MESSAGE_BYTES))
        self.timeout = getattr(options, "request_timeout", DEFAULT_REQUEST_TIMEOUT)
        self.address = parse_host(self.host)
        self.sock: socket.socket | None = None
        self._fire = self.environment.events.request.fire
        self.aside = stands_aside(self, self.mode, self.address, self.timeout)

    def idle_if_aside(self) -> None:
        """Wait here until Locust stops the user when it stands aside (a task's first call)."""
        while self.aside:
            gevent.sleep(IDLE_S)

    def connect(self) -> socket.socket:
        sock = socket.create_connection(self.address, timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        return sock

    def drop(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    def on_stop(self) -> None:
        self.stopping = True
        if self.aside:
            self.aside = False
            step_back_in(self)
        self.drop()

    def failed(self, name: str, exc: BaseException, started_ns: int, length: int = 0) -> None:
        """Count one failure (Locust and our book) and drop the connection; nothing once
        the user is stopping (closing its own socket is not the server's fault).
        ``started_ns``: ``time.perf_counter_ns()`` when the failed wait began."""
        if self.stopping:
            self.drop()
            return
        kind = failure_kind(exc)
        latency.BOOK.fail(kind)
        self._fire(request_type="tcp", name=name, response_time=(time.perf_counter_ns() - started_ns) / 1e6,
                   response_length=length, exception=exc if str(exc) else Exception(kind), context={})
        self.drop()
