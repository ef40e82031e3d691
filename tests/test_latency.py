"""bench.results.tally: microsecond tallies per stage, merged across processes."""

from __future__ import annotations

import pytest

from bench.results.tally import StageBook, StageTally, stage_summary

pytestmark = pytest.mark.timeout(10)


def test_nothing_is_recorded_outside_a_measurement_window():
    book = StageBook()
    book.record(50)
    book.fail("timeout")
    assert book.tallies == {}


def test_worker_drains_merge_into_the_master_book_exactly():
    master, worker_a, worker_b = StageBook(), StageBook(), StageBook()
    for worker, values in ((worker_a, range(1, 101)), (worker_b, range(101, 201))):
        worker.current = 0
        for v in values:
            worker.record(v)
        worker.fail("reset")
        master.merge(worker.drain())
        assert worker.tallies == {}  # drained
    summary = stage_summary(master.tallies[0], seconds=2.0)
    assert summary["requests"] == 200 and summary["rps"] == 100.0
    assert summary["failures"] == 2 and summary["failures_by_kind"]["reset"] == 2
    lat = summary["latency_us"]
    assert lat["p50"] == 100 and lat["max"] == 200 and lat["p99"] == 198


def test_wire_form_round_trips_and_an_empty_tally_reads_zero():
    tally = StageTally()
    assert stage_summary(tally, 1.0)["latency_us"] == {"p50": 0, "p90": 0, "p99": 0, "p999": 0, "max": 0}
    tally.add_wire({"hist": "", "requests": 0, "failures": {}, "sent": 3, "lost": 1, "out_of_order": 0})
    assert (tally.sent, tally.lost) == (3, 1)


