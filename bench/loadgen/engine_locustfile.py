"""A locustfile with only the native engine's users:
``locust -f bench/loadgen/engine_locustfile.py --host 127.0.0.1:5000 EngineEchoUser``.

Importing :mod:`bench.loadgen.stages` registers the options (``--message-bytes``,
``--broadcast-rate``, ``--request-timeout``) and the stage controller; the engine users
add ``--echo-rate``.
"""

from bench.loadgen import stages  # noqa: F401  (registers arguments and event hooks)
from bench.loadgen.engine_users import EngineBroadcastUser, EngineEchoUser

__all__ = ["EngineEchoUser", "EngineBroadcastUser"]
