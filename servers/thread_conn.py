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
from typing import Callable

from servers import runtime
from servers.config import ServerConfig
from servers.protocol import (
    ERR_LINE_TOO_LONG,
    RECV_SIZE,
    LineTooLong,
    Mode,
    OutputBuffer,
    Roster,
    Session,
    err_reason,
)

# How long a writer thread waits for a stuck receiver before re-checking it is alive.
WRITER_POLL_MS = 1000


class ThreadClient:
    """A connected client: its socket, protocol session and broadcast backlog."""

    def __init__(self, sock: socket.socket, peer: str, config: ServerConfig) -> None:
        self.sock = sock
        self.peer = peer
        self.session = Session(config.limits, time.monotonic())
        self.backlog = OutputBuffer(config.limits.max_output_buffer)
        self.lock = threading.Lock()  # guards backlog, writing, reason
        self.writing = False  # a writer thread owns the socket's send side
        self.reason = ""

    def deliver(self, data: bytes) -> None:
        """Hand a broadcast line to this receiver without ever blocking the caller."""
        with self.lock:
            if self.reason:
                return  # being disconnected
            if not self.writing and not len(self.backlog):
                try:
                    sent = self.sock.send(data, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    sent = 0
                except OSError:
                    self._kill("send failed")
                    return
                if sent == len(data):
                    return
                data = data[sent:]
            if not self.backlog.push(data):
                self._kill("slow consumer: output buffer full")
                return
            if not self.writing:
                self.writing = True
                threading.Thread(target=self._drain, name=f"writer {self.peer}", daemon=True).start()

    def _drain(self) -> None:
        """Writer thread: send the backlog as the socket accepts it, then exit."""
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLOUT)
        while True:
            with self.lock:
                if self.reason or not len(self.backlog):
                    self.writing = False
                    return
                chunk = bytes(self.backlog.view())
            # Wait without the lock: senders keep appending meanwhile.
            if not poller.poll(WRITER_POLL_MS):
                continue
            try:
                sent = self.sock.send(chunk, socket.MSG_DONTWAIT)
            except BlockingIOError:
                sent = 0
            except OSError:
                with self.lock:
                    self._kill("send failed")
                    self.writing = False
                return
            with self.lock:
                self.backlog.consume(sent)

    def kill(self, reason: str) -> None:
        """Disconnect from another thread: the reader wakes with EOF and cleans up."""
        with self.lock:
            self._kill(reason)

    def _kill(self, reason: str) -> None:
        if not self.reason:
            self.reason = reason
        runtime.shutdown_quietly(self.sock)


def serve_client(
    client: ThreadClient,
    roster: Roster[ThreadClient],
    roster_lock: threading.Lock,
    config: ServerConfig,
    log: runtime.EventLog,
) -> None:
    """Serve ``client`` until it leaves or is disconnected, then close its socket.

    The client must already have joined ``roster``; it leaves it here.
    """
    sock = client.sock
    session = client.session
    limits = config.limits
    echo = config.mode is Mode.ECHO
    readable = select.poll()
    readable.register(sock.fileno(), select.POLLIN)
    reason = ""
    try:
        while True:
            deadline = session.next_deadline(limits)
            if not readable.poll(_poll_ms(deadline)):
                err = session.expired(limits, time.monotonic())
                if err is not None:
                    reason = _send_err(sock, err)
                    return
                continue
            try:
                data = sock.recv(RECV_SIZE, socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
            if not data:
                return
            try:
                lines = session.feed(data, time.monotonic())
            except LineTooLong:
                reason = _send_err(sock, ERR_LINE_TOO_LONG)
                return
            if not lines:
                continue
            if echo:
                _send_all(sock, lines, limits.idle_timeout)
            else:
                with roster_lock:
                    receivers = roster.recipients(client, config.mode)
                for receiver in receivers:
                    receiver.deliver(lines)
    except socket.timeout:
        reason = "send timed out"
    except OSError as exc:
        reason = f"error: {exc.strerror or exc}"
    finally:
        with roster_lock:
            roster.leave(client)
        with client.lock:
            # A reason set by another thread (slow consumer, shutdown) wins; "" = it left.
            client.reason = client.reason or reason or "closed"
            reason = client.reason
        runtime.close_quietly(sock)
        log.disconnected(client.peer, "" if reason == "closed" else reason)


def _poll_ms(deadline: float | None) -> int:
    """poll() timeout in ms until ``deadline`` (monotonic), -1 (forever) for None."""
    if deadline is None:
        return -1
    return max(1, int((deadline - time.monotonic()) * 1000) + 1)


def _send_all(sock: socket.socket, data: bytes, timeout: float) -> None:
    """Send all of ``data`` from this thread, waiting up to ``timeout`` s (0 = forever)
    each time the socket is full.

    Sockets here never get a Python-level timeout (``settimeout``), because with one,
    CPython waits for writability even when ``MSG_DONTWAIT`` is passed, and
    :meth:`ThreadClient.deliver` must never wait. Waits are explicit polls instead.

    Raises:
        socket.timeout: the client took nothing for ``timeout`` seconds.
    """
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


def _send_err(sock: socket.socket, err: bytes) -> str:
    """Send a protocol ERR line (best effort, waiting at most 1 s); return the log reason."""
    try:
        _send_all(sock, err, 1.0)
    except OSError:
        pass
    return err_reason(err)


def accept_loop(
    listener: socket.socket,
    log: runtime.EventLog,
    on_connection: Callable[[socket.socket, str], None],
) -> None:
    """Accept forever (until :class:`runtime.Stop`), backing off when out of descriptors.

    ``on_connection(sock, peer)`` runs in the accepting thread for each connection.
    """
    backoff = runtime.AcceptBackoff(log)
    while True:
        try:
            sock, address = listener.accept()
        except OSError as exc:
            if exc.errno in runtime.RESOURCE_ERRNOS:
                time.sleep(backoff.failed(exc))
                continue
            if exc.errno in runtime.TRANSIENT_ACCEPT_ERRNOS:
                continue
            raise
        backoff.succeeded()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        on_connection(sock, runtime.format_address(address))
