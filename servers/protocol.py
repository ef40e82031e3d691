"""The wire contract, with no sockets in it (sans-I/O).

Every backend moves bytes between sockets and the objects here; the rules of the
protocol live only in this module, so a bug fixed here is fixed for all five.

The contract:

* A line is a run of bytes ending in ``\\n``. Lines are relayed verbatim: any byte
  value, the terminator (and a ``\\r`` before it) included.
* ``echo`` mode: each complete line goes back to its sender.
* ``broadcast`` mode: each complete line goes to every *other* connected client,
  in the order each sender sent them.
* A line longer than ``max_line`` bytes (terminator counted) gets
  :data:`ERR_LINE_TOO_LONG` and a disconnect; the input buffer never holds more
  than ``max_line`` bytes.
* A connection past ``max_clients`` gets :data:`ERR_SERVER_FULL` and is closed.
* A broadcast receiver whose unsent output exceeds ``max_output_buffer`` is
  disconnected (as Redis drops slow pub/sub subscribers); the room never waits for it.
* A client silent for ``idle_timeout`` seconds gets :data:`ERR_IDLE_TIMEOUT`; one that
  keeps a line unfinished for ``line_timeout`` seconds (slowloris) gets
  :data:`ERR_LINE_TIMEOUT`. Both are then disconnected.
* Nothing else is ever sent unsolicited.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Generic, Iterator, Protocol, TypeVar

class Reason(enum.StrEnum):
    """Why a connection ended (or was refused): the one wording every backend logs.

    A disconnect caused by a socket error is not a member: it is logged as
    :func:`error_reason` (``"error: Connection reset by peer"``).
    """

    CLOSED = "closed"  # the client closed, after every reply it was owed
    LINE_TOO_LONG = "line too long"
    IDLE_TIMEOUT = "idle timeout"
    LINE_TIMEOUT = "line timeout"
    SLOW_CONSUMER = "slow consumer: output buffer full"
    SERVER_FULL = "server full"
    SERVER_STOPPING = "server stopping"

    @property
    def reply(self) -> bytes | None:
        """The ``ERR`` line the client is sent before the close, or None (no message:
        it closed, is not reading, or the server is stopping)."""
        return _REPLIES.get(self)


def error_reason(exc: BaseException) -> str:
    """The disconnect reason for a socket error: ``"error: <strerror>"``."""
    return f"error: {getattr(exc, 'strerror', None) or exc}"


# Protocol error lines. Each is sent once, then the connection is closed.
ERR_LINE_TOO_LONG = b"ERR line too long\n"
ERR_SERVER_FULL = b"ERR server full\n"
ERR_IDLE_TIMEOUT = b"ERR idle timeout\n"
ERR_LINE_TIMEOUT = b"ERR line timeout\n"

_REPLIES = {
    Reason.LINE_TOO_LONG: ERR_LINE_TOO_LONG,
    Reason.SERVER_FULL: ERR_SERVER_FULL,
    Reason.IDLE_TIMEOUT: ERR_IDLE_TIMEOUT,
    Reason.LINE_TIMEOUT: ERR_LINE_TIMEOUT,
}


# 64 KiB per line: large enough for any chat line or JSON message this server is
# meant for, small enough that 10,000 clients each holding a full partial line cost
# at most 640 MiB. (h11 uses 16 KiB for headers; Redis' inline protocol, 64 KiB.)
DEFAULT_MAX_LINE = 65536
# 1,000 clients: above what the blocking and select() models can sensibly hold, below
# the default open-files soft limit (1,024) on most Linux systems.
DEFAULT_MAX_CLIENTS = 1000
# 1 MiB of unsent output per broadcast receiver: 16 full-size lines, or ~16,000
# 64-byte ones; a receiver this far behind is not keeping up (Redis' pubsub soft limit
# is 8 MiB over 60 s; we cut at once because the room must not buffer for it).
DEFAULT_MAX_OUTPUT_BUFFER = 1 << 20
# Bytes asked of one recv(). 64 KiB: a full line in one call, and what the kernel's
# loopback socket buffer hands over at once anyway.
RECV_SIZE = 65536
# A client being disconnected for a Reason gets 1 s to take what it is still owed (the
# lines before an over-long one, its ERR line); one that is not reading is closed anyway.
FAIL_GRACE = 1.0
# 5 minutes of silence: the common idle timeout of TCP proxies (nginx: 60 s, HAProxy
# client timeout: typically 30-300 s).
DEFAULT_IDLE_TIMEOUT = 300.0
# 30 s to finish a started line: a human typing in `bench client` sends a whole line
# at once; only a slowloris trickles bytes without ever finishing one.
DEFAULT_LINE_TIMEOUT = 30.0


class Mode(str, enum.Enum):
    """Where a complete line goes."""

    ECHO = "echo"
    BROADCAST = "broadcast"


@dataclass(frozen=True)
class Limits:
    """The protocol's limits. Timeouts in seconds; 0 turns a timeout off."""

    max_line: int = DEFAULT_MAX_LINE
    max_clients: int = DEFAULT_MAX_CLIENTS
    max_output_buffer: int = DEFAULT_MAX_OUTPUT_BUFFER
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    line_timeout: float = DEFAULT_LINE_TIMEOUT

    def __post_init__(self) -> None:
        if self.max_line < 1:
            raise ValueError("max_line must be at least 1")
        if self.max_clients < 1:
            raise ValueError("max_clients must be at least 1")
        if self.max_output_buffer < 1:
            raise ValueError("max_output_buffer must be at least 1")
        if self.idle_timeout < 0 or self.line_timeout < 0:
            raise ValueError("timeouts must be 0 (off) or positive")

    @property
    def sweep_interval(self) -> float:
        """How often a backend should call :meth:`Session.expired` on its clients.

        A tenth of the shortest active timeout (so a timeout fires at most 10% late),
        clamped to [0.05, 1.0] seconds; 1.0 when both timeouts are off.
        """
        active = [t for t in (self.idle_timeout, self.line_timeout) if t > 0]
        if not active:
            return 1.0
        return min(1.0, max(0.05, min(active) / 10))


