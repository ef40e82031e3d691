"""The locustfile: ``locust -f bench/locustfile.py --host 127.0.0.1:5000 [EchoUser|BroadcastUser]``.

Users: ``EchoUser`` (closed-loop echo) and ``BroadcastUser`` (room fan-out). They are the
native load engine's users (:mod:`bench.loadgen.engine_users`: the socket work runs in C,
Locust only counts) when the engine is built, else the pure-Python users of
:mod:`bench.loadgen.users`; ``SOCKBENCH_ENGINE=python`` forces the latter.

Naming no class is safe. A server speaks one mode, so each Locust process (the local
runner, or each worker) probes the server once when a test starts
(:mod:`bench.loadgen.server_mode`): two connections, a probe line from one; it comes back
on the same connection (echo) or reaches the other (broadcast). Users of the other class
stand aside: no connection, nothing counted, one warning per process and test. When the
probe learns nothing (refused, no answer) every user runs and its failures say why.
Broadcast receivers skip probe lines, so a probe never disturbs a room in use.

Options (``locust --help`` does not list them: Locust prints its help before it loads
this file; they work on the command line and in the web UI's "Custom parameters"):

* ``--message-bytes N``: bytes per line, newline included (default 64);
* ``--broadcast-rate R``: lines per second each broadcast user sends (default 10);
* ``--request-timeout S``: seconds any one wait may take before it is a timeout (default 2);
* ``--echo-rate R``: native engine only, lines per second per echo user, timed from when
  each should have been sent (default 0: closed loop).

Importing :mod:`bench.loadgen.stages` registers them and the stage controller
``bench compare`` uses (``--sockbench-stages``, ``--sockbench-out``: not for hand use).
"""

from bench.loadgen import stages  # noqa: F401  (registers arguments and event hooks)
from bench.loadgen.engine_users import default_users

EchoUser, BroadcastUser = default_users()

__all__ = ["EchoUser", "BroadcastUser"]
