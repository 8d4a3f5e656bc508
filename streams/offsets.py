"""Which events offsets a worker may commit: those whose state is in the store.

Every message read is *open* until its effect is durable: its state written to the
store (or, for a message that changes nothing, such as a dead letter, the next write
after it was handled). A partition's committable offset is the newest one below its
oldest open offset, so an event whose user waits for the store to answer holds back
the commit of every later offset of its partition, however many of them are written.
"""

from __future__ import annotations

from collections.abc import Iterable

from models.profile import Position


class Offsets:
    """Open and durable offsets per events partition."""

    def __init__(self) -> None:
        self.committable: dict[int, int] = {}
        """Partition -> newest offset such that it and every offset read before it is
        durable."""
        self._open: dict[int, set[int]] = {}
        self._done: dict[int, int] = {}
        self._next: list[Position] = []

    def read(self, position: Position) -> None:
        """A message at ``position`` was read: open until it is durable."""
        partition, offset = position
        self._open.setdefault(partition, set()).add(offset)

    def at_next_write(self, positions: Iterable[Position]) -> None:
        """``positions`` become durable with the next successful write (whatever it
        holds: their state, if any, is already queued)."""
        self._next.extend(positions)

    def take(self) -> list[Position]:
        """The positions that the write starting now makes durable if it succeeds."""
        taken, self._next = self._next, []
        return taken

    def restore(self, taken: list[Position]) -> None:
        """The write failed: ``taken`` waits for the next one."""
        self._next = taken + self._next

    def durable(self, positions: Iterable[Position]) -> None:
        """``positions`` are in the store: advance the committable offsets."""
        touched: set[int] = set()
        for partition, offset in positions:
            found = self._open.get(partition)
            if found is not None:
                found.discard(offset)
            self._done[partition] = max(offset, self._done.get(partition, -1))
            touched.add(partition)
        for partition in touched:
            found = self._open.get(partition)
            done = self._done[partition]
            newest = min(done, min(found) - 1) if found else done
            if newest >= 0 and newest > self.committable.get(partition, -1):
                self.committable[partition] = newest

    def open_count(self) -> int:
        """Messages read whose effect is not yet durable."""
        return sum(len(found) for found in self._open.values())

    def clear(self) -> None:
        """Forget everything (a rebalance: what was not committed is read again)."""
        self.committable.clear()
        self._open.clear()
        self._done.clear()
        self._next.clear()
