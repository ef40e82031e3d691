"""The locustfile: ``locust -f bench/locustfile.py --host 127.0.0.1:5000``.

Users: :class:`EchoUser` (closed-loop echo) and :class:`BroadcastUser` (room
fan-out), from :mod:`bench.loadgen.users`. Importing :mod:`bench.loadgen.stages` registers the custom
arguments (``--message-bytes``, ``--broadcast-rate``, ``--request-timeout``, shown in
the web UI's start form) and the stage controller ``bench compare`` uses.
"""

from bench.loadgen import stages  # noqa: F401  (registers arguments and event hooks)
from bench.loadgen.users import BroadcastUser, EchoUser

__all__ = ["EchoUser", "BroadcastUser"]
