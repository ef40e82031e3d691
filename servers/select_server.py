"""select backend: one thread, non-blocking sockets, a readiness loop (``selectors``).

Each pass of the loop reads every readable client, routes complete lines into the
receivers' output buffers, then flushes every receiver that got data with one
``send`` each: output is coalesced per pass, so a burst of lines to a receiver costs
one system call, not one per line. What the socket does not take stays buffered and
the client is watched for writability.

Echo back-pressure: a client whose replies are not all written is not read from until
they are. Broadcast: a receiver whose buffer would pass ``max_output_buffer`` is
dropped.

``--selector select`` uses plain select(), which cannot watch descriptors numbered
FD_SETSIZE (1024) or above: such connections get ``ERR server full``.
"""

from __future__ import annotations

import selectors
import socket
import time

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
    output_limit,
    err_reason,
)

# select()'s descriptor ceiling on Linux (FD_SETSIZE in <sys/select.h>).
FD_SETSIZE = 1024
# Accept at most this many connections per readiness event, so a connection flood
# cannot starve the clients already being served.
ACCEPT_BATCH = 64

SELECTORS = {
    "default": selectors.DefaultSelector,
    "select": selectors.SelectSelector,
    "poll": getattr(selectors, "PollSelector", None),
    "epoll": getattr(selectors, "EpollSelector", None),
}


def check_config(config: ServerConfig) -> None:
    """Refuse a selector this platform lacks, before binding."""
    if SELECTORS.get(config.selector) is None:
        raise runtime.StartupError(f"selector {config.selector!r} is not available on this platform")


class _Client:
    __slots__ = ("sock", "fd", "peer", "session", "out", "events", "reason")

    def __init__(self, sock: socket.socket, peer: str, session: Session, limit: int) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.session = session
        self.out = OutputBuffer(limit)
        self.events = selectors.EVENT_READ
        self.reason = ""  # set when the client is to be dropped


