"""Short soak and the leak check, per backend. The full-size soak (200 clients for 60 s)
is run on purpose with ``bench reliability`` (its figures go in the README); here 50
clients for 5 s keep the suite fast. The leak check runs at full size (3 x 1,000
connections): it takes about a second per backend.
"""

from __future__ import annotations

import pytest

from bench.soak import broadcast_soak, leak_check
from conftest import BACKENDS
from faults_helpers import run_or_skip, start  # noqa: F401  (fixture)

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("backend", BACKENDS)
def test_short_broadcast_soak_loses_nothing(start, backend) -> None:  # noqa: F811
    r = run_or_skip(broadcast_soak, start, backend, clients=50, seconds=5.0)
    assert r.dropped_clients == 0, r
    assert r.lost == 0 and r.out_of_order == 0, r
    assert r.delivered == r.sent * 49, r


@pytest.mark.parametrize("backend", BACKENDS)
def test_rss_after_three_cycles_of_1000_connections_within_10_percent(start, backend) -> None:  # noqa: F811
    r = leak_check(start, backend, connections=1000, cycles=3)
    assert r.ok, f"RSS grew {r.growth:+.1%}: {r.rss_mb} MB"
