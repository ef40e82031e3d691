"""Everything that runs inside the Locust process (gevent-patched): the users, the stage
controller and the sequenced broadcast line format. Only Locust (via
``bench/locustfile.py``) imports these modules; the supervisor never does."""
