"""``bench client HOST:PORT``: a telnet-like line client.

Interactive (stdin is a terminal): each typed line is sent; what arrives is printed as
it arrives. Piped: every stdin line is sent, then the write side is shut
(half-close) and the client prints what comes back until the server closes or stays
quiet for ``--drain`` seconds; exit 0. A last piped line without a newline gets one (the
server only answers complete lines).

When the server closes the connection while stdin is still open, the client says so on
stderr and exits 0.

Bytes are passed through untouched in both directions (binary-safe).
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import sys
import time

from servers.argtypes import EXIT_USAGE, positive_float

EXIT_OK = 0
EXIT_CONNECT = 1


def parse_target(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[v6host]:PORT`` -> (host, port).

    Raises:
        ValueError: with a message naming what is wrong.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"expected a port number after ':', got {port_text!r}") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be 1-65535, got {port}")
    return host, port


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="HOST:PORT", help="the server to talk to")
    parser.add_argument("--timeout", type=positive_float, default=5.0, metavar="S",
                        help="seconds to wait for the connection (default 5)")
    parser.add_argument("--drain", type=positive_float, default=1.0, metavar="S",
                        help="piped mode: after stdin ends, stop once nothing arrives for S "
                        "seconds (default 1)")


def _connect(host: str, port: int, timeout: float) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.settimeout(None)
    return sock


def _pump(sock: socket.socket, stdin_fd: int, out, drain: float, interactive: bool) -> int:
    """Move bytes stdin -> socket and socket -> stdout until done. Returns exit status."""
    stdin_open = True
    last_rx = time.monotonic()
    pending = b""
    last_byte = b""  # the last byte read from stdin
    while True:
        readers = [sock] + ([stdin_fd] if stdin_open else [])
        writers = [sock] if pending else []
        timeout = None if stdin_open or interactive else max(0.0, last_rx + drain - time.monotonic())
        readable, writable, _ = select.select(readers, writers, [], timeout)
        if not readable and not writable:
            return EXIT_OK  # piped and drained: nothing arrived for `drain` seconds
        if sock in writable:
            sent = sock.send(pending)
            pending = pending[sent:]
            if not pending and not stdin_open:
                _half_close(sock)
        if sock in readable:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                print("bench client: connection reset by server", file=sys.stderr)
                return EXIT_OK if not stdin_open else EXIT_CONNECT
            if not data:
                if stdin_open:
                    print("bench client: connection closed by the server", file=sys.stderr)
                return EXIT_OK
            out.write(data)
            out.flush()
            last_rx = time.monotonic()
        if stdin_open and stdin_fd in readable:
            chunk = os.read(stdin_fd, 65536)
            if chunk:
                pending += chunk
                last_byte = chunk[-1:]
            else:
                stdin_open = False
                if not interactive and last_byte not in (b"", b"\n"):
                    pending += b"\n"  # the server routes complete lines only
                last_rx = time.monotonic()
                if not pending:
                    _half_close(sock)


def _half_close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def run(args: argparse.Namespace) -> int:
    try:
        host, port = parse_target(args.target)
    except ValueError as exc:
        print(f"bench client: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        sock = _connect(host, port, args.timeout)
    except (OSError, socket.timeout) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or "timed out"
        print(f"bench client: error: cannot connect to {args.target}: {reason}", file=sys.stderr)
        return EXIT_CONNECT
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"connected to {args.target}; type lines, Ctrl-D to quit", file=sys.stderr)
    try:
        with sock:
            return _pump(sock, sys.stdin.fileno(), sys.stdout.buffer, args.drain, interactive)
    except KeyboardInterrupt:
        return EXIT_OK
    except OSError as exc:
        print(f"bench client: error: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_CONNECT
