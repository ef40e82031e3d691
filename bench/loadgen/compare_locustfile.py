"""The Locust process of one ``bench compare`` mode:
``locust -f bench/loadgen/compare_locustfile.py --headless -u 0 --sockbench-program SPEC.json
--csv PREFIX --html PATH`` (:func:`bench.procs.children.compare_locust_command`; the runner
in :mod:`bench.compare.runner` starts it, pinned to the load generator's CPUs).

Locust runs the test (one local runner, headless) and keeps the statistics; the schedule
is :class:`bench.loadgen.program.Program`, run by a controller greenlet started when the
test starts, which quits the runner when it is done. Every window's connections are Locust
users of :class:`WindowEchoUser` / :class:`WindowBroadcastUser` (one user, one connection
in the process's engine), spawned and stopped through the runner (:class:`LocustCrowd`).
The program is the only consumer of the engine's counts: each window's harvests go to
Locust's stats entries (request type: the mode; name: :func:`~bench.loadgen.program.locust_name`)
through :func:`bench.loadgen.harvest.add_to_locust`, so Locust's CSV and HTML report show
exactly the figures of results.json's windows.

The program's output goes to stdout, one line per object, each starting with
:data:`EVENT_PREFIX` (Locust's own lines go to stderr, or have no such prefix).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import sys
import time
from typing import Any

import gevent
import locust.stats
from gevent.event import Event
from locust import events
from locust.exception import StopUser

from bench.loadgen.engine import open_engine
from bench.loadgen import engine_users  # a module, not its classes: Locust runs every User class it finds here
from bench.loadgen.harvest import add_to_locust
from bench.loadgen.program import Batches, Program
from bench.procs.children import EVENT_PREFIX
from servers.runtime import raise_open_files_limit

log = logging.getLogger("sockbench")

# Longest wait for a window's users to have added their connections, or to have stopped.
SPAWN_LIMIT_S = 60.0
STOP_LIMIT_S = 10.0
# Longest wait for the runner to write the schedule (it starts the servers first).
SPEC_WAIT_S = 120.0


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    parser.add_argument("--sockbench-program", default="", include_in_web_ui=False,
                        help="the bench compare schedule (JSON file) this process runs, then quits")


class WindowUser:
    """What both window user classes add to the engine users: the connection's settings
    come from class attributes the crowd sets before each window (windows never overlap),
    and the connection goes into the program's engine (no harvester: the program harvests)."""

    engine: Any = None
    address: tuple[str, int] = ("127.0.0.1", 0)
    rate = 0.0         # lines/s of each of the first `senders` users
    other_rate = 0.0   # lines/s of the others
    senders = 0
    message_bytes = 64
    timeout = 2.0
    started = 0        # users of this window that have added their connection
    window_over = Event()  # set when the window ends: every user of it stops

    def on_start(self) -> None:
        cls = type(self)
        index, cls.started = cls.started, cls.started + 1
        self.conn_id = self.connect(self.rate if index < self.senders else self.other_rate)

    def hold(self) -> None:
        """Until the window ends; then stop (Locust calls on_stop: the connection goes).
        One event for all the window's users stops 1,000 of them in a fraction of the time
        Locust's ``stop_users`` takes (a greenlet and a blocking kill per user)."""
        type(self).window_over.wait()
        raise StopUser()

    def connect(self, rate: float) -> int:
        raise NotImplementedError


class WindowEchoUser(WindowUser, engine_users.EngineEchoUser):
    """One echo connection of the current window."""

    def connect(self, rate: float) -> int:
        return self.engine.add_echo(*self.address, self.message_bytes, rate, self.timeout)


class WindowBroadcastUser(WindowUser, engine_users.EngineBroadcastUser):
    """One room member of the current window (the program sets the engine-wide rate first)."""

    def connect(self, rate: float) -> int:
        return self.engine.add_broadcast(*self.address, self.message_bytes, rate, self.timeout, 0.0)


USER_CLASSES: dict[str, type[WindowUser]] = {"echo": WindowEchoUser, "broadcast": WindowBroadcastUser}


