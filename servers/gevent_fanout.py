"""Broadcast output of the gevent backends: lines go to the room's other members a
hub pass at a time, each receiver's share in one ``send``.

Two ways in, both never waiting (what a socket does not take waits in the receiver's
bounded backlog for its writability callback, :class:`servers.gevent_conn.Client`):

* :meth:`Fanout.hear` (the flagship's turns): a turn only notes what its sender said.
  When the pass's last turn is over, :meth:`Fanout.relay_heard` gives every member, in
  one ``send``, what every *other* sender said in this pass, in turn order: a member
  that did not speak gets the very same joined bytes as every other listener, with no
  copy into its backlog when it had none. Measured with ``bench perf``'s broadcast
  probe (100 members, 10 sending closed loop; server pinned to CPU 0, client to CPU 1;
  3 interleaved rounds) against gevent-callback, which routes each line into every
  receiver's backlog and flushes the backlogs after the pass (as this backend did, at
  0.93-1.03x gevent-callback's lines per server CPU-second): 12.1k instead of 5.1k
  lines/s, 2.1-2.7x in every round, the same per server CPU-second. A profile: the
  copies into 99 backlogs were ~45% of the server's time; now the ``send`` calls
  themselves are ~72%.
* :meth:`Fanout.route` (gevent-callback's watcher callbacks, and the lines owed before an
  over-long line): the lines join every other member's backlog at once, and one hub
  callback, run after this pass's routing, sends each backlog with a single ``send``.
"""

from __future__ import annotations

from typing import Any

from servers.gevent_conn import Client
from servers.protocol import Mode, Roster


class Fanout:
    """One room's broadcast output on one hub (see the module docstring)."""

    def __init__(self, roster: Roster[Client], loop: Any) -> None:
        self.roster = roster
        self.loop = loop
        # (sender, lines) heard in this pass's turns, relayed when the pass ends.
        self.heard: list[tuple[Client, bytes]] = []
        # Receivers with output queued by route() in this hub pass (see _flush_queued).
        self.to_flush: list[Client] = []

    def hear(self, sender: Client, lines: bytes) -> None:
        """Note ``sender``'s lines; :meth:`relay_heard` sends them when the pass ends."""
        self.heard.append((sender, lines))

    def relay_heard(self) -> None:
        """Send every member what the other senders said in this pass: one ``send`` each."""
        heard, self.heard = self.heard, []
        if not heard:
            return
        everything = heard[0][1] if len(heard) == 1 else b"".join([lines for _, lines in heard])
        # Where each sender's lines lie in `everything`, so a sender gets the rest by
        # two slices (not a join over the whole pass per sender); None: it had two turns.
        spans: dict[Client, tuple[int, int] | None] = {}
        start = 0
        for client, lines in heard:
            end = start + len(lines)
            spans[client] = None if client in spans else (start, end)
            start = end
        for receiver in self.roster:  # a snapshot: relaying may cut a slow receiver
            if receiver not in spans:
                receiver.relay(everything)
                continue
            span = spans[receiver]  # a sender hears the others, not itself
            if span is not None:
                others = everything[:span[0]] + everything[span[1]:]
            else:
                others = b"".join([lines for client, lines in heard if client is not receiver])
            if others:
                receiver.relay(others)

    def route(self, sender: Client, lines: bytes) -> None:
        """Queue ``lines`` for every other member now; their sockets are written once per
        hub pass (:meth:`_flush_queued`)."""
        to_flush = self.to_flush
        for receiver in self.roster.recipients(sender, Mode.BROADCAST):
            if receiver.deliver(lines):
                if not to_flush:
                    self.loop.run_callback(self._flush_queued)
                to_flush.append(receiver)

    def _flush_queued(self) -> None:
        """Hub callback: one ``send`` per receiver that got routed lines this pass.

        Scheduled with ``loop.run_callback``, so it runs after this pass's routing: the
        coalescing point.
        """
        queued = self.to_flush
        for client in queued:
            client.flush()  # never adds to the list: flushing routes nothing
        queued.clear()  # in place: route() holds this very list
