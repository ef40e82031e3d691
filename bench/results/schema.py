"""results.json: the single source of truth of a ``bench compare`` run.

Everything a report shows is derived from this document by pure functions, so a
report can be re-drawn (``bench report``), tested against a fixture, and compared with
an older run. The layout is versioned by the integer ``schema``.

Schema 1::

    {
      "schema": 1,
      "run_id": "20261125-103000",              # also the reports/<run_id>/ folder name
      "created": "2026-11-25T10:30:00+00:00",   # UTC ISO-8601
      "environment": {
        "cpu_model": str, "cpu_count": int, "ram_bytes": int, "os": str, "python": str,
        "versions": {"gevent": str, "locust": str, "matplotlib": str, ...},
        "open_files_limit": [soft, hard], "git_commit": str | null
      },
      "config": {
        "backends": [str], "modes": [str], "users": [int], "duration_s": float,
        "warmup_s": float, "repeat": int, "message_bytes": int,
        "broadcast_rate": float,                # lines per second per broadcast user
        "workers": int,                          # Locust worker processes (0: one local process)
        "cpu_pinning": {"server": [int], "loadgen": [int]} | null
      },
      "loadgen_ceiling": {"locust_rps": float, "c_client_rps": float, "backend": str} | null,
      "runs": [                                  # one per backend x mode x users
        {
          "backend": str, "mode": "echo" | "broadcast", "users": int,
          "message_bytes": int, "duration_s": float,
          "requests": int, "failures": int,
          "failures_by_kind": {"timeout": int, "reset": int, "refused": int, "protocol": int},
          "rps": float,                          # median over repeats
          "rps_samples": [float],                # one per repeat, for the tie rule
          "latency_us": {"p50": int, "p90": int, "p99": int, "p999": int, "max": int},
          "server": {"cpu_percent": float, "rss_bytes": int, "rss_per_conn_bytes": float | null},
          "loadgen": {"cpu_percent": float, "saturated": bool, "processes": int},
          "deliveries_per_s": float | null,      # broadcast only
          "lost": int | null,                    # broadcast only: lines never delivered
          "error": str | null                    # the scenario could not run (server failed...)
        }
      ]
    }

In broadcast runs ``requests``, ``rps`` and ``latency_us`` count deliveries: one
request per line received by one user, timed from send to receipt.

Optional keys (written by ``bench compare``; readers must not require them)::

    config:  "request_timeout_s": float     # one wait longer than this is a timeout failure
             "delivery_budget": float       # broadcast: deliveries/s a point may ask for
    runs[]:  "broadcast_rate": float | null # broadcast: the per-user line rate actually used,
                                            # min(config.broadcast_rate, budget / (N*(N-1)))
             "sent": int | null             # broadcast: lines sent in the measured windows
             "out_of_order": int | null     # broadcast: lines older than one already received
             "users_reached": int           # users Locust had running when the window opened
             "server_rss_baseline_bytes": int  # server RSS before any client connected;
                                            # rss_per_conn_bytes = (rss_bytes - this) / users
             "server": {"core_busy_percent": float | null}   # how busy the server's pinned
             "loadgen": {"core_busy_percent": float | null}  # / Locust's pinned cores were,
                                            # whoever used them (null when not pinned);
                                            # loadgen.saturated is also set when Locust's
                                            # cores were >= 90% busy and the server's were not
             "other_cpu_percent": float     # CPU (% of one core) used on the machine by
                                            # anything but the server and Locust during the
                                            # window; above ~20 the figures are suspect

``latency_us`` is measured by the load generator in whole microseconds (HDR
histogram, 3 significant digits), not Locust's millisecond-rounded figures; a
window is measured only after its ramp-up and warm-up.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bench.results.config import MODES

SCHEMA_VERSION = 1

# A results document (the object above) and one element of its "runs": plain JSON
# objects, named once here for every reader (analysis, charts, report).
Doc = dict[str, Any]
Run = dict[str, Any]

RUN_KEYS = (
    "backend", "mode", "users", "message_bytes", "duration_s", "requests", "failures",
    "rps", "latency_us", "server", "loadgen", "deliveries_per_s", "lost",
)
# The keys of every run's latency_us (bench.results.tally.percentiles_us writes them).
PERCENTILES = ("p50", "p90", "p99", "p999", "max")


class ResultsError(ValueError):
    """A results document that does not follow the schema. The message says where."""


def validate(doc: Any) -> None:
    """Check ``doc`` against schema 1.

    Raises:
        ResultsError: naming the first problem found.
    """
    if not isinstance(doc, dict):
        raise ResultsError("results must be a JSON object")
    if doc.get("schema") != SCHEMA_VERSION:
        raise ResultsError(f"unsupported schema {doc.get('schema')!r}; this version reads {SCHEMA_VERSION}")
    for key in ("run_id", "created", "environment", "config", "runs"):
        if key not in doc:
            raise ResultsError(f"missing top-level key {key!r}")
    if not isinstance(doc["runs"], list):
        raise ResultsError("'runs' must be a list")
    for i, run in enumerate(doc["runs"]):
        where = f"runs[{i}]"
        if not isinstance(run, dict):
            raise ResultsError(f"{where} must be an object")
        for key in RUN_KEYS:
            if key not in run:
                raise ResultsError(f"{where} is missing {key!r}")
        if run["mode"] not in MODES:
            raise ResultsError(f"{where}.mode must be one of {', '.join(map(repr, MODES))}")
        latency = run["latency_us"]
        if not isinstance(latency, dict) or any(p not in latency for p in PERCENTILES):
            raise ResultsError(f"{where}.latency_us needs {', '.join(PERCENTILES)}")
        for sub, keys in (("server", ("cpu_percent", "rss_bytes")), ("loadgen", ("cpu_percent", "saturated"))):
            if not isinstance(run[sub], dict) or any(k not in run[sub] for k in keys):
                raise ResultsError(f"{where}.{sub} needs {', '.join(keys)}")


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a results.json.

    Raises:
        ResultsError: unreadable, not JSON, or not schema 1 (one-line message).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ResultsError(f"cannot read {path}: {exc.strerror}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path} is not valid JSON: {exc}") from None
    validate(doc)
    return doc


def save(doc: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Validate and write ``doc``; refuses to overwrite an existing results file."""
    validate(doc)
    target = Path(path)
    if target.exists():
        raise ResultsError(f"{target} already exists; results are never overwritten")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(target)
