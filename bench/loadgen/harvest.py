"""Move the native engine's counts into Locust's stats and the microsecond book, in batches.

One :class:`Harvester` per Locust process harvests the process's engine every
:data:`HARVEST_INTERVAL_S`, once more at every stage change (before
:data:`bench.results.tally.BOOK` files records under the next stage) and once more when the
test stops (after the stopped users' connections are gone). Each batch goes to:

* Locust's stats entries (request type ``tcp``, names ``echo`` / ``broadcast``), added
  to the counters directly instead of one ``events.request`` per round trip: requests
  (successes + failures, as Locust counts them), failures by kind, requests and failures
  per second, response times in Locust's rounded milliseconds, min / max / total, bytes.
  So the web UI, CSV and HTML show exactly the engine's counts; a worker's entries reach
  the master through ``report_to_master`` as usual.
* the microsecond book, under the current stage (nothing outside measurement windows).

It also keeps the engine's broadcast rate and silence limit in step with the stage (or,
without a stage controller, with the options and the users running).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import gevent
import locust.stats
from locust import events
from locust.stats import RequestStats, StatsEntry, StatsError

from bench.results import tally as latency
from bench.loadgen.engine import REQUEST_NAMES, Counts, Engine
from bench.loadgen.server_mode import standing_aside
from bench.loadgen.stages import PHASE
from bench.results.config import DEFAULT_BROADCAST_RATE, DEFAULT_REQUEST_TIMEOUT

log = logging.getLogger("sockbench")

HARVEST_INTERVAL_S = 0.25
REQUEST_TYPE = "tcp"
# A broadcast receiver counts a timeout when it hears nothing for the request timeout or
# for this many expected line intervals, whichever is longer (as the Python users).
SILENT_INTERVALS = 10
# What Locust's error table says for each failure kind.
ERROR_TEXT = {
    "timeout": "timeout: no connection, reply or line within --request-timeout",
    "reset": "reset: the connection was reset or closed",
    "refused": "refused: connection refused",
    "protocol": "protocol: the server sent something the contract does not allow",
}


def add_to_locust(stats: RequestStats, name: str, counts: Counts, now: float,
                  request_type: str = REQUEST_TYPE) -> None:
    """Add one harvested batch to the ``request_type name`` entry (``tcp echo`` for the
    engine users; ``bench compare`` names each window) and the total, as if each request
    had been logged at ``now`` (``time.time()``)."""
    if not (counts.requests or counts.failed):
        return
    for entry in (stats.get(name, request_type), stats.total):
        _add_to_entry(entry, counts, now)
    for kind, n in counts.failures.items():
        if n:
            _add_error(stats, request_type, name, ERROR_TEXT.get(kind, kind), n, now)


def _add_to_entry(entry: StatsEntry, counts: Counts, now: float) -> None:
    second = int(now)
    # what StatsEntry.log does when a new second begins: keep the last one's response
    # times for the "current" percentiles of the web UI
    if entry.use_response_times_cache and entry.last_request_timestamp and second > int(entry.last_request_timestamp):
        entry._cache_response_times(second - 1)
    total = counts.requests + counts.failed
    entry.num_requests += total
    entry.num_reqs_per_sec[second] += total
    entry.last_request_timestamp = now
    entry.total_content_length += counts.bytes
    entry.total_response_time += (counts.sum_us + counts.failure_sum_us) / 1000
    bucket = locust.stats.bucket_response_time  # looked up per call: Locust lets users replace it
    times = entry.response_times
    lows, highs = [], []
    for pairs in (counts.latency_us, counts.failure_latency_us):
        for us, n in pairs:
            times[bucket(us / 1000)] += n
        if pairs:
            lows.append(pairs[0][0] / 1000)
            highs.append(pairs[-1][0] / 1000)
    if counts.requests:  # exact figures for successes, bucket values for failures
        lows[0], highs[0] = counts.min_us / 1000, counts.max_us / 1000
    if lows:
        low = min(lows)
        entry.min_response_time = low if entry.min_response_time is None else min(entry.min_response_time, low)
        entry.max_response_time = max(entry.max_response_time, max(highs))
    if counts.failed:
        entry.num_failures += counts.failed
        entry.num_fail_per_sec[second] += counts.failed


def _add_error(stats: RequestStats, request_type: str, name: str, text: str, n: int, now: float) -> None:
    key = StatsError.create_key(request_type, name, text)
    error = stats.errors.get(key)
    if error is None:
        error = stats.errors[key] = StatsError(request_type, name, text)
    error.occurrences += n
    error.first_seen = now if error.first_seen is None else error.first_seen
    error.last_seen = now


def add_to_book(book: latency.StageBook, counts: Counts) -> None:
    """Add one harvested batch to the current stage's tally (nothing outside a window).
    Duplicates count as out of order there, as the Python users count them."""
    if book.current is None or counts.is_empty():
        return
    tally = book.tallies.get(book.current)
    if tally is None:
        tally = book.tallies[book.current] = latency.StageTally()
    tally.requests += counts.requests
    for us, n in counts.latency_us:
        tally.hist.record_value(min(max(us, latency.LOWEST_US), latency.HIGHEST_US), n)
    for kind, n in counts.failures.items():
        tally.failures[kind] = tally.failures.get(kind, 0) + n
    tally.sent += counts.sent
    tally.lost += counts.lost
    tally.out_of_order += counts.out_of_order + counts.duplicated


def broadcast_settings(environment: Any) -> tuple[float, float]:
    """(lines/s per user, silence limit in s) for broadcast users now: the stage's figures
    under ``bench compare``, else the options and the users this runner has running
