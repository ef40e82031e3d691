"""The pure-Python load engine: what measures when the native one is not built.

Same API and counts as :class:`bench.loadgen.engine.Engine` (its docstrings and
``_loop.c`` state the semantics): a background thread runs a ``selectors`` loop over
non-blocking sockets; callers add and remove connections and harvest counts. Latency
buckets are exact ``(µs, count)`` pairs. Every round trip runs Python code here, so this
engine is slower than several of the servers it drives: results made with it are not
ranked (the report says so). Simple over fast: one lock, held by the loop except while
it waits in ``select``, guards every connection and count. This module is the caller's
side; the loop thread is :mod:`bench.loadgen.pyengine_loop`, and a connection's own state
and wire rules are in :mod:`bench.loadgen.pyengine_conn`.
"""

from __future__ import annotations

import socket

from bench.loadgen.engine import REQUEST_NAMES, Counts
from bench.loadgen.pyengine_conn import MAX_LINE, Conn, Tally
from bench.loadgen.pyengine_loop import EngineLoop


class PythonEngine(EngineLoop):
    """One pure-Python engine: a thread, a selector, any number of connections.

    The methods and their contracts are those of :class:`bench.loadgen.engine.Engine`.
    """

    # -- the caller's side ----------------------------------------------------------------

    def add_echo(self, host: str, port: int, message_bytes: int, rate_per_s: float = 0.0,
                 timeout_s: float = 2.0) -> int:
        return self._add("echo", host, port, message_bytes, rate_per_s, timeout_s, 0.0)

    def add_broadcast(self, host: str, port: int, message_bytes: int, rate_per_s: float = 0.0,
                      timeout_s: float = 2.0, silence_s: float = 0.0) -> int:
        return self._add("broadcast", host, port, message_bytes, rate_per_s, timeout_s, silence_s)

    def _add(self, kind: str, host: str, port: int, size: int, rate: float, timeout: float,
             silence: float) -> int:
        if self._closed:
            raise RuntimeError("the engine is closed")
        if not (1 <= port <= 65535 and 1 <= size <= MAX_LINE and rate >= 0 and timeout > 0 and silence >= 0):
            raise ValueError("port 1-65535, message_bytes 1-65536, rate >= 0, timeout > 0")
        try:
            family, _, _, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        except socket.gaierror as exc:
            raise OSError(f"cannot resolve {host}: {exc.strerror}") from None
        with self._lock:
            if self._closed:
                raise RuntimeError("the engine is closed")
            conn = Conn(self, next(self._ids), kind, family, addr, size, rate, timeout, silence)
            self._conns[conn.id] = conn
            self._new.append(conn)
            self._commands += 1
        self._wake()
        return conn.id

    def set_broadcast(self, rate_per_s: float, silence_s: float = 0.0) -> None:
        if rate_per_s < 0 or silence_s < 0:
            raise ValueError("rate and silence must be >= 0")
        with self._lock:
            self._bc_rate, self._bc_silence, self._bc_dirty = rate_per_s, silence_s, True
            self._commands += 1
        self._wake()

    def remove(self, conn_id: int) -> bool:
        with self._lock:
            conn = self._conns.pop(conn_id, None)
            if conn is None:
                return False
            self._gone.append(conn)
            self._commands += 1
        self._wake()
        return True

    def sync(self) -> None:
        with self._synced:
            target = self._commands
            self._wake()
            while self._done < target and not self._stop and self._thread.is_alive():
                self._synced.wait(0.2)  # bounded: re-checks that the loop still runs

    def harvest(self) -> dict[str, Counts]:
        with self._lock:
            old, self._tally = self._tally, {name: Tally() for name in REQUEST_NAMES}
        return {name: t.counts() for name, t in old.items()}

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._conns)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = self._stop = True
        self._wake()
        self._thread.join(2.0)  # the loop closes every socket on its way out
        self._wake_w.close()

    def __enter__(self) -> PythonEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
