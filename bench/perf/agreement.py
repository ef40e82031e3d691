"""Does ``bench compare`` agree with an independent client? Echo capacity at one
connection count, measured by ``bench compare`` and by a reference client against the
same backends, in the same hour.

``python -m bench.perf.agreement [--conns 100] [--rounds 3] [--runs 3] [--seconds 1] [--tools DIR]``

The reference is ``DIR/echoload`` (a C closed-loop client) with ``--tools DIR``, else
the project's engine alone in a plain process (``bench.perf.client echo``): a check of
``bench compare``'s interleaved windows against steady runs, not of the engine.

Order, so that a drift of the machine cancels instead of hiding in a ratio: rounds of a
reference sweep (every backend's server pinned to CPU 0, the client to CPU 1, the median
of ``--runs`` runs) then ``bench compare --modes echo --users CONNS`` (pinned the same
way), and a last sweep. Each round's ratio is compare's median over the mean of the
sweeps on either side of it. It prints the ratios per backend and round with their
median, then per round every pair of backends that the reference separates by more than
``--separates`` (10% by default) and whether compare ranks the pair the same way, ties
it, or ranks it the other way.

A benchmark, not a test: on a shared machine the figures move; read the medians, and
run it again when the rounds differ by much.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from bench.perf import run
from bench.perf.loadgen import run_echoload
from bench.procs.server import ServerStartError
from bench.results.figures import capacity_figures
from bench.results.rules import Figure, separated
from bench.results.schema import load

# Concurrent backends: `blocking` serves one connection at a time and has no capacity
# at 100 connections to compare.
BACKENDS = ("threading", "select", "gevent", "asyncio", "gevent-callback")


def reference(backend: str, conns: int, seconds: float, runs: int, echoload: Path | None) -> float | None:
    """Round trips/s of the reference client against ``backend``'s pinned server: the
    median of ``runs`` runs of ``seconds`` each (after a 0.5 s warm-up), on one server.

    Why a median of short runs: ``bench compare`` reports the median of short windows and
    re-measures a window that other processes disturbed; one long reference run instead
    averages every disturbance of a shared machine in, and reads low by as much as they took.
    """
    got = []
    with run.server(backend) as (pid, port):
        for _ in range(runs):
            if echoload is not None:
                rps = run_echoload(echoload, port, conns, seconds, 0.5)
            else:
                rps = run.client("echo", port, conns, seconds, 0.5, "--pid", pid, timeout=seconds + 90).get("rps")
            if rps:
                got.append(rps)
    return statistics.median(got) if got else None


def compare_capacity(backends: tuple[str, ...], conns: int, repeat: int | None, out: Path) -> dict[str, Figure]:
    """``bench compare``'s echo capacity per backend, as the report ranks it: the figures of
    :func:`bench.results.figures.capacity_figures` (only points that may rank, with their
    interval and the rounds that the tie rule compares round by round). ``repeat`` None:
    bench compare's own windows (more where the answer's picks are taken, as a default run).

    Raises:
        RuntimeError: the compare run failed (with its last stderr line).
    """
    cmd = [sys.executable, "-m", "bench", "compare", "--modes", "echo", "--users", str(conns),
           "--backends", ",".join(backends), *(["--repeat", str(repeat)] if repeat is not None else []), "--cpus",
           f"{run.SERVER_CPU}:{run.CLIENT_CPU}", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    found = sorted(out.glob("*/results.json"))
    if proc.returncode != 0 or not found:
        raise RuntimeError((proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1])
    return {f.backend: f for f in capacity_figures(load(found[-1]), "echo", conns)}


def pair_verdicts(compare: dict[str, Figure], ref: dict[str, float],
                  separates: float) -> list[tuple[str, str, float, str]]:
    """For every pair the reference separates by more than ``separates`` (a fraction):
    ``(faster, slower, reference ratio, verdict)``, verdict ``agrees`` (compare ranks it
    the same way), ``tie`` (compare's tie rule, :func:`bench.results.rules.separated`,
    makes no ranking: intervals less than its minimum effect apart) or
    ``disagrees``. Pure."""
    verdicts = []
    for a, b in itertools.combinations(sorted(set(compare) & set(ref)), 2):
        fast, slow = (a, b) if ref[a] >= ref[b] else (b, a)
        if not ref[slow] or ref[fast] / ref[slow] <= 1 + separates:
            continue
        cf, cs = compare[fast], compare[slow]
        verdict = "agrees" if separated(cf, cs) else "disagrees" if separated(cs, cf) else "tie"
        verdicts.append((fast, slow, ref[fast] / ref[slow], verdict))
    return verdicts


def reference_around(sweeps: list[dict[str, float | None]], i: int) -> dict[str, float]:
    """Per backend, the reference for compare's round ``i``: the mean of the sweeps just
    before and just after it (``sweeps[i]``, ``sweeps[i + 1]``), so a drift of the machine
    during the round cancels; a backend that either sweep missed has the other one's. Pure."""
    out = {}
    for backend in set().union(*sweeps[i:i + 2]):
        got = [r for s in sweeps[i:i + 2] if (r := s.get(backend))]
        if got:
            out[backend] = sum(got) / len(got)
    return out


