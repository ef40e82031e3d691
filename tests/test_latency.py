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


def _raw(requests: int, window_s: float, users_reached: int, error: str | None = None) -> dict:
    tally = StageTally()
    for i in range(requests):
        tally.hist.record_value(100 + i)
    tally.requests = requests
    return {"backend": "b", "mode": "echo", "users": 10, "broadcast_rate": 10.0, "error": error,
            "tally": tally.to_wire(), "window_s": window_s, "server_cpu": 50.0, "loadgen_cpu": 40.0,
            "other_cpu": 1.0, "rss_peak": 11_000, "server_core_busy": None, "loadgen_core_busy": None,
            "baseline_rss": 1_000, "users_reached": users_reached}


def test_combine_takes_the_median_rate_and_divides_memory_by_users_reached():
    from bench.results.combine import combine

    run = combine([_raw(100, 1.0, 5), _raw(300, 1.0, 8), _raw(200, 1.0, 6)], 64)
    assert run["rps"] == 200 and sorted(run["rps_samples"]) == [100, 200, 300]
    assert run["requests"] == 600 and run["error"] is None
    assert run["users_reached"] == 5
    assert run["server"]["rss_per_conn_bytes"] == (11_000 - 1_000) / 5  # not / 10 target users


def test_combine_of_only_errored_repeats_is_an_error_run_with_zero_figures():
    from bench.results.combine import combine

    run = combine([_raw(0, 0.0, 0, error="boom")], 64)
    assert run["error"] == "boom" and run["rps"] == 0.0
    assert run["latency_us"] == {"p50": 0, "p90": 0, "p99": 0, "p999": 0, "max": 0}
    assert run["server"]["rss_per_conn_bytes"] is None