(less those standing aside: :mod:`bench.loadgen.server_mode`).
    Silence 0: alone in the room, where silence is right."""
    options = environment.parsed_options
    timeout = float(getattr(options, "request_timeout", DEFAULT_REQUEST_TIMEOUT))
    if PHASE.controlled:
        rate, room = PHASE.rate, PHASE.users
    else:
        rate = float(getattr(options, "broadcast_rate", DEFAULT_BROADCAST_RATE))
        room = (environment.runner.user_count - standing_aside(environment)
                if environment.runner is not None else 0)
    if room < 2:
        return rate, 0.0
    if rate <= 0:  # closed loop: lines flow all the time
        return rate, timeout
    return rate, max(timeout, SILENT_INTERVALS / ((room - 1) * rate))


class Harvester:
    """Harvests one engine into one Locust environment's stats and the book."""

    def __init__(self, environment: Any, engine: Engine) -> None:
        self.environment = environment
        self.engine = engine
        self.totals: dict[str, Counts] = {name: Counts() for name in REQUEST_NAMES}
        self._broadcast: tuple[float, float] | None = None
        environment.events.test_stop.add_listener(self._on_test_stop)
        PHASE.before_change.append(self.harvest)
        self._greenlet = gevent.spawn(self._run)

    def harvest(self) -> None:
        """Move everything the engine counted since the last harvest into Locust and the book."""
        now = time.time()
        for name, counts in self.engine.harvest().items():
            if counts.is_empty():
                continue
            add_to_locust(self.environment.stats, name, counts, now)
            add_to_book(latency.BOOK, counts)
            counts.latency_us, counts.failure_latency_us = [], []  # the totals keep counts only
            self.totals[name].add(counts)

    def follow_broadcast(self) -> None:
        """Tell the engine the broadcast rate and silence limit when they change."""
        settings = broadcast_settings(self.environment)
        if settings != self._broadcast:
            self._broadcast = settings
            self.engine.set_broadcast(*settings)

    def _run(self) -> None:
        while True:
            gevent.sleep(HARVEST_INTERVAL_S)
            try:
                self.follow_broadcast()
                self.harvest()
            except Exception:  # keep harvesting; one bad batch must not end the run
                log.exception("sockbench: harvesting the load engine failed")

    def _on_test_stop(self, **_: Any) -> None:
        # the stopped users have asked to remove their connections; once the engine has
        # done so nothing more is counted, and this harvest is the run's last
        self.engine.sync()
        self.harvest()


_harvesters: dict[int, Harvester] = {}


def harvester_for(environment: Any, engine: Engine) -> Harvester:
    """The process's harvester for ``environment`` (started on first use)."""
    harvester = _harvesters.get(id(environment))
    if harvester is None:
        harvester = _harvesters[id(environment)] = Harvester(environment, engine)
    return harvester


@events.quitting.add_listener
def _last_harvest(environment: Any, **_: Any) -> None:
    harvester = _harvesters.get(id(environment))
    if harvester is not None:
        harvester.engine.sync()
        harvester.harvest()


def totals() -> dict[str, Counts]:
    """Everything this process's harvesters have added to Locust so far, per request name
    (histograms left out): what its stats must show."""
    out = {name: Counts() for name in REQUEST_NAMES}
    for harvester in _harvesters.values():
        for name, counts in harvester.totals.items():
            out[name].add(counts)
    return out
