"""gevent backend (the flagship): a greenlet per connection on gevent's StreamServer.

Each connection's greenlet loops ``recv`` -> :meth:`Session.feed` -> reply. Code reads
like the blocking server, but every wait yields to gevent's hub, so thousands of
connections share one OS thread. gevent is imported only in this module, and nothing
is monkey-patched.

Echo replies use the greenlet's own ``sendall`` (a client that does not read only
stalls its own greenlet). A broadcast line is handed to each receiver with
:meth:`_Client.deliver`, which never waits: it writes what the receiver's socket takes
at once and queues the rest in a bounded buffer drained by a writer greenlet that exists
only while there is a backlog.
"""

from __future__ import annotations

import signal
import socket
import time
from typing import Any

import gevent
import gevent.event
import gevent.pool
import gevent.server
import gevent.socket

from servers import runtime
from servers.config import ServerConfig
from servers.protocol import (
    ERR_LINE_TOO_LONG,
    ERR_SERVER_FULL,
    RECV_SIZE,
    LineTooLong,
    Mode,
    OutputBuffer,
    Roster,
    Session,
)

# On SIGTERM, how long client greenlets get to finish before the process exits anyway.
SHUTDOWN_GRACE = 1.0


class _Client:
    """One connection: gevent socket, protocol session, broadcast backlog."""

    __slots__ = ("sock", "raw", "peer", "session", "out", "writer", "reason")

    def __init__(self, sock: Any, peer: str, session: Session, output_limit: int) -> None:
        self.sock = sock
        # The stdlib socket under gevent's wrapper (non-blocking): a send on it never
        # yields, which is what deliver() needs. gevent exposes it as ``_sock``.
        self.raw: socket.socket = sock._sock
        self.peer = peer
        self.session = session
        self.out = OutputBuffer(output_limit)
        self.writer: gevent.Greenlet | None = None
        self.reason = ""

    def deliver(self, data: bytes) -> None:
        """Hand a broadcast line to this receiver; never blocks the sender."""
        if self.reason:
            return
        if self.writer is None:
            try:
                sent = self.raw.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self.kill("send failed")
                return
            if sent == len(data):
                return
            data = data[sent:]
        if not self.out.push(data):
            self.kill("slow consumer: output buffer full")
            return
        if self.writer is None:
            self.writer = gevent.spawn(self._drain)

    def _drain(self) -> None:
        """Writer greenlet: send the backlog, yielding while the socket is full."""
        try:
            while len(self.out) and not self.reason:
                chunk = bytes(self.out.view())  # a copy: deliver() appends meanwhile
                self.sock.sendall(chunk)
                self.out.consume(len(chunk))
        except OSError:
            self.kill("send failed")
        finally:
            self.writer = None

    def send_err(self, err: bytes) -> None:
        """Best-effort protocol ERR line, without waiting."""
        try:
            self.raw.send(err)
        except OSError:
            pass

    def kill(self, reason: str) -> None:
        """Disconnect: the reading greenlet wakes with EOF and cleans up."""
        if not self.reason:
            self.reason = reason
        runtime.shutdown_quietly(self.raw)


class _Server(gevent.server.StreamServer):
    """StreamServer whose accept errors back off with one log line per burst.

    gevent's own back-off would print a traceback for each EMFILE; here running out of
    descriptors pauses accepting (10 ms doubling to 1 s) and logs once.
    """

    def __init__(self, listener: socket.socket, config: ServerConfig, log: runtime.EventLog) -> None:
        self.config = config
        self.limits = config.limits
        self.echo = config.mode is Mode.ECHO
        self.mode = config.mode
        self.log = log
        self.roster: Roster[_Client] = Roster(config.limits.max_clients)
        self.backoff = runtime.AcceptBackoff(log)
        self.output_limit = config.limits.max_output_buffer
        # One slot beyond max_clients so a connection past the limit can still be
        # accepted and told "ERR server full" instead of waiting in the backlog.
        pool = gevent.pool.Pool(config.limits.max_clients + 1)
        # StreamServer needs a gevent socket: a stdlib one is never accepted from.
        gevent_listener = gevent.socket.socket(fileno=listener.detach())
        super().__init__(gevent_listener, self.handle_client, spawn=pool)

    def do_read(self) -> Any:
        try:
            args = super().do_read()
        except OSError as exc:
            if exc.errno not in runtime.RESOURCE_ERRNOS:
                raise
            self.stop_accepting()
            self._timer = self.loop.timer(self.backoff.failed(exc))
            self._timer.start(self._start_accepting_if_started)
            return None
        if args:
            self.backoff.succeeded()
        return args

    def handle_client(self, sock: Any, address: tuple) -> None:
        """The greenlet of one connection. gevent closes ``sock`` when it returns."""
        peer = runtime.format_address(address)
        session = Session(self.limits, time.monotonic())
        client = _Client(sock, peer, session, self.output_limit)
        if not self.roster.join(client):
            client.send_err(ERR_SERVER_FULL)
            return
        self.log.connected(peer)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        recv, sendall, feed, clock = sock.recv, sock.sendall, session.feed, time.monotonic
        echo, roster, mode = self.echo, self.roster, self.mode
        reason = ""
        try:
            while True:
                data = recv(RECV_SIZE)
                if not data:
                    break
                lines = feed(data, clock())
                if not lines:
                    continue
                if echo:
                    sendall(lines)
                else:
                    for receiver in roster.recipients(client, mode):
                        receiver.deliver(lines)
        except LineTooLong:
            reason = "line too long"
            client.send_err(ERR_LINE_TOO_LONG)
        except OSError as exc:
            reason = f"error: {exc.strerror or exc}"
        finally:
            roster.leave(client)
            client.reason = client.reason or reason
            self.log.disconnected(peer, client.reason)

    def sweep(self) -> None:
        """Greenlet: disconnect clients whose idle or line timeout has struck."""
        limits = self.limits
        while True:
            gevent.sleep(limits.sweep_interval)
            now = time.monotonic()
            for client in self.roster:
                if client.reason:
                    continue
                err = client.session.expired(limits, now)
                if err is not None:
                    client.send_err(err)
                    client.kill(err.decode().strip().removeprefix("ERR "))


def serve(listener: socket.socket, config: ServerConfig, log: runtime.EventLog) -> None:
    """Serve on ``listener`` until SIGTERM or SIGINT, then disconnect every client."""
    server = _Server(listener, config, log)
    stop = gevent.event.Event()
    handlers = [gevent.signal_handler(signum, stop.set) for signum in (signal.SIGTERM, signal.SIGINT)]
    server.start()
    sweeper = gevent.spawn(server.sweep)
    runtime.announce_ready(server.socket)
    try:
        stop.wait()
    finally:
        for handler in handlers:
            handler.cancel()
        sweeper.kill()
        server.close()  # stop accepting; clients are ours to end
        for client in server.roster:
            client.kill("server stopping")
        server.pool.join(timeout=SHUTDOWN_GRACE)
