"""gevent backend (the flagship): blocking-style connection code on gevent's hub, with a
greenlet only while a connection has work.

A connection's flow reads like the blocking server: *wait until readable* -> ``recv`` ->
:meth:`Session.feed` -> reply, and a reply the client is not taking yet is waited for
right there, in the flow (back-pressure). Every wait yields to gevent's hub, so thousands
of connections share one OS thread. gevent is imported only in this module, and nothing
is monkey-patched.

How the flows are scheduled (each choice measured with ``python -m bench.perf_probes``;
the figures are in the comments where the choice is made):

* **A greenlet only while a connection has work.** An idle connection is a read watcher
  and nothing else: no greenlet, no saved stack. When it becomes readable, the watcher's
  callback (run by the hub, no switch) puts it on the *ready* queue, and a worker
  greenlet runs one *turn* of its flow: read what arrived, relay the complete lines. A
  turn that must wait (an echo reply the socket will not take) keeps its worker
  greenlet while it waits, exactly like a greenlet-per-connection server; another
  worker carries on with the queue meanwhile. Measured against the greenlet-per-connection
  version in one run: 0.9 instead of 8.9 KiB per idle connection (5,000 idle), and a
  fresh client's worst round trip while 5,000 others leave at once 32-68 ms instead of
  136-221 ms (no greenlet to switch to, finish and free per leaving connection).
* **Batching per hub pass, two switches per pass instead of two per request.** Every
  connection that became readable in one hub pass is queued by its callback; one
  worker then serves the whole queue before switching back to the hub.
* **Round-robin fairness.** The queue is FIFO and a connection gets one turn (one
  ``recv``) per pass; libev's watchers are level-triggered, so bytes left unread queue
  it again next pass, behind everyone who was waiting.
* **Raw stdlib sockets, not gevent's socket class.** ``gevent.socket.socket.recv`` is a
  Python-level wrapper that allocates a Waiter and starts a watcher on every would-block;
  here ``recv``/``send`` go straight to C on plain non-blocking sockets.
* **Our own accept loop** instead of ``StreamServer`` (which wraps every accepted socket
  in gevent's socket class), accepting at most :data:`ACCEPT_BATCH` per pass so a
  connection flood cannot starve the clients being served.
* **Broadcast output is coalesced per hub pass**, like the select backend: a line is
  appended to each receiver's bounded :class:`OutputBuffer`, and one callback, run by
  the hub after the workers have routed this pass's lines, sends each receiver's whole
  backlog with a single ``send``. What a socket does not take waits for a writability
  callback; a receiver that falls ``max_output_buffer`` behind is cut.
"""

from __future__ import annotations

import signal
import socket
import time
from collections import deque
from typing import Any

import gevent
import gevent.event
from greenlet import getcurrent, greenlet

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

# On SIGTERM, how long clients get to be gone before the process exits anyway.
SHUTDOWN_GRACE = 1.0
# How often the shutdown wait polls for the last clients to be gone.
DRAIN_POLL = 0.01
# libev event masks for io watchers.
READ, WRITE = 1, 2
# Accept at most this many connections per wake-up, so a connection flood cannot starve
# the clients already being served (the select backend uses the same bound).
ACCEPT_BATCH = 64


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
        """Queue a broadcast line. Returns True when this client must be flushed."""
        if self.reason:
            return False
        if not self.out.push(data):
            self.kill("slow consumer: output buffer full")
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
            self.kill("send failed")
            self.writable.stop()
            return
        out.consume(sent)
        if not len(out):
            self.writable.stop()
        elif not self.writable.active:
            self.writable.start(self.flush)

    def send_err(self, err: bytes) -> None:
        """Best-effort protocol ERR line, without waiting."""
        try:
            self.sock.send(err)
        except OSError:
            pass

    def kill(self, reason: str) -> None:
        """Disconnect: the read watcher fires, and the connection's turn finds EOF."""
        if not self.reason:
            self.reason = reason
        runtime.shutdown_quietly(self.sock)


