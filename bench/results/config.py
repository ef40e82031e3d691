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

# (server CPUs, load generator CPUs)
Pinning = tuple[tuple[int, ...], tuple[int, ...]]


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
    message_bytes: int = DEFAULT_MESSAGE_BYTES
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT
    slo_ms: float = DEFAULT_SLO_MS    # broadcast: the p99 delivery latency a rate must hold
    slo_factor: float = 1.5           # broadcast: one step of the rate grid
    # windows that may be measured again because other processes were busy, as a share of
    # the run's windows: a busy machine cannot lengthen the run without bound
    remeasure_share: float = 0.15
    cpu_pinning: Pinning | None = None

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
            repeat=int(data["repeat"]), message_bytes=int(data["message_bytes"]),
            request_timeout_s=float(data.get("request_timeout_s", DEFAULT_REQUEST_TIMEOUT)),
            slo_ms=float(data.get("slo_ms", DEFAULT_SLO_MS)),
            slo_factor=float(data.get("slo_factor", 1.5)),
            remeasure_share=float(data.get("remeasure_share", 0.15)),
            cpu_pinning=(tuple(pin["server"]), tuple(pin["loadgen"])) if pin else None,
        )
