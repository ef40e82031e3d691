"""results.json: the single source of truth of a ``bench compare`` run.

Everything a report shows is derived from this document by pure functions, so a report
can be re-drawn (``bench report``) and tested against hand-built documents. The layout is
versioned by the integer ``schema``; this version reads schema 2 only (a schema-1 file,
from an older sockbench, gets a one-line error saying so).

Schema 2::

    {
      "schema": 2, "run_id": "20261125-103000", "created": "2026-11-25T10:30:00+00:00",
      "environment": {"cpu_model", "cpu_count", "ram_bytes", "os", "python", "versions",
                      "open_files_limit", "git_commit"},
      "config": CompareConfig.to_json(),        # bench/results/config.py
      "loadgen": {"engine": "native" | "python", "cpus": [int],
                  "orchestrator": "Locust 2.47.0",  # what ran the windows (absent in older files)
                  "locust_reports": {mode: {"html", "stats_csv"}}},  # Locust's own report and
                                                # stats of each mode, relative to the run folder
                                                # (absent in older files)
      "points": [                               # one per (mode, users, backend)
        {
          "mode": "echo" | "broadcast", "backend": str, "users": int,
          "error": str | null,                  # the backend did not run
          "capacity": {"samples": [float], "median", "lo", "hi"},   # req/s or deliveries/s,
                                                # one sample per window used (closed loop)
          "cost_us": {"samples": [float], "median", "lo", "hi"},    # server CPU µs per request
          "latency_us": {"p50", "p90", "p99", "p999", "max"} | null,  # closed loop, medians
          "set_rate": null | {"offered_per_s", "achieved_per_s", "p50", "p99", "p99_lo",
                              "p99_hi", "p99_samples", "p999", "failures", "disturbed",
                              "kept_up"},       # echo, open loop at one rate for all
          "slo": null | {"steps": [{"lines_per_s", "deliveries_per_s", "achieved_per_s",
                                    "p99_us", "sent", "lost", "failures", "held",
                                    "disturbed", "generator_bound"}],
                         "held_lines_per_s", "held_deliveries_per_s", "ceiling_reached",
                         "generator_bound"},  # ceiling_reached: no step failed (the climb's
                                              # hard stop, or generator_bound: the last step
                                              # missed for the load generator's CPU); the two
                                              # generator_bound keys are absent in older files
          "memory": {"idle_rss_bytes": int | null, "active_rss_bytes": int | null},
          "requests", "failures", "failures_by_kind", "unanswered", "sent", "lost",
          "out_of_order", "server_cpu_percent", "loadgen_cpu_percent", "other_cpu_percent",
          "windows", "clean_windows",
          "flags": {"failing", "generator_bound", "disturbed", "too_few_lines"},
          "notes": [str]
        }
      ],
      "windows": [...]                          # every measured window, as the program wrote it
    }

See :mod:`bench.results.points` for how windows become points and what each flag means.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bench.results.config import MODES

SCHEMA_VERSION = 2

Doc = dict[str, Any]
Point = dict[str, Any]

POINT_KEYS = ("mode", "backend", "users", "error", "capacity", "cost_us", "latency_us", "set_rate",
              "slo", "memory", "flags")
FLAG_KEYS = ("failing", "generator_bound", "disturbed", "too_few_lines")
PERCENTILES = ("p50", "p90", "p99", "p999", "max")


class ResultsError(ValueError):
    """A results document that does not follow the schema. The message says where."""


def validate(doc: Any) -> None:
    """Check ``doc`` against schema 2.

    Raises:
        ResultsError: naming the first problem found.
    """
    if not isinstance(doc, dict):
        raise ResultsError("results must be a JSON object")
    if doc.get("schema") == 1:
        raise ResultsError("these are schema-1 results from an older sockbench; this version reads "
                           "schema 2 (run bench compare again)")
    if doc.get("schema") != SCHEMA_VERSION:
        raise ResultsError(f"unsupported schema {doc.get('schema')!r}; this version reads {SCHEMA_VERSION}")
    for key in ("run_id", "created", "environment", "config", "loadgen", "points"):
        if key not in doc:
            raise ResultsError(f"missing top-level key {key!r}")
    if not isinstance(doc["points"], list):
        raise ResultsError("'points' must be a list")
    for i, point in enumerate(doc["points"]):
        where = f"points[{i}]"
        if not isinstance(point, dict):
            raise ResultsError(f"{where} must be an object")
        for key in POINT_KEYS:
            if key not in point:
                raise ResultsError(f"{where} is missing {key!r}")
        if point["mode"] not in MODES:
            raise ResultsError(f"{where}.mode must be one of {', '.join(map(repr, MODES))}")
        if not isinstance(point["flags"], dict) or any(k not in point["flags"] for k in FLAG_KEYS):
            raise ResultsError(f"{where}.flags needs {', '.join(FLAG_KEYS)}")
        if not isinstance(point["capacity"], dict) or "samples" not in point["capacity"]:
            raise ResultsError(f"{where}.capacity needs samples")


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a results.json.

    Raises:
        ResultsError: unreadable, not JSON, or not schema 2 (one-line message).
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
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(target)
