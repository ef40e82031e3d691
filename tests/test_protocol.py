"""Pure tests of the wire contract in servers/protocol.py: bytes in, bytes out, no sockets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servers.protocol import (
    ERR_IDLE_TIMEOUT,
    ERR_LINE_TIMEOUT,
    ERR_LINE_TOO_LONG,
    ERR_SERVER_FULL,
    RECV_SIZE,
    Limits,
    LineTooLong,
    Mode,
    OutputBuffer,
    Reason,
    Roster,
    Session,
    error_reason,
    output_limit,
)

pytestmark = pytest.mark.timeout(60)

T0 = 1000.0  # an arbitrary monotonic clock value for "connected at"


def session(max_line: int = 16, **limits: float) -> tuple[Session, Limits]:
    lim = Limits(max_line=max_line, **limits)
    return Session(lim, T0), lim


def reference(stream: bytes, max_line: int) -> tuple[list[bytes], int | None, bytes]:
    """The contract written the slow, obvious way.

    Returns:
        (complete lines, index of the first line that breaks the limit or None, tail).
        The tail counts as breaking the limit (index ``len(lines)``) once it holds
        ``max_line`` bytes, since its newline would push it over.
    """
    *lines, tail = stream.split(b"\n")
    lines = [line + b"\n" for line in lines]
    for i, line in enumerate(lines):
        if len(line) > max_line:
            return lines, i, tail
    if len(tail) >= max_line:
        return lines, len(lines), tail
    return lines, None, tail


def feed_chunks(chunks: list[bytes], max_line: int) -> tuple[bytes, bool, Session]:
    """Feed ``chunks`` in turn; return (lines delivered, whether LineTooLong struck,
    session). The lines a LineTooLong carries count as delivered: a backend relays them
    before the ERR line."""
    s, _ = session(max_line)
    out = b""
    for i, chunk in enumerate(chunks):
        try:
            out += s.feed(chunk, T0 + i)
        except LineTooLong as exc:
            return out + exc.lines, True, s
    return out, False, s


# Streams rich in newlines, CRs, NULs and 0xFF, so short lines and CRLFs are common.
pieces = st.one_of(
    st.sampled_from([b"\n", b"\r", b"\r\n", b"\x00", b"\xff", b"a", b"bc"]),
    st.binary(min_size=1, max_size=6),
)
streams = st.lists(pieces, max_size=40).map(b"".join)


@st.composite
def split_stream(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """A stream and one way to cut it into non-empty chunks."""
    stream = draw(streams)
    cuts = sorted(set(draw(st.lists(st.integers(0, len(stream)), max_size=12))))
    bounds = [0, *cuts, len(stream)]
    chunks = [stream[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]
    return stream, chunks


@settings(max_examples=400, deadline=None)
@given(split_stream(), st.integers(1, 24))
def test_any_split_yields_the_reference_output(split: tuple[bytes, list[bytes]], max_line: int) -> None:
    stream, chunks = split
    lines, bad, tail = reference(stream, max_line)
    out, too_long, s = feed_chunks(chunks, max_line)
    if bad is None:
        assert not too_long
        assert out == b"".join(lines)
        assert s.buffered == len(tail)
    else:
        # The violation is always caught, and every good line before it is delivered,
        # including those in the same read as the offending bytes.
        assert too_long
        assert out == b"".join(lines[:bad])


@settings(max_examples=400, deadline=None)
@given(streams, st.lists(st.integers(0, 300)), st.integers(1, 24))
def test_lines_before_an_over_long_one_do_not_depend_on_the_split(
        stream: bytes, cuts: list[int], max_line: int) -> None:
    """For any split of the input, the lines delivered before the ERR are the same as
    when it arrives in one read (and as byte by byte)."""
    whole = feed_chunks([stream] if stream else [], max_line)[:2]
    assert feed_chunks(cut(stream, cuts), max_line)[:2] == whole
    assert feed_chunks([bytes([c]) for c in stream], max_line)[:2] == whole


def test_good_lines_in_the_same_read_as_an_over_long_one_are_delivered() -> None:
    s, _ = session(4)
    with pytest.raises(LineTooLong) as caught:
        s.feed(b"ok\nabcdef\n", T0)
    assert caught.value.lines == b"ok\n"
    s, _ = session(4)
    s.feed(b"o", T0)
    with pytest.raises(LineTooLong) as caught:
        s.feed(b"k\nab\nabcd", T0)  # an unterminated tail already at the limit
    assert caught.value.lines == b"ok\nab\n"
    s, _ = session(65536)  # the uvloop case: one 256 KiB read
    with pytest.raises(LineTooLong) as caught:
        s.feed(b"hello\n" + b"A" * 70000 + b"\n", T0)
    assert caught.value.lines == b"hello\n"


def cut(stream: bytes, cuts: list[int]) -> list[bytes]:
    """``stream`` cut at ``cuts`` (clamped into range) into non-empty chunks."""
    bounds = [0, *sorted({min(c, len(stream)) for c in cuts}), len(stream)]
    return [stream[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


@settings(max_examples=200, deadline=None)
@given(streams, st.lists(st.integers(0, 300)), st.lists(st.integers(0, 300)))
def test_two_splits_agree(stream: bytes, cuts1: list[int], cuts2: list[int]) -> None:
    """Same stream, two splits and byte-at-a-time, generous limit: identical output."""
    one = feed_chunks(cut(stream, cuts1), 1 << 16)[0]
    two = feed_chunks(cut(stream, cuts2), 1 << 16)[0]
    by_byte = feed_chunks([bytes([c]) for c in stream], 1 << 16)[0]
    assert one == two == by_byte == stream[: stream.rfind(b"\n") + 1]


# --- the limit, exactly met and exceeded by one ------------------------------------

@pytest.mark.parametrize("max_line", [1, 2, 10, 65536])
def test_line_of_exactly_max_line_is_accepted(max_line: int) -> None:
    line = b"x" * (max_line - 1) + b"\n"
    s, _ = session(max_line)
    assert s.feed(line, T0) == line
    assert s.buffered == 0


@pytest.mark.parametrize("max_line", [1, 2, 10, 65536])
def test_line_one_over_max_line_is_rejected(max_line: int) -> None:
    s, _ = session(max_line)
    with pytest.raises(LineTooLong):
        s.feed(b"x" * max_line + b"\n", T0)


@pytest.mark.parametrize("max_line", [2, 10, 65536])
def test_limit_met_and_exceeded_across_chunks(max_line: int) -> None:
    s, _ = session(max_line)
    assert s.feed(b"x" * (max_line - 1), T0) == b""
    assert s.buffered == max_line - 1
    assert s.feed(b"\n", T0) == b"x" * (max_line - 1) + b"\n"

    s, _ = session(max_line)
    assert s.feed(b"x" * (max_line - 1), T0) == b""
    with pytest.raises(LineTooLong):
        s.feed(b"x\n", T0)


@pytest.mark.parametrize("max_line", [1, 2, 10, 65536])
def test_unterminated_partial_of_max_line_is_rejected(max_line: int) -> None:
    """A partial holding max_line bytes can never end legally: its newline would make
    it max_line + 1. The buffer never grows past the limit."""
    s, _ = session(max_line)
    if max_line > 1:
        assert s.feed(b"x" * (max_line - 1), T0) == b""
        assert s.buffered == max_line - 1
        with pytest.raises(LineTooLong):
            s.feed(b"x", T0)
    s, _ = session(max_line)
    with pytest.raises(LineTooLong):
        s.feed(b"x" * max_line, T0)


def test_unterminated_tail_after_good_lines_is_rejected() -> None:
    s, _ = session(4)
    with pytest.raises(LineTooLong):
        s.feed(b"ab\nabcd", T0)
    s, _ = session(4)
    assert s.feed(b"ab\nabc", T0) == b"ab\n"
    assert s.buffered == 3


def test_long_line_in_the_middle_of_a_chunk_is_rejected() -> None:
    s, _ = session(4)
    with pytest.raises(LineTooLong):
        s.feed(b"ab\nabcdef\nab\n", T0)


def test_many_full_lines_in_one_chunk_longer_than_the_limit() -> None:
    s, _ = session(4)
    data = b"abc\n" * 100
    assert s.feed(data, T0) == data


# --- framing ------------------------------------------------------------------------

def test_crlf_split_across_chunks_is_relayed_verbatim() -> None:
    s, _ = session()
    assert s.feed(b"hello\r", T0) == b""
    assert s.feed(b"\nwor", T0) == b"hello\r\n"
    assert s.feed(b"ld\r", T0) == b""
    assert s.feed(b"\n", T0) == b"world\r\n"


def test_bare_cr_is_not_a_terminator() -> None:
    s, _ = session()
    assert s.feed(b"a\rb\r", T0) == b""
    assert s.feed(b"\n", T0) == b"a\rb\r\n"


def test_binary_bytes_are_relayed_verbatim() -> None:
    payload = bytes(b for b in range(256) if b != 0x0A) + b"\r\n"
    s, _ = session(max_line=len(payload))
    assert s.feed(payload, T0) == payload
    s, _ = session(max_line=len(payload))
    out = b"".join(s.feed(payload[i:i + 7], T0) for i in range(0, len(payload), 7))
    assert out == payload
    s, _ = session()
    assert s.feed(b"\x00\xff\x00\n\xff\n", T0) == b"\x00\xff\x00\n\xff\n"


def test_empty_lines_are_lines() -> None:
    s, _ = session()
    assert s.feed(b"\n\n\r\n", T0) == b"\n\n\r\n"


# --- timeouts, with explicit clock values -------------------------------------------

def test_idle_timeout_strikes_exactly_at_the_deadline() -> None:
    s, lim = session(idle_timeout=5.0, line_timeout=0)
    assert s.next_deadline(lim) == T0 + 5.0
    assert s.expired(lim, T0 + 4.999) is None
    assert s.expired(lim, T0 + 5.0) == Reason.IDLE_TIMEOUT


def test_input_resets_the_idle_clock() -> None:
    s, lim = session(idle_timeout=5.0, line_timeout=0)
    s.feed(b"hi\n", T0 + 3.0)
    assert s.expired(lim, T0 + 7.9) is None
    assert s.next_deadline(lim) == T0 + 8.0
    assert s.expired(lim, T0 + 8.0) == Reason.IDLE_TIMEOUT
    # A partial line is input too.
    s.feed(b"x", T0 + 7.0)
    assert s.expired(lim, T0 + 11.9) is None


def test_line_timeout_runs_from_the_start_of_the_unfinished_line() -> None:
    s, lim = session(idle_timeout=0, line_timeout=2.0)
    assert s.next_deadline(lim) is None  # nothing unfinished, idle off
    s.feed(b"slow", T0 + 1.0)
    s.feed(b"er", T0 + 2.5)  # more bytes do not restart the line clock
    assert s.next_deadline(lim) == T0 + 3.0
    assert s.expired(lim, T0 + 2.99) is None
    assert s.expired(lim, T0 + 3.0) == Reason.LINE_TIMEOUT
    s.feed(b"\n", T0 + 2.9)  # finishing the line stops it
    assert s.line_started is None
    assert s.expired(lim, T0 + 100) is None


def test_a_new_tail_restarts_the_line_clock() -> None:
    s, lim = session(idle_timeout=0, line_timeout=2.0)
    s.feed(b"a", T0)
    s.feed(b"\nb", T0 + 1.5)  # line done, a new one starts now
    assert s.next_deadline(lim) == T0 + 3.5


def test_earliest_deadline_wins() -> None:
    s, lim = session(idle_timeout=10.0, line_timeout=2.0)
    s.feed(b"a", T0 + 1.0)
    assert s.next_deadline(lim) == T0 + 3.0
    assert s.expired(lim, T0 + 3.0) == Reason.LINE_TIMEOUT
    s, lim = session(idle_timeout=1.0, line_timeout=2.0)
    s.feed(b"a", T0)
    assert s.next_deadline(lim) == T0 + 1.0
    assert s.expired(lim, T0 + 1.0) == Reason.IDLE_TIMEOUT


def test_zero_turns_timeouts_off() -> None:
    s, lim = session(idle_timeout=0, line_timeout=0)
    s.feed(b"partial", T0)
    assert s.next_deadline(lim) is None
    assert s.expired(lim, T0 + 1e9) is None
    assert lim.sweep_interval == 1.0


@pytest.mark.parametrize("idle, line, expected", [
    (300.0, 30.0, 1.0), (0.5, 0, 0.05), (0, 0.2, 0.05), (2.0, 5.0, 0.2), (0.01, 0, 0.05)])
def test_sweep_interval_is_a_tenth_of_the_shortest_timeout_clamped(idle, line, expected) -> None:
    assert Limits(idle_timeout=idle, line_timeout=line).sweep_interval == pytest.approx(expected)


@pytest.mark.parametrize("kwargs", [dict(max_line=0), dict(max_clients=0), dict(max_output_buffer=0),
                                    dict(idle_timeout=-1), dict(line_timeout=-0.5)])
def test_limits_reject_nonsense(kwargs) -> None:
    with pytest.raises(ValueError):
        Limits(**kwargs)


# --- output buffers -----------------------------------------------------------------

def test_output_buffer_accepts_up_to_its_limit_and_refuses_past_it() -> None:
    buf = OutputBuffer(10)
    assert buf.push(b"12345")
    assert buf.push(b"67890")  # exactly at the limit
    assert len(buf) == 10
    assert not buf.push(b"x")  # one past: refused, nothing queued
    assert len(buf) == 10
    assert bytes(buf.view()) == b"1234567890"


def test_output_buffer_refuses_a_single_oversized_push() -> None:
    buf = OutputBuffer(4)
    assert not buf.push(b"12345")
    assert len(buf) == 0


def test_output_buffer_consume_frees_room() -> None:
    buf = OutputBuffer(6)
    assert buf.push(b"abcdef")
    view = buf.view()
    assert bytes(view[:4]) == b"abcd"
    view.release()
    buf.consume(4)
    assert bytes(buf.view()) == b"ef"
    assert buf.push(b"ghij")
    assert not buf.push(b"k")
    buf.consume(6)
    assert len(buf) == 0


def test_output_limit_by_mode() -> None:
    lim = Limits(max_line=100, max_output_buffer=5000)
    assert output_limit(lim, Mode.BROADCAST) == 5000
    assert output_limit(lim, Mode.ECHO) == 100 + RECV_SIZE


# --- the roster ---------------------------------------------------------------------

def test_roster_full_and_a_freed_slot() -> None:
    roster: Roster[str] = Roster(2)
    assert roster.join("a") and roster.join("b")
    assert not roster.join("c")
    assert len(roster) == 2 and list(roster) == ["a", "b"]
    roster.leave("a")
    assert roster.join("c")
    assert list(roster) == ["b", "c"]


def test_roster_leave_is_harmless_twice_or_for_strangers() -> None:
    roster: Roster[str] = Roster(2)
    roster.join("a")
    roster.leave("a")
    roster.leave("a")
    roster.leave("never")
    assert len(roster) == 0


def test_roster_recipients() -> None:
    roster: Roster[object] = Roster(10)
    a, b, c = object(), object(), object()
    for client in (a, b, c):
        roster.join(client)
    assert roster.recipients(b, Mode.ECHO) == [b]
    assert roster.recipients(b, Mode.BROADCAST) == [a, c]  # join order, sender excluded
    roster.leave(a)
    assert roster.recipients(b, Mode.BROADCAST) == [c]
    assert roster.recipients(b, Mode.BROADCAST) == [c]


def test_roster_expired_sweeps_struck_clients_and_skips_leaving_ones() -> None:
    lim = Limits(idle_timeout=5.0, line_timeout=2.0)

    class Client:
        def __init__(self) -> None:
            self.session: Session | None = Session(lim, T0)
            self.reason = ""

    roster: Roster[Client] = Roster(10, lim)
    idle, dribbler, leaving, gone, fresh = (Client() for _ in range(5))
    for client in (idle, dribbler, leaving, gone, fresh):
        roster.join(client)
    dribbler.session.feed(b"unfinished", T0 + 3.0)
    fresh.session.feed(b"x\n", T0 + 4.0)
    leaving.reason = Reason.SLOW_CONSUMER
    gone.session = None
    assert roster.expired(T0 + 4.9) == []
    assert roster.expired(T0 + 5.0) == [(idle, Reason.IDLE_TIMEOUT), (dribbler, Reason.LINE_TIMEOUT)]
    assert Roster(10).expired(T0 + 1e9) == []  # no limits: nothing ever expires


def test_reasons_and_their_replies() -> None:
    assert Reason.LINE_TOO_LONG.reply == ERR_LINE_TOO_LONG == b"ERR line too long\n"
    assert Reason.SERVER_FULL.reply == ERR_SERVER_FULL
    assert Reason.IDLE_TIMEOUT.reply == ERR_IDLE_TIMEOUT
    assert Reason.LINE_TIMEOUT.reply == ERR_LINE_TIMEOUT
    for silent in (Reason.CLOSED, Reason.SLOW_CONSUMER, Reason.SERVER_STOPPING):
        assert silent.reply is None
    assert f"{Reason.SLOW_CONSUMER}" == "slow consumer: output buffer full"
    assert error_reason(ConnectionResetError(104, "Connection reset by peer")) == \
        "error: Connection reset by peer"


def test_roster_iteration_is_a_snapshot() -> None:
    roster: Roster[str] = Roster(10)
    for name in "abc":
        roster.join(name)
    for name in roster:
        roster.leave(name)  # leaving while iterating must not break the loop
    assert len(roster) == 0
