"""threading backend: one OS thread per connection, bounded by ``--max-clients``.

The main thread accepts; each connection gets a daemon thread running the shared
blocking handler (:mod:`servers.thread_conn`). The roster is guarded by one lock, held
only to join, leave or copy the list of receivers, never around a send.
"""

from __future__ import annotations

import socket
import threading
import time

from servers import runtime
from servers.config import ServerConfig
from servers.protocol import ERR_SERVER_FULL, Roster
from servers.thread_conn import ThreadClient, accept_loop, serve_client

# 256 KiB stacks instead of the default 8 MiB: the handler's call depth is small, and
# 10,000 threads then reserve 2.5 GiB of address space instead of 80 GiB.
THREAD_STACK_SIZE = 256 * 1024
# On SIGTERM, how long to wait for client threads to finish before exiting anyway.
SHUTDOWN_GRACE = 1.0


def serve(listener: socket.socket, config: ServerConfig, log: runtime.EventLog) -> None:
    """Serve on ``listener`` until SIGTERM or SIGINT, then disconnect every client."""
    runtime.raise_stop_on_signals()
    threading.stack_size(THREAD_STACK_SIZE)
    roster: Roster[ThreadClient] = Roster(config.limits.max_clients)
    lock = threading.Lock()
    threads: set[threading.Thread] = set()

    def on_connection(sock: socket.socket, peer: str) -> None:
        client = ThreadClient(sock, peer, config)
        with lock:
            admitted = roster.join(client)
        if not admitted:
            reject(sock)
            return
        log.connected(peer)
        thread = threading.Thread(target=run_client, args=(client,), name=peer, daemon=True)
        threads.add(thread)
        thread.start()

    def run_client(client: ThreadClient) -> None:
        try:
            serve_client(client, roster, lock, config, log)
        finally:
            threads.discard(threading.current_thread())

    runtime.announce_ready(listener)
    try:
        accept_loop(listener, log, on_connection)
    except runtime.Stop:
        pass
    finally:
        runtime.close_quietly(listener)
        with lock:
            clients = list(roster)
        for client in clients:
            client.kill("server stopping")
        deadline = time.monotonic() + SHUTDOWN_GRACE
        for thread in list(threads):
            thread.join(max(0.0, deadline - time.monotonic()))


def reject(sock: socket.socket) -> None:
    """Tell a connection past --max-clients the server is full, and close it."""
    try:
        sock.send(ERR_SERVER_FULL, socket.MSG_DONTWAIT)
    except OSError:
        pass
    runtime.close_quietly(sock)