class SelectServer:
    """The readiness loop. :meth:`run` returns when SIGTERM/SIGINT raise runtime.Stop."""

    def __init__(self, listener: socket.socket, config: ServerConfig, log: runtime.EventLog) -> None:
        self.listener = listener
        self.limits = config.limits
        self.echo = config.mode is Mode.ECHO
        self.log = log
        self.selector = SELECTORS[config.selector]()
        self.plain_select = isinstance(self.selector, selectors.SelectSelector)
        self.output_limit = output_limit(config.limits, config.mode)
        self.roster: Roster[_Client] = Roster(config.limits.max_clients)
        self.dirty: dict[_Client, None] = {}  # clients with output queued this pass
        self.backoff = runtime.AcceptBackoff(log)
        self.accept_paused_until = 0.0

    def run(self) -> None:
        listener = self.listener
        listener.setblocking(False)
        self.selector.register(listener, selectors.EVENT_READ, None)
        runtime.raise_stop_on_signals()
        runtime.announce_ready(listener)
        next_sweep = time.monotonic() + self.limits.sweep_interval
        try:
            while True:
                now = time.monotonic()
                timeout = next_sweep - now
                if self.accept_paused_until:
                    timeout = min(timeout, self.accept_paused_until - now)
                for key, mask in self.selector.select(max(0.0, timeout)):
                    client = key.data
                    if client is None:
                        self._accept()
                        continue
                    if mask & selectors.EVENT_WRITE:
                        self._flush(client)
                    if mask & selectors.EVENT_READ and not client.reason:
                        self._read(client)
                self._flush_dirty()
                now = time.monotonic()
                if self.accept_paused_until and now >= self.accept_paused_until:
                    self.accept_paused_until = 0.0
                    self.selector.register(listener, selectors.EVENT_READ, None)
                if now >= next_sweep:
                    self._sweep(now)
                    next_sweep = now + self.limits.sweep_interval
        except runtime.Stop:
            pass
        finally:
            for client in self.roster:
                self._drop(client, "server stopping")
            self.selector.close()

    # -- accepting ---------------------------------------------------------------

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, address = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in runtime.RESOURCE_ERRNOS:
                    # Stop watching the listener for a while rather than spin on it.
                    self.selector.unregister(self.listener)
                    self.accept_paused_until = time.monotonic() + self.backoff.failed(exc)
                    return
                if exc.errno in runtime.TRANSIENT_ACCEPT_ERRNOS:
                    continue
                raise
            self.backoff.succeeded()
            self._admit(sock, runtime.format_address(address))

    def _admit(self, sock: socket.socket, peer: str) -> None:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client = _Client(sock, peer, Session(self.limits, time.monotonic()), self.output_limit)
        if (self.plain_select and client.fd >= FD_SETSIZE) or not self.roster.join(client):
            try:
                sock.send(ERR_SERVER_FULL)
            except OSError:
                pass
            runtime.close_quietly(sock)
            return
        self.selector.register(sock, selectors.EVENT_READ, client)
        self.log.connected(peer)

    # -- reading and routing -----------------------------------------------------

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            self._drop(client, f"error: {exc.strerror or exc}")
            return
        if not data:
            self._finish(client)
            return
        try:
            lines = client.session.feed(data, time.monotonic())
        except LineTooLong:
            self._fail(client, ERR_LINE_TOO_LONG)
            return
        if not lines:
            return
        if self.echo:
            self._queue(client, lines)
            return
        for receiver in self.roster.recipients(client, Mode.BROADCAST):
            if not receiver.reason:
                self._queue(receiver, lines)

    def _queue(self, client: _Client, data: bytes) -> None:
        if not client.out.push(data):
            self._drop(client, "slow consumer: output buffer full")
            return
        self.dirty[client] = None

    # -- writing -------------------------------------------------------------------

    def _flush_dirty(self) -> None:
        dirty = self.dirty
        while dirty:
            client = next(iter(dirty))
            del dirty[client]
            if not client.reason:
                self._flush(client)

    def _flush(self, client: _Client) -> None:
        """Send what the socket takes; watch for writability while output remains."""
        out = client.out
        if len(out):
            view = out.view()
            try:
                sent = client.sock.send(view)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                view.release()
                self._drop(client, f"error: {exc.strerror or exc}")
                return
            view.release()
            out.consume(sent)
        if client.reason:  # an ERR line was queued: close once it is out
            if not len(out):
                self._drop(client, client.reason)
            return
        pending = len(out) > 0
        # Echo back-pressure: stop reading while replies wait to be written.
        wanted = (selectors.EVENT_WRITE if pending else 0) | (
            0 if (pending and self.echo) else selectors.EVENT_READ)
        if wanted != client.events:
            client.events = wanted
            self.selector.modify(client.sock, wanted, client)

    # -- closing ---------------------------------------------------------------------

    def _fail(self, client: _Client, err: bytes) -> None:
        """Queue a protocol ERR line; the client is closed once it has been sent."""
        client.reason = err_reason(err)
        client.out = OutputBuffer(len(err))  # drop unsent output: only the ERR line goes
        client.out.push(err)
        client.events = selectors.EVENT_WRITE
        self.selector.modify(client.sock, selectors.EVENT_WRITE, client)

    def _finish(self, client: _Client) -> None:
        """The client half-closed: answer what it sent, then close."""
        if len(client.out):
            client.reason = "closed"
            client.events = selectors.EVENT_WRITE
            self.selector.modify(client.sock, selectors.EVENT_WRITE, client)
        else:
            self._drop(client, "")

    def _drop(self, client: _Client, reason: str) -> None:
        if client not in self.roster:  # already dropped
            return
        self.roster.leave(client)
        self.dirty.pop(client, None)
        client.reason = client.reason or reason or "closed"
        try:
            self.selector.unregister(client.sock)
        except (KeyError, ValueError):
            pass
        runtime.close_quietly(client.sock)
        self.log.disconnected(client.peer, "" if client.reason == "closed" else client.reason)

    def _sweep(self, now: float) -> None:
        for client in self.roster:
            if client.reason:
                continue
            err = client.session.expired(self.limits, now)
            if err is not None:
                self._fail(client, err)


def serve(listener: socket.socket, config: ServerConfig, log: runtime.EventLog) -> None:
    """Serve on ``listener`` until SIGTERM or SIGINT, then close every client."""
    SelectServer(listener, config, log).run()
