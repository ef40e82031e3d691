"""The results.json document of a ``bench compare`` run, built from what the runner
returned (:class:`bench.compare.runner.ModeResult`). Pure apart from the clock."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from bench.compare.plan import users_for
from bench.results.config import CompareConfig
from bench.results.points import fold_all
from bench.results.schema import Environment, Loadgen, Results
from bench.results.windows import window_from_json


def build(run_id: str, env: dict[str, Any], config: CompareConfig, mode_results: list[Any],
          engine_name: str, orchestrator: str = "") -> Results:
    """The run's results: the config, the load engine and what ran it (``orchestrator``, e.g.
    "Locust 2.47.0", with each mode's Locust files), every window (as the program wrote it)
    and the points folded from them."""
    windows = [window_from_json(w) for r in mode_results for w in r.windows]
    errors = {(r.mode, backend): why for r in mode_results for backend, why in r.errors.items()}
    users_by_mode = {r.mode: users_for(config, r.mode) for r in mode_results}
    return Results(
        run_id=run_id,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        environment=Environment(**env),
        config=config,
        loadgen=Loadgen(engine_name, tuple(config.loadgen_cpus or ()), orchestrator,
                        {r.mode: r.locust_reports for r in mode_results if r.locust_reports}),
        points=fold_all(windows, errors, list(config.backends), users_by_mode),
        windows=tuple(windows),
    )
