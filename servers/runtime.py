"""What every backend shares besides the protocol: the listening socket, the READY
line, the connection log, the open-files limit and the accept back-off.

None of this knows about a concurrency model; the backends call it.
"""

from __future__ import annotations

import errno
import signal
import socket
import sys
from typing import TextIO

# Errors accept() raises when the process or system is out of descriptors or buffers.
# The listener is fine; the server must wait for descriptors to free up, not spin.
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# Errors accept() raises for a connection that died in the backlog: skip it.
TRANSIENT_ACCEPT_ERRNOS = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EINTR})

# gevent's baseserver backs off from EMFILE the same way: 10 ms, doubling to 1 s.
BACKOFF_FIRST = 0.01
BACKOFF_MAX = 1.0


class StartupError(Exception):
    """A problem the user caused before serving began (e.g. a busy port). One line."""


def bind_listener(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """Create, bind and listen on a TCP socket (IPv4 or IPv6, by ``host``).

    Raises:
        StartupError: the address is busy, not local, or cannot be resolved.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(f"cannot resolve host {host!r}: {exc.strerror}") from None
    family, socktype, proto, _, address = infos[0]
    sock = socket.socket(family, socktype, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(f"address {shown} is already in use") from None
        raise StartupError(f"cannot listen on {shown}: {exc.strerror}") from None
    return sock


def format_address(address: tuple) -> str:
    """``host:port`` for IPv4, ``[host]:port`` for IPv6."""
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def announce_ready(listener: socket.socket, out: TextIO = sys.stdout) -> None:
    """Print ``READY HOST:PORT`` (the port actually bound) as the first stdout line."""
    out.write(f"READY {format_address(listener.getsockname())}\n")
    out.flush()


def is_loopback(host: str) -> bool:
    """True if ``host`` names only this machine (``127.x.y.z``, ``::1``, ``localhost``).

    Wildcards (``""``, ``0.0.0.0``, ``::``) and every other address are not loopback.
    """
    return host.startswith("127.") or host in ("::1", "localhost")


def warn_if_public(host: str, err: TextIO = sys.stderr) -> None:
    """Warn when the server listens beyond loopback: anyone who can reach it may connect."""
    if not is_loopback(host):
        err.write(f"warning: listening on {host or 'all interfaces'}, reachable from other machines\n")
        err.flush()


class EventLog:
    """Connect/disconnect lines on stderr (``client 127.0.0.1:36689 connected``).

    Args:
        quiet: drop connect and disconnect lines; warnings still print.
        err: where lines go.
    """

    def __init__(self, quiet: bool = False, err: TextIO = sys.stderr) -> None:
        self.quiet = quiet
        self._err = err

    def connected(self, peer: str) -> None:
        if not self.quiet:
            self._write(f"client {peer} connected")

    def disconnected(self, peer: str, reason: str = "") -> None:
        if not self.quiet:
            self._write(f"client {peer} disconnected" + (f" ({reason})" if reason else ""))

    def warning(self, message: str) -> None:
        self._write(f"warning: {message}")

    def _write(self, line: str) -> None:
        try:
            self._err.write(line + "\n")
            self._err.flush()
        except (OSError, ValueError):
            pass  # stderr closed (e.g. the parent went away): logging must not kill the server


def peer_name(sock: socket.socket) -> str:
    """The client's ``host:port``, or ``?`` if it is already gone."""
    try:
        return format_address(sock.getpeername())
    except OSError:
        return "?"


class AcceptBackoff:
    """Back off from accept() errors caused by running out of descriptors.

    Call :meth:`failed` when accept() raised one of :data:`RESOURCE_ERRNOS`: it returns
    how long to sleep (10 ms, doubling to 1 s) and logs once per burst. Call
    :meth:`succeeded` after a good accept to end the burst.
    """

    def __init__(self, log: EventLog) -> None:
        self._log = log
        self._delay = 0.0
        self._dropped = 0

    def failed(self, exc: OSError) -> float:
        if self._delay == 0.0:
            self._log.warning(f"accept failed ({exc.strerror}); backing off until descriptors free up")
            self._delay = BACKOFF_FIRST
        else:
            self._delay = min(self._delay * 2, BACKOFF_MAX)
        self._dropped += 1
        return self._delay

    def succeeded(self) -> None:
        if self._delay:
            self._log.warning(f"accepting again after {self._dropped} failed accept attempts")
            self._delay = 0.0
            self._dropped = 0


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit so many clients fit.

    Returns:
        (soft, hard) after the change. Without the ``resource`` module, (-1, -1).
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Linux
        return (-1, -1)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return (soft, hard)


class Stop(BaseException):
    """Raised in the main thread by SIGTERM/SIGINT to unwind a blocking server.

    A BaseException so that ``except Exception`` blocks in connection code let it pass.
    """


def raise_stop_on_signals() -> None:
    """Make SIGTERM and SIGINT raise :class:`Stop` in the main thread, once.

    After the first signal both are ignored, so a second Ctrl-C cannot interrupt the
    orderly shutdown with a traceback.
    """

    def handler(signum: int, frame: object) -> None:
        ignore_stop_signals()
        raise Stop

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def ignore_stop_signals() -> None:
    """Ignore SIGTERM and SIGINT from now on, e.g. while stopping child processes, so
    a second Ctrl-C cannot cut the cleanup short."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def close_quietly(sock: socket.socket) -> None:
    """Close ``sock``, ignoring errors from a peer that is already gone."""
    try:
        sock.close()
    except OSError:
        pass


def shutdown_quietly(sock: socket.socket) -> None:
    """Shut both directions of ``sock`` so a thread or greenlet blocked on it wakes
    with EOF, and the peer sees EOF; errors from a dead peer are ignored."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
