"""``bench reliability`` and the fault tests: the fault harness, the fault cases, the
broadcast soak and the leak check. Runs in the supervisor (and in pytest)."""
