"""Inside the Locust process: the custom arguments, the current stage, and the stage
controller that ``bench compare`` drives one Locust run with.

One Locust process serves a whole (backend, mode) group: it steps through the user
counts of the plan, each stage as *ramp* (spawn until the runner has the users),
*warm-up* (run, record nothing) and *measure* (record into :data:`bench.results.tally.BOOK`
under the stage's index). This replaces a Locust start per point (~1.5 s of imports
each) with one per group, and keeps warm-up out of the figures.

The controller runs only on the master (or the local runner) and only when
``--sockbench-stages`` is given; plain ``locust -f bench/locustfile.py`` (and the web
UI) run the users with no stages and record nothing of their own. With workers, the
master broadcasts each phase (``sockbench_phase`` message), workers send their
tallies with every ``report_to_master`` and the master merges them; before writing
the results the master waits one report interval so the last window arrives.

Files written for the runner (paths from ``--sockbench-out PATH``):

* ``PATH.events``: one JSON line per phase change, ``{"stage", "event", "t"}`` with
  ``event`` in ``ramp``/``warmup``/``measure``/``measured``/``done`` (``measured``: the
  stage's window closed) and ``t`` = ``time.time()``.
* ``PATH``: at the end, ``{"stages": [{"index", "users", "users_reached",
  "rate", "t_start", "t_end", "tally"}]}`` (``tally``: :meth:`StageTally.to_wire`).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import gevent
from locust import events
from locust.runners import MasterRunner, WorkerRunner

from bench.results import tally as latency
from bench.results.config import DEFAULT_BROADCAST_RATE, DEFAULT_MESSAGE_BYTES, DEFAULT_REQUEST_TIMEOUT
from servers.runtime import raise_open_files_limit

log = logging.getLogger("sockbench")

# Longest wait for the runner to reach a stage's user count before warming up anyway.
RAMP_LIMIT_S = 30.0
# Locust workers report every 3 s (WORKER_REPORT_INTERVAL); wait that plus a margin.
WORKER_FLUSH_S = 4.0
PHASE_MESSAGE = "sockbench_phase"


@dataclass
class Phase:
    """What every user in this process needs to know about the current stage."""

    users: int = 0                    # the stage's target user count
    rate: float = DEFAULT_BROADCAST_RATE  # broadcast lines/s per user for this stage
    controlled: bool = False          # a stage controller sets these (else: the options)
    version: int = 0                  # bumped by every apply(): users re-read on a change
    # called with no arguments at the start of every apply(), before the window moves
    before_change: list[Callable[[], None]] = field(default_factory=list)

    def apply(self, stage: int | None, users: int, rate: float) -> None:
        """Enter a phase: ``stage`` is the index being measured (None outside windows),
        where :data:`bench.results.tally.BOOK` files what users record from now on.
        Every :attr:`before_change` callback runs first (the engine's harvester: what was
        counted while the old window was open is filed under it)."""
        for callback in self.before_change:
            callback()
        self.users, self.rate, self.controlled = users, rate, True
        self.version += 1
        latency.BOOK.current = stage


PHASE = Phase()


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    # on the parser itself: Locust's include_in_web_ui works there, not on a group
    parser.add_argument("--message-bytes", type=int, default=DEFAULT_MESSAGE_BYTES,
                       help=f"bytes per line, newline included (default {DEFAULT_MESSAGE_BYTES})")
    parser.add_argument("--broadcast-rate", type=float, default=DEFAULT_BROADCAST_RATE,
                       help="broadcast: lines per second each user sends "
                       f"(default {DEFAULT_BROADCAST_RATE:g})")
    parser.add_argument("--request-timeout", type=float, default=DEFAULT_REQUEST_TIMEOUT,
                       help="seconds any single wait (connect, send, reply) may take before it "
                       f"counts as a timeout failure (default {DEFAULT_REQUEST_TIMEOUT:g})")
    parser.add_argument("--sockbench-stages", default="", include_in_web_ui=False,
                       help="JSON list of {users, warmup, duration, rate}: run these stages, then quit")
    parser.add_argument("--sockbench-out", default="", include_in_web_ui=False,
                       help="where the stage controller writes its results (JSON)")


@events.init.add_listener
def _on_init(environment: Any, **_: Any) -> None:
    # Locust schedules the --run-time stop with gevent.spawn_later right after this event,
    # and gevent counts "later" from the loop's cached clock, last updated when the hub
    # last ran. On a loaded machine the start-up before the hub's first pass took seconds,
    # and a 3 s run ended 0.04 s after it began. Refresh the clock first.
    gevent.get_hub().loop.update_now()
    soft, hard = raise_open_files_limit()
    runner = environment.runner
    options = environment.parsed_options
    if isinstance(runner, WorkerRunner):
        runner.register_message(PHASE_MESSAGE, _on_phase_message)

        @events.report_to_master.add_listener
        def _report(client_id: str, data: dict[str, Any]) -> None:
            data["sockbench"] = latency.BOOK.drain()
    elif isinstance(runner, MasterRunner):
        @events.worker_report.add_listener
        def _merge(client_id: str, data: dict[str, Any]) -> None:
            if "sockbench" in data:
                latency.BOOK.merge(data["sockbench"])
    if options is not None and options.sockbench_stages and not isinstance(runner, WorkerRunner):
        print(f"sockbench: open-files soft limit {soft} (hard {hard}) in the load generator",
              file=sys.stderr)
        stages = json.loads(options.sockbench_stages)
        controller = gevent.spawn(_control, environment, stages, options.sockbench_out)
        controller.link_exception(lambda g: _fatal(environment, g))


def _on_phase_message(environment: Any, msg: Any, **_: Any) -> None:
    data = msg.data
    PHASE.apply(data["stage"], data["users"], data["rate"])


def _fatal(environment: Any, greenlet: Any) -> None:
    log.error("sockbench stage controller failed: %r", greenlet.exception)
    environment.process_exit_code = 3
    environment.runner.quit()


def _control(environment: Any, stages: list[dict[str, Any]], out: str) -> None:
    """Step the runner through ``stages``; write the results; quit Locust."""
    runner = environment.runner
    options = environment.parsed_options
    spawn_rate = float(options.spawn_rate or 1000)
    events_file = open(out + ".events", "a", encoding="utf-8") if out else None

    def note(stage: int, event: str) -> float:
        now = time.time()
        if events_file:
            events_file.write(json.dumps({"stage": stage, "event": event, "t": now}) + "\n")
            events_file.flush()
        return now

    def announce(stage: int | None, users: int, rate: float) -> None:
        PHASE.apply(stage, users, rate)
        if isinstance(runner, MasterRunner):
            runner.send_message(PHASE_MESSAGE, {"stage": stage, "users": users, "rate": rate})

    # headless main() calls runner.start(-u ...) itself; wait for it to begin
    while runner.state not in ("spawning", "running"):
        gevent.sleep(0.05)
    done: list[dict[str, Any]] = []
    for index, stage in enumerate(stages):
        users, rate = int(stage["users"]), float(stage.get("rate", options.broadcast_rate))
        note(index, "ramp")
        announce(None, users, rate)
        if runner.target_user_count != users:
            runner.start(users, spawn_rate)
        deadline = time.monotonic() + RAMP_LIMIT_S
        while runner.user_count < users and time.monotonic() < deadline:
            gevent.sleep(0.05)
        reached = runner.user_count
        note(index, "warmup")
        gevent.sleep(float(stage["warmup"]))
        announce(index, users, rate)
        t_start = note(index, "measure")
        gevent.sleep(float(stage["duration"]))
        announce(None, users, rate)
        t_end = note(index, "measured")
        done.append({"index": index, "users": users, "users_reached": reached, "rate": rate,
                     "t_start": t_start, "t_end": t_end})
    if isinstance(runner, MasterRunner):
        gevent.sleep(WORKER_FLUSH_S)  # the workers' last report_to_master carries the last window
    for entry in done:
        tally = latency.BOOK.tallies.get(entry["index"]) or latency.StageTally()
        entry["tally"] = tally.to_wire()
    if out:
        with open(out, "w", encoding="utf-8") as fh:
            json.dump({"stages": done}, fh)
    note(len(stages), "done")
    if events_file:
        events_file.close()
    runner.quit()
