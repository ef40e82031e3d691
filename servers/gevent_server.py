"""gevent backend (the flagship): a greenlet per connection on gevent's hub.

Each connection's greenlet loops *wait until readable* -> ``recv`` ->
:meth:`Session.feed` -> reply. The code reads like the blocking server, but every wait
yields to gevent's hub, so thousands of connections share one OS thread. gevent is
imported only in this module, and nothing is monkey-patched.

Why it is written closer to the metal than a textbook gevent server (each trick was
measured with ``bench perf``; together they take echo from ~0.25x to over 0.5x of the
C ceiling):

* **Raw stdlib sockets, not gevent's socket class.** ``gevent.socket.socket.recv`` is
  a Python-level wrapper that tries the call, catches EAGAIN, allocates a Waiter and
  waits on a watcher, for every call. Here each connection is a plain non-blocking
  ``socket.socket`` whose ``recv``/``send`` go straight to C.
* **One long-lived read watcher per connection, whose callback is the greenlet's own
  ``switch``.** ``hub.wait(watcher)`` allocates a Waiter and starts and stops the
  libev watcher on every wait; instead the watcher is started once, and waiting is a
  bare ``hub.switch()``. libev only runs callbacks while the hub runs, i.e. while
  the greenlet is parked in ``hub.switch()``, so the watcher can only wake it there.
* **Wait first, then recv.** In a request/reply exchange the next request has not
  arrived yet when a reply has just been sent, so "try recv, wait on EAGAIN" would
  pay for a failed system call *and* a Python exception (BlockingIOError) on almost
  every round trip. libev's watchers are level-triggered, so waiting first loses
  nothing: bytes still unread in the socket make the watcher fire again at once.
* **Our own accept loop** instead of ``StreamServer``, which wraps every accepted
  socket in gevent's socket class (two more watchers and the wrapper per client).
* **Broadcast output is coalesced per hub pass**, like the select backend: a line is
  appended to each receiver's bounded :class:`OutputBuffer`, and one callback, run by
  the hub after every greenlet woken in this pass has had its turn, sends each
  receiver's whole backlog with a single ``send``. Ten lines arriving together cost
  each receiver one system call, not ten. What a socket does not take waits for a
  writability callback; a receiver that falls ``max_output_buffer`` behind is cut.

Echo replies are sent by the connection's own greenlet; if the client stops reading,
that greenlet stops reading from it too (back-pressure) and waits for writability.
"""

from __future__ import annotations

import signal
import socket
import time
from typing import Any

import gevent
import gevent.event
import gevent.pool
from greenlet import getcurrent

from servers import runtime
from servers.config import ServerConfig
from servers.protocol import (RECV_SIZE, LineTooLong, Mode, OutputBuffer, Reason, Roster, Session,
                              error_reason, output_limit)

# libev event masks for io watchers.
READ, WRITE = 1, 2


class _Client:
    """One connection: raw socket, protocol session, watchers, broadcast backlog."""

    __slots__ = ("sock", "peer", "session", "out", "readable", "writable", "queued", "reason")

    def __init__(self, sock: socket.socket, peer: str, session: Session, loop: Any,
                 limit: int) -> None:
        self.sock = sock
        self.peer = peer
        self.session = session
        self.out = OutputBuffer(limit)
        fd = sock.fileno()
        self.readable = loop.io(fd, READ)
        self.writable = loop.io(fd, WRITE)
        self.queued = False  # in the server's list of receivers to flush this pass
        self.reason = ""

    # -- broadcast output (runs in other greenlets and in hub callbacks; never waits) --

    def deliver(self, data: bytes) -> bool:
        """Queue a broadcast line. Returns True when this client must be flushed.

        A receiver is judged on what it failed to take: before its buffer may
        overflow, the backlog is offered to the socket (its writability callback may
        simply not have run yet in this pass).
        """
        if self.reason:
            return False
        if not self.out.push(data):
            self.flush()
            if self.reason or not self.out.push(data):
                self.fail(Reason.SLOW_CONSUMER)
                return False
        # While a writability callback is pending, it will send the backlog itself.
        if self.queued or self.writable.active:
            return False
        self.queued = True
        return True

    def flush(self) -> None:
        """Send as much of the backlog as the socket takes, in one system call.

        Leftovers wait for the socket to become writable (this method is then the
        watcher's callback, run by the hub: no greenlet is needed to write).
        """
        self.queued = False
        out = self.out
        if self.reason or not len(out):
            self.writable.stop()
            return
        view = out.view()
        try:
            sent = self.sock.send(view)
        except BlockingIOError:
            sent = 0
        except OSError:
            sent = -1
        view.release()  # before anyone pushes to the buffer again
        if sent < 0:
            self.fail("error: send failed")
            self.writable.stop()
            return
        out.consume(sent)
        if not len(out):
            self.writable.stop()
        elif not self.writable.active:
            self.writable.start(self.flush)

    def fail(self, reason: str) -> None:
        """End the connection for ``reason``: its ERR line if it has one (best effort,
        without waiting), then the reading greenlet wakes with EOF and closes it."""
        if self.reason:
            return
        self.reason = reason
        reply = getattr(reason, "reply", None)
        if reply is not None:
            try:
                self.sock.send(reply)
            except OSError:
                pass
        runtime.shutdown_quietly(self.sock)


