"""The native load engine's Python face: is it here, and a typed wrapper over it.

The engine (``bench.loadgen._engine``, C) owns a thread that does every socket call
with the GIL released: Python adds and removes connections and harvests counts a few
times a second, and runs nothing per round trip. It is built by ``pip install`` when
a C compiler is present; without one the install still succeeds, :func:`open_engine`
gives the pure-Python engine (:mod:`bench.loadgen.pyengine`, same API) and the Locust
files pick the pure-Python users. ``SOCKBENCH_ENGINE=python`` forces that fallback.

Outputs name the engine that ran with :func:`engine_name` ("native" or "python").
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.loadgen.pyengine import PythonEngine

try:
    from bench.loadgen import _engine as _native
    _IMPORT_ERROR = ""
except ImportError as exc:  # not built (no compiler at install time) or not loadable here
    _native: ModuleType | None = None  # type: ignore[no-redef]
    _IMPORT_ERROR = str(exc)

ENV_VAR = "SOCKBENCH_ENGINE"
FAILURE_KINDS = ("timeout", "reset", "refused", "protocol")
REQUEST_NAMES = ("echo", "broadcast")


def why_unavailable() -> str:
    """Why the native engine will not run here, or "" when it will."""
    choice = os.environ.get(ENV_VAR, "").strip().lower()
    if choice == "python":
        return f"{ENV_VAR}=python chooses the pure-Python users"
    if _native is None:
        return ("the native engine is not built (pip install needs a C compiler for it): "
                + _IMPORT_ERROR)
    return ""


def available() -> bool:
    """True when the native engine is built and not switched off."""
    return not why_unavailable()


def engine_name() -> str:
    """"native" or "python": what drives the load in this process (for every output)."""
    return "native" if available() else "python"


# What drives the load, as decided when this module was imported.
ENGINE_NAME = engine_name()


@dataclass
class Counts:
    """What one request name ("echo" or "broadcast") counted between two harvests.

    ``requests`` are successes (round trips, or deliveries in order); failures are by
    kind and not included in ``requests``. Latency buckets are ``(µs, count)`` pairs,
    each value within 0.4% of the latencies it stands for. Broadcast receivers check
    each sender's sequence: ``lost`` (gaps), ``duplicated`` (the same number again) and
    ``out_of_order`` (older than one already seen); the last two are not timed.
    """

    requests: int = 0
    failures: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAILURE_KINDS, 0))
    bytes: int = 0
    sent: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    sum_us: int = 0
    min_us: int = 0
    max_us: int = 0
    failure_sum_us: int = 0
    latency_us: list[tuple[int, int]] = field(default_factory=list)
    failure_latency_us: list[tuple[int, int]] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    def is_empty(self) -> bool:
        return not (self.requests or self.failed or self.sent or self.lost or self.duplicated
                    or self.out_of_order)

    def add(self, other: Counts) -> None:
        """Add another batch (its histograms are appended, not merged)."""
        if other.requests:
            self.min_us = min(self.min_us, other.min_us) if self.requests else other.min_us
        self.max_us = max(self.max_us, other.max_us)
        self.requests += other.requests
        for kind, n in other.failures.items():
            self.failures[kind] = self.failures.get(kind, 0) + n
        for name in ("bytes", "sent", "lost", "duplicated", "out_of_order", "sum_us", "failure_sum_us"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.latency_us += other.latency_us
        self.failure_latency_us += other.failure_latency_us


class Engine:
    """One native engine: a thread, an epoll set, any number of connections.

    Every method is safe to call from greenlets or threads; none blocks on the network.
    ``close()`` stops the thread and closes every socket (also on garbage collection).
    """

    def __init__(self) -> None:
        reason = why_unavailable()
        if reason:
            raise RuntimeError(reason)
        assert _native is not None
        self._engine: Any = _native.Engine()

    def add_echo(self, host: str, port: int, message_bytes: int, rate_per_s: float = 0.0,
                 timeout_s: float = 2.0) -> int:
        """One echo connection; returns its id.

        ``rate_per_s`` 0: closed loop, one line in flight. > 0: open loop, lines sent at
        fixed intended times (pipelined as needed), each timed from its intended time, so
        a server that stalls shows the stall in every line behind it.
        """
        return self._engine.add_echo(host, port, message_bytes, rate_per_s, timeout_s)

    def add_broadcast(self, host: str, port: int, message_bytes: int, rate_per_s: float = 0.0,
                      timeout_s: float = 2.0, silence_s: float = 0.0) -> int:
        """One room member; returns its id. It sends ``rate_per_s`` lines/s, or with 0 keeps
        one line in flight (the next goes when a receiver in this engine got the last;
        needs two or more broadcast connections in this engine). It checks and times
        every line it receives. ``silence_s`` > 0: hearing nothing that long counts a
        timeout (the connection stays)."""
        return self._engine.add_broadcast(host, port, message_bytes, rate_per_s, timeout_s, silence_s)

    def set_broadcast(self, rate_per_s: float, silence_s: float = 0.0) -> None:
        """A new rate and silence limit for every broadcast connection of this engine."""
        self._engine.set_broadcast(rate_per_s, silence_s)

    def remove(self, conn_id: int) -> bool:
        """Close a connection (the engine thread does it next); False if the id is unknown."""
        return self._engine.remove(conn_id)

    def sync(self) -> None:
        """Wait until the engine thread has carried out every add, remove and set so far:
        after ``remove(i); sync()`` connection ``i`` counts nothing more."""
        self._engine.sync()

    def harvest(self) -> dict[str, Counts]:
        """Everything counted since the last harvest, per request name; then reset."""
        raw = self._engine.harvest()
        return {name: Counts(**{**values, "latency_us": [tuple(p) for p in values["latency_us"]],
                                "failure_latency_us": [tuple(p) for p in values["failure_latency_us"]]})
                for name, values in raw.items()}

    @property
    def connections(self) -> int:
        """Connections added and not yet removed."""
        return self._engine.connections

    def close(self) -> None:
        """Stop the thread and close every socket; idempotent."""
        self._engine.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_engine() -> Engine | PythonEngine:
    """The native engine when it is available, else the pure-Python one
    (:mod:`bench.loadgen.pyengine`, same API, slower: its results are not ranked)."""
    if available():
        return Engine()
    from bench.loadgen.pyengine import PythonEngine

    return PythonEngine()


_shared: Engine | None = None
_shared_lock = threading.Lock()


def shared_engine() -> Engine:
    """The engine every Locust user of this process adds its connection to (made on first use)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Engine()
        return _shared
