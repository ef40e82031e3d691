"""asyncio backend: the stdlib event loop (or uvloop) with Protocol callbacks.

Protocols rather than streams: ``data_received`` hands bytes straight to the core
and ``transport.write`` queues the reply, with no coroutine per read. The transport's
write buffer is the client's output buffer: in echo mode reading pauses while it is
above the limit (asyncio's flow control); in broadcast a receiver whose buffer would
pass ``max_output_buffer`` is aborted.

On the stdlib loop the protocol is a :class:`asyncio.BufferedProtocol`. A plain
Protocol makes the selector transport call ``sock.recv(256 KiB)`` for every read; an
allocation that large is served by mmap/munmap and fresh page faults, about 12 us per
read here, which made this backend 4x slower than its own event loop allows. With a
BufferedProtocol the transport reads into one preallocated buffer (``recv_into``).
uvloop already reads into a loop-wide buffer and hands over exact-size bytes, so there
the plain Protocol stays (it measured slightly faster).
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time

from servers import runtime
from servers.config import ServerConfig
from servers.protocol import (
    ERR_LINE_TOO_LONG,
    ERR_SERVER_FULL,
    RECV_SIZE,
    LineTooLong,
    Mode,
    Roster,
    Session,
    output_limit,
    err_reason,
)


def check_config(config: ServerConfig) -> None:
    """Fail before binding when ``--loop uvloop`` is asked for but not installed."""
    if config.loop == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            raise runtime.StartupError("uvloop is not installed (pip install uvloop)") from None


class _Room:
    """Shared state of one server: config, roster, log."""

    def __init__(self, config: ServerConfig, log: runtime.EventLog) -> None:
        self.limits = config.limits
        self.echo = config.mode is Mode.ECHO
        self.mode = config.mode
        self.output_limit = output_limit(config.limits, config.mode)
        self.roster: Roster[LineProtocol] = Roster(config.limits.max_clients)
        self.log = log
        self.backoff = runtime.AcceptBackoff(log)
        self.accept_failed_at = float("-inf")  # time.monotonic() of the last EMFILE on accept
        # Broadcast receivers with lines pending in this loop pass (see flush_pending).
        self.to_flush: list[LineProtocol] = []

    def queue(self, receiver: LineProtocol) -> None:
        """Flush ``receiver`` at the end of this pass, with every other queued one.

        ``call_soon`` runs after all the callbacks of the events already selected in
        this pass: every sender woken together has routed its lines by then, so each
        receiver gets one ``write`` (one system call) for all of them, as in the select
        backend, instead of one per line.
        """
        if not self.to_flush:
            asyncio.get_running_loop().call_soon(self.flush_pending)
        self.to_flush.append(receiver)

    def flush_pending(self) -> None:
        queued = self.to_flush
        self.to_flush = []
        for receiver in queued:
            receiver.flush()


class LineProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, room: _Room) -> None:
        self.room = room
        self.transport: asyncio.Transport | None = None
        self.session: Session | None = None
        self.peer = "?"
        self.reason = ""
        self.pending: list[bytes] = []  # broadcast lines not yet handed to the transport
        self.pending_size = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # No isinstance check: uvloop's transports do not subclass asyncio.Transport.
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = runtime.format_address(peer) if peer else "?"
        room = self.room
        # Connections accepted in the same pass as a failure arrive here just after it;
        # only one accepted by asyncio's retry (1 s later) ends the burst.
        if time.monotonic() - room.accept_failed_at > 0.5:
            room.backoff.succeeded()
        if not room.roster.join(self):
            transport.write(ERR_SERVER_FULL)
            transport.close()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Echo: pause reading once unsent replies pass the limit (pause_writing below).
        transport.set_write_buffer_limits(high=room.output_limit)
        self.session = Session(room.limits, time.monotonic())
        room.log.connected(self.peer)

    def data_received(self, data: bytes) -> None:
        session = self.session
        if session is None:
            return  # rejected (server full); the transport is closing
        try:
            lines = session.feed(data, time.monotonic())
        except LineTooLong:
            self.fail(ERR_LINE_TOO_LONG, err_reason(ERR_LINE_TOO_LONG))
            return
        if not lines:
            return
        room = self.room
        if room.echo:
            self.transport.write(lines)  # type: ignore[union-attr]
            return
        for receiver in room.roster.recipients(self, room.mode):
            receiver.deliver(lines)

    def deliver(self, data: bytes) -> None:
        """Queue a broadcast line; drop this receiver if it has fallen too far behind.

        Lines wait in ``pending`` until the room flushes at the end of the loop pass;
        the limit counts them together with the transport's own unsent bytes.
        """
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        size = self.pending_size + len(data)
        if transport.get_write_buffer_size() + size > self.room.output_limit:
            self.reason = "slow consumer: output buffer full"
            self.pending.clear()
            self.pending_size = 0
            transport.abort()
            return
        if not self.pending:
            self.room.queue(self)
        self.pending.append(data)
        self.pending_size = size

    def flush(self) -> None:
        """Hand the pending broadcast lines to the transport in one write."""
        pending, transport = self.pending, self.transport
        if pending and transport is not None and not transport.is_closing():
            transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
        pending.clear()
        self.pending_size = 0

    def fail(self, err: bytes, reason: str) -> None:
        """Send a protocol ERR line, then close once it is written."""
        self.reason = reason
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(err)
            transport.close()
        self.session = None  # ignore whatever else arrives

    def pause_writing(self) -> None:
        if self.room.echo and self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.room.echo and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        room = self.room
        if self.session is not None or self.reason:
            room.roster.leave(self)
            reason = self.reason or (f"error: {exc}" if exc else "")
            room.log.disconnected(self.peer, reason)
        self.session = None


class BufferedLineProtocol(asyncio.BufferedProtocol, LineProtocol):
    """:class:`LineProtocol` reading into a buffer shared by every connection.

    Sharing is safe: the transport calls :meth:`get_buffer`, ``recv_into`` and
    :meth:`buffer_updated` back to back in one callback, and the bytes are copied out
    before it returns.
    """

    _buffer = bytearray(RECV_SIZE)
    _view = memoryview(_buffer)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._buffer[:nbytes])


async def _sweep(room: _Room) -> None:
    """Disconnect clients whose idle or line timeout has struck."""
    limits = room.limits
    while True:
        await asyncio.sleep(limits.sweep_interval)
        now = time.monotonic()
        for client in room.roster:
            session = client.session
            if session is None:
                continue
            err = session.expired(limits, now)
            if err is not None:
                client.fail(err, err_reason(err))


def _accept_error_handler(room: _Room):
    """A loop exception handler that logs running out of descriptors once per burst.

    asyncio itself pauses accepting for 1 s on EMFILE/ENFILE, but reports every failed
    accept() through the exception handler, a traceback each; route those through
    :class:`runtime.AcceptBackoff` (one line per burst) and leave the rest to the default.
    """

    def handler(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in runtime.RESOURCE_ERRNOS \
                and "accept" in context.get("message", ""):
            room.accept_failed_at = time.monotonic()
            room.backoff.failed(exc)
            return
        loop.default_exception_handler(context)

    return handler


async def _serve(listener: socket.socket, config: ServerConfig, log: runtime.EventLog) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    room = _Room(config, log)
    loop.set_exception_handler(_accept_error_handler(room))
    protocol = LineProtocol if config.loop == "uvloop" else BufferedLineProtocol
    server = await loop.create_server(lambda: protocol(room), sock=listener, backlog=1024)
    runtime.announce_ready(listener)
    sweeper = asyncio.ensure_future(_sweep(room))
    try:
        await stop.wait()
    finally:
        sweeper.cancel()
        server.close()
        for client in room.roster:
            if client.transport is not None:
                client.reason = client.reason or "server stopping"
                client.transport.close()
        # Give transports a moment to flush and close; never more than 1 s.
        try:
            await asyncio.wait_for(server.wait_closed(), timeout=1.0)
        except (asyncio.TimeoutError, Exception):
            pass


def serve(listener: socket.socket, config: ServerConfig, log: runtime.EventLog) -> None:
    """Serve on ``listener`` until SIGTERM or SIGINT, then close every client."""
    if config.loop == "uvloop":
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    else:
        runner = asyncio.Runner()
    with runner:
        runner.run(_serve(listener, config, log))
