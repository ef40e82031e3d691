"""gevent-callback backend: gevent's hub driving io-watcher callbacks, with *no*
greenlet per connection. A variant of the ``gevent`` backend for comparison, not the
flagship model.

The ``gevent`` backend spends two greenlet switches per request (hub -> connection
greenlet -> hub). Here each connection's read watcher calls a plain function on the
hub itself, which reads, feeds the protocol core and writes the reply; no stack is
switched. This is the shape of an asyncio ``Protocol`` (or of uvloop) on gevent's libev
loop: faster, but the connection code is callbacks, not straight-line code, and
anything that would block must not be done in it. gevent users reach for it when one
hot path must be fast while the rest of the program keeps greenlets.

Everything else (accept loop with EMFILE back-off, roster, the sweeper, SIGTERM) is the
``gevent`` backend's. Broadcast lines are routed from the read callback into every
other member's bounded backlog, and the backlogs are flushed once per hub pass
(:meth:`servers.gevent_fanout.Fanout.route`); the ``gevent`` backend instead sends a
whole pass's lines to each member in one ``send`` when the pass's turns are over.

Echo back-pressure: a reply the socket does not take at once is kept in the client's
bounded buffer; reading stops until a writability callback has sent it all.
"""

from __future__ import annotations

import socket
import time

import gevent

from servers import gevent_server, runtime
from servers.config import ServerConfig
from servers.gevent_server import GeventServer, _Client
from servers.protocol import RECV_SIZE, LineTooLong, Reason, error_reason


class CallbackServer(GeventServer):
    """GeventServer whose connections are served by watcher callbacks."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        # no ready queue to serve: connections are served in their own callbacks
        self.after_poll.stop()

    def start_client(self, sock: socket.socket, peer: str) -> None:
        client = self.admit(sock, peer)
        if client is not None:
            client.readable.start(self._reader(client))

    def _reader(self, client: _Client):
        """The read callback of one connection, a closure over what it touches.

        A closure rather than a method: its free variables are cell loads, cheaper than
        the attribute lookups a method would do on every request.
        """
        sock = client.sock
        recv, send, feed, clock = sock.recv, sock.send, client.session.feed, time.monotonic
        readable, writable, out = client.readable, client.writable, client.out
        echo, route, close, too_long = self.echo, self.fanout.route, self.close, self.too_long

        def on_readable() -> None:
            try:
                data = recv(RECV_SIZE)
            except BlockingIOError:
                return  # spurious: the watcher fires again when data comes
            except OSError as exc:
                close(client, error_reason(exc))
                return
            if not data:
                close(client, Reason.CLOSED)
                return
            try:
                lines = feed(data, clock())
            except LineTooLong as exc:
                readable.stop()  # a greenlet (it may wait) delivers what is owed, then closes
                gevent.spawn(too_long, client, exc.lines)
                return
            if not lines:
                return
            if not echo:
                route(client, lines)
                return
            try:
                sent = send(lines)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                close(client, error_reason(exc))
                return
            if sent < len(lines):
                # Back-pressure: park the rest, stop reading until it is written.
                # (At most one read's worth of lines: within output_limit.)
                out.push(lines[sent:])
                readable.stop()
                writable.start(on_writable)

        def on_writable() -> None:
            view = out.view()
            try:
                sent = send(view)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                view.release()
                close(client, error_reason(exc))
                return
            view.release()
            out.consume(sent)
            if not len(out):
                writable.stop()
                readable.start(on_readable)

        return on_readable


def serve(listener: socket.socket, config: ServerConfig, log: runtime.EventLog) -> None:
    """Serve on ``listener`` until SIGTERM or SIGINT, then disconnect every client."""
    gevent_server.serve(listener, config, log, server_class=CallbackServer)
