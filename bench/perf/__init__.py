"""``bench perf``: the backends against the C reference tools (a benchmark: it prints
figures and asserts nothing). Runs in the supervisor."""
