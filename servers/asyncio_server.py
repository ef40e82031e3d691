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
import os
import signal
import socket
import time

from servers import runtime
from servers.config import ServerConfig
from servers.protocol import (FAIL_GRACE, RECV_SIZE, LineTooLong, Mode, Reason, Roster, Session,
                              error_reason, output_limit)


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
        self.roster: Roster[LineProtocol] = Roster(config.limits.max_clients, config.limits)
        self.log = log
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
    """One client connection. It joins the roster when accepted, before its
    transport exists (``session`` is None until then, and once it is leaving)."""

    def __init__(self, room: _Room, peer: str) -> None:
        self.room = room
        self.transport: asyncio.Transport | None = None
        self.session: Session | None = None
        self.peer = peer
        self.reason = ""
        self.pending: list[bytes] = []  # broadcast lines not yet handed to the transport
        self.pending_size = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # No isinstance check: uvloop's transports do not subclass asyncio.Transport.
        self.transport = transport  # type: ignore[assignment]
        # Echo: pause reading once unsent replies pass the limit (pause_writing below).
        transport.set_write_buffer_limits(high=self.room.output_limit)
        self.session = Session(self.room.limits, time.monotonic())

    def data_received(self, data: bytes) -> None:
        session = self.session
        if session is None:
            return  # leaving; ignore whatever else arrives
        too_long = False
        try:
            lines = session.feed(data, time.monotonic())
        except LineTooLong as exc:
            lines, too_long = exc.lines, True
        if lines:
            room = self.room
            if room.echo:
                self.transport.write(lines)  # type: ignore[union-attr]
            else:
                for receiver in room.roster.recipients(self, room.mode):
                    receiver.deliver(lines)
        if too_long:
            self.fail(Reason.LINE_TOO_LONG)

    def deliver(self, data: bytes) -> None:
        """Queue a broadcast line until the room's end-of-pass flush; drop this
        receiver if it has fallen too far behind. It is judged on what it failed to
        take: before the limit may be passed, the pending lines are offered to the
        socket (uvloop may read one sender many times in one pass)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        limit = self.room.output_limit
        if transport.get_write_buffer_size() + self.pending_size + len(data) > limit:
            self.flush()
            if transport.get_write_buffer_size() + len(data) > limit:
                self.reason = Reason.SLOW_CONSUMER
                transport.abort()
                return
        if not self.pending:
            self.room.queue(self)
        self.pending.append(data)
        self.pending_size += len(data)

    def flush(self) -> None:
        """Hand the pending broadcast lines to the transport in one write."""
        pending, transport = self.pending, self.transport
        if pending and transport is not None and not transport.is_closing():
            transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
        pending.clear()
        self.pending_size = 0

    def fail(self, reason: Reason) -> None:
        """Send the reason's ERR line after what is queued, then close once written."""
        self.reason = reason
        self.session = None
        transport = self.transport
        if transport is not None and not transport.is_closing():
            self.flush()
            if reason.reply is not None:
                transport.write(reason.reply)
            transport.close()
            if transport.get_write_buffer_size():  # not reading: do not wait forever
                asyncio.get_running_loop().call_later(FAIL_GRACE, transport.abort)

    def pause_writing(self) -> None:
        if self.room.echo and self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.room.echo and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.session = None
        self.pending.clear()
        if self.reason == Reason.SERVER_STOPPING:
            return  # closed and logged by the shutdown
        self.room.roster.leave(self)
        self.reason = self.reason or (error_reason(exc) if exc else Reason.CLOSED)
        self.room.log.disconnected(self.peer, self.reason)


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


def _accept(loop: asyncio.AbstractEventLoop, listener: socket.socket, room: _Room,
            protocol: type[LineProtocol]) -> None:
    """Our own accept loop instead of ``loop.create_server``: the shared errno triage
    and back-off (asyncio 3.11 retries a failed accept() in a tight loop when out of
    descriptors; uvloop silently accepts and closes the excess), and admission before
    any transport exists."""
    backoff = runtime.AcceptBackoff(room.log)
    fd = listener.fileno()

    def admit(sock: socket.socket, peer: str) -> None:
        client = protocol(room, peer)
        if not room.roster.join(client):
            runtime.refuse(sock, peer, Reason.SERVER_FULL, room.log)
            return
        room.log.connected(peer)
        loop.create_task(connect(client, sock))

    async def connect(client: LineProtocol, sock: socket.socket) -> None:
        try:
            await loop.connect_accepted_socket(lambda: client, sock)
        except OSError as exc:  # reset before its transport was set up
            runtime.close_quietly(sock)
            client.connection_lost(exc)

    def on_readable() -> None:
        delay = runtime.accept_batch(listener, backoff, admit)
        if delay:
            loop.remove_reader(fd)
            loop.call_later(delay, loop.add_reader, fd, on_readable)

    listener.setblocking(False)
    loop.add_reader(fd, on_readable)


def _stop_clients(room: _Room, listener: socket.socket) -> None:
    """Shutdown: take each client's connection from its transport (a duplicate
    descriptor, then the transport is aborted) and close them all so each sees EOF."""
    socks, clients = [], list(room.roster)
    for client in clients:
        client.reason, client.session = Reason.SERVER_STOPPING, None
        if client.transport is not None:
            fd = client.transport.get_extra_info("socket").fileno()
            socks.append(socket.socket(fileno=os.dup(fd)))
            client.transport.abort()
    runtime.close_gracefully(listener, socks)
    for client in clients:
        room.roster.leave(client)
        room.log.disconnected(client.peer, Reason.SERVER_STOPPING)


async def _sweep(room: _Room) -> None:
    """Disconnect clients whose idle or line timeout has struck."""
    while True:
        await asyncio.sleep(room.limits.sweep_interval)
        for client, reason in room.roster.expired(time.monotonic()):
            client.fail(reason)


async def _serve(listener: socket.socket, config: ServerConfig, log: runtime.EventLog) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    room = _Room(config, log)
    _accept(loop, listener, room, LineProtocol if config.loop == "uvloop" else BufferedLineProtocol)
    runtime.announce_ready(listener)
    sweeper = asyncio.ensure_future(_sweep(room))
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        runtime.ignore_stop_signals()  # a second Ctrl-C must not cut the shutdown short
        sweeper.cancel()
        loop.remove_reader(listener.fileno())
        _stop_clients(room, listener)


def serve(listener: socket.socket, config: ServerConfig, log: runtime.EventLog) -> None:
    """Serve on ``listener`` until SIGTERM or SIGINT, then close every client so it
    sees EOF (:func:`runtime.close_gracefully`)."""
    if config.loop == "uvloop":
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    else:
        runner = asyncio.Runner()
    with runner:
        runner.run(_serve(listener, config, log))
