"""Which mode the server at ``--host`` runs in, learned once per test; users of the other
mode stand aside.

``locust -f bench/locustfile.py --host HOST:PORT`` with no user class named (and the web
UI with both classes ticked) runs ``EchoUser`` and ``BroadcastUser`` together against one
server, which only speaks one mode. Rather than let half the users count the server's
correct behaviour as failures, each Locust process (local runner or worker) probes the
server when its first user starts (:func:`bench.loadgen.mode_probe.probe`):

* two probe connections, B then A; A sends a probe line
  (:func:`bench.loadgen.sequence.probe_line`), again every :data:`RESEND_S` until an
  answer (B may not have joined the room when the first one arrives);
* A gets its line back: the server **echoes**; B gets it: the server **broadcasts**;
* an ``ERR`` line, a closed or refused connection, or no answer within the request
  timeout: the mode is **unknown**, and every user runs as asked (their own failures
  then say what is wrong).

Broadcast receivers ignore probe lines, so a probe never disturbs a room in use. A user
whose class is for the other mode stands aside: it opens no connection and idles until
Locust stops it, and the process logs one warning per class and test, not one per user.
Every test start probes again (the web UI may be pointed at another server, or the
server started late).

Under ``bench compare`` (``--sockbench-stages``) the class is named for the server it
started, so nothing is probed.
"""

from __future__ import annotations

import logging
from typing import Any

from gevent.event import AsyncResult
from locust import events

from bench.loadgen.mode_probe import ECHO, ProbeError, probe
from bench.procs.children import USER_CLASS

log = logging.getLogger("sockbench")


class _TestProbe:
    """One process's probe for the current test: one result every user waits on."""

    def __init__(self) -> None:
        self.host: str | None = None
        self.result: AsyncResult | None = None
        self.told: set[str] = set()  # modes whose users' standing aside was logged this test
        self.aside = 0               # users standing aside now


_probes: dict[int, _TestProbe] = {}


def _state(environment: Any) -> _TestProbe:
    state = _probes.get(id(environment))
    if state is None:
        state = _probes[id(environment)] = _TestProbe()
    return state


class _Abandoned(Exception):
    """The user that was probing stopped before the probe ended."""


def server_mode(environment: Any, host: str, port: int, timeout: float) -> str | None:
    """The mode of the server at ``host:port``, probed once per test and process (users
    that start meanwhile wait for the same probe); None when it could not be learned
    (logged once)."""
    state = _state(environment)
    key = f"{host}:{port}"
    while True:
        if state.result is None or state.host != key:
            return _probe_now(state, key, host, port, timeout)
        try:
            return state.result.get()
        except _Abandoned:
            continue  # the probing user was stopped mid-probe: probe again


def _probe_now(state: _TestProbe, key: str, host: str, port: int, timeout: float) -> str | None:
    result = AsyncResult()
    state.host, state.result = key, result
    try:
        mode: str | None = probe(host, port, timeout)
    except ProbeError as exc:
        log.warning("could not learn whether the server at %s echoes or broadcasts (%s); "
                    "every user runs", key, exc)
        mode = None
    except BaseException:  # Locust stopped this user (GreenletExit) while it probed
        if state.result is result:
            state.result = None
        result.set_exception(_Abandoned())
        raise
    result.set(mode)
    return mode


def stands_aside(user: Any, mode: str, address: tuple[str, int], timeout: float) -> bool:
    """True when ``user`` (a user for servers in ``mode``) must not run: the server at
    ``address`` is known to be in the other mode. Logs one warning per mode and test;
    counts the user in :func:`standing_aside` until :func:`step_back_in`."""
    options = user.environment.parsed_options
    if options is not None and getattr(options, "sockbench_stages", ""):
        return False  # bench compare names the class for the server it started
    actual = server_mode(user.environment, *address, timeout)
    if actual is None or actual == mode:
        return False
    state = _state(user.environment)
    state.aside += 1
    if mode not in state.told:
        state.told.add(mode)
        log.warning("the server at %s:%d %s, so the %s users (%s) stand aside; the %s "
                    "users (%s) run", *address, "echoes lines" if actual == ECHO else "broadcasts lines",
                    mode, USER_CLASS[mode], actual, USER_CLASS[actual])
    return True


def step_back_in(user: Any) -> None:
    """A user that stood aside has stopped."""
    state = _state(user.environment)
    state.aside = max(0, state.aside - 1)


def standing_aside(environment: Any) -> int:
    """Users of this process standing aside now (not in any room)."""
    state = _probes.get(id(environment))
    return state.aside if state is not None else 0


@events.test_start.add_listener
def _forget(environment: Any, **_: Any) -> None:
    # a new test probes again: the host may have changed, or the server started late
    state = _state(environment)
    state.result, state.host, state.told = None, None, set()
