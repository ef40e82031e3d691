"""threading backend: one OS thread per connection, bounded by ``--max-clients``.

The main thread accepts; each connection gets a daemon thread running the shared
blocking handler (:mod:`servers.thread_conn`). The roster is guarded by one lock, held
only to join, leave or copy the list of receivers, never around a send.
"""

from __future__ import annotations

import socket
import threading

from servers import runtime
from servers.config import ServerConfig
from servers.protocol import Reason, Roster
from servers.thread_conn import ThreadClient, serve_client

# 256 KiB stacks instead of the default 8 MiB: the handler's call depth is small, and
# 10,000 threads then reserve 2.5 GiB of address space instead of 80 GiB.
THREAD_STACK_SIZE = 256 * 1024


def serve(listener: socket.socket, config: ServerConfig, log: runtime.EventLog) -> None:
    """Serve on ``listener`` until SIGTERM or SIGINT, then close every client so it
    sees EOF (:func:`runtime.close_gracefully`)."""
    stop = runtime.StopSignal()  # not an exception: see runtime.StopSignal
    threading.stack_size(THREAD_STACK_SIZE)
    roster: Roster[ThreadClient] = Roster(config.limits.max_clients)
    lock = threading.Lock()

    def admit(sock: socket.socket, peer: str) -> None:
        client = ThreadClient(sock, peer, config)
        with lock:
            admitted = roster.join(client)
        if not admitted:
            runtime.refuse(sock, peer, Reason.SERVER_FULL, log)
            return
        log.connected(peer)
        threading.Thread(target=serve_client, args=(client, roster, lock, config, log),
                         name=peer, daemon=True).start()

    runtime.announce_ready(listener)
    try:
        runtime.accept_loop(listener, log, admit, stop)
    finally:
        stop.close()
        with lock:
            clients = list(roster)
        # Claimed clients' threads stop touching their sockets; the rest are already
        # being closed by their own threads. Daemon threads need no join: they exit
        # with the process once their sockets are gone.
        stopped = [client for client in clients if client.stop()]
        runtime.close_gracefully(listener, [client.sock for client in stopped])
        for client in stopped:
            log.disconnected(client.peer, Reason.SERVER_STOPPING)
