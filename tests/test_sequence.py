"""bench.loadgen.sequence: the sequenced broadcast line and per-sender gap/order counts (pure)."""

from __future__ import annotations

import pytest

from bench.loadgen.sequence import OUT_OF_ORDER, SequenceCheck, format_line, parse_line


def test_a_line_has_the_size_asked_for_and_parses_back() -> None:
    line = format_line(b"ab.1", 42, 1_700_000_000_123_456, 64)
    assert len(line) == 64 and line.endswith(b"\n")
    assert parse_line(line) == (b"ab.1", 42, 1_700_000_000_123_456)
    assert parse_line(line.rstrip(b"\n")) == (b"ab.1", 42, 1_700_000_000_123_456)


def test_a_head_longer_than_the_size_is_kept_whole() -> None:
    line = format_line(b"sender", 123456, 987654321, 8)
    assert parse_line(line)[:2] == (b"sender", 123456) and line.endswith(b"\n")


@pytest.mark.parametrize("bad", [b"J 3", b"sync 1", b"a b c d", b""])
def test_other_lines_are_not_sequenced_lines(bad: bytes) -> None:
    with pytest.raises(ValueError):
        parse_line(bad)


def test_gaps_duplicates_and_reordering_per_sender() -> None:
    check = SequenceCheck()  # joined mid-stream: the first line of a sender sets its baseline
    assert [check.see(b"a", s) for s in (7, 8, 11)] == [0, 0, 2]
    assert check.see(b"a", 11) == OUT_OF_ORDER  # a duplicate
    assert check.see(b"a", 9) == OUT_OF_ORDER   # older than one already received
    assert check.see(b"b", 1) == 0              # senders are counted apart
    assert (check.lost, check.out_of_order) == (2, 2)


def test_from_the_first_line_a_late_start_and_a_missing_tail_count_as_lost() -> None:
    check = SequenceCheck(first_seq=0)
    assert check.see(b"a", 2) == 2       # lines 0 and 1 never came
    assert check.missing(b"a", sent=5) == 2  # nor did 3 and 4
    assert check.missing(b"b", sent=3) == 3  # nothing at all from b
    assert check.lost == 2
