"""``bench client`` in piped mode, and the error paths of ``bench serve``, ``bench client`` and ``bench perf``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from conftest import BACKENDS, bench_command

pytestmark = pytest.mark.timeout(30)


def run_bench(*args: str, stdin: bytes = b"", timeout: float = 15) -> subprocess.CompletedProcess:
    return subprocess.run(bench_command(*args), input=stdin, capture_output=True, timeout=timeout)


def error_lines(stderr: bytes) -> list[str]:
    """The lines of ``stderr`` that report an error (argparse adds a usage block)."""
    return [line for line in stderr.decode(errors="replace").splitlines() if "error" in line]


@pytest.mark.parametrize("backend", BACKENDS)
def test_client_piped_sends_lines_and_prints_echoes(serve, backend) -> None:
    server = serve(backend)
    lines = b"one\ntwo\r\n\x00\xff binary\n" + b"".join(b"line %d\n" % i for i in range(500))
    result = run_bench("client", f"{server.host}:{server.port}", stdin=lines)
    assert result.returncode == 0, result.stderr
    assert result.stdout == lines
    assert b"Traceback" not in result.stderr


def test_client_piped_with_empty_stdin_exits_0(serve) -> None:
    server = serve("asyncio")
    result = run_bench("client", f"{server.host}:{server.port}", stdin=b"")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b""


def test_client_refused_connection_is_one_clear_line() -> None:
    # A bound but not listening socket: connecting to its port is refused, and no
    # other process can take the port while we hold it.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        result = run_bench("client", f"127.0.0.1:{port}", stdin=b"hello\n")
    assert result.returncode != 0
    stderr = result.stderr.decode(errors="replace")
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert f"127.0.0.1:{port}" in stderr and "refused" in stderr.lower()
    assert result.stdout == b""


@pytest.mark.parametrize("target", ["localhost", "127.0.0.1:notaport", "127.0.0.1:70000"])
def test_client_bad_target_is_a_usage_error(target: str) -> None:
    result = run_bench("client", target)
    assert result.returncode == 2
    stderr = result.stderr.decode(errors="replace")
    assert "Traceback" not in stderr
    assert len(error_lines(result.stderr)) == 1, stderr


@pytest.mark.parametrize("args, named", [
    (["client", "127.0.0.1:5000", "--timeout", "-1"], "--timeout"),
    (["client", "127.0.0.1:5000", "--timeout", "0"], "--timeout"),
    (["client", "127.0.0.1:5000", "--drain", "nan"], "--drain"),
    (["client", "127.0.0.1:5000", "--drain", "soon"], "--drain"),
    (["perf", "--rounds", "0"], "--rounds"),
    (["perf", "--rounds", "-2"], "--rounds"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_numbers_exit_2_with_one_error_line(args: list[str], named: str) -> None:
    result = run_bench(*args)
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode == 2, stderr
    assert "Traceback" not in stderr
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and named in errors[0], stderr


def test_perf_against_a_folder_that_is_no_checkout_is_one_error_line(tmp_path) -> None:
    result = run_bench("perf", "--against", str(tmp_path), "--quick", timeout=30)
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode == 2, stderr
    assert "Traceback" not in stderr
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and "--against" in errors[0] and "not a checkout" in errors[0], stderr


@pytest.mark.parametrize("args, named", [
    (["serve", "nosuchbackend"], "nosuchbackend"),
    (["serve", "asyncio", "--max-line", "-5"], "--max-line"),
    (["serve", "asyncio", "--max-line", "0"], "--max-line"),
    (["serve", "asyncio", "--port", "abc"], "abc"),
    (["serve", "asyncio", "--port", "70000"], "--port"),
    (["serve", "asyncio", "--idle-timeout", "-1"], "--idle-timeout"),
    (["serve", "asyncio", "--max-clients", "many"], "--max-clients"),
    (["serve", "asyncio", "--mode", "shout"], "--mode"),
    (["serve", "asyncio", "--no-such-flag"], "--no-such-flag"),
    (["serve"], "BACKEND"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_serve_bad_flags_exit_2_with_one_error_line(args: list[str], named: str) -> None:
    result = run_bench(*args, "--quiet", timeout=10)
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode == 2, stderr
    assert "Traceback" not in stderr
    errors = error_lines(result.stderr)
    assert len(errors) == 1, stderr
    assert named in errors[0], stderr
    assert result.stdout == b"", "nothing may reach stdout (no READY) on a usage error"


@pytest.mark.parametrize("args, named", [
    (["serve", "gevent", "--bogus"], "--bogus"),
    (["serve", "gevent", "--selector", "poll"], "--selector"),
    (["serve", "asyncio", "--selector", "epoll"], "--selector"),
    (["serve", "select", "--loop", "uvloop"], "--loop"),
    (["serve", "gevent-callback", "--loop", "asyncio"], "--loop"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_serve_usage_errors_name_the_subcommand(args: list[str], named: str) -> None:
    """Unknown flags, and a backend's own option given to another backend, are usage
    errors of `bench serve`, said as such (never silently ignored)."""
    result = run_bench(*args, "--port", "0", "--quiet", timeout=10)
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode == 2, stderr
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and errors[0].startswith("bench serve: error:"), stderr
    assert named in errors[0], stderr
    assert result.stdout == b""


def test_serve_unresolvable_host_is_one_line() -> None:
    result = run_bench("serve", "asyncio", "--host", "no-such-host.invalid", "--port", "0", "--quiet")
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode != 0
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert "no-such-host.invalid" in stderr


def test_client_piped_last_line_without_newline_is_sent(serve) -> None:
    server = serve("select")
    result = run_bench("client", f"{server.host}:{server.port}", stdin=b"one\ntwo")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"one\ntwo\n"


def test_client_says_when_the_server_closes(serve) -> None:
    # stdin stays open: the server, not the end of input, ends the session
    server = serve("select", "--max-line", "4")
    proc = subprocess.Popen(bench_command("client", f"{server.host}:{server.port}"),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        proc.stdin.write(b"way too long\n")
        proc.stdin.flush()
        proc.wait(timeout=10)  # not communicate(): that would close stdin
        out, err = proc.stdout.read(), proc.stderr.read()
    finally:
        proc.kill()
        proc.stdin.close()
    assert proc.returncode == 0, err
    assert out == b"ERR line too long\n"
    assert "connection closed by the server" in err.decode()
    assert b"Traceback" not in err


def test_version_flag_prints_the_version() -> None:
    from importlib.metadata import version

    result = run_bench("--version")
    assert result.returncode == 0, result.stderr
    assert version("sockbench") in result.stdout.decode()


@pytest.mark.parametrize("command", ["compare", "reliability"])
def test_backend_lists_have_one_syntax(command: str) -> None:
    from bench.cli import build_parser

    args = build_parser().parse_args([command, "--backends", "select,gevent"])
    assert tuple(args.backends) == ("select", "gevent")


def test_reliability_leaves_out_uvloop_when_it_is_not_installed(tmp_path) -> None:
    """``pip install -e .`` brings no uvloop: the default matrix then leaves the
    asyncio+uvloop column out with one line, instead of a column of failures."""
    shim = tmp_path / "uvloop"
    shim.mkdir()
    (shim / "__init__.py").write_text("raise ImportError('uvloop is not installed here')\n")
    code = "from bench.reliability.command import default_backends; print(','.join(default_backends()))"
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["blocking,threading,select,gevent,asyncio,gevent-callback"]
    assert result.stderr.strip() == \
        "bench reliability: asyncio+uvloop left out: uvloop is not installed (pip install uvloop)"
