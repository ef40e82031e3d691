"""gevent backend (the flagship): blocking-style connection code on gevent's hub, with a
greenlet only while a connection has work.

A connection's flow reads like the blocking server: *wait until readable* -> ``recv`` ->
:meth:`Session.feed` -> reply, and a reply the client is not taking yet is waited for
right there, in the flow (back-pressure). Every wait yields to gevent's hub, so thousands
of connections share one OS thread. gevent is imported only in this module, and nothing
is monkey-patched. A connection's own state (socket, session, watchers, broadcast
backlog) is :class:`servers.gevent_conn.Client`.

How the flows are scheduled (each choice measured with ``bench perf``;
the figures are in the comments where the choice is made):

* **A greenlet only while a connection has work.** An idle connection is a read watcher
  and nothing else: no greenlet, no saved stack. When it becomes readable, the watcher's
  callback (run by the hub, no switch: the queue's own ``append``) puts it on the
  *ready* queue, and a worker greenlet runs one *turn* of its flow: read what arrived, relay the complete lines. A
  turn that must wait (an echo reply the socket will not take) keeps its worker
  greenlet while it waits, exactly like a greenlet-per-connection server; another
  worker carries on with the queue meanwhile. Measured against the greenlet-per-connection
  version in one run: 0.9 instead of 8.9 KiB per idle connection (5,000 idle), and a
  fresh client's worst round trip while 5,000 others leave at once 32-68 ms instead of
  136-221 ms (no greenlet to switch to, finish and free per leaving connection).
* **Sockets of ended connections are closed in batches**, a few per hub pass after the
  turns of live connections (:mod:`servers.gevent_closer`).
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
  in gevent's socket class), accepting at most :data:`ACCEPT_PER_PASS` per hub pass:
  a connection waiting in the listen backlog gets its turn once per pass, like a ready
  connection, and a flood cannot starve the clients being served (see the constant).
* **Broadcast: a pass's lines go out together.** A turn only notes what its sender
  said; when the pass's turns are over, every member gets what the other senders said,
  in one ``send`` (:mod:`servers.gevent_fanout`: 2-3x the lines per server CPU-second of
  copying each line into 99 backlogs, measured there). What a socket does not take
  waits for a writability callback; a receiver that falls ``max_output_buffer`` behind
  is cut.
"""

from __future__ import annotations

import signal
import socket
import time
from collections import deque

import gevent
import gevent.event
from greenlet import getcurrent, greenlet

from servers import runtime
from servers.config import ServerConfig
from servers.gevent_closer import BatchCloser
from servers.gevent_conn import READ, Client
from servers.gevent_fanout import Fanout
from servers.protocol import (FAIL_GRACE, RECV_SIZE, LineTooLong, Mode, Reason, Roster, Session,
                              error_reason, output_limit)

# The connection class under the name servers.gevent_callback_server imports.
_Client = Client

