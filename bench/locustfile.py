"""The locustfile: ``locust -f bench/locustfile.py --host 127.0.0.1:5000 EchoUser``.

Users: ``EchoUser`` (closed-loop echo) and ``BroadcastUser`` (room fan-out). They are the
native load engine's users (:mod:`bench.loadgen.engine_users`: the socket work runs in C,
Locust only counts) when the engine is built, else the pure-Python users of
:mod:`bench.loadgen.users`; ``SOCKBENCH_ENGINE=python`` forces the latter. Importing
:mod:`bench.loadgen.stages` registers the custom arguments (``--message-bytes``,
``--broadcast-rate``, ``--request-timeout``, shown in the web UI's start form) and the stage
controller ``bench compare`` uses.
"""

from bench.loadgen import stages  # noqa: F401  (registers arguments and event hooks)
from bench.loadgen.engine_users import default_users

EchoUser, BroadcastUser = default_users()

__all__ = ["EchoUser", "BroadcastUser"]
