"""One connection of the gevent backend (:mod:`servers.gevent_server`): its raw socket,
protocol session, libev watchers and broadcast backlog.

The broadcast output methods run in worker greenlets and in hub callbacks, and never
wait: what the socket does not take waits in the bounded :class:`OutputBuffer` for the
writability watcher, whose callback sends it. Nothing here imports gevent: the watchers
come from the server's loop.
"""

from __future__ import annotations

import socket
from typing import Any

from servers import runtime
from servers.protocol import OutputBuffer, Reason, Session

# libev event masks for io watchers.
READ, WRITE = 1, 2


class Client:
    """One connection: raw socket, protocol session, watchers, broadcast backlog."""

    __slots__ = ("sock", "peer", "session", "out", "readable", "writable", "queued",
                 "reason")

    def __init__(self, sock: socket.socket, peer: str, session: Session, loop: Any,
                 limit: int) -> None:
        self.sock = sock
        self.peer = peer
        self.session = session
        self.out = OutputBuffer(limit)
        fd = sock.fileno()
        self.readable = loop.io(fd, READ)
        self.writable = loop.io(fd, WRITE)
        # Two flags, not one: a receiver that is also waiting for its turn must still be
        # flushed (one shared flag left its last broadcast lines unsent, for good).
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

    def relay(self, data: bytes) -> None:
        """Send a hub pass's broadcast lines for this client now, in one system call.

        With nothing queued before them, ``data`` goes straight to the socket (no copy
        into the backlog); only what the socket does not take is queued, for the
        writability callback. Behind a backlog, ``data`` joins it (:meth:`deliver`), so
        the order holds. Never waits; a receiver that cannot keep up is cut.
        """
        if self.reason:
            return
        if len(self.out):
            if self.deliver(data):
                self.flush()
            return
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.fail("error: send failed")
            return
        if sent < len(data):
            if not self.out.push(memoryview(data)[sent:]):
                self.fail(Reason.SLOW_CONSUMER)
                return
            if not self.writable.active:
                self.writable.start(self.flush)

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
        without waiting), then the read watcher fires and the connection's turn finds
        EOF and closes it."""
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