# Connections accepted per hub pass: the listen backlog's length (runtime.bind_listener),
# so every connection waiting in it is taken in the next pass. With the shared 64 per
# pass, accepting starved behind the served connections (~700 accepts/s while 6,000
# were echoing), the backlog overflowed and the dropped connections retried their
# handshake 1, 3, 7 s later. Measured (10,000 connections opened at once, pinned,
# interleaved, 3 rounds on a busy machine): every connection accepted after 7.7, 30.1,
# 17.1 s with 64; after 7.4, 6.7, 7.0 s with 1,024 (the bare uvloop server: 7.4, 14.8 s).
ACCEPT_PER_PASS = 1024
# libev's lowest priority (EV_MINPRI): a pass's pending callbacks run highest first.
AFTER_POLL_PRIORITY = -2


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
        self.roster: Roster[Client] = Roster(config.limits.max_clients, config.limits)
        self.output_limit = output_limit(config.limits, config.mode)
        self.backoff = runtime.AcceptBackoff(log)
        # Broadcast output: hear() in turns, relay_heard() when a pass's turns are over;
        # route() for gevent-callback and the lines owed before an over-long line.
        self.fanout = Fanout(self.roster, self.loop)
        # Connections with input to take, in the order they became readable.
        self.ready: deque[Client] = deque()
        # Worker greenlets with nothing to do, parked until the queue fills again.
        self.idle_workers: list[greenlet] = []
        # True while a worker is serving the queue or has been woken to: no other is needed.
        self.dispatching = False
        # Connections that ended, whose sockets are closed a batch per hub pass.
        self.closer = BatchCloser(self.loop)
        # Runs once per hub pass, after every read watcher's callback of the pass has
        # queued its connection (the lowest priority is invoked last): a worker then
        # serves the queue. See start_client for why.
        self.after_poll = self.loop.check()
        self.after_poll.priority = AFTER_POLL_PRIORITY
        self.after_poll.ref = False  # it must not keep the loop alive on its own
        self.after_poll.start(self._after_poll)

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
                # at most a batch per wake-up (once per hub pass), so neither waits long
                # for the other: not the backlog, not the clients already being served
                delay = runtime.accept_batch(listener, self.backoff, self.start_client,
                                             ACCEPT_PER_PASS)
                if delay:
                    gevent.sleep(delay)
        finally:
            readable.close()

    def admit(self, sock: socket.socket, peer: str) -> Client | None:
        """Set up a new connection and join it to the roster; None (the connection
        refused: ``ERR server full``, closed, logged) when it cannot stay."""
        sock.setblocking(False)
        client = Client(sock, peer, Session(self.limits, time.monotonic()), self.loop, self.output_limit)
        if not self.roster.join(client):
            client.readable.close()
            client.writable.close()
            runtime.refuse(sock, peer, Reason.SERVER_FULL, self.log)
            return None
        self.log.connected(client.peer)
        return client

    def start_client(self, sock: socket.socket, peer: str) -> None:
        """Admit a connection and park it on its read watcher: it has no greenlet until
        it has input."""
        client = self.admit(sock, peer)
        if client is not None:
            # The read watcher's callback is the queue's own append (C, no Python frame
            # per ready connection); the check watcher wakes a worker once per pass.
            # Measured against a Python callback per ready connection (which also kept a
            # queued flag), echo at 100 connections, pinned, interleaved, 3 runs of 8-16
            # rounds on a busy machine: 1.04-1.08x the round trips per server CPU-second
            # (medians of the paired ratios); at 10,000 connections the same rate, p99
            # 1.73x the Little's-law mean against 1.84x. Measured and not kept: a closure
            # per connection as the queued turn (cell loads instead of attribute lookups,
            # as gevent-callback does): 0.92x against 0.95x the bare uvloop server (5
            # rounds, a noisy hour), and 2.1 instead of 0.9 KiB per idle connection.
            client.readable.start(self.ready.append, client)

    # -- the ready queue and its workers -------------------------------------------------

    def _after_poll(self) -> None:
        """Check-watcher callback (runs on the hub, once per pass, after the pass's read
        callbacks): have a worker serve the queue, unless one already is."""
        if self.ready and not self.dispatching:
            self.dispatching = True
            workers = self.idle_workers
            (workers.pop() if workers else greenlet(self._work, self.hub)).switch()

    def _wake_worker(self) -> None:
        """Have a worker (a parked one, else a new one) serve the queue, once the hub
        has queued everything that became readable in this pass."""
        workers = self.idle_workers
        worker = workers.pop() if workers else greenlet(self._work, self.hub)
        self.loop.run_callback(worker.switch)

    def _work(self) -> None:
        """A worker greenlet: give each queued connection its turn, oldest first, relay
        the broadcast lines those turns read, then park until the queue fills again."""
        # A pass serves everything one poll reported: at 10,000 busy connections that
        # is 4,000-10,000 turns (libev grows its epoll array to fit), and p99 sits at
        # 1.65-1.99x the Little's-law mean (the C echo server, 512 events per
        # epoll_wait: 1.35-1.97x in the same runs). Measured and not kept (pinned,
        # interleaved, a busy machine):
        # - 512 turns, then let the hub poll: p99 1.33-2.17x, but round trips per
        #   CPU-second halved (30k instead of 58k): each poll reported every connection
        #   still queued again (level-triggered watchers);
        # - the same, with the watchers of queued connections stopped until their
        #   turn: p99 1.17-1.46x, but 35-42k round trips per CPU-second instead of
        #   64-66k (two epoll_ctl per turn), and the 10,000-connection rate fell to
        #   0.56-0.82x the 100-connection rate;
        # - a poll's connections served in the kernel's order (libev runs a poll's
        #   callbacks last first, so the queue holds them reversed): p99 1.74-1.91x
        #   against 1.80-2.02x, no gain. The spread is the server's own: most turns come
        #   in passes of 4,096+ connections, between runs of passes of 2-130, and the gap
        #   between two turns of one connection has its p99 at 2.2-2.4x its mean;
        # - gevent's libuv loop instead of libev (GEVENT_LOOP=libuv, with cffi; libuv
        #   takes 1,024 events per poll): p99 1.29-1.30x, but 20-27k round trips/s at
        #   10,000 connections instead of 53-57k, and 44-52k instead of 62-65k at 100.
        ready, fanout, me = self.ready, self.fanout, getcurrent()
        while True:
            while ready:
                self._turn(ready.popleft())
            if fanout.heard:
                fanout.relay_heard()
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

    def _turn(self, client: Client) -> None:
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
                self.close(client, Reason.CLOSED)
                return
            lines = client.session.feed(data, time.monotonic())
            if not lines:
                return
            if not self.echo:
                self.fanout.hear(client, lines)  # relayed when the pass's turns are over
                return
            # Usually the whole reply fits in the socket buffer at once.
            try:
                sent = sock.send(lines)
            except BlockingIOError:
                sent = 0
            if sent < len(lines):
                self._send_rest(client, memoryview(lines)[sent:])
            return
        except LineTooLong as exc:
            # what is owed may take waiting: a greenlet of its own, off the ready queue
            client.readable.stop()
            gevent.spawn(self.too_long, client, exc.lines)
            return
        except OSError as exc:
            reason = error_reason(exc)
        except Exception as exc:  # a bug must cost one connection, not the server
            reason = f"internal error: {exc!r}"
            self.log.warning(f"client {client.peer}: {reason}")
        self.close(client, reason)

    def _send_rest(self, client: Client, rest: memoryview) -> None:
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
        client.readable.start(self.ready.append, client)

    def too_long(self, client: Client, lines: bytes) -> None:
        """An over-long line: the lines before it are owed first (echoed, waiting at
        most :data:`FAIL_GRACE` for the client to take them, or routed to the room), then
        the ERR line and the close. Runs in a greenlet of its own; reading has stopped."""
        try:
            if not self.echo:
                self.fanout.route(client, lines)
            elif lines:
                self._send_owed(client, memoryview(lines))
        except OSError:
            pass  # it went away, or a timeout ended it meanwhile
        client.fail(Reason.LINE_TOO_LONG)
        self.close(client, Reason.LINE_TOO_LONG)

    def _send_owed(self, client: Client, rest: memoryview) -> None:
        """Send ``rest``, waiting in this greenlet (not a worker) for writability, for at
        most :data:`FAIL_GRACE` seconds in all."""
        with gevent.Timeout(FAIL_GRACE, False):
            while rest:
                try:
                    rest = rest[client.sock.send(rest):]
                except BlockingIOError:
                    self.hub.wait(client.writable)

    def close(self, client: Client, reason: str) -> None:
        """Forget a connection and log why it ended; its socket is closed soon after, a
        batch per hub pass (:mod:`servers.gevent_closer`: why, with the figures). Harmless
        twice (the shutdown closes clients whose turns are parked)."""
        if client not in self.roster:
            return
        self.roster.leave(client)
        # A reason also tells a pending flush() that the socket is gone.
        client.reason = client.reason or reason
        client.readable.stop()  # level-triggered: EOF would queue it again every pass
        client.writable.stop()
        self.closer.add(client)
        self.log.disconnected(client.peer, client.reason)

    # -- timeouts and shutdown -----------------------------------------------------------

    def sweep(self) -> None:
        """Greenlet: disconnect clients whose idle or line timeout has struck."""
        while True:
            gevent.sleep(self.limits.sweep_interval)
            for client, reason in self.roster.expired(time.monotonic()):
                client.fail(reason)

    def stop_clients(self) -> None:
        """Shutdown: stop serving every client (its watchers closed, a parked turn left
        parked) and close their sockets so each sees EOF, not a reset."""
        clients = list(self.roster)
        for client in clients:
            client.reason = client.reason or Reason.SERVER_STOPPING
            client.readable.close()
            client.writable.close()
        runtime.close_gracefully(self.listener, [client.sock for client in clients])
        for client in clients:
            self.close(client, Reason.SERVER_STOPPING)
        self.closer.close_all()


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
