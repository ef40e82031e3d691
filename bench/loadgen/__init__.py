"""Everything that runs inside the Locust process (gevent-patched): the users (the native
engine's and the pure-Python ones), the engine's Python face and its harvester, the stage
controller and the sequenced broadcast line format. Only Locust (via ``bench/locustfile.py``)
imports the Locust-facing modules; the supervisor never does."""
