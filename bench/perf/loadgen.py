"""The load generator's own ceiling: Locust with engine users vs the engine alone (and a
C client, when one is given), against one pinned echo server.

``python -m bench.perf.loadgen [--rounds 3] [--seconds 5] [--conns 100] [--tools DIR]``
(``bench perf`` runs it too, shorter, as its "Load generator" table.)

An echo server pinned to CPU 0 (the project's ``python -m bench.loadgen.ceiling``, or
``DIR/ceiling`` with ``--tools DIR`` when it is there) is driven in turn, round after
round, by clients pinned to CPU 1, each for a warm-up and then a measured window:

* ``engine``: the engine alone in a plain Python process (``bench.perf.client echo``);
* ``locust``: one Locust process with ``--conns`` engine echo users (closed loop), its
  rate measured by the stage controller (the microsecond book the harvester fills);
* ``echoload``: ``DIR/echoload`` (a C closed-loop client), with ``--tools DIR``.

It prints round trips/s of each and the ratios per round, then their medians: how
much of the engine's rate Locust keeps, and how both compare with a C client. A
benchmark, not a test: figures on a shared 2-core machine move; compare the ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from bench.perf import run
from bench.perf.table import loadgen_rows, plain
from bench.procs.children import free_port, locust_command
from bench.procs.server import ServerProcess, ServerStartError

LOCUSTFILE = str(Path(__file__).resolve().parents[1] / "loadgen" / "engine_locustfile.py")


@contextmanager
def echo_server(tools: Path | None) -> Iterator[tuple[str, int]]:
    """The pinned echo server: ``tools/ceiling`` when ``tools`` is given and holds it,
    else the project's own. Yields (its name, port)."""
    c_ceiling = run.find_tool(tools, "ceiling")
    if c_ceiling is None:
        with run.server(run.CEILING) as (_pid, port):
            yield "the project's C echo server (bench.loadgen.ceiling)", port
        return
    with ServerProcess.start([str(c_ceiling), str(free_port())], cpus=run.cpus(run.SERVER_CPU)) as proc:
        yield str(c_ceiling), proc.port


def run_echoload(tool: Path, port: int, conns: int, seconds: float, warmup: float) -> float | None:
    out = subprocess.run([str(tool), str(port), str(conns), str(seconds), "64", str(warmup)],
                         capture_output=True, text=True, timeout=seconds + warmup + 30,
                         preexec_fn=run.pinned(run.CLIENT_CPU))
    try:
        return float(json.loads(out.stdout.strip().splitlines()[-1])["rps"])
    except (ValueError, KeyError, IndexError):
        return None


def run_engine_alone(port: int, conns: int, seconds: float, warmup: float) -> float | None:
    return run.client("echo", port, conns, seconds, warmup, timeout=seconds + warmup + 60).get("rps")


def run_locust(port: int, conns: int, seconds: float, warmup: float, workdir: Path) -> float | None:
    """Round trips/s of one Locust process with ``conns`` engine echo users, over the
    stage's measured window; None when Locust failed (its last words are logged by the caller)."""
    out = workdir / f"locust-{time.monotonic_ns()}.json"
    stages = [{"users": conns, "warmup": warmup, "duration": seconds, "rate": 0}]
    cmd = locust_command("--headless", "--host", f"127.0.0.1:{port}", "-u", str(conns), "-r", "1000",
                         "--stop-timeout", "0", "--exit-code-on-error", "0", "--only-summary",
                         "--loglevel", "ERROR", "--sockbench-stages", json.dumps(stages),
                         "--sockbench-out", str(out), "EngineEchoUser", locustfile=LOCUSTFILE)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + warmup + 60,
                          preexec_fn=run.pinned(run.CLIENT_CPU))
    if proc.returncode != 0 or not out.exists():
        return None
    stage = json.loads(out.read_text())["stages"][0]
    return stage["tally"]["requests"] / (stage["t_end"] - stage["t_start"])


def measure(conns: int, seconds: float, warmup: float, rounds: int, tools: Path | None,
            log: Callable[[str], None], tools_server: bool = True) -> dict[str, Any]:
    """Interleaved rounds of every client against one echo server (``tools/ceiling``
    when ``tools_server`` and it is there, else the project's own).

    Returns ``{"server": name, "conns": N, "rounds": [{"engine": rps, "locust": rps,
    "echoload": rps or None}, ...]}``.

    Raises:
        ServerStartError: the echo server did not start.
    """
    echoload = run.find_tool(tools, "echoload")
    result: dict[str, Any] = {"conns": conns, "rounds": []}
    with echo_server(tools if tools_server else None) as (name, port), tempfile.TemporaryDirectory() as tmp:
        result["server"] = name
        for n in range(1, rounds + 1):
            got = {"engine": run_engine_alone(port, conns, seconds, warmup),
                   "locust": run_locust(port, conns, seconds, warmup, Path(tmp)),
                   "echoload": run_echoload(echoload, port, conns, seconds, warmup) if echoload else None}
            result["rounds"].append(got)
            log(f"load generator round {n}/{rounds}: "
                + ", ".join(f"{k} {v:,.0f}/s" if v else f"{k} -" for k, v in got.items()))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.perf.loadgen", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured window per run (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--conns", type=int, default=100)
    parser.add_argument("--tools", type=Path, metavar="DIR",
                        help="C reference tools (ceiling, echoload) to compare with, e.g. "
                        f"{run.DEFAULT_TOOLS}")
    args = parser.parse_args(argv)
    print(f"clients on CPU {run.CLIENT_CPU}, the echo server on CPU {run.SERVER_CPU}; {args.conns} "
          f"connections, 64-byte lines, {args.seconds:g} s windows", flush=True)
    try:
        result = measure(args.conns, args.seconds, args.warmup, args.rounds, args.tools,
                         lambda msg: print(msg, flush=True))
    except ServerStartError as exc:
        print(f"loadgen: error: {exc}", file=sys.stderr)
        return 1
    print(f"echo server: {result['server']}")
    print(plain(loadgen_rows(result)))
    ratios = [r["locust"] / r["echoload"] for r in result["rounds"] if r.get("locust") and r.get("echoload")]
    if ratios:
        print(f"Locust with the engine / echoload, median of {len(ratios)} round(s): "
              f"{statistics.median(ratios):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
