"""Child processes, seen from the supervisor: one launcher for servers
(:class:`bench.procs.server.ServerProcess`), the Locust command lines, and starting,
watching and stopping children. Runs in the supervising ``bench`` process; never
imports Locust or gevent."""
