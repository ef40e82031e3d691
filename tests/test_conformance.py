"""The conformance suite: every backend, as a real ``bench serve`` subprocess on port 0,
must pass the same tests of the wire contract (issue 3).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from bench.loadgen.sequence import format_line, parse_line
from bench.reliability.faults import read_until_eof
from conftest import (
    LineReader,
    bench_command,
    connect,
    nothing_arrives,
    reset,
    wait_until,
)

pytestmark = pytest.mark.timeout(30)

ONE_AT_A_TIME = "the blocking backend serves one client at a time"
SYNC = b"sync "  # prefix of the lines join_room uses; readers skip them


def skip_blocking(backend: str) -> None:
    if backend == "blocking":
        pytest.skip(ONE_AT_A_TIME)


def echoes(reader: LineReader, line: bytes) -> bool:
    """Send ``line`` and return whether exactly it came back."""
    reader.sock.sendall(line)
    return reader.line() == line


def join_room(address: tuple[str, int], n: int,
              rcvbufs: dict[int, int] | None = None) -> list[LineReader]:
    """Connect ``n`` clients to a broadcast server and prove each one has joined.

    Client k > 0 sends ``sync k`` until client 0 receives it: a line is only routed
    once its sender has joined, and only reaches receivers that have joined, so after
    the loop every client is in the room. Every reader skips the sync lines.

    Args:
        rcvbufs: SO_RCVBUF per client index, for clients meant to fall behind.
    """
    rcvbufs = rcvbufs or {}
    readers = [LineReader(connect(address, rcvbuf=rcvbufs.get(i))) for i in range(n)]
    anchor = readers[0]
    anchor.sock.settimeout(0.5)
    for k in range(1, n):
        want = SYNC + b"%d\n" % k
        deadline = time.monotonic() + 10
        while True:
            readers[k].sock.sendall(want)
            try:
                while anchor.line() != want:
                    pass
                break
            except socket.timeout:
                # Only possible while client 0 itself has not joined yet: try again.
                assert time.monotonic() < deadline, f"client {k} never reached client 0"
    anchor.sock.settimeout(5.0)
    for reader in readers:
        reader.skip = SYNC
    return readers


def eventually_served(address: tuple[str, int], timeout: float = 5.0) -> bool:
    """Whether a new client gets its line echoed within ``timeout``, retrying while the
    server answers ``ERR server full`` (it notices earlier closes on its own time; there
    is no reply to await for that)."""

    def served() -> bool:
        reader = LineReader(connect(address))
        try:
            reader.sock.sendall(b"anyone\n")
            line = reader.line()
        except (EOFError, ConnectionError):
            line = b""
        finally:
            reader.sock.close()
        assert line in (b"anyone\n", b"ERR server full\n", b""), line
        return line == b"anyone\n"

    return wait_until(served, timeout)


def numbered_lines(sender: int, count: int, width: int = 40) -> list[bytes]:
    """``count`` distinct sequenced lines from ``sender`` (:mod:`bench.loadgen.sequence`),
    each ``width`` bytes plus the newline."""
    return [format_line(b"%d" % sender, seq, 0, width + 1) for seq in range(count)]


def parse(line: bytes) -> tuple[int, int]:
    """(sender, seq) of a line made by :func:`numbered_lines`."""
    sender, seq, _ = parse_line(line)
    return int(sender), seq


# --- echo -----------------------------------------------------------------------------

def test_echo(serve, backend) -> None:
    server = serve(backend)
    reader = LineReader(connect(server.address))
    assert echoes(reader, b"hello\n")
    assert echoes(reader, b"hello again\r\n")
    assert echoes(reader, b"\n")


def test_echo_binary_bytes(serve, backend) -> None:
    server = serve(backend)
    reader = LineReader(connect(server.address))
    payload = bytes(b for b in range(256) if b != 0x0A) + b"\r\n"
    assert echoes(reader, payload)
    assert echoes(reader, b"\x00\xff\x00\xfe\n")


def test_line_split_across_several_writes(serve, backend) -> None:
    server = serve(backend)
    reader = LineReader(connect(server.address))
    sock = reader.sock
    sock.sendall(b"hel")
    assert nothing_arrives(sock, 0.2), "an unfinished line must not be echoed"
    sock.sendall(b"lo\r")
    sock.sendall(b"\nsec")
    assert reader.line() == b"hello\r\n"
    sock.sendall(b"ond ")
    sock.sendall(b"line\n")
    assert reader.line() == b"second line\n"


def test_many_lines_in_one_write(serve, backend) -> None:
    server = serve(backend)
    reader = LineReader(connect(server.address))
    data = b"".join(numbered_lines(0, 2000))
    reader.sock.sendall(data)
    assert reader.exactly(len(data)) == data


def test_echo_large_volume_with_back_pressure(serve, backend) -> None:
    """4 MiB written while reading: echo mode slows the writer, never drops it."""
    server = serve(backend)
    reader = LineReader(connect(server.address))
    data = b"".join(numbered_lines(0, 40000, width=100))
    with ThreadPoolExecutor(1) as pool:
        sending = pool.submit(reader.sock.sendall, data)
        assert reader.exactly(len(data)) == data
        sending.result()


def test_fifty_concurrent_clients(serve, backend) -> None:
    skip_blocking(backend)
    server = serve(backend)
    readers = [LineReader(connect(server.address)) for _ in range(50)]
    for rnd in range(5):
        for i, reader in enumerate(readers):
            reader.sock.sendall(b"client %d round %d\n" % (i, rnd))
        for i, reader in enumerate(readers):
            assert reader.line() == b"client %d round %d\n" % (i, rnd)


def test_blocking_serves_one_client_at_a_time(serve) -> None:
    server = serve("blocking")
    first = LineReader(connect(server.address))
    assert echoes(first, b"first\n")
    second = LineReader(connect(server.address))  # accepted into the backlog only
    second.sock.sendall(b"second\n")
    assert nothing_arrives(second.sock, 0.3), "second client was served while the first was connected"
    assert echoes(first, b"first still served\n")
    first.sock.close()
    assert second.line() == b"second\n"


# --- broadcast ------------------------------------------------------------------------

def test_broadcast_lone_client_gets_nothing_back(serve, backend) -> None:
    server = serve(backend, "--mode", "broadcast")
    sock = connect(server.address)
    sock.sendall(b"anyone there?\n")
    assert nothing_arrives(sock, 0.3), "a sender must not receive its own line"


def test_broadcast_fan_out_and_per_sender_order(serve, backend) -> None:
    """5 clients, 3 of them sending 2000 lines each at once: every receiver gets every
    other sender's lines, all of them, each sender's in order, and never its own."""
    skip_blocking(backend)
    server = serve(backend, "--mode", "broadcast")
    readers = join_room(server.address, 5)
    senders, per_sender = 3, 2000
    sent = {i: numbered_lines(i, per_sender) for i in range(senders)}

    def send(i: int) -> None:
        lines = sent[i]
        for start in range(0, per_sender, 100):  # many writes, so senders interleave
            readers[i].sock.sendall(b"".join(lines[start:start + 100]))

    def receive(j: int) -> dict[int, list[int]]:
        expected = per_sender * (senders - (1 if j < senders else 0))
        by_sender: dict[int, list[int]] = {}
        for line in readers[j].lines(expected):
            sender, seq = parse(line)
            by_sender.setdefault(sender, []).append(seq)
        return by_sender

    with ThreadPoolExecutor(len(readers) + senders) as pool:
        receiving = [pool.submit(receive, j) for j in range(len(readers))]
        sending = [pool.submit(send, i) for i in range(senders)]
        for future in sending:
            future.result()
        results = [future.result() for future in receiving]
    for j, by_sender in enumerate(results):
        assert j not in by_sender, f"client {j} received its own lines"
        assert sorted(by_sender) == [i for i in range(senders) if i != j]
        for i, seqs in by_sender.items():
            assert seqs == list(range(per_sender)), f"client {j}: sender {i}'s lines lost or reordered"


def test_slow_consumer_is_cut_while_a_reader_gets_everything(serve, backend) -> None:
    """A client that never reads is dropped once 64 KiB are queued for it; a client that
    keeps up receives every line. The sender waits for the reading client after each
    16 KiB batch, so the reader is never far behind and the room never stalls."""
    skip_blocking(backend)
    server = serve(backend, "--mode", "broadcast", "--max-output-buffer", "65536")
    sender, fast, slow = join_room(server.address, 3, rcvbufs={2: 4096})
    # ~6 MB: past 64 KiB + the most the kernel may buffer (tcp_wmem max is 4 MiB here).
    lines = numbered_lines(0, 6000, width=1000)
    batch = 16
    for start in range(0, len(lines), batch):
        chunk = lines[start:start + batch]
        sender.sock.sendall(b"".join(chunk))
        assert fast.lines(len(chunk)) == chunk, "the reading client lost or reordered lines"
    try:
        got = slow.drain()  # ends at EOF or reset; a timeout means it was never cut
    except socket.timeout:
        pytest.fail("the client that never read was not disconnected")
    got = b"".join(line for line in got.splitlines(keepends=True) if not line.startswith(SYNC))
    data = b"".join(lines)
    assert len(got) < len(data), "the client that never read was sent everything"
    assert data.startswith(got), "the slow client received corrupted data before the cut"


def test_client_reset_mid_broadcast_does_not_disturb_others(serve, backend) -> None:
    skip_blocking(backend)
    server = serve(backend, "--mode", "broadcast")
    sender, resetter, *others = join_room(server.address, 5)
    lines = numbered_lines(0, 2000, width=60)
    with ThreadPoolExecutor(len(others)) as pool:
        receiving = [pool.submit(r.lines, len(lines)) for r in others]
        sender.sock.sendall(b"".join(lines[:1000]))
        resetter.lines(100)
        resetter.sock.sendall(b"half a li")  # it dies with an unfinished line, too
        reset(resetter.sock)
        sender.sock.sendall(b"".join(lines[1000:]))
        for future in receiving:
            assert future.result() == lines
    # The room still works after the reset.
    others[0].sock.sendall(b"after\n")
    assert sender.line() == b"after\n"


# --- limits ---------------------------------------------------------------------------

@pytest.mark.parametrize("payload", [b"x" * 1024 + b"\n", b"x" * 1024],
                         ids=["one-over-with-newline", "unterminated-at-limit"])
def test_over_long_line_is_refused_and_others_unaffected(serve, backend, payload) -> None:
    server = serve(backend, "--max-line", "1024")
    offender = LineReader(connect(server.address))
    assert echoes(offender, b"x" * 1023 + b"\n"), "a line of exactly --max-line must pass"
    bystander = LineReader(connect(server.address))
    if backend != "blocking":
        assert echoes(bystander, b"before\n")
    offender.sock.sendall(payload)
    assert offender.line() == b"ERR line too long\n"
    assert offender.at_eof(), "the server must close after ERR line too long"
    # For blocking, the bystander is served only now that the offender is gone.
    assert echoes(bystander, b"still here\n")


@pytest.mark.parametrize("chunks, max_line, good", [
    ([b"ok\nabcdef\n"], 4, b"ok\n"),
    ([b"ok\n", b"abcdef\n"], 4, b"ok\n"),
    ([b"ok\nab\nabcd"], 4, b"ok\nab\n"),
    ([b"hello\n" + b"A" * 70000 + b"\n"], 65536, b"hello\n"),
], ids=["same-write", "two-writes", "unterminated-tail", "one-big-write"])
def test_lines_before_an_over_long_one_are_echoed_first(serve, variant, chunks, max_line, good) -> None:
    """Every complete line before the offending bytes comes back before the ERR line,
    whether or not TCP delivered them in the same read."""
    server = serve(variant, "--max-line", str(max_line))
    reader = LineReader(connect(server.address))
    for chunk in chunks:
        reader.sock.sendall(chunk)
    assert reader.drain() == good + b"ERR line too long\n"


def test_lines_before_an_over_long_one_are_relayed_first(serve, variant) -> None:
    skip_blocking(variant)
    server = serve(variant, "--mode", "broadcast", "--max-line", "8")  # room for the sync lines
    offender, other = join_room(server.address, 2)
    offender.sock.sendall(b"ok\n" + b"x" * 9 + b"\n")
    assert other.line() == b"ok\n", "the line before the over-long one was not relayed"
    assert offender.drain() == b"ERR line too long\n"
    assert nothing_arrives(other.sock, 0.2), "bytes of the over-long line were relayed"


def test_server_full_and_a_freed_slot(serve, backend) -> None:
    skip_blocking(backend)
    server = serve(backend, "--max-clients", "2")
    first = LineReader(connect(server.address))
    second = LineReader(connect(server.address))
    assert echoes(first, b"one\n") and echoes(second, b"two\n")  # both admitted
    third = LineReader(connect(server.address))
    assert third.line() == b"ERR server full\n"
    assert third.at_eof()
    assert echoes(first, b"one still served\n")
    first.sock.close()

    assert eventually_served(server.address), "a freed slot was never reused"
    assert echoes(second, b"two still served\n")


def test_server_full_refusals_are_logged(serve, variant) -> None:
    skip_blocking(variant)
    server = serve(variant, "--max-clients", "1", quiet=False)
    member = LineReader(connect(server.address))
    assert echoes(member, b"in\n")
    extra = LineReader(connect(server.address))
    peer = "%s:%d" % extra.sock.getsockname()[:2]
    assert extra.drain() == b"ERR server full\n"
    assert wait_until(lambda: f"client {peer} refused (server full)" in server.stderr(), 5.0), \
        server.stderr()


def test_server_full_reaches_a_client_that_spoke_first(serve, variant) -> None:
    """A client that sends a line as soon as it connects (as ``nc`` does with piped
    input) reads ``ERR server full`` and then EOF, not a reset: closing a socket with
    that line unread sends RST, and clients such as ``nc`` stop reading at the reset,
    so the ERR line never shows."""
    skip_blocking(variant)
    server = serve(variant, "--max-clients", "1")
    member = LineReader(connect(server.address))
    assert echoes(member, b"in\n")
    for _ in range(3):
        extra = connect(server.address)
        extra.sendall(b"let me in\n")
        time.sleep(0.3)  # let the refusal (and any reset) arrive before reading
        got, how = read_until_eof(extra)
        assert (got, how) == (b"ERR server full\n", "eof")
    assert echoes(member, b"still in\n")


def test_disconnect_reasons_are_worded_alike(serve, variant) -> None:
    """The same event is logged with the same words on every backend: here an echo
    client that sends and never reads, cut by the idle timeout, and an over-long line."""
    server = serve(variant, "--idle-timeout", "0.5", "--max-line", "100", quiet=False)
    flood = connect(server.address, rcvbuf=4096)
    peer = "%s:%d" % flood.getsockname()[:2]
    flood.setblocking(False)
    block = b"r" * 99 + b"\n"
    try:
        while True:  # until the server stops reading (it cannot send the replies)
            flood.send(block * 100)
    except (BlockingIOError, OSError):
        pass
    assert wait_until(lambda: f"client {peer} disconnected (idle timeout)" in server.stderr(), 10.0), \
        server.stderr()[-2000:]
    reset(flood)
    offender = LineReader(connect(server.address))
    peer = "%s:%d" % offender.sock.getsockname()[:2]
    offender.sock.sendall(b"x" * 200 + b"\n")
    assert offender.drain() == b"ERR line too long\n"
    assert wait_until(lambda: f"client {peer} disconnected (line too long)" in server.stderr(), 5.0), \
        server.stderr()[-2000:]


def test_idle_timeout(serve, backend) -> None:
    server = serve(backend, "--idle-timeout", "0.5")
    reader = LineReader(connect(server.address))
    assert echoes(reader, b"ping\n")
    last_input = time.monotonic()
    assert reader.line() == b"ERR idle timeout\n"
    waited = time.monotonic() - last_input
    assert reader.at_eof()
    assert 0.4 <= waited < 3.0, f"idle timeout of 0.5 s struck after {waited:.2f} s"


def test_input_postpones_the_idle_timeout(serve, backend) -> None:
    server = serve(backend, "--idle-timeout", "0.6")
    reader = LineReader(connect(server.address))
    for _ in range(2):  # 0.35 s apart: the client is never idle for 0.6 s
        assert echoes(reader, b"ping\n")
        assert nothing_arrives(reader.sock, 0.35)
    last_input = time.monotonic()
    assert echoes(reader, b"ping\n")
    assert reader.line() == b"ERR idle timeout\n"
    assert time.monotonic() - last_input >= 0.5


def test_line_timeout(serve, backend) -> None:
    server = serve(backend, "--line-timeout", "0.5")
    reader = LineReader(connect(server.address))
    start = time.monotonic()
    reader.sock.sendall(b"never finished")
    assert reader.line() == b"ERR line timeout\n"
    assert reader.at_eof()
    assert time.monotonic() - start >= 0.4


# --- process lifecycle ----------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_exits_0_within_2s_with_clients_connected(serve, backend, sig) -> None:
    server = serve(backend)
    readers = [LineReader(connect(server.address)) for _ in range(3)]
    assert echoes(readers[0], b"served\n")
    if backend != "blocking":
        for reader in readers[1:]:
            assert echoes(reader, b"served\n")
    readers[0].sock.sendall(b"unfinished")
    start = time.monotonic()
    server.proc.send_signal(sig)
    try:
        status = server.proc.wait(timeout=2.0)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running 2 s after {sig.name}")
    assert status == 0, f"exit status {status} after {sig.name}; stderr:\n{server.stderr()}"
    assert "Traceback" not in server.stderr()
    assert readers[0].at_eof(), "a served client must see its connection closed"
    assert time.monotonic() - start < 2.5


def test_connect_and_disconnect_are_logged_unless_quiet(serve, backend) -> None:
    server = serve(backend, quiet=False)
    reader = LineReader(connect(server.address))
    peer = "%s:%d" % reader.sock.getsockname()[:2]
    assert echoes(reader, b"hi\n")
    reader.sock.close()
    assert wait_until(lambda: f"client {peer} disconnected" in server.stderr(), timeout=5.0), \
        server.stderr()
    assert f"client {peer} connected" in server.stderr()

    quiet = serve(backend)
    reader = LineReader(connect(quiet.address))
    assert echoes(reader, b"hi\n")
    reader.sock.close()
    assert quiet.stop() == 0
    assert quiet.stderr() == ""


def test_busy_port_fails_with_one_line_naming_the_address(serve, backend) -> None:
    first = serve(backend)
    result = subprocess.run(bench_command("serve", backend, "--port", str(first.port), "--quiet"),
                            stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode != 0
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert f"127.0.0.1:{first.port}" in lines[0]
    assert result.stdout == b"", "a server that failed to bind must not print READY"
    # The first server is untouched.
    assert echoes(LineReader(connect(first.address)), b"still mine\n")


# --- backend-specific options -----------------------------------------------------------

@pytest.mark.parametrize("selector", ["select", "poll", "epoll"])
def test_select_backend_selectors(serve, selector) -> None:
    server = serve("select", "--selector", selector, "--mode", "broadcast")
    readers = join_room(server.address, 3)
    readers[0].sock.sendall(b"via %s\n" % selector.encode())
    assert readers[1].line() == readers[2].line() == b"via %s\n" % selector.encode()


@pytest.mark.timeout(60)
def test_plain_select_refuses_descriptors_past_fd_setsize(serve) -> None:
    """select() cannot watch fd >= 1024: those clients get ERR server full, no crash."""
    server = serve("select", "--selector", "select")
    readers = []
    try:
        for _ in range(1100):
            readers.append(LineReader(connect(server.address)))
        admitted = rejected = 0
        for reader in readers:
            reader.sock.sendall(b"ping\n")
        for reader in readers:
            try:
                line = reader.line()
            except (EOFError, ConnectionError):
                line = b""
            if line == b"ping\n":
                admitted += 1
            else:
                assert line in (b"ERR server full\n", b""), line
                rejected += 1
    finally:
        for reader in readers:
            reader.sock.close()
    assert admitted >= 1000 and rejected >= 1, (admitted, rejected)
    assert eventually_served(server.address), "no client was served after the others left"


def test_plain_select_warns_at_start_when_max_clients_cannot_fit(serve) -> None:
    server = serve("select", "--selector", "select", "--max-clients", "6000")
    assert "warning: --selector select cannot watch descriptors of 1024" in server.stderr()
    assert "6000" in server.stderr()
    assert serve("select", "--selector", "select", "--max-clients", "1000").stderr() == ""


def test_asyncio_uvloop(serve) -> None:
    pytest.importorskip("uvloop")
    server = serve("asyncio", "--loop", "uvloop")
    assert echoes(LineReader(connect(server.address)), b"on uvloop\n")
