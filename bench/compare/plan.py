"""What a ``bench compare`` run measures, as data, and how long it should take. Pure: no
I/O, no clocks.

A run is one *program* per mode (:mod:`bench.loadgen.program`, run inside the mode's
Locust process): every backend's server of that mode is up at once, and the program steps
through the connection counts in ascending order, measuring every backend at each count
before the next count, in short interleaved windows repeated ``repeat`` times. :func:`program_spec` is what the
program reads; :func:`estimate_s` is the progress bar's guess of the wall time.

Broadcast needs at least two connections (a line goes to every *other* client), so
broadcast counts below 2 are left out.
"""

from __future__ import annotations

import os
from typing import Any

from bench.results.config import CompareConfig, answer_counts

# Seconds to connect and disconnect a window's connections (a mean over a default run's
# windows, most of them at 100 connections or fewer), and to start a mode's servers and
# program (per backend): for the estimate only. Default runs here took 5:00-5:10 with
# these estimating 5.5 min.
CONNECT_S = 0.05
START_S = 0.6
# Broadcast: one grid of room rates (deliveries/s) for every backend, base * factor**k;
# a backend starts at the step nearest below this fraction of its own closed-loop
# capacity and climbs until a step fails (bench.loadgen.slo_ladder). The hard stop: no step
# above SLO_TOP_FRACTION of the fastest backend's closed-loop capacity. Open loop, with
# every member sending, a room holds well above the closed-loop figure of a few senders
# (lines batch on the way out), so the stop is far above it: the ladder finds the limit.
SLO_GRID_BASE = 1000.0
SLO_START_FRACTION = 0.4
SLO_TOP_FRACTION = 8.0
# Echo: the offered rate at a connection count is this fraction of the slowest served
# backend's capacity there, the same for every backend.
RATE_FRACTION = 0.5
# A broadcast window sends at least this many lines (else its p99 and loss mean little).
MIN_LINES = 50
# Other processes above this % of a core during a window: measure it again.
BUSY_PERCENT = 20.0
REMEASURE = 1
# Expected SLO steps per backend and connection count (for the estimate).
SLO_STEPS_ESTIMATE = 5
# Broadcast: where the answer's fan-out pick is taken (when the run takes more windows there,
# CompareConfig.answer_repeat), each backend's ladder top, the step above it and the step
# below it are tried this many more times after the climb, interleaved across backends
# (bench.loadgen.slo_ladder._confirm): with the climb's first try, a majority of three, and
# three p99s where rooms tied on the rate are compared.
SLO_CONFIRM_TRIES = 2


def users_for(config: CompareConfig, mode: str) -> list[int]:
    """The connection counts ``mode`` measures, ascending."""
    users = sorted(set(config.users))
    return [u for u in users if u >= 2] if mode == "broadcast" else users


def modes_to_run(config: CompareConfig) -> list[str]:
    """Modes with at least one connection count to measure."""
    return [m for m in config.modes if users_for(config, m)]


def program_spec(config: CompareConfig, mode: str, targets: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON the program reads. ``targets``: ``{"backend", "host", "port", "pid"}`` each."""
    return {
        "mode": mode, "targets": targets, "users": users_for(config, mode),
        "repeats": config.repeat, "window_s": config.duration_s,
        # more windows where a pick of the answer is taken: {"capacity"|"rate"|"slo": [users]}
        "answer_repeats": config.answer_windows,
        "answer_users": _answer_users(config, mode), "warmup_s": config.warmup_s,
        "message_bytes": config.message_bytes, "timeout_s": config.request_timeout_s,
        "rate_fraction": RATE_FRACTION, "slo_ms": config.slo_ms, "slo_factor": config.slo_factor,
        "slo_start_fraction": SLO_START_FRACTION, "slo_grid_base": SLO_GRID_BASE, "slo_top_fraction": SLO_TOP_FRACTION,
        "slo_confirm_tries": SLO_CONFIRM_TRIES,
        "min_lines": MIN_LINES, "busy_percent": BUSY_PERCENT, "remeasure": REMEASURE,
        "remeasure_share": config.remeasure_share,
        # cores the load generator may use: 100 % each when it is saturated
        "loadgen_cpus": len(config.loadgen_cpus) if config.loadgen_cpus else (os.cpu_count() or 1),
    }


def _answer_users(config: CompareConfig, mode: str) -> dict[str, list[int]]:
    """Where the program takes more windows: the answer's counts, when the config asks for
    more windows there than elsewhere (none otherwise: --quick, or an explicit --repeat)."""
    if config.answer_windows <= config.repeat:
        return {}
    return {k: list(v) for k, v in answer_counts(users_for(config, mode), mode).items()}


def estimate_s(config: CompareConfig) -> float:
    """Rough wall time of a run in seconds (for the progress bar and the opening line)."""
    window = CONNECT_S + config.warmup_s + config.duration_s
    backends = len(config.backends)
    total = 0.0
    extra = config.answer_windows - config.repeat
    for mode in modes_to_run(config):
        n = len(users_for(config, mode))
        at = {"capacity": [], "rate": [], "slo": [], **_answer_users(config, mode)}
        total += START_S * backends
        total += (n * config.repeat + len(at["capacity"]) * extra) * backends * window  # capacity
        if mode == "echo":
            total += (n * config.repeat + len(at["rate"]) * extra) * backends * window  # the set rate
            total += n * backends * (CONNECT_S + 0.5)            # idle memory
        else:
            total += n * backends * SLO_STEPS_ESTIMATE * window  # the latency-target ladder
            # its top, the step above and the step below confirmed
            total += len(at["slo"]) * backends * 3 * SLO_CONFIRM_TRIES * window
    # windows measured again because other processes were busy add up to remeasure_share
    # more; a quiet run needs none, and the estimate is for a quiet machine
    return total
