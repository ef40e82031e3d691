"""One connection served by one OS thread with blocking calls: the shared half of the
``blocking`` and ``threading`` backends (they differ only in how many such threads run).

Reading: the thread blocks in ``poll`` until the socket is readable or the client's
next deadline (idle or unfinished line) passes, so no sweeper thread is needed.

Writing: an echo reply is sent by the client's own thread with ``sendall``: if the
client does not read, its own thread waits (back-pressure). A broadcast line is given to
each receiver with :meth:`ThreadClient.deliver`, which never blocks the sender: it tries
a non-blocking send, queues the rest in the receiver's bounded
:class:`~servers.protocol.OutputBuffer`, and lets a writer thread (started only while
there is a backlog) drain it. No lock is held around a blocking send.
"""

from __future__ import annotations

import select
import socket
import threading
import time

from servers import runtime
from servers.config import ServerConfig
from servers.protocol import RECV_SIZE, LineTooLong, Mode, OutputBuffer, Reason, Roster, Session, error_reason

# How long a writer thread waits for a stuck receiver before re-checking it is alive.
WRITER_POLL_MS = 1000


class ThreadClient:
    """A connected client: its socket, protocol session and broadcast backlog.
    ``reason`` is set once, by whoever ends the connection first; its reading thread
    closes it, except at shutdown (:meth:`stop`)."""

    def __init__(self, sock: socket.socket, peer: str, config: ServerConfig) -> None:
        self.sock = sock
        self.peer = peer
        self.session = Session(config.limits, time.monotonic())
        self.backlog = OutputBuffer(config.limits.max_output_buffer)
        self.lock = threading.Lock()  # guards backlog, sending from it, writing, reason
        self.writing = False  # a writer thread is draining the backlog
        self.reason = ""

    def deliver(self, data: bytes) -> None:
        """Hand a broadcast line to this receiver without ever blocking the caller.

        What the socket does not take at once joins the backlog. A receiver is judged
        on what it failed to take: before the backlog may overflow, it is offered to
        the socket once more (the writer thread may simply not have run yet).
        """
        with self.lock:
            if self.reason:
                return  # on its way out
            if not len(self.backlog):
                data = data[self._send(data):]
                if not data:
                    return
            if not self.backlog.push(data):
                self._send_backlog()
                if not self.backlog.push(data):
                    self._fail(Reason.SLOW_CONSUMER)
                    return
            if not self.writing:
                self.writing = True
                threading.Thread(target=self._drain, name=f"writer {self.peer}", daemon=True).start()

    def _send(self, data: bytes | memoryview) -> int:
        """One non-blocking send, under the lock: the bytes taken (0 if none)."""
        try:
            return self.sock.send(data, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return 0
        except OSError as exc:
            self._fail(error_reason(exc))
            return 0

    def _send_backlog(self) -> None:
        with self.backlog.view() as view:
            sent = self._send(view)
        self.backlog.consume(sent)

    def _drain(self) -> None:
        """Writer thread: send the backlog as the socket accepts it, then exit."""
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLOUT)
        while True:
            with self.lock:
                if self.reason or not len(self.backlog):
                    self.writing = False
                    return
            # Wait without the lock (senders keep appending); send with it, never
            # blocking, so bytes leave in order whoever sends them.
            if poller.poll(WRITER_POLL_MS):
                with self.lock:
                    if not self.reason:
                        self._send_backlog()

    def _fail(self, reason: str) -> None:
        """From another thread, lock held: the reader wakes with EOF and cleans up."""
        if not self.reason:
            self.reason = reason
        runtime.shutdown_quietly(self.sock)

    def stop(self) -> bool:
        """Shutdown: claim the socket for :func:`runtime.close_gracefully`. False when
        the client is already leaving (its own thread closes it)."""
        with self.lock:
            if self.reason:
                return False
            self.reason = Reason.SERVER_STOPPING
            return True


def serve_client(
    client: ThreadClient,
    roster: Roster[ThreadClient],
    roster_lock: threading.Lock,
    config: ServerConfig,
    log: runtime.EventLog,
) -> None:
    """Serve ``client`` until it leaves or is disconnected, then close its socket
    (at shutdown the stopping thread closes it instead).

    A client in ``roster`` (the threading backend's) leaves it here.
    """
    sock = client.sock
    session = client.session
    limits = config.limits
    echo = config.mode is Mode.ECHO
    readable = select.poll()
    readable.register(sock.fileno(), select.POLLIN)
    reason: str = Reason.CLOSED
    try:
        while True:
            deadline = session.next_deadline(limits)
            if not readable.poll(_poll_ms(deadline)):
                struck = session.expired(limits, time.monotonic())
                if struck is not None:
                    reason = _fail(sock, struck)
                    return
                continue
            if client.reason:
                return  # ended by another thread
            try:
                data = sock.recv(RECV_SIZE, socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
            if not data:
                return
            try:
                lines = session.feed(data, time.monotonic())
            except LineTooLong as exc:
                lines, reason = exc.lines, Reason.LINE_TOO_LONG
            if lines:
                if echo:
                    _send_all(sock, lines, limits.idle_timeout)
                else:
                    with roster_lock:
                        receivers = roster.recipients(client, config.mode)
                    for receiver in receivers:
                        receiver.deliver(lines)
            if reason is Reason.LINE_TOO_LONG:
                _fail(sock, reason)
                return
    except socket.timeout:
        reason = Reason.IDLE_TIMEOUT  # an echo client that took nothing for that long
    except runtime.Stop:
        client.stop()  # the blocking server's main thread: its caller closes the socket
        raise
    except OSError as exc:
        reason = error_reason(exc)
    finally:
        with roster_lock:
            roster.leave(client)
        with client.lock:
            # A reason set by another thread (slow consumer, shutdown) wins.
            client.reason = client.reason or reason
            reason = client.reason
        if reason != Reason.SERVER_STOPPING:  # else the stopping thread closes and logs it
            runtime.close_quietly(sock)
            log.disconnected(client.peer, reason)


def _poll_ms(deadline: float | None) -> int:
    """poll() timeout in ms until ``deadline`` (monotonic), -1 (forever) for None."""
    if deadline is None:
        return -1
    return max(1, int((deadline - time.monotonic()) * 1000) + 1)


def _send_all(sock: socket.socket, data: bytes, timeout: float) -> None:
    """Send all of ``data``, waiting up to ``timeout`` s (0 = forever) each time the
    socket is full; raises socket.timeout past it. Waits are explicit polls: with a
    Python-level timeout (``settimeout``), CPython would wait for writability even with
    ``MSG_DONTWAIT``, and :meth:`ThreadClient.deliver` must never wait."""
    view = memoryview(data)
    writable = select.poll()
    writable.register(sock.fileno(), select.POLLOUT)
    wait_ms = int(timeout * 1000) if timeout else -1
    while view:
        try:
            sent = sock.send(view, socket.MSG_DONTWAIT)
        except BlockingIOError:
            if not writable.poll(wait_ms):
                raise socket.timeout("send timed out") from None
            continue
        view = view[sent:]


def _fail(sock: socket.socket, reason: Reason) -> Reason:
    """Send the reason's ERR line (best effort, waiting at most 1 s); return it."""
    reply = reason.reply
    if reply is not None:
        try:
            _send_all(sock, reply, 1.0)
        except OSError:
            pass
    return reason