class LocustCrowd:
    """A :class:`bench.loadgen.program.Crowd` of Locust users in ``environment``'s runner."""

    def __init__(self, environment: Any, engine: Any, spec: dict[str, Any]) -> None:
        self.runner = environment.runner
        self.engine = engine
        for cls in USER_CLASSES.values():
            cls.engine = engine
            cls.message_bytes = int(spec["message_bytes"])
            cls.timeout = float(spec["timeout_s"])
        self.running: dict[str, int] = {}

    def start(self, mode: str, host: str, port: int, users: int, rate: float, senders: int,
              other_rate: float) -> None:
        cls = USER_CLASSES[mode]
        cls.address, cls.rate, cls.other_rate, cls.senders, cls.started = (host, port), rate, other_rate, senders, 0
        cls.window_over = Event()
        self.runner.spawn_users({cls.__name__: users})
        self.running[cls.__name__] = self.running.get(cls.__name__, 0) + users
        deadline = time.monotonic() + SPAWN_LIMIT_S
        while cls.started < users and time.monotonic() < deadline:
            gevent.sleep(0.001)  # each user adds its connection when its greenlet first runs
        self.engine.sync()

    def stop(self) -> None:
        for name in self.running:
            self.runner.user_classes_by_name[name].window_over.set()
        deadline = time.monotonic() + STOP_LIMIT_S
        while self.runner.user_count and time.monotonic() < deadline:
            gevent.sleep(0.001)
        if self.runner.user_count:  # a user that did not stop in time: Locust stops it
            self.runner.stop_users(self.runner.user_classes_count)
        self.running = {}
        self.engine.sync()  # each user's on_stop removed its connection


def _record(environment: Any) -> Any:
    def record(mode: str, name: str, batches: Batches) -> None:
        for t, counts in batches:
            add_to_locust(environment.stats, name, counts, t, request_type=mode)
    return record


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(EVENT_PREFIX + json.dumps(obj) + "\n")
    sys.stdout.flush()


def _read_spec(path: str) -> dict[str, Any]:
    """The schedule, once the runner has written it: Locust starts while the servers do
    (its imports take most of a second), and the runner writes the file (atomically, by a
    rename) when it knows their ports."""
    deadline = time.monotonic() + SPEC_WAIT_S
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise RuntimeError(f"no schedule at {path} after {SPEC_WAIT_S:g} s")
        gevent.sleep(0.02)
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _control(environment: Any, spec_path: str) -> None:
    runner = environment.runner
    while runner.state not in ("running", "stopped"):  # headless start: -u 0 is spawned at once
        gevent.sleep(0.01)
    spec = _read_spec(spec_path)
    engine = open_engine()
    try:
        Program(spec, engine, LocustCrowd(environment, engine, spec), _emit, _record(environment)).run()
    finally:
        runner.stop()  # every user's connection removed before the engine closes
        engine.close()
    runner.quit()


@events.quitting.add_listener
def _final_csv(environment: Any, **_: Any) -> None:
    """Locust writes its CSV files once a second and not again when it quits: write the
    stats and failures files once more, with Locust's own writer, so they hold the last
    window too (Locust's periodic writer has flushed its last write: it truncates after it)."""
    options = environment.parsed_options
    if options is None or not options.sockbench_program or not options.csv_prefix:
        return
    writer = locust.stats.StatsCSV(environment, locust.stats.PERCENTILES_TO_REPORT)
    for suffix, write in (("_stats.csv", writer.requests_csv), ("_failures.csv", writer.failures_csv)):
        with open(options.csv_prefix + suffix, "w", newline="", encoding="utf-8") as fh:
            write(csv.writer(fh))


_controllers: list[Any] = []


@events.test_start.add_listener
def _on_test_start(environment: Any, **_: Any) -> None:
    options = environment.parsed_options
    if options is None or not options.sockbench_program or _controllers:
        return  # one schedule per process
    raise_open_files_limit()
    controller = gevent.spawn(_control, environment, options.sockbench_program)
    controller.link_exception(lambda g: _fatal(environment, g))
    _controllers.append(controller)


def _fatal(environment: Any, greenlet: Any) -> None:
    log.error("sockbench: the compare schedule failed: %r", greenlet.exception)
    environment.process_exit_code = 3
    environment.runner.quit()


__all__ = ["WindowEchoUser", "WindowBroadcastUser"]
