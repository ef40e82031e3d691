"""``bench compare`` (plan -> run -> results.json -> report) and ``bench report``
(re-render a results.json). Runs in the supervisor."""