class GeventServer:
    """Accept loop, the ready queue and its worker greenlets, broadcast flushing, sweeper."""

    def __init__(self, listener: socket.socket, config: ServerConfig, log: runtime.EventLog) -> None:
        self.listener = listener
        self.limits = config.limits
        self.echo = config.mode is Mode.ECHO
        self.mode = config.mode
        self.log = log
        self.hub = gevent.get_hub()
        self.loop = self.hub.loop
        self.roster: Roster[_Client] = Roster(config.limits.max_clients)
        self.output_limit = output_limit(config.limits, config.mode)
        self.backoff = runtime.AcceptBackoff(log)
        # Broadcast receivers with output queued in this hub pass (see _flush_queued).
        self.to_flush: list[_Client] = []
        # Connections with input to take, in the order they became readable.
        self.ready: deque[_Client] = deque()
        # Worker greenlets with nothing to do, parked until the queue fills again.
        self.idle_workers: list[greenlet] = []
        # True while a worker is serving the queue or has been woken to: no other is needed.
        self.dispatching = False

    # -- accepting ---------------------------------------------------------------------

    def accept_forever(self) -> None:
        """Greenlet: accept connections and start watching each.

        Out of descriptors (EMFILE and friends): sleep 10 ms doubling to 1 s, as
        gevent's baseserver does, logging once per burst, instead of spinning.
        """
        listener = self.listener
        listener.setblocking(False)
        readable = self.loop.io(listener.fileno(), READ)
        try:
            while True:
                self.hub.wait(readable)
                for _ in range(ACCEPT_BATCH):
                    try:
                        sock, address = listener.accept()
                    except BlockingIOError:
                        break
                    except OSError as exc:
                        if exc.errno in runtime.RESOURCE_ERRNOS:
                            gevent.sleep(self.backoff.failed(exc))
                            break
                        if exc.errno in runtime.TRANSIENT_ACCEPT_ERRNOS:
                            continue
                        raise
                    self.backoff.succeeded()
                    self.start_client(sock, address)
        finally:
            readable.close()

    def admit(self, sock: socket.socket, address: tuple) -> _Client | None:
        """Set up a new connection and join it to the roster; None (and the socket
        closed, after ``ERR server full`` when it applies) when it cannot stay."""
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            runtime.close_quietly(sock)  # reset before we got to it
            return None
        client = _Client(sock, runtime.format_address(address),
                         Session(self.limits, time.monotonic()), self.loop, self.output_limit)
        if not self.roster.join(client):
            client.send_err(ERR_SERVER_FULL)
            self._close(client)
            return None
        self.log.connected(client.peer)
        return client

    def start_client(self, sock: socket.socket, address: tuple) -> None:
        """Admit a connection and park it on its read watcher: it has no greenlet until
        it has input."""
        client = self.admit(sock, address)
        if client is not None:
            client.readable.start(self._on_readable, client)

    def drain(self, timeout: float) -> None:
        """After every client was told to go: wait (at most ``timeout``) until they have."""
        deadline = time.monotonic() + timeout
        while len(self.roster) and time.monotonic() < deadline:
            gevent.sleep(DRAIN_POLL)

    # -- the ready queue and its workers -------------------------------------------------

    def _on_readable(self, client: _Client) -> None:
        """Read-watcher callback (runs on the hub): queue the connection for a turn."""
        if client.queued:
            return  # level-triggered: it fires every pass until its turn has come
        client.queued = True
        self.ready.append(client)
        if not self.dispatching:
            self.dispatching = True
            self._wake_worker()

    def _wake_worker(self) -> None:
        """Have a worker (a parked one, else a new one) serve the queue, once the hub
        has queued everything that became readable in this pass."""
        workers = self.idle_workers
        worker = workers.pop() if workers else greenlet(self._work, self.hub)
        self.loop.run_callback(worker.switch)

    def _work(self) -> None:
        """A worker greenlet: give each queued connection its turn, oldest first, then
        park until the queue fills again."""
        ready, me = self.ready, getcurrent()
        while True:
            while ready:
                client = ready.popleft()
                client.queued = False
                self._turn(client)
            self.dispatching = False
            self.idle_workers.append(me)
            self.hub.switch()

    def _park(self) -> None:
        """Wait in this worker for a watcher whose callback is its ``switch``; the rest
        of the queue goes to another worker meanwhile."""
        self.dispatching = False
        if self.ready:
            self.dispatching = True
            self._wake_worker()
        self.hub.switch()

    # -- one connection ------------------------------------------------------------------

    def _turn(self, client: _Client) -> None:
        """One turn of a connection's flow: take what arrived, relay the complete lines.

        Never raises: an error ends the connection. (One function, not a chain of
        helpers: it runs once per request, and each Python call costs.)
        """
        sock = client.sock
        try:
            try:
                data = sock.recv(RECV_SIZE)
            except BlockingIOError:
                return  # a spurious wake-up: the watcher fires again when data comes
            if not data:
                self.finish(client, "")
                return
            lines = client.session.feed(data, time.monotonic())
            if not lines:
                return
            if not self.echo:
                self.route(client, lines)
                return
            # Usually the whole reply fits in the socket buffer at once.
            try:
                sent = sock.send(lines)
            except BlockingIOError:
                sent = 0
            if sent < len(lines):
                self._send_rest(client, memoryview(lines)[sent:])
            return
        except LineTooLong:
            reason = err_reason(ERR_LINE_TOO_LONG)
            client.send_err(ERR_LINE_TOO_LONG)
        except OSError as exc:
            reason = f"error: {exc.strerror or exc}"
        except Exception as exc:  # a bug must cost one connection, not the server
            reason = f"internal error: {exc!r}"
            self.log.warning(f"client {client.peer}: {reason}")
        self.finish(client, reason)

    def _send_rest(self, client: _Client, rest: memoryview) -> None:
        """Echo back-pressure: stop reading, and wait in this greenlet until the client
        has taken the reply."""
        client.readable.stop()
        writable = client.writable
        writable.start(getcurrent().switch)
        try:
            while rest:
                self._park()
                try:
                    rest = rest[client.sock.send(rest):]
                except BlockingIOError:
                    pass
        finally:
            writable.stop()
        client.readable.start(self._on_readable, client)

    def finish(self, client: _Client, reason: str) -> None:
        """Forget a connection, release its watchers and socket, log why it ended."""
        self.roster.leave(client)
        # A reason also tells a pending flush() that the socket is gone.
        client.reason = client.reason or reason or "closed"
        self._close(client)
        self.log.disconnected(client.peer, "" if client.reason == "closed" else client.reason)

    def route(self, sender: _Client, lines: bytes) -> None:
        """Broadcast: queue ``lines`` for every other client; flush once per hub pass."""
        to_flush = self.to_flush
        for receiver in self.roster.recipients(sender, Mode.BROADCAST):
            if receiver.deliver(lines):
                if not to_flush:
                    self.loop.run_callback(self._flush_queued)
                to_flush.append(receiver)

    def _flush_queued(self) -> None:
        """Hub callback: one ``send`` per receiver that got broadcast lines this pass.

        Scheduled with ``loop.run_callback``, so it runs after the workers have routed
        this pass's lines: the coalescing point.
        """
        queued = self.to_flush
        for client in queued:
            client.flush()  # never adds to the list: flushing routes nothing
        queued.clear()  # in place: route() holds this very list

    def _close(self, client: _Client) -> None:
        """Release the watchers (before the descriptor can be reused), then the socket."""
        client.readable.close()
        client.writable.close()
        runtime.close_quietly(client.sock)

    # -- timeouts ------------------------------------------------------------------------

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
                    client.kill(err_reason(err))


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
        sweeper.kill()
        acceptor.kill()  # stop accepting; clients are ours to end
        for client in server.roster:
            client.kill("server stopping")
        server.drain(SHUTDOWN_GRACE)