def round_ratios(compare: list[dict[str, Figure]],
                 sweeps: list[dict[str, float | None]]) -> dict[str, list[float]]:
    """Per backend, one ratio per round: compare's median in round ``i`` over
    :func:`reference_around` it. Rounds without a reference are left out. Pure."""
    ratios: dict[str, list[float]] = {}
    for i, got in enumerate(compare):
        ref = reference_around(sweeps, i)
        for backend, cap in got.items():
            if backend in ref and cap.value:
                ratios.setdefault(backend, []).append(cap.value / ref[backend])
    return ratios


def measure(backends: tuple[str, ...], conns: int, repeat: int | None, seconds: float, runs: int, rounds: int,
            tools: Path | None, log: Callable[[str], None]) -> dict[str, Any]:
    """``rounds`` rounds, each a reference sweep over every backend then one ``bench
    compare``, and a last reference sweep. ``{"reference": name, "sweeps": [{b: rps}] *
    (rounds + 1), "compare": [{b: Figure}] * rounds}``."""
    echoload = run.find_tool(tools, "echoload")
    name = str(echoload) if echoload else "the engine alone (bench.perf.client echo)"
    result: dict[str, Any] = {"reference": name, "sweeps": [], "compare": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds + 1):
            sweep = {}
            for backend in backends:
                sweep[backend] = reference(backend, conns, seconds, runs, echoload)
                log(f"reference {r + 1}: {backend} {sweep[backend] or 0:,.0f}/s")
            result["sweeps"].append(sweep)
            if r < rounds:
                log(f"bench compare {r + 1}/{rounds}: --modes echo --users {conns}"
                    + (f" --repeat {repeat}" if repeat is not None else "") + " ...")
                result["compare"].append(compare_capacity(backends, conns, repeat, Path(tmp) / str(r)))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.perf.agreement", description=__doc__.split("\n\n")[0])
    parser.add_argument("--conns", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=None,
                        help="bench compare's --repeat (default: its own, as in a default run)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of reference + compare (default 3)")
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds of one reference run (default 1)")
    parser.add_argument("--runs", type=int, default=3, help="reference runs per backend per sweep; "
                        "their median counts (default 3)")
    parser.add_argument("--separates", type=float, default=0.10,
                        help="pairs the reference separates by more than this fraction are checked (default 0.10)")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--tools", type=Path, metavar="DIR", help="C reference tools (echoload), e.g. "
                        f"{run.DEFAULT_TOOLS}")
    args = parser.parse_args(argv)
    backends = tuple(b for b in args.backends.split(",") if b)
    if min(args.rounds, args.runs, 1 if args.repeat is None else args.repeat) < 1 or args.seconds <= 0:
        print("agreement: error: --rounds, --runs and --repeat must be at least 1, --seconds above 0",
              file=sys.stderr)
        return 2
    try:
        result = measure(backends, args.conns, args.repeat, args.seconds, args.runs, args.rounds,
                         args.tools, lambda msg: print(msg, flush=True))
    except (ServerStartError, RuntimeError) as exc:
        print(f"agreement: error: {exc}", file=sys.stderr)
        return 1
    ratios = round_ratios(result["compare"], result["sweeps"])
    print(f"\nreference: {result['reference']}; {args.conns} connections; {args.rounds} rounds")
    print(f"{'backend':<16} {'compare / reference, per round':>34} {'median':>7}")
    for b in backends:
        got = ratios.get(b)
        per_round = "  ".join(f"{x:.2f}x" for x in got) if got else "-"
        print(f"{b:<16} {per_round:>34} {f'{statistics.median(got):.2f}x' if got else '-':>7}")
    for i, compare in enumerate(result["compare"]):
        verdicts = pair_verdicts(compare, reference_around(result["sweeps"], i), args.separates)
        print(f"\nround {i + 1}, pairs the reference separates by more than {args.separates:.0%}:" if verdicts
              else f"\nround {i + 1}: no pair is separated by more than {args.separates:.0%} by the reference")
        for fast, slow, ratio, verdict in verdicts:
            print(f"  {fast} > {slow} ({ratio:.2f}x): compare {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
