"""``bench compare``: measure every backend and say which model suits which load.

Per mode, every backend's server runs at once and one headless Locust process measures
them in short interleaved windows, each window's connections being Locust users driven by
the load engine (see :mod:`bench.compare.plan`, :mod:`bench.compare.runner`,
:mod:`bench.loadgen.compare_locustfile`, :mod:`bench.loadgen.program`): capacity and
server CPU per request at each connection count, latency at one offered rate (echo), the
highest room rate that holds a p99 target (broadcast), and server memory with idle and busy
connections. The windows and the points folded from them go to
``reports/<run-id>/results.json`` (:mod:`bench.results.schema`), from which
:mod:`bench.results.report` writes report.md and report.html; Locust's own CSV and HTML
report of each mode go to ``reports/<run-id>/locust/``.

The load engine is the native one; where it is not built (no C compiler at install time)
the pure-Python one runs, with one line that says what to install, and the report ranks
nothing (that engine is slower than several servers).

Usage errors print one line and exit 2; a backend that fails to start is reported with
its stderr and recorded as an error; the rest of the run goes on. Ctrl-C stops every
child and removes the unfinished run folder.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.compare import plan as plan_mod
from bench.procs import machine
from bench.results import schema as results
from bench.results.analysis import INSTALL_HINT
from bench.results.config import DEFAULT_MESSAGE_BYTES, DEFAULT_REQUEST_TIMEOUT, DEFAULT_SLO_MS, MODES, CompareConfig
from servers import backends
from servers.argtypes import (EXIT_USAGE, backend_list, comma_items, positive_float, positive_int,
                              seconds)

EXIT_INTERRUPTED = 130
# --quick: every backend and mode, two connection counts, two repeats of short windows,
# a coarse rate grid: under a minute on 2 cores.
QUICK = {"users": (10, 100), "duration": 0.2, "warmup": 0.05, "repeat": 2, "answer_repeat": 2,
         "slo_factor": 2.0, "remeasure_share": 0.0}
# Defaults: 6 backends, 1-1000 connections, three repeats of 0.5 s windows, eight where a
# pick of the answer is taken (the tie rule's median and confidence bound of the rounds'
# ratios steady with more rounds: bench.results.rules.separated; only backends that can
# rank there take the extra windows): about 5 minutes on a quiet machine.
DEFAULTS = {"users": (1, 10, 100, 1000), "duration": 0.5, "warmup": 0.2, "repeat": 3, "answer_repeat": 8,
            "slo_factor": 1.5, "remeasure_share": 0.15}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="measure every backend and write a report that says which to pick",
                       description="Measure every backend x mode x connection count through Locust, the "
                       "connections driven by the native load engine (a pure-Python one where it is not "
                       "built), in short interleaved repeats: capacity, server CPU per request, latency at "
                       "a set rate, broadcast rate at a latency target, memory per connection. Writes "
                       "reports/<run-id>/results.json, report.md and report.html, and Locust's CSV and "
                       "HTML report of each mode in reports/<run-id>/locust/.")
    p.add_argument("--backends", type=backend_list, default=tuple(backends.BACKENDS), metavar="LIST",
                   help=f"comma-separated backends (default: all: {','.join(backends.BACKENDS)})")
    p.add_argument("--modes", type=mode_list, default=MODES, metavar="LIST",
                   help="echo,broadcast (default both)")
    p.add_argument("--users", type=user_list, default=None, metavar="LIST",
                   help="comma-separated connection counts (default 1,10,100,1000; --quick: 10,100)")
    p.add_argument("--duration", type=positive_float, default=None, metavar="S",
                   help="measured seconds per window (default 0.5; --quick 0.2)")
    p.add_argument("--warmup", type=seconds, default=None, metavar="S",
                   help="unmeasured seconds after connecting, before each window (default 0.2; --quick 0.05)")
    p.add_argument("--repeat", type=positive_int, default=None, metavar="N",
                   help="windows per backend and connection count, interleaved (default 3, and 8 where "
                   "a pick of the report's answer is taken; --quick 2)")
    p.add_argument("--slo-ms", type=positive_float, default=DEFAULT_SLO_MS, metavar="MS",
                   help="broadcast: the p99 delivery latency a room's send rate must hold "
                   f"(default {DEFAULT_SLO_MS:g})")
    p.add_argument("--message-bytes", type=positive_int, default=DEFAULT_MESSAGE_BYTES, metavar="B",
                   help=f"bytes per line, newline included (default {DEFAULT_MESSAGE_BYTES})")
    p.add_argument("--request-timeout", type=positive_float, default=DEFAULT_REQUEST_TIMEOUT, metavar="S",
                   help="seconds one wait may take before it counts as a timeout "
                   f"(default {DEFAULT_REQUEST_TIMEOUT:g})")
    p.add_argument("--cpus", type=parse_pinning, default="auto", metavar="SERVER:LOADGEN",
                   help="pin the servers and the load generator, e.g. 0:1 or 0:1-3; 'none' to not pin "
                   "(default auto: servers on the first CPU, the load generator on the rest)")
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
    """argparse type: comma-separated connection counts, each at least 1."""
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
    """The parsed flags (argparse has validated each) with the --quick/default presets filled in."""
    preset = QUICK if args.quick else DEFAULTS
    return CompareConfig(
        backends=args.backends, modes=args.modes, users=args.users or preset["users"],
        duration_s=args.duration if args.duration is not None else preset["duration"],
        warmup_s=args.warmup if args.warmup is not None else preset["warmup"],
        repeat=args.repeat if args.repeat is not None else preset["repeat"],
        # --repeat sets every count's windows, the answer's included
        answer_repeat=args.repeat if args.repeat is not None else preset["answer_repeat"],
        message_bytes=args.message_bytes, request_timeout_s=args.request_timeout,
        slo_ms=args.slo_ms, slo_factor=preset["slo_factor"], cpu_pinning=args.cpus,
        remeasure_share=preset["remeasure_share"],
    )


def new_run_dir(out: Path) -> tuple[str, Path]:
    """A fresh ``out/<run-id>`` (UTC timestamp; suffixed if taken).

    Raises:
        OSError: it cannot be made (a parent is a file, no permission, ...).
    """
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
    from bench.loadgen import engine

    config = config_from_args(args)
    if not plan_mod.modes_to_run(config):
        print("bench compare: error: nothing to run (broadcast needs at least 2 connections)", file=sys.stderr)
        return EXIT_USAGE
    why = engine.why_unavailable()
    if why:
        # the main job still runs; the report says its figures are not ranked
        unset = f" and unset {engine.ENV_VAR}" if os.environ.get(engine.ENV_VAR) else ""
        print(f"bench compare: {why}; the pure-Python load engine runs instead (slower than several "
              f"servers, so the report ranks nothing). For the native engine, {INSTALL_HINT}{unset}.",
              file=sys.stderr)
    try:
        run_id, run_dir = new_run_dir(Path(args.out))
    except OSError as exc:
        print(f"bench compare: error: cannot make a run folder under {args.out}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    signal.signal(signal.SIGTERM, _interrupt)  # like Ctrl-C: stop every child, then exit
    try:
        return _measure_and_report(config, run_id, run_dir)
    except KeyboardInterrupt:
        shutil.rmtree(run_dir, ignore_errors=True)
        print(f"\nbench compare: interrupted; every child process was stopped and the unfinished run "
              f"folder {run_dir.resolve()} was removed (nothing kept).", file=sys.stderr)
        return EXIT_INTERRUPTED


def _measure_and_report(config: CompareConfig, run_id: str, run_dir: Path) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.text import Text

    from bench.compare import runner
    from bench.loadgen import engine
    from bench.results import document, report

    console = report.summary_console()
    env = machine.environment()
    pinning = config.cpu_pinning
    estimate = plan_mod.estimate_s(config)
    console.print(Text(
        f"bench compare: {len(config.backends)} backends, {', '.join(plan_mod.modes_to_run(config))}, "
        f"{config.repeat} interleaved repeats per point"
        + (f" ({config.answer_windows} where the answer's picks are taken)" if config.answer_windows > config.repeat
           else "") + f", about {estimate / 60:.1f} min. Load engine: "
        + ("native (C, one thread); " if engine.engine_name() == "native"
           else "python (pure Python, one thread; no ranking); ")
        + (f"servers on CPU {list(pinning[0])}, load generator on CPU {list(pinning[1])}." if pinning
           else "CPUs not pinned.")))
    mode_results = []
    with Progress(TextColumn("{task.description:<44}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        for mode in plan_mod.modes_to_run(config):
            task = progress.add_task(f"{mode}: starting servers", total=None)

            def on_progress(done: int, total: int, what: str, task: Any = task) -> None:
                progress.update(task, completed=done, total=total, description=what[:44])

            result = runner.run_mode(mode, config, run_dir / "logs", on_progress)
            for backend, error in result.errors.items():
                progress.console.print(Text.assemble(("error:", "red"), f" {backend} {mode}: {error}"))
            progress.update(task, completed=1, total=1, description=f"{mode}: done")
            mode_results.append(result)
    doc = document.build(run_id, env, config, mode_results, engine.engine_name(), runner.orchestrator())
    results_path = run_dir / "results.json"
    results.save(doc, results_path)
    paths = report.render_report(doc, run_dir)
    report.print_summary(doc, console)
    console.print(Text(f"report: {paths['report.html'].resolve()}\n        {paths['report.md'].resolve()}  "
                       f"(results: {results_path.resolve()})"))
    return 0
