"""One launcher for server child processes: start, wait for ``READY HOST:PORT``, explain a
failed start in one message, stop with a grace period.

Every caller that runs a server (``bench compare``'s runner, ``bench perf``,
``bench reliability`` and the fault tests, ``bench ui``) goes through
:class:`ServerProcess`. The usual server is ``bench serve BACKEND --port 0``
(:meth:`ServerProcess.serve`); ``bench perf`` also starts its references (the C
``ceiling`` server, a bare uvloop server) through :meth:`ServerProcess.start`, since
they print the same READY line.

The server's stderr goes to a file (the caller's ``log_path``, or a temporary file
removed by :meth:`ServerProcess.close`), never to a pipe nobody reads while it runs: a
chatty server would block on a full pipe. A failed start raises
:class:`ServerStartError` whose message ends with the last line of that stderr.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Callable, Sequence, TextIO

from bench.procs.children import DIE_WITH_PARENT, STOP_GRACE_S, bench_command, stop_processes, url_host
from bench.procs.ready import parse_ready, read_first_line
from servers.backends import serve_args

# Seconds to wait for READY (startup is ~0.2 s; this covers a loaded 2-core machine).
READY_TIMEOUT_S = 15.0
# Seconds between two looks at the stderr file while relaying it (bench ui).
RELAY_INTERVAL_S = 0.2


class ServerStartError(Exception):
    """The server printed no READY line. The message names the command and ends with
    the last line of its stderr (or says that nothing came)."""


class ServerProcess:
    """A running server child and the address from its READY line.

    Build one with :meth:`serve` (``bench serve``) or :meth:`start` (any command that
    prints READY); both return only once READY has arrived.

    Attributes:
        name: what messages call it ("server").
        proc: the :class:`subprocess.Popen`.
        host, port: from the READY line.
    """

    def __init__(self, argv: Sequence[str], *, name: str = "server", log_path: Path | None = None,
                 cpus: Sequence[int] | None = None, nofile: int | None = None,
                 session: bool = False, cwd: Path | None = None,
                 ready_timeout: float = READY_TIMEOUT_S) -> None:
        """Start ``argv`` and wait for READY. Prefer :meth:`start` / :meth:`serve`.

        Args:
            log_path: where stderr goes (kept); default a temporary file (removed by close).
            cpus: pin the server to these CPUs (``os.sched_setaffinity``), when possible.
            nofile: the server's open-files limit, soft and hard.
            session: run it in its own session (its own process group, stopped as a
                group) and, on Linux, have it die with this process.
        Raises:
            ServerStartError: no READY within ``ready_timeout`` (stderr tail included).
        """
        self.name = name
        self.argv = list(argv)
        self.session = session
        self.host, self.port = "", 0
        self._own_log = log_path is None
        if log_path is None:
            fd, path = tempfile.mkstemp(prefix="sockbench-server-", suffix=".stderr")
            os.close(fd)
            log_path = Path(path)
        self.log_path = Path(log_path)
        self._relay_stop = threading.Event()
        with open(self.log_path, "wb") as err:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, cwd=cwd,
                start_new_session=session, preexec_fn=_preexec(nofile, session))
        if cpus and hasattr(os, "sched_setaffinity"):
            try:
                os.sched_setaffinity(self.proc.pid, cpus)
            except OSError:
                pass  # it already exited; the READY check below reports why
        try:
            line = read_first_line(self.proc.stdout, ready_timeout)
        except BaseException:  # Ctrl-C or a stop signal while waiting: leave nothing behind
            self.close()
            raise
        ready = parse_ready(line)
        if ready is None:
            self.stop(timeout=1.0)
            why = self.tail() or (f"printed {line!r}" if line else f"no READY line within {ready_timeout:g} s")
            self.close()
            raise ServerStartError(f"`{_shown(self.argv)}` failed to start: {why}")
        self.host, self.port = ready

    @classmethod
    def start(cls, argv: Sequence[str], **kw) -> "ServerProcess":
        """Start any server command that prints ``READY HOST:PORT`` first (see __init__)."""
        return cls(argv, **kw)

    @classmethod
    def serve(cls, backend: str, *flags: str, quiet: bool = True, port: int = 0, **kw) -> "ServerProcess":
        """Start ``bench serve BACKEND --port PORT FLAGS... [--quiet]`` (see __init__).
        ``backend`` may also name a variant such as ``asyncio+uvloop``
        (:func:`servers.backends.serve_args`)."""
        argv = bench_command("serve", *serve_args(backend), "--port", str(port), *flags, *(["--quiet"] if quiet else []))
        return cls(argv, **kw)

    # -- what callers read ------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) to connect to."""
        return (self.host, self.port)

    @property
    def url_address(self) -> str:
        """``HOST:PORT`` as it goes in a Locust ``--host`` (IPv6 in brackets)."""
        return f"{url_host(self.host)}:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr(self) -> str:
        """Everything the server wrote to stderr so far."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def tail(self) -> str:
        """The last non-blank stderr line ('' if none)."""
        lines = [line.strip() for line in self.stderr().splitlines() if line.strip()]
        return lines[-1] if lines else ""

    # -- relaying and stopping ----------------------------------------------------------

    def relay(self, out: TextIO = sys.stderr) -> None:
        """From now on, copy what the server writes to stderr to ``out`` (bench ui)."""
        def follow() -> None:
            with open(self.log_path, "rb") as log:
                log.seek(0, os.SEEK_END)
                while not self._relay_stop.wait(RELAY_INTERVAL_S):
                    chunk = log.read()
                    if chunk:
                        try:
                            out.write(chunk.decode(errors="replace"))
                            out.flush()
                        except (OSError, ValueError):
                            return

        threading.Thread(target=follow, name=f"relay-{self.name}", daemon=True).start()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_GRACE_S) -> int | None:
        """Send ``sig`` (to the whole group for a ``session`` server), wait up to
        ``timeout`` seconds, then SIGKILL. Returns the exit status, or None if it had to
        be killed."""
        if self.proc.poll() is None:
            stop_processes([self.proc], timeout, group=self.session, sig=sig)
            if self.proc.returncode == -signal.SIGKILL and sig != signal.SIGKILL:
                return None
        return self.proc.returncode

    def close(self) -> None:
        """Stop it if still running, release the pipe, remove a temporary stderr file."""
        if self.proc.poll() is None:
            self.stop()
        self._relay_stop.set()
        if self.proc.stdout is not None and not self.proc.stdout.closed:
            self.proc.stdout.close()
        if self._own_log:
            try:
                self.log_path.unlink()
            except OSError:
                pass

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _preexec(nofile: int | None, session: bool) -> Callable[[], None] | None:
    """The preexec_fn: the open-files limit and/or dying with the parent."""
    die = DIE_WITH_PARENT if session else None
    if nofile is None:
        return die

    def preexec() -> None:  # pragma: no cover - runs in the child between fork and exec
        # Soft and hard: `bench serve` raises its soft limit to the hard one at start.
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        if die is not None:
            die()
    return preexec


def _shown(argv: Sequence[str]) -> str:
    """A command as a user would type it: ``bench serve ...`` for our own CLI."""
    if len(argv) > 2 and argv[0] == sys.executable and argv[1:3] == ["-m", "bench"]:
        return " ".join(["bench", *argv[3:]])
    if argv and argv[0] == sys.executable:
        return " ".join(["python", *argv[1:]])
    return " ".join(argv)
