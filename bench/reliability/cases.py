"""The fault cases, each a function ``case(start, backend) -> note`` that runs one
scenario against a fresh server and raises ``AssertionError`` if the server breaks the
contract (or :class:`~bench.reliability.faults.NotApplicable` where the model cannot take part).

Shared by ``tests/test_faults.py`` and ``bench reliability``: a case is written once. The
framing, half-close, slow-reader and command-line cases are here; the slowloris cases
(timeouts) are in :mod:`bench.reliability.timeout_cases`, those about crowds (bursts,
floods, descriptors) in :mod:`bench.reliability.crowd_cases`, those about endings
(signals under load) in :mod:`bench.reliability.ending_cases`.
:data:`CASES` lists them all.
"""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import sys
import time
from typing import Callable

import psutil

from bench.reliability.faults import (
    STOP_DEADLINE,
    StartFn,
    assert_no_traceback,
    check_framing,
    connect,
    echoes,
    read_until_eof,
    reset,
)
from bench.procs.children import bench_command
from bench.reliability.crowd_cases import (
    broadcast_burst_reader_keeps_up,
    connect_burst,
    fd_exhaustion,
    max_clients_flood,
    reset_mid_broadcast,
)
from bench.reliability.ending_cases import sigint_under_load, sigterm_busy_clients, sigterm_under_load
from bench.reliability.timeout_cases import slowloris_idle_timeout, slowloris_line_timeout
from servers.backends import serve_args

# --max-line for the framing cases: small, so limit-sized lines are cheap to send.
SMALL_MAX_LINE = 64
def framing_edges(start: StartFn, backend: str) -> str:
    """Lines exactly at and one past --max-line, with and without a newline; NUL,
    invalid UTF-8 and CRLF relayed verbatim."""
    m = SMALL_MAX_LINE
    server = start(backend, "--max-line", str(m))
    cases = [
        (b"a" * (m - 1) + b"\n", [], "exactly max-line with newline"),
        (b"b" * m + b"\n", [], "one past max-line with newline"),
        (b"c" * (m - 1), [], "max-line minus one, unterminated"),
        (b"d" * m, [], "max-line unterminated"),
        (b"e" * (m + 1), [], "one past max-line, unterminated"),
        (b"\x00\xff\xfe\xc3(\x80\r\n" + bytes(range(10)) + b"\n", [1, 3, 7], "NUL / invalid UTF-8 / CRLF"),
        (b"x" * (m - 2) + b"\r\n", [m - 2], "CRLF exactly at the limit, split between CR and LF"),
        (b"ok\n" + b"f" * (m - 1) + b"\n", [2, 5, 40], "limit-sized line after a short one, chunked"),
        (b"ok\nfine\n" + b"g" * (m + 5) + b"\n", [], "good lines in the same write as an over-long one"),
    ]
    for payload, cuts, what in cases:
        try:
            check_framing(server.address, payload, cuts, m)
        except AssertionError as exc:
            raise AssertionError(f"{what}: {exc}") from None
    echoes(server.address)
    return f"{len(cases)} edge streams"


def framing_fuzz(start: StartFn, backend: str, examples: int = 40, seed: int = 6) -> str:
    """Random streams (random bytes, many NULs and newlines, random chunking) checked
    against the contract's model. A fixed seed: the hypothesis version lives in the tests."""
    m = SMALL_MAX_LINE
    server = start(backend, "--max-line", str(m))
    rng = random.Random(seed)
    for i in range(examples):
        n = rng.randrange(0, 4 * m)
        alphabet = rng.choice([b"\n\x00\xff", b"ab\n", bytes(range(256)), b"\r\n\x80\xc3 x"])
        payload = bytes(rng.choices(alphabet, k=n))
        cuts = sorted(rng.sample(range(1, n), min(n - 1, rng.randrange(0, 6)))) if n > 1 else []
        try:
            check_framing(server.address, payload, cuts, m)
        except AssertionError as exc:
            raise AssertionError(f"example {i} payload={payload!r} cuts={cuts}: {exc}") from None
    echoes(server.address)
    return f"{examples} random streams"


def half_close(start: StartFn, backend: str) -> str:
    """After shutdown(SHUT_WR) the server answers every complete line it received
    (1,000 of them, ~50 KB, plus an unfinished one it must drop), then closes."""
    server = start(backend)
    lines = [b"half-close %05d %s\n" % (i, b"y" * 30) for i in range(1000)]
    sock = connect(server.address)
    sock.sendall(b"".join(lines) + b"unfinished")
    sock.shutdown(socket.SHUT_WR)
    got, how = read_until_eof(sock)
    reset(sock)
    assert got == b"".join(lines), f"got {len(got)} of {len(b''.join(lines))} bytes back"
    assert how == "eof", "closed with a reset, not a FIN"
    echoes(server.address)
    return f"{len(lines)} lines answered, then EOF"


