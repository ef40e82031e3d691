"""What every backend shares besides the protocol: the listening socket, the READY
line, the connection log, the open-files limit, accepting a batch with the back-off
(and the accept loop of the thread backends), refusing a connection, and closing clients at shutdown so each sees EOF.

None of this knows about a concurrency model; the backends call it.
"""

from __future__ import annotations

import errno
import ipaddress
import select
import selectors
import signal
import socket
import sys
import time
from typing import Callable, Iterable, TextIO

from servers import refusal
from servers.protocol import Reason

# Errors accept() raises when the process or system is out of descriptors or buffers.
# The listener is fine; the server must wait for descriptors to free up, not spin.
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# Errors accept() raises for a connection that died in the backlog: skip it.
TRANSIENT_ACCEPT_ERRNOS = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EINTR})

# gevent's baseserver backs off from EMFILE the same way: 10 ms, doubling to 1 s.
BACKOFF_FIRST = 0.01
BACKOFF_MAX = 1.0
# Accept at most this many connections per wake-up, so a connection flood cannot
# starve the clients already being served.
ACCEPT_BATCH = 64
# At shutdown, how long clients get to close their side after seeing EOF, before
# their sockets are closed anyway: half of the 2 s the contract allows for exiting.
CLOSE_GRACE = 1.0


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
    """True if ``host`` names only this machine: ``localhost``, or a loopback address
    in any spelling (``127.x.y.z``, ``::1``, ``0:0:0:0:0:0:0:1``, ``::ffff:127.0.0.1``).

    Wildcards (``""``, ``0.0.0.0``, ``::``), other addresses and other names are not.
    """
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])  # drop an IPv6 zone
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


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

    def disconnected(self, peer: str, reason: str = Reason.CLOSED) -> None:
        """``client PEER disconnected (REASON)``; a plain close has no parenthesis."""
        if not self.quiet:
            shown = "" if reason in ("", Reason.CLOSED) else f" ({reason})"
            self._write(f"client {peer} disconnected{shown}")

    def refused(self, peer: str, reason: str) -> None:
        """``client PEER refused (REASON)``: a connection turned away at admission."""
        if not self.quiet:
            self._write(f"client {peer} refused ({reason})")

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


def accept_batch(listener: socket.socket, backoff: AcceptBackoff,
                 admit: Callable[[socket.socket, str], None], batch: int = ACCEPT_BATCH) -> float:
    """Accept up to ``batch`` connections and hand each to ``admit(sock, peer)``.

    The errno triage every backend shares: an empty backlog ends the batch; a
    connection that died in the backlog is skipped; running out of descriptors ends it
    with a back-off. Accepted sockets get TCP_NODELAY (line replies must not wait for
    Nagle); one reset before that is closed and skipped.

    Works on a blocking listener too (``batch=1``: wait for one connection).

    Returns:
        0.0, or how many seconds the caller must stop accepting (out of descriptors:
        10 ms doubling to 1 s, logged once per burst by ``backoff``).

    Raises:
        OSError: any other accept() failure (the listener itself is broken).
    """
    for _ in range(batch):
        try:
            sock, address = listener.accept()
        except BlockingIOError:
            return 0.0
        except OSError as exc:
            if exc.errno in RESOURCE_ERRNOS:
                return backoff.failed(exc)
            if exc.errno in TRANSIENT_ACCEPT_ERRNOS:
                continue
            raise
        backoff.succeeded()
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            close_quietly(sock)  # reset before we got to it
            continue
        admit(sock, format_address(address))
    return 0.0


def refuse(sock: socket.socket, peer: str, reason: Reason, log: EventLog) -> None:
    """Turn away a connection at admission (e.g. :attr:`Reason.SERVER_FULL`): its
    ``ERR`` line if it has one (best effort, never waiting), then EOF, log the refusal.

    The socket is closed by :data:`servers.refusal.CLOSER`, which waits (on its own
    thread) for the client to close too, so input the client already sent does not turn
    the close into a reset that would hide the ``ERR`` line.
    """
    reply = reason.reply
    if reply is not None:
        try:
            sock.send(reply, socket.MSG_DONTWAIT)
        except OSError:
            pass
    refusal.CLOSER.close(sock)
    log.refused(peer, reason)


