"""Framing fuzzed with hypothesis against live servers: random bytes (NUL, invalid
UTF-8, CR, many newlines), split into random chunks, checked against the contract's
model (:func:`bench.reliability.faults.expect_framing`). Example counts are small: the thorough
fuzzing of the pure core is in test_protocol.py.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.reliability.faults import check_framing, echoes, expect_framing
from conftest import BACKENDS

pytestmark = pytest.mark.timeout(90)

MAX_LINE = 32
# Bytes biased to the interesting ones: newline, CR, NUL, invalid UTF-8 lead/continuation.
interesting = st.sampled_from(b"\n\n\n\r\x00\xff\xc3\x80a")
payloads = st.lists(st.one_of(interesting, st.integers(0, 255)), max_size=4 * MAX_LINE).map(bytes)


def test_model_limits() -> None:
    """The model itself, at the limit: M bytes with the newline pass; M+1 do not; an
    unterminated run of M bytes already breaks it."""
    m = MAX_LINE
    assert expect_framing(b"a" * (m - 1) + b"\n", m).too_long is False
    assert expect_framing(b"a" * m + b"\n", m).too_long is True
    assert expect_framing(b"a" * (m - 1), m).too_long is False
    w = expect_framing(b"ok\n" + b"a" * (m + 5), m)
    assert w.too_long and w.lines == (b"ok\n",) and len(w.send) == 3 + m


@pytest.mark.parametrize("backend", BACKENDS)
def test_fuzzed_framing_against_a_live_server(serve, backend) -> None:
    server = serve(backend, "--max-line", str(MAX_LINE))

    @settings(max_examples=30, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow])
    @given(payload=payloads, cuts=st.lists(st.integers(1, 4 * MAX_LINE), max_size=6))
    def check(payload: bytes, cuts: list[int]) -> None:
        check_framing(server.address, payload, cuts, MAX_LINE)

    check()
    echoes(server.address)
