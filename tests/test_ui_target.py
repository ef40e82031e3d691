"""``bench ui`` says at start what it is pointed at: ``--target`` where nothing listens is
one warning line (and the UI starts anyway: the server may come later), a server that
answers is named echo or broadcast, and the load engine the users run is named (with the
reason when it is the pure-Python one). Real ``bench ui`` and ``bench serve`` processes.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bench.loadgen import engine

try:
    from tests.uiproc import UiProcess, free_port
except ImportError:  # pytest run from inside tests/
    from uiproc import UiProcess, free_port

pytestmark = pytest.mark.timeout(120)

# bench ui prints its target, users and engine lines right after the URL
LINES_TIMEOUT_S = 10.0


def ui_output(args: list[str], tmp_path: Path) -> tuple[list[str], str, int]:
    """Start ``bench ui ARGS``, read its stdout up to the engine line, stop it:
    (stdout lines, stderr, exit status)."""
    ui = UiProcess([*args, "--web-port", str(free_port())], tmp_path)
    try:
        deadline = time.monotonic() + LINES_TIMEOUT_S
        while not any(line.startswith("load engine:") for line in ui.lines):
            line = ui._line(deadline)
            if line is None:
                pytest.fail(f"no load engine line; stdout {ui.lines!r}; stderr:\n{ui.stderr()}")
            ui.lines.append(line)
    except BaseException:
        ui.kill()
        raise
    status = ui.stop()
    return ui.lines, ui.stderr(), status


def test_target_where_nothing_listens_warns_once_and_starts(tmp_path, monkeypatch):
    monkeypatch.setenv("SOCKBENCH_ENGINE", "python")
    port = free_port()
    lines, stderr, status = ui_output(["--target", f"127.0.0.1:{port}"], tmp_path)
    assert status == 0, stderr
    warnings = [line for line in stderr.splitlines() if f"127.0.0.1:{port}" in line]
    assert len(warnings) == 1, stderr
    assert warnings[0].startswith("warning: --target") and "refused" in warnings[0]
    assert "Traceback" not in stderr
    assert any(line.startswith("target: server at") and "not answering" in line for line in lines), lines
    [engine_line] = [line for line in lines if line.startswith("load engine:")]
    assert "pure-Python" in engine_line and "SOCKBENCH_ENGINE=python" in engine_line


def test_target_server_mode_and_engine_are_named(serve, tmp_path):
    server = serve("gevent", "--mode", "broadcast")
    lines, stderr, status = ui_output(["--target", f"{server.host}:{server.port}"], tmp_path)
    assert status == 0, stderr
    assert "warning" not in stderr, stderr
    assert any(line.startswith("target: server at") and "(broadcast)" in line for line in lines), lines
    [users] = [line for line in lines if line.startswith("users:")]
    assert "BroadcastUser runs" in users and "EchoUser users stand aside" in users
    [engine_line] = [line for line in lines if line.startswith("load engine:")]
    assert engine_line.startswith("load engine: native" if engine.available() else "load engine: pure-Python")
