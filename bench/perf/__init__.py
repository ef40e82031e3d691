"""``bench perf``: the servers at the limit, driven by the project's native load engine
against the project's C echo server (a benchmark: it prints figures and asserts
nothing). Runs in the supervisor; its clients run in ``bench.perf.client`` processes."""
