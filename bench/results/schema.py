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
      "config": CompareConfig.to_json(),        # bench/results/config.py ("answer_repeat":
                                                # only when above "repeat")
      "loadgen": {"engine": "native" | "python", "cpus": [int],
                  "orchestrator": "Locust 2.47.0",  # what ran the windows (absent in older files)
                  "locust_reports": {mode: {"html", "stats_csv"}}},  # Locust's own report and
                                                # stats of each mode, relative to the run folder
                                                # (absent in older files)
      "points": [                               # one per (mode, users, backend)
        {
          "mode": "echo" | "broadcast", "backend": str, "users": int,
          "error": str | null,                  # the backend did not run
          "capacity": {"samples": [float], "median", "lo", "hi", "repeats": [int]},
                                                # req/s or deliveries/s, one sample per window
                                                # used (closed loop); repeats: each sample's
                                                # round (absent in older files)
          "cost_us": {"samples": [float], "median", "lo", "hi", "repeats": [int]},
                                                # server CPU µs per request
          "latency_us": {"p50", "p90", "p99", "p999", "max"} | null,  # closed loop, medians
          "set_rate": null | {"offered_per_s", "achieved_per_s", "p50", "p99", "p99_lo",
                              "p99_hi", "p99_samples", "p999", "failures", "disturbed",
                              "kept_up", "p99_repeats"},  # echo, open loop at one rate for
                                                # all; p99_repeats: each p99 sample's round
                                                # (absent in older files)
          "slo": null | {"steps": [{"lines_per_s", "deliveries_per_s", "achieved_per_s",
                                    "p99_us", "sent", "lost", "failures", "held",
                                    "disturbed", "generator_bound",
                                    "tries", "held_tries", "p99_tries"}],  # the last
                                              # three only for a step confirmed by a
                                              # majority of tries (p99_tries: each counted
                                              # try's p99; absent in older files)
                         "held_lines_per_s", "held_deliveries_per_s", "ceiling_reached",
                         "generator_bound"},  # ceiling_reached: no step failed (the climb's
                                              # hard stop, or generator_bound: the last step
                                              # missed for the load generator's CPU), and the
                                              # last step held no try that failed; the two
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
                                                # (bench/results/windows.py; a ladder window
                                                # says "ladder": "climb", "retry" or "confirm")
    }

In code the document is a :class:`Results`, its points :class:`bench.results.summary.Point`
and its windows :data:`bench.results.windows.Window`: frozen dataclasses whose ``to_json`` /
``from_json`` write and read exactly this layout (a file read and written again is the same
text). :func:`validate` checks the JSON object before it is read.
See :mod:`bench.results.points` for how windows become points and what each flag means.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Mapping, TypedDict

from bench.results.config import MODES, CompareConfig
from bench.results.summary import Point
from bench.results.windows import Window, window_from_json

SCHEMA_VERSION = 2

POINT_KEYS = ("mode", "backend", "users", "error", "capacity", "cost_us", "latency_us", "set_rate",
              "slo", "memory", "flags")
FLAG_KEYS = ("failing", "generator_bound", "disturbed", "too_few_lines")
PERCENTILES = ("p50", "p90", "p99", "p999", "max")
TOP_KEYS = ("schema", "run_id", "created", "environment", "config", "loadgen", "points", "windows")


class Environment(TypedDict, total=False):
    """The machine a run measured on (:func:`bench.procs.machine.environment`); kept as the
    dict it was written as, since older and newer runs may describe more or less."""

    cpu_model: str
    cpu_count: int
    ram_bytes: int
    os: str
    python: str
    versions: dict[str, str]
    open_files_limit: list[int] | int | None
    git_commit: str | None


@dataclass(frozen=True)
class Loadgen:
    """What generated the load: ``engine`` "native" (C) or "python", on ``cpus``. Keys this
    version does not know are kept in ``extra`` and written back."""

    engine: str
    cpus: tuple[int, ...] = ()
    orchestrator: str = ""     # what ran the windows, e.g. "Locust 2.47.0" ("" in older files)
    # each mode's Locust files ({"html", "stats_csv"}), relative to the run folder
    locust_reports: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    KEYS = ("engine", "cpus", "orchestrator", "locust_reports")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"engine": self.engine, "cpus": list(self.cpus)}
        if self.orchestrator:  # absent in older files, which read back as they were
            out["orchestrator"] = self.orchestrator
            out["locust_reports"] = {m: dict(p) for m, p in self.locust_reports.items()}
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Loadgen":
        return cls(data["engine"], tuple(data["cpus"]), str(data.get("orchestrator") or ""),
                   {m: dict(p) for m, p in (data.get("locust_reports") or {}).items()},
                   {k: v for k, v in data.items() if k not in cls.KEYS})


