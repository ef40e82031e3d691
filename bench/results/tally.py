"""Microsecond latency and failure counts per measurement stage, mergeable across
Locust processes.

Locust rounds response times under 100 ms to whole milliseconds before computing its
percentiles; loopback round trips take tens of microseconds. So every user also
records here, into an HDR histogram (1 µs to 60 s, 3 significant digits: 0.1%
resolution at any magnitude, about 40 KiB per histogram).

Who holds what:

* Each Locust process has one :data:`BOOK`. Users call :meth:`StageBook.record`,
  :meth:`StageBook.fail` and friends; the book files them under the *current stage*
  (``None`` outside measurement windows: ramp-up and warm-up are never recorded).
* A worker drains its book into every ``report_to_master`` message
  (:meth:`StageBook.drain`: encoded histograms and counters, then reset); the master
  merges each ``worker_report`` (:meth:`StageBook.merge`). A local runner records
  straight into its own book. Either way the master/local book ends up with the
  whole run, which :func:`stage_summary` turns into the figures ``bench compare``
  writes to results.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from bench.results.schema import PERCENTILES

# 1 µs to 60 s: the longest wait a user allows is its request timeout (seconds), so
# anything recorded fits; 3 significant digits keeps p99.9 within 0.1%.
LOWEST_US = 1
HIGHEST_US = 60_000_000
SIGNIFICANT_DIGITS = 3

FAILURE_KINDS = ("timeout", "reset", "refused", "protocol")


def new_histogram() -> HdrHistogram:
    """An empty histogram with the project's range and precision."""
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def percentiles_us(hist: HdrHistogram) -> dict[str, int]:
    """p50, p90, p99, p99.9 and max of ``hist`` in whole microseconds (0s when empty): the
    keys of :data:`bench.results.schema.PERCENTILES`."""
    if hist.get_total_count() == 0:
        return dict.fromkeys(PERCENTILES, 0)
    return {
        "p50": int(hist.get_value_at_percentile(50)),
        "p90": int(hist.get_value_at_percentile(90)),
        "p99": int(hist.get_value_at_percentile(99)),
        "p999": int(hist.get_value_at_percentile(99.9)),
        "max": int(hist.get_max_value()),
    }


@dataclass
class StageTally:
    """Everything recorded during one stage's measurement window, in one process."""

    hist: HdrHistogram = field(default_factory=new_histogram)
    requests: int = 0
    failures: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAILURE_KINDS, 0))
    sent: int = 0          # broadcast: lines sent
    lost: int = 0          # broadcast: gaps in a sender's sequence numbers, as seen by a receiver
    out_of_order: int = 0  # broadcast: a line older than one already received from its sender

    def to_wire(self) -> dict[str, Any]:
        """A JSON- and msgpack-safe form (the histogram base64-encoded)."""
        return {
            "hist": self.hist.encode().decode("ascii") if self.hist.get_total_count() else "",
            "requests": self.requests, "failures": dict(self.failures), "sent": self.sent,
            "lost": self.lost, "out_of_order": self.out_of_order,
        }

    def add_wire(self, data: dict[str, Any]) -> None:
        """Add a tally produced by :meth:`to_wire` (another process's, or a repeat's)."""
        if data.get("hist"):
            self.hist.decode_and_add(data["hist"].encode("ascii"))
        self.requests += int(data.get("requests", 0))
        for kind, count in data.get("failures", {}).items():
            self.failures[kind] = self.failures.get(kind, 0) + int(count)
        self.sent += int(data.get("sent", 0))
        self.lost += int(data.get("lost", 0))
        self.out_of_order += int(data.get("out_of_order", 0))


class StageBook:
    """Per-stage tallies of one process. Not thread-safe; greenlets only (no yields inside)."""

    def __init__(self) -> None:
        self.current: int | None = None  # the stage being measured, or None
        self.tallies: dict[int, StageTally] = {}

    def _tally(self) -> StageTally | None:
        stage = self.current
        if stage is None:
            return None
        tally = self.tallies.get(stage)
        if tally is None:
            tally = self.tallies[stage] = StageTally()
        return tally

    def record(self, latency_us: int) -> None:
        """One successful round trip or delivery that took ``latency_us``."""
        tally = self._tally()
        if tally is not None:
            tally.requests += 1
            tally.hist.record_value(min(max(latency_us, LOWEST_US), HIGHEST_US))

    def fail(self, kind: str) -> None:
        """One failed request, by kind (one of :data:`FAILURE_KINDS`)."""
        tally = self._tally()
        if tally is not None:
            tally.failures[kind] = tally.failures.get(kind, 0) + 1

    def sent_line(self) -> None:
        tally = self._tally()
        if tally is not None:
            tally.sent += 1

    def gap(self, lost: int = 0, out_of_order: int = 0) -> None:
        tally = self._tally()
        if tally is not None:
            tally.lost += lost
            tally.out_of_order += out_of_order

    def drain(self) -> dict[str, Any]:
        """Everything recorded since the last drain, as ``{stage: wire tally}``; then reset."""
        out = {str(stage): tally.to_wire() for stage, tally in self.tallies.items()}
        self.tallies = {}
        return out

    def merge(self, drained: dict[str, Any]) -> None:
        """Add another process's :meth:`drain` output."""
        for stage, wire in drained.items():
            tally = self.tallies.get(int(stage))
            if tally is None:
                tally = self.tallies[int(stage)] = StageTally()
            tally.add_wire(wire)


def stage_summary(tally: StageTally, seconds: float) -> dict[str, Any]:
    """The figures of one measured stage: counts, throughput and µs percentiles."""
    failures = {kind: int(tally.failures.get(kind, 0)) for kind in FAILURE_KINDS}
    return {
        "requests": tally.requests,
        "failures": sum(failures.values()),
        "failures_by_kind": failures,
        "rps": tally.requests / seconds if seconds > 0 else 0.0,
        "latency_us": percentiles_us(tally.hist),
        "sent": tally.sent,
        "lost": tally.lost,
        "out_of_order": tally.out_of_order,
    }


# The process-wide book every user in this Locust process records into.
BOOK = StageBook()
