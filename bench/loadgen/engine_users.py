"""Locust users whose connection the native engine drives: no Python per round trip.

* :class:`EngineEchoUser`: one echo connection, closed loop (one line in flight), or
  open loop at ``--echo-rate`` lines/s (latency timed from each line's intended send
  time, so a stalled server cannot hide its stalls).
* :class:`EngineBroadcastUser`: one room member that sends ``--broadcast-rate`` lines/s
  (the stage's rate under ``bench compare``; 0: closed loop, each line sent when a
  receiver in this process got the last) and checks every line it receives.

Same options and line format as the pure-Python users in :mod:`bench.loadgen.users` (they can
share a room). ``on_start`` adds the connection to the process's engine, the task only
sleeps, ``on_stop`` removes the connection at once (a connection removed is not a
failure: the engine counts nothing for it from then on). A user whose class is for the
other server mode stands aside and adds no connection (:mod:`bench.loadgen.server_mode`). One :class:`~bench.loadgen.harvest.Harvester`
per process moves the engine's counts into Locust's stats and the microsecond book.

:func:`default_users` picks these users when the engine is available, else the
pure-Python ones.
"""

from __future__ import annotations

from typing import Any

import gevent
from locust import User, events, task

from bench.loadgen.engine import available, shared_engine
from bench.loadgen.harvest import broadcast_settings, harvester_for
from bench.loadgen.server_mode import stands_aside, step_back_in
from bench.results.config import DEFAULT_MESSAGE_BYTES, DEFAULT_REQUEST_TIMEOUT
from bench.loadgen.users import BroadcastUser, EchoUser, parse_host

# The task wakes this often only to let Locust stop it; the engine does the work.
IDLE_S = 3600.0


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    parser.add_argument("--echo-rate", type=float, default=0.0,
                        help="echo with the native engine: lines per second each user sends, "
                        "timed from when each should have been sent (0: one line in flight, "
                        "the next when it is back; default 0)")


class EngineUser(User):
    """One connection in the process's engine, added on start and removed on stop."""

    abstract = True
    mode = ""  # the server mode this user is for: "echo" or "broadcast"
    conn_id: int | None = None
    aside = False  # the server is in the other mode: no connection

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.message_bytes = max(1, int(getattr(options, "message_bytes", DEFAULT_MESSAGE_BYTES)))
        self.timeout = float(getattr(options, "request_timeout", DEFAULT_REQUEST_TIMEOUT))
        self.address = parse_host(self.host)
        self.engine = shared_engine()
        self.harvester = harvester_for(self.environment, self.engine)
        self.aside = stands_aside(self, self.mode, self.address, self.timeout)
        if not self.aside:
            self.conn_id = self.add_connection()

    def add_connection(self) -> int:
        raise NotImplementedError

    def on_stop(self) -> None:
        if self.aside:
            self.aside = False
            step_back_in(self)
        if self.conn_id is not None:
            self.engine.remove(self.conn_id)
            self.conn_id = None

    @task
    def idle(self) -> None:
        self.hold()

    def hold(self) -> None:
        """Keep the connection until Locust stops this user (the engine does the work)."""
        while True:
            gevent.sleep(IDLE_S)


class EngineEchoUser(EngineUser):
    """Echo, closed loop or at ``--echo-rate`` lines/s."""

    mode = "echo"

    def add_connection(self) -> int:
        rate = float(getattr(self.environment.parsed_options, "echo_rate", 0.0) or 0.0)
        host, port = self.address
        return self.engine.add_echo(host, port, self.message_bytes, rate, self.timeout)


class EngineBroadcastUser(EngineUser):
    """Broadcast: sends at the stage's (or option's) rate, checks and times what it receives."""

    mode = "broadcast"

    def add_connection(self) -> int:
        self.harvester.follow_broadcast()
        rate, silence = broadcast_settings(self.environment)
        host, port = self.address
        return self.engine.add_broadcast(host, port, self.message_bytes, rate, self.timeout, silence)


def default_users() -> tuple[type[User], type[User]]:
    """(echo, broadcast) user classes: the native engine's when it is built and not
    switched off (``SOCKBENCH_ENGINE=python``), else the pure-Python users."""
    if available():
        return EngineEchoUser, EngineBroadcastUser
    return EchoUser, BroadcastUser