def _ordered(seen: Iterable[str], preferred: Iterable[str]) -> list[str]:
    """``seen`` without repeats, the ``preferred`` ones first in that order."""
    seen_list = list(dict.fromkeys(seen))
    first = [x for x in preferred if x in seen_list]
    return first + [x for x in seen_list if x not in first]


@dataclass(frozen=True)
class Results:
    """One run's results.json (schema 2). Points are indexed once by (mode, users) on first use:
    every table cell, chart and sentence asks :meth:`points_at`, never scans the points.

    :meth:`to_json` writes the schema-2 object; :meth:`from_json` reads one. Top-level keys this
    version does not know are kept in ``extra`` and written back."""

    run_id: str
    created: str
    environment: Environment
    config: CompareConfig
    loadgen: Loadgen
    points: tuple[Point, ...]
    windows: tuple[Window, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA_VERSION, "run_id": self.run_id, "created": self.created,
                "environment": dict(self.environment), "config": self.config.to_json(),
                "loadgen": self.loadgen.to_json(), "points": [p.to_json() for p in self.points],
                "windows": [w.to_json() for w in self.windows], **self.extra}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Results":
        """The results of a schema-2 object (check it with :func:`validate` first).

        Raises:
            ResultsError: a key is missing or a value has the wrong shape.
        """
        try:
            return cls(run_id=str(data["run_id"]), created=str(data["created"]),
                       environment=Environment(**dict(data["environment"])),
                       config=CompareConfig.from_json(data["config"]), loadgen=Loadgen.from_json(data["loadgen"]),
                       points=tuple(Point.from_json(p) for p in data["points"]),
                       windows=tuple(window_from_json(w) for w in data.get("windows", ())),
                       extra={k: v for k, v in data.items() if k not in TOP_KEYS})
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            what = f"missing key {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
            raise ResultsError(f"results do not follow schema {SCHEMA_VERSION} ({what})") from None

    # -- the index ------------------------------------------------------------------------------

    @cached_property
    def _index(self) -> dict[tuple[str, int], tuple[Point, ...]]:
        """(mode, users) -> its points in backend order; built once."""
        order = {b: i for i, b in enumerate(self.backends())}
        grouped: dict[tuple[str, int], list[Point]] = {}
        for p in self.points:
            grouped.setdefault((p.mode, int(p.users)), []).append(p)
        return {k: tuple(sorted(v, key=lambda p: order[p.backend])) for k, v in grouped.items()}

    def modes(self) -> list[str]:
        """Modes present, echo before broadcast."""
        return _ordered((p.mode for p in self.points), MODES)

    def backends(self, mode: str | None = None) -> list[str]:
        """Backends present (in ``mode`` if given), in the config's order."""
        return _ordered((p.backend for p in self.points if mode is None or p.mode == mode), self.config.backends)

    def user_counts(self, mode: str | None = None) -> list[int]:
        """Distinct connection counts (in ``mode`` if given), ascending."""
        return sorted({u for m, u in self._index if mode is None or m == mode})

    def points_at(self, mode: str, users: int) -> tuple[Point, ...]:
        """The points of one (mode, users), in backend order."""
        return self._index.get((mode, users), ())

    def point(self, mode: str, users: int, backend: str) -> Point | None:
        return next((p for p in self.points_at(mode, users) if p.backend == backend), None)


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


def load(path: str | os.PathLike[str]) -> Results:
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
    return Results.from_json(doc)


def dumps(results: Results) -> str:
    """The text of a results.json."""
    return json.dumps(results.to_json(), indent=1, sort_keys=False) + "\n"


def save(results: Results, path: str | os.PathLike[str]) -> None:
    """Validate and write ``results``; refuses to overwrite an existing results file."""
    validate(results.to_json())
    target = Path(path)
    if target.exists():
        raise ResultsError(f"{target} already exists; results are never overwritten")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(dumps(results), encoding="utf-8")
    tmp.replace(target)
