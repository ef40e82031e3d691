"""Does ``bench compare`` agree with an independent client? Echo capacity at one
connection count, measured by ``bench compare`` and by a reference client against the
same backends, in the same run.

``python -m bench.perf.agreement [--conns 100] [--repeat 3] [--seconds 3] [--tools DIR]``

The reference is ``DIR/echoload`` (a C closed-loop client) with ``--tools DIR``, else
the project's engine alone in a plain process (``bench.perf.client echo``): a check of
``bench compare``'s short interleaved windows against long steady ones, not of the engine.

Order, so that a drift of the machine shows instead of hiding in a ratio: the reference
against every backend (each server pinned to CPU 0, the client to CPU 1), then
``bench compare --modes echo --users CONNS`` (pinned the same way), then the reference
again. It prints, per backend, compare's median and range, the reference's two figures
and the ratio compare / reference (mean of the two), then every pair of backends that
the reference separates by more than ``--separates`` (10% by default) and whether
compare ranks the pair the same way, ties it, or ranks it the other way.

A benchmark, not a test: on a shared machine the figures move; read the ratios, and
run it again when the two reference runs of a backend differ by much.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from bench.perf import run
from bench.perf.loadgen import run_echoload
from bench.procs.server import ServerStartError
from bench.results.rules import Figure, separated

# Concurrent backends: `blocking` serves one connection at a time and has no capacity
# at 100 connections to compare.
BACKENDS = ("threading", "select", "gevent", "asyncio", "gevent-callback")


def reference(backend: str, conns: int, seconds: float, echoload: Path | None) -> float | None:
    """Round trips/s of the reference client against ``backend``'s pinned server."""
    with run.server(backend) as (pid, port):
        if echoload is not None:
            return run_echoload(echoload, port, conns, seconds, 1.0)
        return run.client("echo", port, conns, seconds, 1.0, "--pid", pid, timeout=seconds + 90).get("rps")


def compare_capacity(backends: tuple[str, ...], conns: int, repeat: int, out: Path) -> dict[str, dict[str, float]]:
    """``bench compare``'s echo capacity per backend: ``{backend: {median, lo, hi}}``.

    Raises:
        RuntimeError: the compare run failed (with its last stderr line).
    """
    cmd = [sys.executable, "-m", "bench", "compare", "--modes", "echo", "--users", str(conns),
           "--backends", ",".join(backends), "--repeat", str(repeat), "--cpus",
           f"{run.SERVER_CPU}:{run.CLIENT_CPU}", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    found = sorted(out.glob("*/results.json"))
    if proc.returncode != 0 or not found:
        raise RuntimeError((proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1])
    points = json.loads(found[-1].read_text())["points"]
    return {p["backend"]: {k: p["capacity"][k] for k in ("median", "lo", "hi")}
            for p in points if p["users"] == conns and p.get("capacity")}


def pair_verdicts(compare: dict[str, dict[str, float]], ref: dict[str, float],
                  separates: float) -> list[tuple[str, str, float, str]]:
    """For every pair the reference separates by more than ``separates`` (a fraction):
    ``(faster, slower, reference ratio, verdict)``, verdict ``agrees`` (compare ranks it
    the same way), ``tie`` (compare's tie rule, :func:`bench.results.rules.separated`,
    makes no ranking: ranges that overlap, or less than its minimum effect apart) or
    ``disagrees``. Pure."""
    verdicts = []
    for a, b in itertools.combinations(sorted(set(compare) & set(ref)), 2):
        fast, slow = (a, b) if ref[a] >= ref[b] else (b, a)
        if not ref[slow] or ref[fast] / ref[slow] <= 1 + separates:
            continue
        cf, cs = (Figure(name, compare[name]["median"], compare[name]["lo"], compare[name]["hi"])
                  for name in (fast, slow))
        verdict = "agrees" if separated(cf, cs) else "disagrees" if separated(cs, cf) else "tie"
        verdicts.append((fast, slow, ref[fast] / ref[slow], verdict))
    return verdicts


def measure(backends: tuple[str, ...], conns: int, repeat: int, seconds: float, tools: Path | None,
            log: Callable[[str], None]) -> dict[str, Any]:
    """The reference, compare, the reference again. ``{"reference": name, "before": {b: rps},
    "compare": {b: {median, lo, hi}}, "after": {b: rps}}``."""
    echoload = run.find_tool(tools, "echoload")
    name = str(echoload) if echoload else "the engine alone (bench.perf.client echo)"
    result: dict[str, Any] = {"reference": name}
    with tempfile.TemporaryDirectory() as tmp:
        for phase in ("before", "compare", "after"):
            if phase == "compare":
                log(f"bench compare --modes echo --users {conns} --repeat {repeat} ...")
                result[phase] = compare_capacity(backends, conns, repeat, Path(tmp))
                continue
            result[phase] = {}
            for backend in backends:
                result[phase][backend] = reference(backend, conns, seconds, echoload)
                log(f"reference {phase}: {backend} {result[phase][backend] or 0:,.0f}/s")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.perf.agreement", description=__doc__.split("\n\n")[0])
    parser.add_argument("--conns", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3, help="bench compare's --repeat (default 3)")
    parser.add_argument("--seconds", type=float, default=3.0, help="the reference's measured seconds (default 3)")
    parser.add_argument("--separates", type=float, default=0.10,
                        help="pairs the reference separates by more than this fraction are checked (default 0.10)")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--tools", type=Path, metavar="DIR", help="C reference tools (echoload), e.g. "
                        f"{run.DEFAULT_TOOLS}")
    args = parser.parse_args(argv)
    backends = tuple(b for b in args.backends.split(",") if b)
    try:
        result = measure(backends, args.conns, args.repeat, args.seconds, args.tools,
                         lambda msg: print(msg, flush=True))
    except (ServerStartError, RuntimeError) as exc:
        print(f"agreement: error: {exc}", file=sys.stderr)
        return 1
    print(f"\nreference: {result['reference']}; {args.conns} connections")
    print(f"{'backend':<16} {'compare median (range)':>28} {'reference before / after':>26} {'ratio':>6}")
    ref: dict[str, float] = {}
    for b in backends:
        c, before, after = result["compare"].get(b), result["before"].get(b), result["after"].get(b)
        got = [x for x in (before, after) if x]
        if not c or not got:
            print(f"{b:<16} {'-':>28}")
            continue
        ref[b] = sum(got) / len(got)
        span = f"{c['median']:,.0f} ({c['lo']:,.0f}-{c['hi']:,.0f})"
        print(f"{b:<16} {span:>28} {f'{before or 0:,.0f} / {after or 0:,.0f}':>26} {c['median'] / ref[b]:>5.2f}x")
    verdicts = pair_verdicts(result["compare"], ref, args.separates)
    print(f"\npairs the reference separates by more than {args.separates:.0%}:" if verdicts else
          f"\nno pair is separated by more than {args.separates:.0%} by the reference")
    for fast, slow, ratio, verdict in verdicts:
        print(f"  {fast} > {slow} ({ratio:.2f}x): compare {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
