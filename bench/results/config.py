"""What a ``bench compare`` run was asked to do: one :class:`CompareConfig`, from the
command line to the plan, the runner and results.json's ``config``. Pure data.

The option defaults live here too, in a module that imports neither gevent nor Locust
(importing Locust monkey-patches the process): the command line, the plan and the
Locust-side options (:mod:`bench.loadgen.stages`) all read them from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MODES = ("echo", "broadcast")
DEFAULT_MESSAGE_BYTES = 64
DEFAULT_BROADCAST_RATE = 10.0
# Per-wait timeout: a closed-loop round trip on loopback takes microseconds to tens of
# milliseconds even at 1,000 connections; 2 s means "not served". Short enough that
# the blocking backend's queued users fail fast and are counted instead of stalling.
DEFAULT_REQUEST_TIMEOUT = 2.0
# Broadcast: the p99 delivery latency a room's send rate must hold (ms).
DEFAULT_SLO_MS = 10.0

# The connection count whose figures the answer's echo and broadcast picks are taken at,
# when the run measured it (else the largest count measured).
ANSWER_USERS = 100

# (server CPUs, load generator CPUs)
Pinning = tuple[tuple[int, ...], tuple[int, ...]]


def reference_users(counts: "tuple[int, ...] | list[int]", prefer: int = ANSWER_USERS) -> int | None:
    """The connection count the answer's per-core, latency and fan-out picks are taken at:
    ``prefer`` when measured, else the largest count; None without counts."""
    counts = sorted(set(counts))
    if not counts:
        return None
    return prefer if prefer in counts else counts[-1]


def answer_counts(counts: "tuple[int, ...] | list[int]", mode: str) -> dict[str, tuple[int, ...]]:
    """Where each kind of window feeds a pick of the answer, so that it gets
    :attr:`CompareConfig.answer_repeat` windows there: ``capacity`` (echo: CPU per round trip
    at the reference count and throughput at the largest), ``rate`` (echo: p99 at the set
    rate, at the reference count) and ``slo`` (broadcast: the ladder's top is confirmed at the
    reference count). ``counts`` are the mode's connection counts."""
    ref = reference_users(counts)
    if ref is None:
        return {"capacity": (), "rate": (), "slo": ()}
    if mode == "echo":
        return {"capacity": tuple(sorted({ref, max(counts)})), "rate": (ref,), "slo": ()}
    return {"capacity": (), "rate": (), "slo": (ref,)}


@dataclass(frozen=True)
class CompareConfig:
    """A ``bench compare`` run's settings, validated by the command line.

    :meth:`to_json` is results.json's ``config``; :meth:`from_json` reads one back (absent
    optional keys take the defaults).
    """

    backends: tuple[str, ...]
    modes: tuple[str, ...] = MODES
    users: tuple[int, ...] = (1, 10, 100, 1000)
    duration_s: float = 0.5           # one measured window
    warmup_s: float = 0.2             # unmeasured seconds after connecting, before a window
    repeat: int = 3                   # windows per (backend, connections), interleaved
    # windows per backend where a pick of the answer is taken (:func:`answer_counts`); at
    # least ``repeat``; when above it, the broadcast ladder's top is confirmed there too
    # (bench.loadgen.slo_ladder). None: the same as ``repeat`` (older files)
    answer_repeat: int | None = None
    message_bytes: int = DEFAULT_MESSAGE_BYTES
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT
    slo_ms: float = DEFAULT_SLO_MS    # broadcast: the p99 delivery latency a rate must hold
    slo_factor: float = 1.5           # broadcast: one step of the rate grid
    # windows that may be measured again because other processes were busy, as a share of
    # the run's windows: a busy machine cannot lengthen the run without bound
    remeasure_share: float = 0.15
    cpu_pinning: Pinning | None = None

    @property
    def answer_windows(self) -> int:
        """Windows per backend at the answer's counts (:func:`answer_counts`)."""
        return max(self.repeat, self.answer_repeat or self.repeat)

    @property
    def server_cpus(self) -> tuple[int, ...] | None:
        return self.cpu_pinning[0] if self.cpu_pinning else None

    @property
    def loadgen_cpus(self) -> tuple[int, ...] | None:
        return self.cpu_pinning[1] if self.cpu_pinning else None

    def to_json(self) -> dict[str, Any]:
        """results.json's ``config`` object."""
        pin = self.cpu_pinning
        return {
            "backends": list(self.backends), "modes": list(self.modes), "users": sorted(set(self.users)),
            "duration_s": self.duration_s, "warmup_s": self.warmup_s, "repeat": self.repeat,
            # written only when it differs: older files read back as they were
            **({"answer_repeat": self.answer_repeat} if self.answer_windows != self.repeat else {}),
            "message_bytes": self.message_bytes, "request_timeout_s": self.request_timeout_s,
            "slo_ms": self.slo_ms, "slo_factor": self.slo_factor, "remeasure_share": self.remeasure_share,
            "cpu_pinning": {"server": list(pin[0]), "loadgen": list(pin[1])} if pin else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "CompareConfig":
        """The config of a results.json (the inverse of :meth:`to_json`)."""
        pin = data.get("cpu_pinning")
        return cls(
            backends=tuple(data["backends"]), modes=tuple(data["modes"]), users=tuple(data["users"]),
            duration_s=float(data["duration_s"]), warmup_s=float(data["warmup_s"]),
            repeat=int(data["repeat"]),
            answer_repeat=int(data["answer_repeat"]) if data.get("answer_repeat") is not None else None,
            message_bytes=int(data["message_bytes"]),
            request_timeout_s=float(data.get("request_timeout_s", DEFAULT_REQUEST_TIMEOUT)),
            slo_ms=float(data.get("slo_ms", DEFAULT_SLO_MS)),
            slo_factor=float(data.get("slo_factor", 1.5)),
            remeasure_share=float(data.get("remeasure_share", 0.15)),
            cpu_pinning=(tuple(pin["server"]), tuple(pin["loadgen"])) if pin else None,
        )