def close_gracefully(listener: socket.socket, socks: Iterable[socket.socket],
                     grace: float = CLOSE_GRACE) -> None:
    """Shutdown: close the listener and every client socket so that each peer sees
    EOF, never a reset.

    Closing a socket with unread input makes the kernel send RST, which can destroy
    replies in flight and makes the client see ``ConnectionResetError``; so does closing
    a listener with connections still waiting in its backlog. So: take those waiting
    connections first, then shut down the write side of each socket (the FIN follows
    whatever was already sent), read and discard input until the peer closes its side
    too (it just saw EOF) or ``grace`` seconds pass, then close. Blocks the calling
    thread; backends call it once their own loop has stopped serving these sockets.
    """
    socks = list(socks)
    listener.setblocking(False)
    for _ in range(1 << 16):  # bounded: the backlog is, too
        try:
            socks.append(listener.accept()[0])
        except OSError:  # empty (or out of descriptors: those few may be reset)
            break
    close_quietly(listener)
    selector = selectors.DefaultSelector()
    try:
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_WR)
                sock.setblocking(False)
                selector.register(sock, selectors.EVENT_READ)
            except (OSError, ValueError, KeyError):
                close_quietly(sock)  # already gone
        deadline = time.monotonic() + grace
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for key, _ in selector.select(remaining):
                sock = key.fileobj  # type: ignore[assignment]
                try:
                    if not refusal.drained_to_eof(sock):
                        continue  # input discarded; keep watching until EOF
                except OSError:
                    pass  # reset: nothing left to protect
                selector.unregister(sock)
                close_quietly(sock)
        for key in list(selector.get_map().values()):
            close_quietly(key.fileobj)  # type: ignore[arg-type]
    finally:
        selector.close()


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


class StopSignal:
    """SIGTERM and SIGINT as a readable descriptor, for a loop that waits with ``poll``.

    :func:`raise_stop_on_signals` unwinds with an exception at any bytecode, which may be
    between ``accept()`` and admission: the accepted socket is then dropped with the
    client's line unread, and the kernel resets the connection instead of closing it.
    Here the handler raises nothing: the signal only makes :meth:`fileno` readable
    (``signal.set_wakeup_fd``), and the loop stops where it chooses. After the first
    signal both are ignored, as with :func:`raise_stop_on_signals`.
    """

    def __init__(self) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)

        def handler(signum: int, frame: object) -> None:
            ignore_stop_signals()  # the wake-up byte is already written

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def fileno(self) -> int:
        """Readable once a stop signal has arrived."""
        return self._reader.fileno()

    def close(self) -> None:
        """Stop writing signal numbers to the socket pair, and close it."""
        signal.set_wakeup_fd(-1)
        close_quietly(self._reader)
        close_quietly(self._writer)


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


def accept_loop(listener: socket.socket, log: EventLog,
                admit: Callable[[socket.socket, str], None],
                stop: StopSignal | None = None) -> None:
    """Accept until stopped, sleeping through the back-off when out of descriptors.

    ``admit(sock, peer)`` runs in the accepting thread for each connection. With
    ``stop``, the loop waits with ``poll`` on the listener and the stop signal and
    returns when the signal arrives: it never stops between ``accept()`` and
    ``admit``, so no accepted client is dropped (and reset). Without it (the blocking
    backend, whose one thread also serves the client) the loop runs until
    :class:`Stop` unwinds it.
    """
    backoff = AcceptBackoff(log)
    if stop is None:
        while True:
            delay = accept_batch(listener, backoff, admit, batch=1)
            if delay:
                time.sleep(delay)
    listener.setblocking(False)
    waiter = select.poll()
    waiter.register(listener, select.POLLIN)
    waiter.register(stop, select.POLLIN)
    while True:
        ready = {fd for fd, _ in waiter.poll()}
        if stop.fileno() in ready:
            return
        delay = accept_batch(listener, backoff, admit)
        if delay:
            time.sleep(delay)