class GeventServer:
    """Accept loop, per-connection greenlets, broadcast flushing and the sweeper."""

    def __init__(self, listener: socket.socket, config: ServerConfig, log: runtime.EventLog) -> None:
        self.listener = listener
        self.limits = config.limits
        self.echo = config.mode is Mode.ECHO
        self.mode = config.mode
        self.log = log
        self.hub = gevent.get_hub()
        self.loop = self.hub.loop
        self.roster: Roster[_Client] = Roster(config.limits.max_clients, config.limits)
        self.output_limit = output_limit(config.limits, config.mode)
        self.backoff = runtime.AcceptBackoff(log)
        # One slot beyond max_clients so a connection past the limit can still be
        # accepted and told "ERR server full" instead of waiting in the backlog.
        self.pool = gevent.pool.Pool(config.limits.max_clients + 1)
        # Broadcast receivers with output queued in this hub pass (see _flush_queued).
        self.to_flush: list[_Client] = []

    # -- accepting ---------------------------------------------------------------------

    def accept_forever(self) -> None:
        """Greenlet: accept connections and spawn a greenlet for each.

        Out of descriptors (EMFILE and friends): sleep 10 ms doubling to 1 s, as
        gevent's baseserver does, logging once per burst, instead of spinning.
        """
        listener = self.listener
        listener.setblocking(False)
        readable = self.loop.io(listener.fileno(), READ)
        try:
            while True:
                self.hub.wait(readable)
                delay = runtime.accept_batch(listener, self.backoff, self.start_client)
                if delay:
                    gevent.sleep(delay)
        finally:
            readable.close()

    # -- one connection ------------------------------------------------------------------

    def start_client(self, sock: socket.socket, peer: str) -> None:
        """A greenlet per connection, bounded by the pool."""
        self.pool.spawn(self.handle_client, sock, peer)

    def admit(self, sock: socket.socket, peer: str) -> _Client | None:
        """Set up a new connection and join it to the roster; None (the connection
        refused: ``ERR server full``, closed, logged) when it cannot stay."""
        sock.setblocking(False)
        client = _Client(sock, peer, Session(self.limits, time.monotonic()), self.loop, self.output_limit)
        if not self.roster.join(client):
            client.readable.close()
            client.writable.close()
            runtime.refuse(sock, peer, Reason.SERVER_FULL, self.log)
            return None
        self.log.connected(client.peer)
        return client

    def handle_client(self, sock: socket.socket, peer: str) -> None:
        """The greenlet of one connection. Closes ``sock`` when it returns."""
        client = self.admit(sock, peer)
        if client is None:
            return
        reason: str = Reason.CLOSED
        try:
            self._serve(client)
        except LineTooLong as exc:
            self.too_long(client, exc.lines)
        except OSError as exc:
            reason = error_reason(exc)
        finally:
            self.close(client, reason)

    def close(self, client: _Client, reason: str) -> None:
        """Forget a connection, release its watchers and socket, log why it ended.
        Harmless twice (the shutdown closes clients whose greenlets are parked)."""
        if client not in self.roster:
            return
        self.roster.leave(client)
        # A reason also tells a pending flush() that the socket is gone.
        client.reason = client.reason or reason
        self._close(client)
        self.log.disconnected(client.peer, client.reason)

    def _serve(self, client: _Client) -> None:
        """Relay lines until EOF. Raises LineTooLong or OSError to end the connection."""
        # Everything the loop touches is bound to a local once: attribute lookups on
        # every round trip are a measurable share of the cost at this speed.
        recv, send, feed, clock = client.sock.recv, client.sock.send, client.session.feed, time.monotonic
        wait = self.hub.switch  # park this greenlet; the read watcher switches back
        readable = client.readable
        readable.start(getcurrent().switch)
        echo = self.echo
        while True:
            wait()
            try:
                data = recv(RECV_SIZE)
            except BlockingIOError:
                continue  # a spurious wake-up: wait again
            if not data:
                return
            lines = feed(data, clock())
            if not lines:
                continue
            if echo:
                # Usually the whole reply fits in the socket buffer at once.
                try:
                    sent = send(lines)
                except BlockingIOError:
                    sent = 0
                if sent < len(lines):
                    self._send_rest(client, memoryview(lines)[sent:])
                continue
            self.route(client, lines)

    def too_long(self, client: _Client, lines: bytes) -> None:
        """An over-long line: the lines before it are owed first (echoed, waiting if
        need be, or routed to the room), then the ERR line. Runs in a greenlet."""
        try:
            if not self.echo:
                self.route(client, lines)
            elif lines:
                self._send_rest(client, memoryview(lines))
        except OSError:
            pass  # it went away, or a timeout ended it meanwhile
        client.fail(Reason.LINE_TOO_LONG)

    def route(self, sender: _Client, lines: bytes) -> None:
        """Broadcast: queue ``lines`` for every other client; flush once per hub pass."""
        to_flush = self.to_flush
        for receiver in self.roster.recipients(sender, Mode.BROADCAST):
            if receiver.deliver(lines):
                if not to_flush:
                    self.loop.run_callback(self._flush_queued)
                to_flush.append(receiver)

    def _send_rest(self, client: _Client, rest: memoryview) -> None:
        """Echo back-pressure: stop reading and wait until the client takes the reply."""
        client.readable.stop()
        client.writable.start(getcurrent().switch)
        try:
            while rest:
                self.hub.switch()
                try:
                    rest = rest[client.sock.send(rest):]
                except BlockingIOError:
                    pass
        finally:
            client.writable.stop()
        client.readable.start(getcurrent().switch)

    def _flush_queued(self) -> None:
        """Hub callback: one ``send`` per receiver that got broadcast lines this pass.

        Scheduled with ``loop.run_callback``, so it runs after every greenlet woken in
        the current pass has routed its lines: the coalescing point.
        """
        queued = self.to_flush
        for client in queued:
            client.flush()  # never adds to the list: flushing routes nothing
        queued.clear()  # in place: reading greenlets hold this very list

    def _close(self, client: _Client) -> None:
        """Release the watchers (before the descriptor can be reused), then the socket."""
        client.readable.close()
        client.writable.close()
        runtime.close_quietly(client.sock)

    # -- timeouts and shutdown -----------------------------------------------------------

    def sweep(self) -> None:
        """Greenlet: disconnect clients whose idle or line timeout has struck."""
        while True:
            gevent.sleep(self.limits.sweep_interval)
            for client, reason in self.roster.expired(time.monotonic()):
                client.fail(reason)

    def stop_clients(self) -> None:
        """Shutdown: stop serving every client (its watchers closed, its greenlet
        left parked) and close their sockets so each sees EOF."""
        clients = list(self.roster)
        for client in clients:
            client.reason = client.reason or Reason.SERVER_STOPPING
            client.readable.close()
            client.writable.close()
        runtime.close_gracefully(self.listener, [client.sock for client in clients])
        for client in clients:
            self.close(client, Reason.SERVER_STOPPING)


def serve(listener: socket.socket, config: ServerConfig, log: runtime.EventLog,
          server_class: type[GeventServer] = GeventServer) -> None:
    """Serve on ``listener`` until SIGTERM or SIGINT, then disconnect every client."""
    server = server_class(listener, config, log)
    stop = gevent.event.Event()
    handlers = [gevent.signal_handler(signum, stop.set) for signum in (signal.SIGTERM, signal.SIGINT)]
    acceptor = gevent.spawn(server.accept_forever)
    sweeper = gevent.spawn(server.sweep)
    runtime.announce_ready(listener)
    try:
        stop.wait()
    finally:
        for handler in handlers:
            handler.cancel()
        runtime.ignore_stop_signals()  # a second Ctrl-C must not cut the shutdown short
        sweeper.kill()
        acceptor.kill()  # stop accepting; clients are ours to end
        server.stop_clients()
