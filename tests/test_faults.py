"""The adversarial suite (issue 6): every fault case against every backend, each a real
``bench serve`` subprocess on port 0. The cases live in :mod:`bench.reliability.cases`, shared
with ``bench reliability``; a case a model cannot take part in is skipped with the reason
(the blocking loop serves one client at a time).
"""

from __future__ import annotations

import io

import pytest

from bench.reliability.cases import (
    CASES,
    bad_command_lines,
    broadcast_burst_reader_keeps_up,
    fd_exhaustion,
    framing_edges,
    max_clients_flood,
    never_reads,
    sigint_under_load,
    sigterm_busy_clients,
    sigterm_under_load,
)
from conftest import BACKENDS, VARIANTS, run_or_skip
from servers import backends, runtime

pytestmark = pytest.mark.timeout(60)


# Cases that also run against the backends' variants (asyncio on uvloop), whose own
# reading, writing and closing code has been known to break them.
ON_VARIANTS = {framing_edges, sigterm_busy_clients, broadcast_burst_reader_keeps_up, fd_exhaustion,
               max_clients_flood, bad_command_lines}
# Cases that time a server's exit against its deadline: under parallel tests they run one
# at a time (conftest: the "timing" group), so CPU contention from others does not fail them.
TIMED = {sigterm_under_load, sigint_under_load, sigterm_busy_clients, never_reads}
MATRIX = [pytest.param(case, backend, id=f"{case.__name__}-{backend}",
                       marks=[pytest.mark.xdist_group("timing")] if case in TIMED else [])
          for case in CASES.values() for backend in (VARIANTS if case in ON_VARIANTS else BACKENDS)]


@pytest.mark.parametrize("case, backend", MATRIX)
def test_fault_case(serve, case, backend) -> None:
    if backend in backends.VARIANTS:
        pytest.importorskip("uvloop")
    run_or_skip(case, serve, backend)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "10.1.2.3", "example.org"])
def test_binding_beyond_loopback_warns(host: str) -> None:
    err = io.StringIO()
    runtime.warn_if_public(host, err)
    assert err.getvalue().startswith("warning: listening on ")


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost",
                                  "::ffff:127.0.0.1", "0:0:0:0:0:0:0:1"])
def test_loopback_does_not_warn(host: str) -> None:
    err = io.StringIO()
    runtime.warn_if_public(host, err)
    assert err.getvalue() == ""


def test_default_host_is_loopback() -> None:
    from bench.cli import build_parser

    args = build_parser().parse_args(["serve", "select"])
    assert args.host == "127.0.0.1"


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_serving_on_all_interfaces_prints_the_warning(serve, host) -> None:
    try:
        server = serve("select", "--host", host)
    except AssertionError as exc:
        if "cannot" in str(exc):
            pytest.skip(f"{host} not bindable here: {exc}")
        raise
    first = server.stderr().splitlines()[:1]
    assert first and first[0].startswith("warning: listening on"), server.stderr()
