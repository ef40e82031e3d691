"""Closing a refused connection so its client reads the ``ERR`` line, then EOF.

A client is often refused after it has already sent something (``nc`` sends its piped
input the moment it connects). Closing a socket with unread input, or input arriving
after the close, makes the kernel answer with RST; a client that sees the reset before
it reads (``nc`` stops reading at the reset) never shows the ``ERR`` line. So a refused
socket gets its write side shut (FIN after the ``ERR`` line) and is then read and
discarded until the client closes too, or :data:`GRACE` seconds pass, on a thread of
its own: the backend's loop never waits for it. Every backend refuses through
:func:`servers.runtime.refuse`, which hands the socket here.
"""

from __future__ import annotations

import queue
import selectors
import socket
import threading
import time

# How long a refused client gets to close its side after reading EOF.
GRACE = 1.0
# At most this many refused sockets linger at once (a flood past --max-clients must not
# hold thousands of descriptors); beyond it, a refused socket is closed at once.
CAPACITY = 256


class LingeringCloser:
    """Closes sockets after shutting their write side and draining their input.

    :meth:`close` never blocks. A daemon thread, started on first use, holds the sockets
    whose clients have not closed yet; it sleeps on a queue while it holds none.
    """

    def __init__(self, grace: float = GRACE, capacity: int = CAPACITY) -> None:
        self._grace = grace
        self._capacity = capacity
        self._incoming: queue.SimpleQueue[socket.socket] = queue.SimpleQueue()
        self._held = 0  # sockets handed over and not closed yet (written under _lock)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def close(self, sock: socket.socket) -> None:
        """Shut ``sock``'s write side and close it once its peer has closed too (or
        after the grace period, or at once when too many sockets already linger)."""
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.setblocking(False)
            if drained_to_eof(sock):
                sock.close()
                return
        except OSError:
            sock.close()  # reset already, or never connected: nothing left to protect
            return
        with self._lock:
            if self._held >= self._capacity:
                sock.close()
                return
            self._held += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="refusal-closer", daemon=True)
                self._thread.start()
        self._incoming.put(sock)

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        deadlines: dict[socket.socket, float] = {}
        while True:
            if not deadlines:
                self._adopt(self._incoming.get(), selector, deadlines)  # idle: sleep here
            while True:
                try:
                    self._adopt(self._incoming.get_nowait(), selector, deadlines)
                except queue.Empty:
                    break
            for key, _ in selector.select(0.05):
                sock = key.fileobj
                try:
                    done = drained_to_eof(sock)  # type: ignore[arg-type]
                except OSError:
                    done = True
                if done:
                    self._release(sock, selector, deadlines)  # type: ignore[arg-type]
            now = time.monotonic()
            for sock in [s for s, t in deadlines.items() if t <= now]:
                self._release(sock, selector, deadlines)

    def _adopt(self, sock: socket.socket, selector: selectors.BaseSelector,
               deadlines: dict[socket.socket, float]) -> None:
        try:
            selector.register(sock, selectors.EVENT_READ)
        except (OSError, ValueError):
            sock.close()
            with self._lock:
                self._held -= 1
            return
        deadlines[sock] = time.monotonic() + self._grace

    def _release(self, sock: socket.socket, selector: selectors.BaseSelector,
                 deadlines: dict[socket.socket, float]) -> None:
        selector.unregister(sock)
        del deadlines[sock]
        sock.close()
        with self._lock:
            self._held -= 1


def drained_to_eof(sock: socket.socket) -> bool:
    """Read and discard what ``sock`` (non-blocking, write side shut) has received; True
    once the peer has closed. Raises OSError on a reset. Shared with the shutdown path,
    :func:`servers.runtime.close_gracefully`."""
    for _ in range(64):  # bounded: a client that keeps sending waits for the next pass
        try:
            if not sock.recv(65536):
                return True
        except BlockingIOError:
            return False
    return False


CLOSER = LingeringCloser()
