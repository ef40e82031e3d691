"""``bench compare``: drive every backend with Locust and write a report.

For each backend x mode, one ``bench serve`` process and one headless Locust process
step through the user counts (see :mod:`bench.compare.plan`, :mod:`bench.compare.runner`). The
figures go to ``reports/<run-id>/results.json`` (:mod:`bench.results.schema`, schema 1),
from which :mod:`bench.results.report` draws the charts and writes report.md/report.html.

Usage errors print one line and exit 2; a backend that fails to start is reported
with its stderr and recorded as errored runs; the rest of the run goes on.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.compare import plan as plan_mod
from bench.results import schema as results
from bench.results.config import (
    DEFAULT_BROADCAST_RATE,
    DEFAULT_DELIVERY_BUDGET,
    DEFAULT_MESSAGE_BYTES,
    DEFAULT_REQUEST_TIMEOUT,
    MODES,
    CompareConfig,
)
from bench.procs import machine
from servers import backends
from servers.argtypes import (EXIT_USAGE, backend_list, comma_items, non_negative_int, positive_float,
                              positive_int, seconds)

# --quick: every backend and mode, two user counts, short windows: under a minute.
QUICK = {"users": (10, 100), "duration": 0.8, "warmup": 0.3}
# Defaults: 6 backends x (4 echo + 3 broadcast points) x 5.5 s + ~2 s per server run is
# about 4.5 minutes, inside the 6-minute budget on a 2-core machine.
DEFAULTS = {"users": (1, 10, 100, 1000), "duration": 4.0, "warmup": 1.5}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="benchmark the backends with Locust and write a report",
                       description="Run every backend x mode x user count with Locust (headless), "
                       "write reports/<run-id>/results.json and a report.")
    p.add_argument("--backends", type=backend_list, default=tuple(backends.BACKENDS), metavar="LIST",
                   help=f"comma-separated backends (default: all: {','.join(backends.BACKENDS)})")
    p.add_argument("--modes", type=mode_list, default=MODES, metavar="LIST",
                   help="echo,broadcast (default both)")
    p.add_argument("--users", type=user_list, default=None, metavar="LIST",
                   help="comma-separated concurrent users (default 1,10,100,1000; --quick: 10,100)")
    p.add_argument("--duration", type=positive_float, default=None, metavar="S", help="measured seconds per point (default 4; --quick 0.8)")
    p.add_argument("--warmup", type=seconds, default=None, metavar="S",
                   help="unmeasured seconds before each point (default 1.5; --quick 0.3)")
    p.add_argument("--repeat", type=positive_int, default=1, metavar="N", help="run everything N times; rps is the median (default 1)")
    p.add_argument("--message-bytes", type=positive_int, default=DEFAULT_MESSAGE_BYTES, metavar="B",
                   help=f"bytes per line, newline included (default {DEFAULT_MESSAGE_BYTES})")
    p.add_argument("--broadcast-rate", type=positive_float, default=DEFAULT_BROADCAST_RATE, metavar="R",
                   help="broadcast lines/s per user, capped so a point asks for at most "
                   f"{DEFAULT_DELIVERY_BUDGET:,.0f} deliveries/s (default {DEFAULT_BROADCAST_RATE:g})")
    p.add_argument("--request-timeout", type=positive_float, default=None, metavar="S",
                   help="seconds one wait may take before it counts as a timeout (default "
                   f"{DEFAULT_REQUEST_TIMEOUT:g}, or half of --duration if shorter, so a user that "
                   "is never served shows up as failures inside every window)")
    p.add_argument("--cpus", type=parse_pinning, default="auto", metavar="SERVER:LOADGEN",
                   help="pin the server and Locust, e.g. 0:1 or 0:1-3; 'none' to not pin "
                   "(default auto: server on the first CPU, Locust on the rest)")
    p.add_argument("--workers", type=non_negative_int, default=0, metavar="N",
                   help="run Locust as a master with N local worker processes (pinned with Locust's "
                   "CPUs; their µs histograms are merged) (default 0: one Locust process)")
    p.add_argument("--out", default="reports", metavar="DIR", help="where run folders go (default reports/)")
    p.add_argument("--quick", action="store_true", help="a smoke run in under a minute")
    p.set_defaults(func=run)


def mode_list(text: str) -> tuple[str, ...]:
    """argparse type: comma-separated modes (echo, broadcast)."""
    items = comma_items(text)
    if any(m not in MODES for m in items):
        raise argparse.ArgumentTypeError(f"choose from {', '.join(MODES)} (got {text!r})")
    return tuple(items)


def user_list(text: str) -> tuple[int, ...]:
    """argparse type: comma-separated user counts, each at least 1."""
    return tuple(positive_int(t) for t in comma_items(text))


def _cpu_set(text: str) -> tuple[int, ...]:
    cpus: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return tuple(cpus)


def parse_pinning(text: str) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """argparse type: ``auto`` / ``none`` / ``SERVER:LOADGEN`` (each a list like ``0`` or ``1-3,5``)."""
    if text == "none":
        return None
    if text == "auto":
        from bench.compare import runner

        return runner.default_pinning(os.cpu_count() or 1)
    server, sep, loadgen = text.partition(":")
    try:
        pinning = (_cpu_set(server), _cpu_set(loadgen)) if sep else None
    except ValueError:
        pinning = None
    if not pinning:
        raise argparse.ArgumentTypeError(f"expects SERVER:LOADGEN such as 0:1, 'auto' or 'none', got {text!r}")
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    bad = sorted(set(pinning[0] + pinning[1]) - set(allowed))
    if bad:
        raise argparse.ArgumentTypeError(f"CPU {bad[0]} is not available here (have {sorted(allowed)})")
    return pinning


def config_from_args(args: argparse.Namespace) -> CompareConfig:
    """The parsed flags (argparse has validated each) with the --quick/default presets
    filled in."""
    preset = QUICK if args.quick else DEFAULTS
    duration = args.duration if args.duration is not None else preset["duration"]
    return CompareConfig(
        backends=args.backends, modes=args.modes, users=args.users or preset["users"],
        duration_s=duration, warmup_s=args.warmup if args.warmup is not None else preset["warmup"],
        repeat=args.repeat, broadcast_rate=args.broadcast_rate, message_bytes=args.message_bytes,
        request_timeout_s=(args.request_timeout if args.request_timeout is not None
                           else min(DEFAULT_REQUEST_TIMEOUT, duration / 2)),
        cpu_pinning=args.cpus, workers=args.workers,
    )


def new_run_dir(out: Path) -> tuple[str, Path]:
    """A fresh ``out/<run-id>`` (UTC timestamp; suffixed if taken)."""
    run_id = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    candidate, n = run_id, 1
    while (out / candidate).exists():
        n += 1
        candidate = f"{run_id}-{n}"
    (out / candidate).mkdir(parents=True)
    return candidate, out / candidate


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    # imported here, not at the top: `bench serve` shares this CLI and should start light
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from rich.text import Text

    from bench.results import analysis
    from bench.results import report
    from bench.compare import runner

    config = config_from_args(args)
    console = report.summary_console()
    groups = plan_mod.build_plan(config)
    if not groups:
        print("bench compare: error: nothing to run (broadcast needs at least 2 users)", file=sys.stderr)
        return EXIT_USAGE
    signal.signal(signal.SIGTERM, _interrupt)  # like Ctrl-C: stop Locust and the server, then exit
    env = machine.environment()
    run_id, run_dir = new_run_dir(Path(args.out))
    pinning = config.cpu_pinning
    ropts = runner.RunnerOptions(workdir=run_dir / "logs", config=config)
    points = sum(len(g.stages) for g in groups)
    console.print(f"bench compare: {points} points in {len(groups)} server runs, about "
                  f"{plan_mod.estimate_s(groups) / 60:.1f} min; open-files limit {env['open_files_limit'][0]} "
                  "(the load generator and the servers raise their own to the hard limit); "
                  + (f"server on CPU {list(pinning[0])}, Locust on CPU {list(pinning[1])}" if pinning
                     else "CPUs not pinned"))
    raws: list[dict[str, Any]] = []
    with Progress(TextColumn("{task.description:<34}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console,
                  transient=False) as progress:
        task = progress.add_task("starting", total=plan_mod.estimate_s(groups))
        for group in groups:
            label = f"{group.backend} {group.mode}" + (f" #{group.repeat + 1}" if config.repeat > 1 else "")

            def on_event(index: int, event: str, group: plan_mod.Group = group, label: str = label) -> None:
                if index < len(group.stages):
                    stage = group.stages[index]
                    progress.update(task, description=f"{label}, {stage.users} users: {event}")
                    if event == "measured":
                        progress.advance(task, plan_mod.RAMP_ESTIMATE_S + stage.warmup_s + stage.duration_s)

            progress.update(task, description=f"{label}: starting")
            stage_raws = runner.run_group(group, ropts, on_event)
            if stage_raws and stage_raws[0]["error"]:  # a failed group: the same error on every stage
                progress.console.print(Text.assemble(("error:", "red"), f" {label}: {stage_raws[0]['error']}"))
            raws.extend(stage_raws)
            progress.advance(task, plan_mod.GROUP_OVERHEAD_S)
        progress.update(task, description="done", completed=plan_mod.estimate_s(groups))
    doc = build_document(run_id, env, config, raws)
    results_path = run_dir / "results.json"
    results.save(doc, results_path)
    report.render_report(doc, run_dir)
    report.print_summary(doc, console)
    busy = analysis.busy_machine_note(doc)  # also among the report's caveats
    if busy:
        console.print(Text.assemble(("warning:", "yellow"), f" {busy}"))
    console.print(f"report: {run_dir / 'report.html'}  (results: {results_path})")
    return 0


def build_document(run_id: str, env: dict[str, Any], config: CompareConfig,
                   raws: list[dict[str, Any]]) -> dict[str, Any]:
    """The results.json document: one run per (backend, mode, users), repeats folded in."""
    from bench.results.combine import combine  # imports the HDR histogram: not at `bench serve` startup

    grouped: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for raw in raws:
        grouped.setdefault((raw["backend"], raw["mode"], raw["users"]), []).append(raw)
    runs = [combine(items, config.message_bytes, max(1, config.workers)) for items in grouped.values()]
    return {
        "schema": results.SCHEMA_VERSION,
        "run_id": run_id,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": env,
        "config": config.to_json(),
        "loadgen_ceiling": None,
        "runs": runs,
    }
