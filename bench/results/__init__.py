"""results.json and everything derived from it: the schema, the microsecond tally,
folding repeats, the analysis, the charts and the report. Pure functions of data; no
child processes, no Locust."""
