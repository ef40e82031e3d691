"""Fixtures for the fault suite: a server factory built on :func:`bench.faults.start_server`
(which, unlike conftest's, can lower the server's open-files limit), with the same
teardown rule as conftest's ``serve``: every server still running must exit 0 on SIGTERM
with no traceback on stderr.
"""

from __future__ import annotations

from typing import Callable, Iterator

import pytest

from bench.faults import NotApplicable, Server, raise_own_open_files_limit, start_server


@pytest.fixture
def start() -> Iterator[Callable[..., Server]]:
    """``start(backend, *flags, nofile=None, quiet=True)`` -> a running server."""
    raise_own_open_files_limit()
    servers: list[Server] = []

    def factory(backend: str, *flags: str, **kw) -> Server:
        server = start_server(backend, *flags, **kw)
        servers.append(server)
        return server

    yield factory
    failures = []
    for server in servers:
        running = server.proc.poll() is None
        status = server.stop() if running else server.proc.returncode
        text = server.stderr()
        if running and status != 0:
            failures.append(f"server exited {status} on SIGTERM; stderr:\n{text[-2000:]}")
        elif "Traceback" in text:
            failures.append(f"traceback on the server's stderr:\n{text[-2000:]}")
        server.close()
    if failures:
        pytest.fail("\n".join(failures))


def run_or_skip(fn: Callable, *args, **kw):
    """Run a scenario; a :class:`NotApplicable` becomes a skip with its reason."""
    try:
        return fn(*args, **kw)
    except NotApplicable as exc:
        pytest.skip(str(exc))
