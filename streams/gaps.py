"""Holes in what the events agent reads, found by offset and repaired by a seek.

The events topic is a plain topic (not compacted) written without transactions, so
within one partition consecutive records have consecutive offsets: a message whose
offset is beyond the next one expected means that records before it were skipped. That
happens after a rebalance on noida-db: Faust/aiokafka deliver stale buffered fetches
across the seek to the committed offset, and a record never reaches the agent
(docs/reliability.md, "Outages", bug 1). Were the message handed on, the worker would
write it and commit its offset, past the record it never saw.

The agent asks ``GapTracker.check`` about every message before it decodes it (a message
that goes to the dead-letter topic counts as read too):

- ``TAKE``: the expected offset; hand it on;
- ``DROP``: below the expected offset (a re-delivery of a message already read, whose
  effect is written or still in the pipeline), or beyond it while a hole is being
  repaired (buffered before the seek: it comes again after the hole);
- ``SEEK``: beyond the expected offset: a hole. The message is dropped and the consumer
  must be sought back to ``target`` (the expected offset); what follows is dropped until
  that offset arrives. If it has not come ``reseek_s`` after a seek (a fetch that was in
  flight across the seek can move Faust's read offset past it), the next message beyond
  it, or the timer (``due``), seeks again;
- ``JUMP``: still beyond after ``max_seeks`` seeks: the records are not in the log
  (deleted by retention, or transaction markers, which Eddy's producers do not write);
  the message is handed on and the jump logged: nothing else can be read there.

Nothing beyond a hole is handed on, so no offset past it can become committable
(``streams.offsets``). Aborted transactions and control records (transaction markers)
also take offsets that a consumer never sees; the events topic is never written
transactionally, so they do not occur there (if they did, each would cost ``max_seeks``
seeks and a ``JUMP``).
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

RESEEK_S = 2.0
"""How long after a seek the expected offset may take to arrive before another seek."""
MAX_SEEKS = 10
"""Seeks for one hole before the jump is accepted (the records are not in the log)."""


class Verdict(enum.Enum):
    TAKE = "take"
    DROP = "drop"
    SEEK = "seek"
    JUMP = "jump"


@dataclass
class Hole:
    """A partition waiting for ``expected`` again after a seek."""

    expected: int
    found: int
    """The offset of the message that showed the hole."""
    seeks: int = 1
    sought_at: float = 0.0
    dropped: int = 0
    """Messages dropped while waiting (the one that showed the hole included)."""


class GapTracker:
    """The next offset expected per events partition, and the holes being repaired."""

    def __init__(
        self,
        reseek_s: float = RESEEK_S,
        max_seeks: int = MAX_SEEKS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.reseek_s = reseek_s
        self.max_seeks = max_seeks
        self.clock = clock
        self.expected: dict[int, int] = {}
        """Partition -> the offset the agent must read next."""
        self.holes: dict[int, Hole] = {}
        self.gaps = 0
        """Holes found (each repaired by one seek or more, or accepted as a jump)."""
        self.seeks = 0
        self.jumps = 0
        self.redelivered = 0
        """Messages dropped below the expected offset."""

    def known(self, partition: int) -> bool:
        return partition in self.expected

    def start(self, partition: int, offset: int) -> None:
        """The consumer reads ``partition`` from ``offset`` (where it was sought to after
        an assignment: the committed offset)."""
        self.expected[partition] = offset
        self.holes.pop(partition, None)

    def check(self, partition: int, offset: int) -> Verdict:
        """What to do with the message at ``offset`` (``start`` was called for its
        partition)."""
        expected = self.expected[partition]
        if offset == expected:
            self.expected[partition] = offset + 1
            hole = self.holes.pop(partition, None)
            if hole is not None:
                log.warning(
                    "offset hole at partition %d repaired: %d arrived after %d seek(s), "
                    "%d message(s) dropped meanwhile",
                    partition,
                    expected,
                    hole.seeks,
                    hole.dropped,
                )
            return Verdict.TAKE
        if offset < expected:
            self.redelivered += 1
            return Verdict.DROP
        now = self.clock()
        hole = self.holes.get(partition)
        if hole is None:
            self.gaps += 1
            self.seeks += 1
            self.holes[partition] = Hole(expected, offset, sought_at=now, dropped=1)
            log.warning(
                "offset hole at partition %d: expected %d, got %d (%d record(s) skipped by "
                "the consumer); seeking back to %d",
                partition,
                expected,
                offset,
                offset - expected,
                expected,
            )
            return Verdict.SEEK
        hole.dropped += 1
        if now - hole.sought_at < self.reseek_s:
            return Verdict.DROP
        if hole.seeks >= self.max_seeks:
            del self.holes[partition]
            self.jumps += 1
            self.expected[partition] = offset + 1
            log.error(
                "offset hole at partition %d: %d never arrived after %d seeks; reading on "
                "from %d (records %d-%d are not in the log?)",
                partition,
                expected,
                hole.seeks,
                offset,
                expected,
                offset - 1,
            )
            return Verdict.JUMP
        self._sought(hole, now)
        return Verdict.SEEK

    def target(self, partition: int) -> int:
        """The offset to seek ``partition`` back to."""
        return self.expected[partition]

    def due(self) -> list[tuple[int, int]]:
        """(partition, offset) of the holes whose last seek brought nothing in
        ``reseek_s``: seek them again (the timer's side: no message may come)."""
        now = self.clock()
        out = []
        for partition, hole in self.holes.items():
            if now - hole.sought_at >= self.reseek_s and hole.seeks < self.max_seeks:
                self._sought(hole, now)
                out.append((partition, hole.expected))
        return out

    def _sought(self, hole: Hole, now: float) -> None:
        hole.seeks += 1
        hole.sought_at = now
        self.seeks += 1

    def clear(self) -> None:
        """Forget every partition (a revocation: the next assignment starts anew)."""
        self.expected.clear()
        self.holes.clear()
