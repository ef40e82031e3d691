"""How fast the native engine drives echo, inside Locust and alone, next to a C client.

``python -m bench.loadgen.bench_engine [--rounds 3] [--seconds 5] [--conns 100]``

An echo server pinned to CPU 0 (``ceiling`` from ``--tools`` (default ``../shared/tools``) when it is there, else the
project's own ``python -m bench.loadgen.ceiling``) is driven in turn, round after round,
by three clients pinned to CPU 1, each for a warm-up and then a measured window:

* ``locust``: one Locust process with ``--conns`` engine echo users (closed loop), its
  rate measured by the stage controller (the microsecond book the harvester fills);
* ``engine``: the engine alone in a plain Python process (no Locust);
* ``echoload``: ``../shared/tools/echoload`` (a C closed-loop client), when it is there.

It prints round trips/s of each and the ratios to echoload, per round and as medians.
A benchmark, not a test: figures on a shared 2-core machine move; compare the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.procs.children import free_port, locust_command
from bench.procs.ready import parse_ready, read_first_line

# ../shared/tools beside the project checkout, where the reference C tools live
DEFAULT_TOOLS = Path(__file__).resolve().parents[2].parent / "shared" / "tools"
LOCUSTFILE = str(Path(__file__).with_name("engine_locustfile.py"))
SERVER_CPU, CLIENT_CPU = 0, 1


def pinned(cpu: int):
    """A preexec_fn that pins the child to one CPU (no-op where affinity is unsupported)."""
    def pin() -> None:
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {cpu})
    return pin


def start_server(tools: Path) -> tuple[subprocess.Popen, int, str]:
    ceiling = tools / "ceiling"
    if ceiling.exists():
        port = free_port()
        cmd, name = [str(ceiling), str(port)], "shared/tools/ceiling"
    else:
        cmd, name = [sys.executable, "-m", "bench.loadgen.ceiling", "--port", "0"], "bench.loadgen.ceiling"
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, preexec_fn=pinned(SERVER_CPU))
    ready = parse_ready(read_first_line(proc.stdout, 15.0))
    if ready is None:
        proc.kill()
        raise SystemExit(f"bench_engine: {name} did not start")
    return proc, ready[1], name


def run_echoload(tools: Path, port: int, conns: int, seconds: float, warmup: float) -> float | None:
    tool = tools / "echoload"
    if not tool.exists():
        return None
    out = subprocess.run([str(tool), str(port), str(conns), str(seconds), "64", str(warmup)],
                         capture_output=True, text=True, timeout=seconds + warmup + 30,
                         preexec_fn=pinned(CLIENT_CPU))
    return float(json.loads(out.stdout)["rps"]) if out.returncode == 0 else 0.0


def run_engine_alone(port: int, conns: int, seconds: float, warmup: float) -> float:
    out = subprocess.run([sys.executable, "-m", "bench.loadgen.bench_engine", "--engine-only", str(port),
                          "--conns", str(conns), "--seconds", str(seconds), "--warmup", str(warmup)],
                         capture_output=True, text=True, timeout=seconds + warmup + 30,
                         preexec_fn=pinned(CLIENT_CPU))
    if out.returncode != 0:
        raise SystemExit(f"bench_engine: the engine run failed: {out.stderr.strip()[-500:]}")
    return float(json.loads(out.stdout)["rps"])


def engine_only(port: int, conns: int, seconds: float, warmup: float) -> None:
    """In the child: drive the server with the engine alone; print {"rps": ...}."""
    from bench.loadgen.engine import Engine
    from servers.runtime import raise_open_files_limit

    raise_open_files_limit()
    with Engine() as engine:
        ids = [engine.add_echo("127.0.0.1", port, 64) for _ in range(conns)]
        time.sleep(warmup)
        engine.harvest()
        started = time.monotonic()
        time.sleep(seconds)
        echo = engine.harvest()["echo"]
        elapsed = time.monotonic() - started
        for conn_id in ids:
            engine.remove(conn_id)
    print(json.dumps({"rps": echo.requests / elapsed, "failures": echo.failed}))


def run_locust(port: int, conns: int, seconds: float, warmup: float, workdir: Path) -> float:
    out = workdir / f"locust-{time.monotonic_ns()}.json"
    stages = [{"users": conns, "warmup": warmup, "duration": seconds, "rate": 0}]
    cmd = locust_command("--headless", "--host", f"127.0.0.1:{port}", "-u", str(conns), "-r", "1000",
                         "--stop-timeout", "0", "--exit-code-on-error", "0", "--only-summary",
                         "--loglevel", "ERROR", "--sockbench-stages", json.dumps(stages),
                         "--sockbench-out", str(out), "EngineEchoUser", locustfile=LOCUSTFILE)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + warmup + 60,
                          preexec_fn=pinned(CLIENT_CPU))
    if proc.returncode != 0 or not out.exists():
        raise SystemExit(f"bench_engine: locust failed: {proc.stdout[-500:]} {proc.stderr[-500:]}")
    stage = json.loads(out.read_text())["stages"][0]
    return stage["tally"]["requests"] / (stage["t_end"] - stage["t_start"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen.bench_engine",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured window per run")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--conns", type=int, default=100)
    parser.add_argument("--tools", type=Path, default=DEFAULT_TOOLS,
                        help=f"where ceiling and echoload are (default {DEFAULT_TOOLS})")
    parser.add_argument("--engine-only", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.engine_only:
        engine_only(args.engine_only, args.conns, args.seconds, args.warmup)
        return 0
    server, port, server_name = start_server(args.tools)
    print(f"server: {server_name} on CPU {SERVER_CPU}; clients on CPU {CLIENT_CPU}; "
          f"{args.conns} connections, 64-byte lines, {args.seconds:g} s windows")
    ratios: dict[str, list[float]] = {"locust": [], "engine": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for n in range(1, args.rounds + 1):
                c = run_echoload(args.tools, port, args.conns, args.seconds, args.warmup)
                e = run_engine_alone(port, args.conns, args.seconds, args.warmup)
                lo = run_locust(port, args.conns, args.seconds, args.warmup, Path(tmp))
                line = f"round {n}: locust+engine {lo:,.0f}/s  engine alone {e:,.0f}/s"
                if c:
                    ratios["locust"].append(lo / c)
                    ratios["engine"].append(e / c)
                    line += f"  echoload {c:,.0f}/s  ratios {lo / c:.2f}x, {e / c:.2f}x"
                print(line, flush=True)
    finally:
        server.terminate()
        server.wait(timeout=5)
    if ratios["locust"]:
        print(f"median over {args.rounds} rounds: Locust with the engine {statistics.median(ratios['locust']):.2f}x "
              f"echoload; the engine alone {statistics.median(ratios['engine']):.2f}x echoload")
    else:
        print("echoload not found beside the project: no ratios")
    return 0


if __name__ == "__main__":
    sys.exit(main())
