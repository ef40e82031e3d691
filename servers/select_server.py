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
    FAIL_GRACE,
    RECV_SIZE,
    LineTooLong,
    Mode,
    OutputBuffer,
    Reason,
    Roster,
    Session,
    error_reason,
    output_limit,
)

# select()'s descriptor ceiling on Linux (FD_SETSIZE in <sys/select.h>).
FD_SETSIZE = 1024

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
        self.reason = ""  # set when the client is on its way out


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
        self.roster: Roster[_Client] = Roster(config.limits.max_clients, config.limits)
        self.dirty: dict[_Client, None] = {}  # clients with output queued this pass
        self.failing: dict[_Client, float] = {}  # failed clients -> when to close them anyway
        self.backoff = runtime.AcceptBackoff(log)
        self.accept_paused_until = 0.0
        room = FD_SETSIZE - listener.fileno() - 1  # descriptors are handed out lowest first
        if self.plain_select and config.limits.max_clients > room:
            log.warning(f"--selector select cannot watch descriptors of {FD_SETSIZE} or more: "
                        f"at most about {room} clients fit, not --max-clients "
                        f"{config.limits.max_clients}; the rest get 'ERR server full'")

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
                    for client, reason in self.roster.expired(now):
                        self.fail(client, reason)
                    for client, deadline in list(self.failing.items()):
                        if now >= deadline:
                            self.close(client, client.reason)
                    next_sweep = now + self.limits.sweep_interval
        except runtime.Stop:
            pass
        finally:
            self.selector.close()
            clients = list(self.roster)
            runtime.close_gracefully(self.listener, [client.sock for client in clients])
            for client in clients:
                self.log.disconnected(client.peer, Reason.SERVER_STOPPING)

    # -- accepting ---------------------------------------------------------------

    def _accept(self) -> None:
        delay = runtime.accept_batch(self.listener, self.backoff, self.admit)
        if delay:
            # Stop watching the listener for a while rather than spin on it.
            self.selector.unregister(self.listener)
            self.accept_paused_until = time.monotonic() + delay

    def admit(self, sock: socket.socket, peer: str) -> None:
        sock.setblocking(False)
        client = _Client(sock, peer, Session(self.limits, time.monotonic()), self.output_limit)
        if (self.plain_select and client.fd >= FD_SETSIZE) or not self.roster.join(client):
            runtime.refuse(sock, peer, Reason.SERVER_FULL, self.log)
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
            self.close(client, error_reason(exc))
            return
        if not data:
            self._half_closed(client)
            return
        too_long = False
        try:
            lines = client.session.feed(data, time.monotonic())
        except LineTooLong as exc:
            lines, too_long = exc.lines, True
        if lines:
            if self.echo:
                self.deliver(client, lines)
            else:
                for receiver in self.roster.recipients(client, Mode.BROADCAST):
                    if not receiver.reason:
                        self.deliver(receiver, lines)
        if too_long:
            self.fail(client, Reason.LINE_TOO_LONG)

    def deliver(self, client: _Client, data: bytes) -> None:
        """Queue ``data`` for ``client``, flushed at the end of this pass. A receiver
        is judged on what it failed to take: before its buffer may overflow, it is
        offered to the socket first."""
        if not client.out.push(data):
            self._flush(client)
            if client.reason or not client.out.push(data):
                self.close(client, client.reason or Reason.SLOW_CONSUMER)
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
                self.close(client, error_reason(exc))
                return
            view.release()
            out.consume(sent)
        if client.reason:  # the client is leaving: close once its last bytes are out
            if not len(out):
                self.close(client, client.reason)
            return
        pending = len(out) > 0
        # Echo back-pressure: stop reading while replies wait to be written.
        self._watch(client, (selectors.EVENT_WRITE if pending else 0) | (
            0 if (pending and self.echo) else selectors.EVENT_READ))

    def _watch(self, client: _Client, events: int) -> None:
        if events != client.events:
            client.events = events
            self.selector.modify(client.sock, events, client)

    # -- closing ---------------------------------------------------------------------

    def fail(self, client: _Client, reason: Reason) -> None:
        """Send the reason's ERR line after what is already queued for the client
        (the lines owed before it), then close."""
        client.reason = reason
        self.failing[client] = time.monotonic() + FAIL_GRACE  # if it does not read
        reply = reason.reply or b""
        client.out.limit += len(reply)  # the ERR line always fits
        client.out.push(reply)
        self._watch(client, selectors.EVENT_WRITE)

    def _half_closed(self, client: _Client) -> None:
        """The client half-closed: answer what it sent, then close."""
        if len(client.out):
            client.reason = Reason.CLOSED
            self._watch(client, selectors.EVENT_WRITE)
        else:
            self.close(client, Reason.CLOSED)

    def close(self, client: _Client, reason: str) -> None:
        """Forget the client, close its socket, log why. Harmless twice."""
        if client not in self.roster:
            return
        self.roster.leave(client)
        self.dirty.pop(client, None)
        self.failing.pop(client, None)
        client.reason = reason
        try:
            self.selector.unregister(client.sock)
        except (KeyError, ValueError):
            pass
        runtime.close_quietly(client.sock)
        self.log.disconnected(client.peer, reason)


def serve(listener: socket.socket, config: ServerConfig, log: runtime.EventLog) -> None:
    """Serve on ``listener`` until SIGTERM or SIGINT, then close every client so it
    sees EOF (:func:`runtime.close_gracefully`)."""
    SelectServer(listener, config, log).run()