def never_reads(start: StartFn, backend: str, seconds: float = 2.0) -> str:
    """A client floods echo requests and never reads the replies: the server's memory
    stays bounded (RSS grows under 16 MiB while the client sends megabytes), others are
    served meanwhile, and SIGTERM still ends the server within 2 s."""
    server = start(backend, "--idle-timeout", "0")
    proc = psutil.Process(server.pid)
    rss0 = proc.memory_info().rss
    flood = connect(server.address)
    flood.setblocking(False)
    block = (b"n" * 1023 + b"\n") * 64
    offered = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        try:
            offered += flood.send(block)
        except BlockingIOError:
            time.sleep(0.01)
    grew = (proc.memory_info().rss - rss0) / 2**20
    if backend != "blocking":
        echoes(server.address)
    t0 = time.monotonic()
    status = server.stop(signal.SIGTERM, timeout=STOP_DEADLINE + 3)
    took = time.monotonic() - t0
    reset(flood)
    assert grew < 16, f"server RSS grew {grew:.1f} MiB while a client did not read"
    assert status == 0 and took <= STOP_DEADLINE, f"SIGTERM: exit {status} after {took:.2f} s"
    assert_no_traceback(server)
    return f"{offered / 2**20:.1f} MiB sent, replies never read; RSS +{grew:.1f} MiB; exit 0 in {took:.2f} s"


BAD_COMMAND_LINES = [
    (["nosuchbackend"], "unknown backend"),
    (["{b}", "--max-clients", "-1"], "negative --max-clients"),
    (["{b}", "--max-line", "-5"], "negative --max-line"),
    (["{b}", "--max-output-buffer", "0"], "zero --max-output-buffer"),
    (["{b}", "--idle-timeout", "-1"], "negative --idle-timeout"),
    (["{b}", "--line-timeout", "nan"], "NaN --line-timeout"),
    (["{b}", "--port", "http"], "non-numeric port"),
    (["{b}", "--port", "70000"], "port out of range"),
]


def bad_command_lines(start: StartFn, backend: str) -> str:
    """Usage errors exit 2 with an ``error:`` line and no traceback; a busy port is one
    line naming the address and a non-zero exit."""
    backend_args = serve_args(backend)  # a variant is a backend and its flags
    for args, what in BAD_COMMAND_LINES:
        given = [part for a in args for part in (backend_args if a == "{b}" else [a])]
        argv = ["serve", *given] if "--port" in args else ["serve", *given, "--port", "0"]
        r = subprocess.run(bench_command(*argv), capture_output=True, text=True, timeout=20,
                           stdin=subprocess.DEVNULL)
        assert r.returncode == 2, f"{what}: exit {r.returncode}, stderr {r.stderr!r}"
        assert "error:" in r.stderr and "Traceback" not in r.stderr, f"{what}: stderr {r.stderr!r}"
        assert not r.stdout.startswith("READY"), f"{what}: server started anyway"
    server = start(backend)
    r = subprocess.run(bench_command("serve", *backend_args, "--port", str(server.port)), capture_output=True,
                       text=True, timeout=20, stdin=subprocess.DEVNULL)
    lines = r.stderr.strip().splitlines()
    assert r.returncode not in (0, None), "second server on a busy port exited 0"
    assert len(lines) == 1 and str(server.port) in lines[0], f"busy port: stderr {r.stderr!r}"
    return f"{len(BAD_COMMAND_LINES)} usage errors exit 2; busy port: {lines[0]!r}"


# name -> case, in the order the table shows them.
CASES: dict[str, Callable[[StartFn, str], str]] = {
    "framing edges (limit ±1, NUL, bad UTF-8)": framing_edges,
    "framing fuzz (random bytes and chunks)": framing_fuzz,
    "slowloris vs --line-timeout": slowloris_line_timeout,
    "slowloris vs --idle-timeout": slowloris_idle_timeout,
    "half-close answers, then closes": half_close,
    "RST / vanished peer mid-broadcast": reset_mid_broadcast,
    "1,000 connects and disconnects": connect_burst,
    "flood past --max-clients": max_clients_flood,
    "out of file descriptors": fd_exhaustion,
    "client that never reads (bounded memory)": never_reads,
    "SIGTERM under load": sigterm_under_load,
    "SIGINT under load": sigint_under_load,
    "SIGTERM with 500 busy clients (EOF, no reset)": sigterm_busy_clients,
    "broadcast burst (2 MB) to a listener that keeps up": broadcast_burst_reader_keeps_up,
    "bad command lines, busy port": bad_command_lines,
}

if __name__ == "__main__":  # pragma: no cover - ad-hoc: python -m bench.reliability.cases CASE BACKEND
    from bench.reliability.faults import ServerPool

    pool = ServerPool()
    fn = {f.__name__: f for f in CASES.values()}[sys.argv[1]]
    try:
        print(fn(pool, sys.argv[2]))
    finally:
        for problem in pool.finish():
            print(problem, file=sys.stderr)
