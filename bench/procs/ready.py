"""Reading a child's first stdout line (``READY HOST:PORT`` from ``bench serve``) with a
deadline: the one place every launcher of servers (compare, perf, reliability, ui, the
tests) waits for readiness."""

from __future__ import annotations

import os
import select
import time
from typing import IO


def read_first_line(stream: IO, timeout: float) -> str:
    """The first line on ``stream`` (a pipe) without its newline, or '' on EOF or timeout.

    Reads one byte at a time, so whatever follows the line stays in the pipe for
    whoever reads it next (e.g. a relay of the child's output).
    """
    fd = stream.fileno()
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return ""
        chunk = os.read(fd, 1)
        if not chunk:
            return ""
        data += chunk
    return data.decode(errors="replace").rstrip("\r\n")


def parse_ready(line: str) -> tuple[str, int] | None:
    """``READY 127.0.0.1:5000`` -> ("127.0.0.1", 5000); ``READY [::1]:5000`` -> ("::1", 5000);
    None for anything else."""
    if not line.startswith("READY "):
        return None
    host, sep, port = line[len("READY "):].strip().rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)
