"""blocking backend, the baseline: the classic accept/serve loop, one connection at a
time; the others wait in the listen backlog (in broadcast mode, lines go nowhere)."""

from __future__ import annotations

import socket
import threading

from servers import runtime
from servers.config import ServerConfig
from servers.protocol import Reason, Roster
from servers.thread_conn import ThreadClient, serve_client


def serve(listener: socket.socket, config: ServerConfig, log: runtime.EventLog) -> None:
    """Serve until SIGTERM or SIGINT (raised here as runtime.Stop), then close the
    client being served, and those waiting, so each sees EOF."""
    runtime.raise_stop_on_signals()
    roster: Roster[ThreadClient] = Roster(1)  # nobody to broadcast to
    lock = threading.Lock()  # uncontended: kept so the shared handler has one signature
    serving: list[ThreadClient] = []

    def admit(sock: socket.socket, peer: str) -> None:
        serving[:] = [ThreadClient(sock, peer, config)]
        log.connected(peer)
        serve_client(serving[0], roster, lock, config, log)
        serving.clear()

    runtime.announce_ready(listener)
    try:
        runtime.accept_loop(listener, log, admit)
    except runtime.Stop:
        runtime.close_gracefully(listener, [client.sock for client in serving])
        for client in serving:
            log.disconnected(client.peer, Reason.SERVER_STOPPING)