class LineTooLong(Exception):
    """A line, or an unterminated partial line, exceeded ``max_line``.

    Attributes:
        lines: the complete lines received before the offending one (from the same
            read, and from the unfinished line carried over), concatenated verbatim.
            The contract owes them to their receivers before the ``ERR`` line, however
            TCP split the bytes.
    """

    def __init__(self, lines: bytes = b"") -> None:
        super().__init__()
        self.lines = lines


class Session:
    """The protocol state of one connection: its partial line and its clocks.

    Args:
        limits: the server's limits.
        now: the current time (``time.monotonic()``), when the client connected.

    Feed it what the socket received with :meth:`feed`; it returns the complete lines
    to route. Ask :meth:`expired` now and then whether a timeout has struck.
    """

    __slots__ = ("_max_line", "_partial", "last_input", "line_started")

    def __init__(self, limits: Limits, now: float) -> None:
        self._max_line = limits.max_line
        self._partial = bytearray()
        self.last_input = now
        # When the current unfinished line began, or None when there is none.
        self.line_started: float | None = None

    @property
    def buffered(self) -> int:
        """Bytes of an unfinished line held for this client."""
        return len(self._partial)

    def feed(self, data: bytes, now: float) -> bytes:
        """Take bytes received from the client; return the complete lines in them.

        Args:
            data: the bytes one ``recv`` returned (non-empty).
            now: the current ``time.monotonic()``.

        Returns:
            Every line completed by ``data``, concatenated verbatim in order
            (``b""`` when none was completed). The unfinished tail is kept.

        Raises:
            LineTooLong: a completed line is longer than ``max_line`` bytes, or the
                unfinished tail already holds ``max_line`` bytes (its terminator would
                push it over). The session is then unusable; close the connection.
        """
        self.last_input = now
        max_line = self._max_line
        partial = self._partial
        last_nl = data.rfind(b"\n")
        if last_nl < 0:
            # No line ends here: the whole chunk joins the unfinished line.
            if len(partial) + len(data) >= max_line:
                raise LineTooLong
            if not partial:
                self.line_started = now
            partial += data
            return b""

        first_nl = data.find(b"\n")
        if len(partial) + first_nl + 1 > max_line:
            raise LineTooLong
        # Lines wholly inside this chunk are at most len(data) long, so only a chunk
        # longer than the limit needs a line-by-line scan.
        if len(data) > max_line:
            start = first_nl + 1
            while start <= last_nl:
                end = data.find(b"\n", start)
                if end - start + 1 > max_line:
                    raise LineTooLong(self._take(data, start))
                start = end + 1
        tail_len = len(data) - last_nl - 1
        if tail_len >= max_line:
            raise LineTooLong(self._take(data, last_nl + 1))

        if partial:
            complete = bytes(partial) + data[: last_nl + 1]
            partial.clear()
        elif tail_len:
            complete = data[: last_nl + 1]
        else:
            complete = data  # the common case: whole lines, no copy
        if tail_len:
            partial += data[last_nl + 1 :]
            self.line_started = now
        else:
            self.line_started = None
        return complete

    def _take(self, data: bytes, end: int) -> bytes:
        """The unfinished line plus ``data[:end]`` (which ends a line), as one bytes;
        the session keeps nothing. Only on the way to :class:`LineTooLong`."""
        complete = bytes(self._partial) + data[:end]
        self._partial.clear()
        return complete

    def expired(self, limits: Limits, now: float) -> Reason | None:
        """The timeout that has struck at ``now`` (idle or line), else None."""
        if limits.idle_timeout and now - self.last_input >= limits.idle_timeout:
            return Reason.IDLE_TIMEOUT
        started = self.line_started
        if limits.line_timeout and started is not None and now - started >= limits.line_timeout:
            return Reason.LINE_TIMEOUT
        return None

    def next_deadline(self, limits: Limits) -> float | None:
        """The monotonic time at which the earliest timeout would strike, or None."""
        deadlines = []
        if limits.idle_timeout:
            deadlines.append(self.last_input + limits.idle_timeout)
        if limits.line_timeout and self.line_started is not None:
            deadlines.append(self.line_started + limits.line_timeout)
        return min(deadlines) if deadlines else None


