"""The events path of one worker on its event loop: buffer, load, step, write.

Three tasks, none of which blocks the loop or waits for another's I/O:

- the **pump** takes the buffered events in micro-batches (``batch_max_events``, or
  whatever waited ``flush_interval_ms``), dead-letters the rejects, admits the batch
  (``Worker.admit``: users in memory go on, the others are held for the loader) and
  runs the step on the step thread; backlogged (a whole batch buffered behind the one
  it steps), it first holds the next batch's users that must be read, so that the
  loader reads them while the step runs (``_read_ahead``);
- the **loader** reads the held users from the store and releases their events to the
  pump, in order per user; while the store does not answer it retries with backoff and
  the pump goes on with the users in memory;
- the **writer** writes what the steps queued, coalesced per key, and keeps it while the
  store fails; offsets become committable only once written (``streams.offsets``).

The pump waits for a load it started for at most ``LOAD_WAIT_S`` (so that a healthy
store's round trip keeps a batch whole); once a read has been in flight that long,
later batches do not wait for it. The Faust agent backs off while ``MAX_BUFFERED`` events
are buffered or ``MAX_OPEN`` read events are not yet written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from models.step import Inbound
from streams.worker import Rejected, Worker

log = logging.getLogger(__name__)

LOAD_WAIT_S = 0.2
"""Longest a batch waits for its users to be read before the others go on without them."""
MAX_OPEN = 200_000
"""Events read but not yet written at most before the agent stops reading."""
LOAD_BACKOFF_S = 1.0
"""Longest pause between two reads of held users while the store fails."""

DeadLetter = Callable[[Any, Rejected], Awaitable[None]]


class EventPipeline:
    """Buffers decoded events and drives the pump, loader and writer tasks."""

    def __init__(
        self, worker: Worker, batch_max: int, interval_s: float, dead_letter: DeadLetter
    ) -> None:
        self.worker = worker
        self.batch_max = batch_max
        self.interval_s = interval_s
        self.dead_letter = dead_letter
        self.buffer: list[tuple[Any, Inbound]] = []
        self.rejects: list[tuple[Any, Rejected]] = []
        self.failed: Callable[[list[tuple[Any, Inbound]]], Awaitable[None]] | None = None
        """Called with a batch whose step raised (the app retries it event by event)."""
        self._since = 0.0
        self._lock = asyncio.Lock()
        self._pump = asyncio.Event()
        self._load = asyncio.Event()
        self._write = asyncio.Event()
        self._loaded = asyncio.Event()
        self._failures = 0
        """Reads of held users that failed in a row (the store is down: do not wait)."""
        self._ahead = False
        """Events were held by ``_read_ahead`` since the last batch."""
        self._messages: dict[int, tuple[Any, Inbound]] = {}
        """id(inbound) -> its message, for the held events (for a retry's dead letters)."""

    # --- the agent's side ---------------------------------------------------------------
    def add(self, msg: Any, decoded: Inbound | Rejected) -> None:
        """A decoded message, in the order read."""
        if isinstance(decoded, Rejected):
            self.rejects.append((msg, decoded))
        else:
            if not self.buffer:
                self._since = time.monotonic()
            self.buffer.append((msg, decoded))
        if len(self.buffer) + len(self.rejects) >= self.batch_max:
            self._pump.set()

    async def room(self) -> None:
        """Wait while the buffer or the unwritten events are at their bounds."""
        while (
            len(self.buffer) >= 2 * self.batch_max or self.worker.offsets.open_count() >= MAX_OPEN
        ):
            self._pump.set()
            await asyncio.sleep(0.01)

    def tick(self) -> None:
        """The flush timer: a batch that waited long enough goes; writes are retried."""
        waited = time.monotonic() - self._since >= self.interval_s
        if (self.buffer or self.rejects) and waited:
            self._pump.set()
        if self.worker.pending:
            self._write.set()

    # --- the tasks ----------------------------------------------------------------------
    async def run_pump(self) -> None:
        while True:
            await self._pump.wait()
            self._pump.clear()
            try:
                await self.process(whole=False)
            except Exception:  # a bug must not stop the events path
                log.exception("the events pump failed; going on")

    async def run_loader(self) -> None:
        while True:
            await self._load.wait()
            self._load.clear()
            while self.worker.held:
                try:
                    await self.worker.load_held()
                    self._failures = 0
                except Exception as exc:  # the store's client raises its own error types
                    self._failures += 1
                    self.worker.stats.redis_errors += 1
                    backoff = min(LOAD_BACKOFF_S, 0.05 * 2**self._failures)
                    log.warning("cannot read profiles (%s); retry in %.2fs", exc, backoff)
                    await asyncio.sleep(backoff)
                    continue
                if not self.worker.held:
                    self._loaded.set()
                self._pump.set()

    async def run_writer(self) -> None:
        while True:
            await self._write.wait()
            self._write.clear()
            while True:
                if await self.worker.flush():
                    if not self.worker.pending:
                        break
                else:
                    await asyncio.sleep(max(0.01, self.worker.retry_in))

    # --- batches ------------------------------------------------------------------------
    async def process(self, whole: bool = True) -> None:
        """Run the due batches (``whole``: everything buffered, now)."""
        async with self._lock:
            while True:
                due = self.buffer and (
                    whole
                    or len(self.buffer) >= self.batch_max
                    or time.monotonic() - self._since >= self.interval_s
                )
                if not (due or self.rejects or self.worker.released):
                    return
                size = self.batch_max
                if due and self._ahead:
                    # the batch read ahead goes next: its held events once read, with the
                    # others of its window (at the buffer's head)
                    if self.worker.held:
                        await self._wait_loaded()
                    size = max(0, self.batch_max - self.worker.released)
                batch = self.buffer[:size] if due else []
                del self.buffer[: len(batch)]
                self._since = time.monotonic()
                await self._one(batch)

    async def _one(self, batch: list[tuple[Any, Inbound]]) -> None:
        self._ahead = False
        dead, self.rejects = self.rejects, []
        for msg, rejected in dead:
            await self.dead_letter(msg, rejected)
            self.worker.mark_skipped(msg.partition, msg.offset)
        for pair in batch:
            self._messages[id(pair[1])] = pair
        ready = self.worker.admit(i for _, i in batch)
        if self.worker.held:
            await self._wait_loaded()
        inbound = self.worker.take_released() + ready
        pairs = [self._messages.pop(id(i)) for i in inbound]
        self._read_ahead()
        if inbound:
            try:
                await self.worker.apply(inbound)
            except Exception:  # a bug must not stop the worker for everyone
                log.exception("a batch of %d events failed; retrying one by one", len(inbound))
                if self.failed is None:
                    raise
                await self.failed(pairs)
        self._write.set()

    def _read_ahead(self) -> None:
        """Backlogged (a whole batch buffered), hold the next batch's users that must be
        read from the store and start the loader: it reads them while the step runs.
        The other events stay buffered, to be admitted right before their own step."""
        if len(self.buffer) < self.batch_max:
            return
        ahead = self.buffer[: self.batch_max]
        ready = {id(i) for i in self.worker.admit(i for _, i in ahead)}
        if len(ready) == len(ahead):
            return
        self.buffer[: self.batch_max] = [pair for pair in ahead if id(pair[1]) in ready]
        for pair in ahead:
            if id(pair[1]) not in ready:
                self._messages[id(pair[1])] = pair
        self._ahead = True
        self._load.set()

    async def _wait_loaded(self) -> None:
        """Start the loader; wait for it while a read has been in flight < LOAD_WAIT_S."""
        self._loaded.clear()
        self._load.set()
        if self._failures:
            return
        started = self.worker.loading_since or time.monotonic()
        timeout = started + LOAD_WAIT_S - time.monotonic()
        if timeout > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._loaded.wait(), timeout)

    async def drain(self) -> None:
        """Process everything buffered and held, and write it (tests, shutdown)."""
        while True:
            await self.process(whole=True)
            if self.worker.held:
                await self.worker.load_held()
                continue
            if not self.worker.released:
                break
        while self.worker.pending:
            if not await self.worker.flush():
                await asyncio.sleep(max(0.01, self.worker.retry_in))
        await self.worker.flush()  # offsets of what changed nothing

    def reset(self) -> None:
        """Drop what is buffered (a revocation: it is read again from the last commit)."""
        self.buffer.clear()
        self.rejects.clear()
        self._messages.clear()
        self._ahead = False
