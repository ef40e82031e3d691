"""Tiny servers that misbehave on purpose, for the native engine's tests.

Each runs in threads of the test process on 127.0.0.1, port 0, and is a context
manager (``with StallingEcho(...) as server: server.address``). Every socket has a
timeout, so a test cannot hang on them.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Callable

SOCKET_TIMEOUT = 10.0


class FixtureServer:
    """Accepts on 127.0.0.1:0 and runs ``handle(sock)`` in a thread per client."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.address = self.listener.getsockname()[:2]
        self.clients: list[socket.socket] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []

    def handle(self, sock: socket.socket) -> None:
        raise NotImplementedError

    def _accept_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                sock, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            sock.settimeout(SOCKET_TIMEOUT)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.clients.append(sock)
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _serve(self, sock: socket.socket) -> None:
        try:
            self.handle(sock)
        except OSError:
            pass
        finally:
            with self.lock:
                if sock in self.clients:
                    self.clients.remove(sock)
            sock.close()

    def __enter__(self) -> FixtureServer:
        thread = threading.Thread(target=self._accept_loop, daemon=True)
        thread.start()
        self.threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.listener.close()
        with self.lock:
            for sock in self.clients:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        for thread in self.threads:
            thread.join(timeout=5)


def lines_of(sock: socket.socket, stopping: threading.Event):
    """Yield each line (newline included) received on ``sock`` until EOF or stop."""
    pending = b""
    while not stopping.is_set():
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        if not data:
            return
        lines = (pending + data).split(b"\n")
        pending = lines.pop()
        for line in lines:
            yield line + b"\n"


class StallingEcho(FixtureServer):
    """An echo server that stops replying for ``stall_s`` once, ``stall_after_s`` after
    its first line, then sends what queued up meanwhile."""

    def __init__(self, stall_after_s: float, stall_s: float) -> None:
        super().__init__()
        self.stall_after_s, self.stall_s = stall_after_s, stall_s

    def handle(self, sock: socket.socket) -> None:
        first = None
        stalled = False
        for line in lines_of(sock, self.stopping):
            now = time.monotonic()
            first = first or now
            if not stalled and now - first >= self.stall_after_s:
                stalled = True
                time.sleep(self.stall_s)
            sock.sendall(line)


class Misbehaving(FixtureServer):
    """``behaviour``: "silent" (reads, never replies), "close" (closes at once) or
    "garbage" (replies with an ERR line)."""

    def __init__(self, behaviour: str) -> None:
        super().__init__()
        self.behaviour = behaviour

    def handle(self, sock: socket.socket) -> None:
        if self.behaviour == "close":
            return
        for _line in lines_of(sock, self.stopping):
            if self.behaviour == "garbage":
                sock.sendall(b"ERR line too long\n")


class ManglingRoom(FixtureServer):
    """A broadcast room that forwards each sender's lines 1..``last`` to every other
    client, except: seq % 10 == 3 is dropped, seq % 10 == 5 is sent twice, seq % 10 == 7
    is held and sent after seq % 10 == 8 (a swap). Lines after ``last`` are dropped, so
    the end is clean. Per sender and receiver over 1..60: 6 dropped, 6 duplicated, 6
    swapped."""

    def __init__(self, last: int = 60) -> None:
        super().__init__()
        self.last = last
        self.forwarded = 0

    def _to_others(self, me: socket.socket, line: bytes) -> None:
        with self.lock:
            others = [c for c in self.clients if c is not me]
        for other in others:
            try:
                other.sendall(line)
            except OSError:
                pass

    def handle(self, sock: socket.socket) -> None:
        held: bytes | None = None
        for line in lines_of(sock, self.stopping):
            seq = int(line.split(b" ", 2)[1])
            if seq > self.last or seq % 10 == 3:
                continue
            if seq % 10 == 7:
                held = line
                continue
            self._to_others(sock, line)
            if seq % 10 == 5:
                self._to_others(sock, line)
            if seq % 10 == 8 and held is not None:
                self._to_others(sock, held)
                held = None


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll ``check`` until it is true or ``timeout`` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()