def output_limit(limits: Limits, mode: Mode) -> int:
    """The most unsent output a backend may hold for one client.

    Broadcast: ``max_output_buffer``; past it the receiver is disconnected.
    Echo: backends stop reading from a client while its replies are unsent
    (back-pressure, never a disconnect), so at most one read's worth of complete lines
    is ever queued: an unfinished line plus one :data:`RECV_SIZE` chunk.
    """
    if mode is Mode.BROADCAST:
        return limits.max_output_buffer
    return limits.max_line + RECV_SIZE


class OutputBuffer:
    """Bytes accepted for one client but not yet written to its socket.

    Backends append with :meth:`push`, write from :meth:`view` and acknowledge with
    :meth:`consume`. The buffer never grows past ``limit``: a push that would exceed it
    is refused, and the caller disconnects that client.
    """

    __slots__ = ("_data", "limit")

    def __init__(self, limit: int) -> None:
        self._data = bytearray()
        self.limit = limit

    def __len__(self) -> int:
        return len(self._data)

    def push(self, data: bytes) -> bool:
        """Queue ``data``; return False (queueing nothing) if it would exceed the limit."""
        if len(self._data) + len(data) > self.limit:
            return False
        self._data += data
        return True

    def view(self) -> memoryview:
        """The pending bytes, to pass to ``send``. Release before the next push."""
        return memoryview(self._data)

    def consume(self, sent: int) -> None:
        """Drop the first ``sent`` bytes, which the socket accepted."""
        del self._data[:sent]


class Member(Protocol):
    """What the roster needs of a client to sweep it: its session (None once the
    backend has stopped reading it) and the reason it is on its way out ("" while it
    is not)."""

    session: Session | None
    reason: str


C = TypeVar("C", bound=Member)


class Roster(Generic[C]):
    """The set of connected clients, bounded by ``max_clients``: admission, routing
    and the timeout sweep.

    Keeps join order, so a broadcast reaches receivers in a stable order.
    Not thread-safe: the threading backend guards it with a lock.

    Admission is :meth:`join`; a client it refuses gets :attr:`Reason.SERVER_FULL`'s
    reply and is closed (and the refusal is logged).
    """

    __slots__ = ("_clients", "max_clients", "limits")

    def __init__(self, max_clients: int, limits: Limits | None = None) -> None:
        self._clients: dict[C, None] = {}
        self.max_clients = max_clients
        # The timeouts :meth:`expired` applies; None: no timeouts.
        self.limits = limits

    def __len__(self) -> int:
        return len(self._clients)

    def __iter__(self) -> Iterator[C]:
        """Iterate over a snapshot, so clients may leave while it is walked."""
        return iter(list(self._clients))

    def __contains__(self, client: object) -> bool:
        return client in self._clients

    def join(self, client: C) -> bool:
        """Admit ``client``; False (admitting nothing) when the server is full."""
        if len(self._clients) >= self.max_clients:
            return False
        self._clients[client] = None
        return True

    def leave(self, client: C) -> None:
        """Forget ``client``; harmless if it never joined or already left."""
        self._clients.pop(client, None)

    def recipients(self, sender: C, mode: Mode) -> list[C]:
        """Whom a line from ``sender`` goes to: itself (echo) or every other client."""
        if mode is Mode.ECHO:
            return [sender]
        return [c for c in self._clients if c is not sender]

    def expired(self, now: float) -> list[tuple[C, Reason]]:
        """The timeout sweep: every client whose idle or line timeout has struck at
        ``now``, with which one. Clients already on their way out (a ``reason`` set,
        or no session) are skipped. The backend then fails each one (ERR line, close).
        Backends call this every :attr:`Limits.sweep_interval` seconds.
        """
        limits = self.limits
        if limits is None or not (limits.idle_timeout or limits.line_timeout):
            return []
        struck = []
        for client in self._clients:
            session = client.session
            if session is None or client.reason:
                continue
            reason = session.expired(limits, now)
            if reason is not None:
                struck.append((client, reason))
        return struck
