"""blocking backend: the classic accept/serve loop, one connection at a time.

The main thread accepts a connection and serves it until it closes; only then does it
accept the next. Everyone else waits in the kernel's listen backlog. In broadcast mode
there is never anyone else in the room, so lines go nowhere. This is the baseline the
other models are measured against, and the model to pick only for one client at a time.
"""

from __future__ import annotations

import socket
import threading

from servers import runtime
from servers.config import ServerConfig
from servers.protocol import Reason, Roster
from servers.thread_conn import ThreadClient, accept_loop, serve_client


def serve(listener: socket.socket, config: ServerConfig, log: runtime.EventLog) -> None:
    """Serve on ``listener`` until SIGTERM or SIGINT (raised here as runtime.Stop),
    then close the client being served so it sees EOF."""
    runtime.raise_stop_on_signals()
    roster: Roster[ThreadClient] = Roster(1)
    lock = threading.Lock()  # uncontended: kept so the shared handler has one signature
    current: list[ThreadClient] = []  # the client being served (it leaves the roster on Stop)

    def admit(sock: socket.socket, peer: str) -> None:
        client = ThreadClient(sock, peer, config)
        current[:] = [client]
        roster.join(client)
        log.connected(peer)
        serve_client(client, roster, lock, config, log)

    runtime.announce_ready(listener)
    try:
        accept_loop(listener, log, admit)
    except runtime.Stop:
        stopped = [client for client in current if client.reason == Reason.SERVER_STOPPING]
        runtime.close_gracefully(listener, [client.sock for client in stopped])
        for client in stopped:
            log.disconnected(client.peer, Reason.SERVER_STOPPING)
