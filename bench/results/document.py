"""The results.json document of a ``bench compare`` run, built from what the runner
returned (:class:`bench.compare.runner.ModeResult`). Pure apart from the clock."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from bench.compare.plan import users_for
from bench.results import schema
from bench.results.config import CompareConfig
from bench.results.points import fold_all


def build(run_id: str, env: dict[str, Any], config: CompareConfig, mode_results: list[Any],
          engine_name: str, orchestrator: str = "") -> schema.Doc:
    """Schema-2 document: the config, the load engine and what ran it (``orchestrator``,
    e.g. "Locust 2.47.0", with each mode's Locust files), every window and the folded points."""
    windows = [w for r in mode_results for w in r.windows]
    errors = {(r.mode, backend): why for r in mode_results for backend, why in r.errors.items()}
    users_by_mode = {r.mode: users_for(config, r.mode) for r in mode_results}
    return {
        "schema": schema.SCHEMA_VERSION,
        "run_id": run_id,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": env,
        "config": config.to_json(),
        "loadgen": {"engine": engine_name, "cpus": list(config.loadgen_cpus or []), "orchestrator": orchestrator,
                    "locust_reports": {r.mode: r.locust_reports for r in mode_results if r.locust_reports}},
        "points": fold_all(windows, errors, list(config.backends), users_by_mode),
        "windows": [{k: v for k, v in w.items() if k != "event"} for w in windows],
    }
