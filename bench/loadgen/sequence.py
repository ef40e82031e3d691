"""The sequenced broadcast line, and counting what a receiver missed. Pure: no sockets,
no clocks, no gevent; safe to import from the supervisor and the tests.

A sequenced line is ``"<sender> <seq> <send-time-us> <padding>\\n"``: ``sender`` is any
token without spaces, ``seq`` counts that sender's lines (each one more than the last),
``send-time-us`` is the sender's wall clock in microseconds (so a receiver on the same
machine can time the delivery), and ``x`` padding fills the line to the size asked for.

A *probe line* is ``"sockbench-probe <token>\\n"``: what a Locust process sends once at
test start to learn whether the server echoes or broadcasts
(:mod:`bench.loadgen.server_mode`). Every broadcast receiver ignores probe lines (they
are neither deliveries nor protocol errors); the native engine (``_loop.c``) checks the
same prefix.

Used by the Locust broadcast user (:mod:`bench.loadgen.users`), the broadcast soak
(:mod:`bench.reliability.soak`) and the conformance tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def format_line(sender: bytes, seq: int, sent_us: int, size: int) -> bytes:
    """One sequenced line of ``size`` bytes, newline included (longer if the head alone
    is longer than ``size``)."""
    head = b"%s %d %d " % (sender, seq, sent_us)
    return head + b"x" * max(size - len(head) - 1, 0) + b"\n"


def parse_line(line: bytes) -> tuple[bytes, int, int]:
    """(sender, seq, send time in µs) of a sequenced line (with or without its newline).

    Raises:
        ValueError: not a sequenced line (too few fields, or not numbers).
    """
    sender, seq, sent_us, _ = line.split(b" ", 3)
    return sender, int(seq), int(sent_us)


PROBE_PREFIX = b"sockbench-probe "


def probe_line(token: bytes) -> bytes:
    """A probe line carrying ``token`` (no spaces), newline included."""
    return PROBE_PREFIX + token + b"\n"


def is_probe(line: bytes) -> bool:
    """True for a probe line (with or without its newline): receivers skip it."""
    return line.startswith(PROBE_PREFIX)


# What SequenceCheck.see returns for a line at or below one already received.
OUT_OF_ORDER = -1


@dataclass
class SequenceCheck:
    """Per-sender order as one receiver sees it: lines lost (gaps in a sender's
    numbers) and lines out of order (a number at or below one already received: a
    duplicate or a reordering).

    Args:
        first_seq: the number every sender starts at, when the receiver hears them from
            their first line (the soak); None when a receiver may join a sender
            mid-stream (Locust users), so a sender's first line seen sets its baseline.
    """

    first_seq: int | None = None
    lost: int = 0
    out_of_order: int = 0
    last: dict[bytes, int] = field(default_factory=dict)  # sender -> highest seq received

    def see(self, sender: bytes, seq: int) -> int:
        """Count one received line. Returns the lines of this sender lost just before it
        (0: none), or :data:`OUT_OF_ORDER` when it is a duplicate or reordered (the
        caller should not time it as a fresh delivery)."""
        previous = self.last.get(sender)
        if previous is None and self.first_seq is not None:
            previous = self.first_seq - 1
        lost = 0
        if previous is not None:
            if seq <= previous:
                self.out_of_order += 1
                return OUT_OF_ORDER
            lost = seq - previous - 1
            self.lost += lost
        self.last[sender] = seq
        return lost

    def missing(self, sender: bytes, sent: int) -> int:
        """Lines of ``sender`` never received, given it sent ``sent`` lines numbered
        from ``first_seq``: what a gap at the end of the stream leaves uncounted."""
        start = self.first_seq or 0
        received_up_to = self.last.get(sender, start - 1)
        return max(0, start + sent - 1 - received_up_to)
