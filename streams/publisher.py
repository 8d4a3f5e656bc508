"""Buffers fresh lists and writes them to the sink in pipelined batches.

A user who gets several events inside one flush interval is rendered and written once,
with the newest state. When the sink fails the pending lists are kept (one per user,
so the buffer is bounded by the number of active users) and retried with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from models.profile import UserProfile
from streams.sink import Put, RecSink
from streams.stats import WorkerStats

log = logging.getLogger(__name__)

CATCHUP_LAG_S = 2.0
"""When the newest event waiting is older than this (the worker is catching up on a
backlog), lists are coalesced for ``CATCHUP_DELAY_S`` instead of the flush interval."""
CATCHUP_DELAY_S = 2.0

Render = Callable[[UserProfile, float], list[Put]]
"""Turns (profile, newest event time) into the keys to write for that user."""


@dataclass(slots=True)
class _Pending:
    profile: UserProfile
    event_ts: float
    produced_at: float | None


class Publisher:
    """Collects per-user updates and flushes them on size or time."""

    def __init__(
        self,
        sink: RecSink,
        render: Render,
        stats: WorkerStats,
        *,
        max_batch: int,
        max_delay_s: float,
        max_backoff_s: float = 5.0,
    ) -> None:
        self._sink = sink
        self._render = render
        self._stats = stats
        self._max_batch = max_batch
        self._max_delay_s = max_delay_s
        self._max_backoff_s = max_backoff_s
        self._pending: dict[str, _Pending] = {}
        self._extra: dict[str, Put] = {}
        self._oldest: float | None = None
        self._lag_s = 0.0
        self._lock = asyncio.Lock()
        self._failures = 0
        self._retry_at = 0.0

    def mark(self, profile: UserProfile, event_ts: float, produced_at: float | None) -> None:
        """Schedule ``profile``'s list for the next flush."""
        prev = self._pending.get(profile.user_id)
        newest = max(event_ts, prev.event_ts) if prev else event_ts
        self._pending[profile.user_id] = _Pending(profile, newest, produced_at)
        if produced_at is not None:
            self._lag_s = time.time() - produced_at
        if self._oldest is None:
            self._oldest = time.monotonic()

    def forget(self, user_id: str) -> None:
        """Drop ``user_id``'s pending list (the user asked to be forgotten)."""
        self._pending.pop(user_id, None)

    def put(self, put: Put) -> None:
        """Schedule a non-user key (popular lists, item metadata) for the next flush."""
        self._extra[put.key] = put
        if self._oldest is None:
            self._oldest = time.monotonic()

    @property
    def pending(self) -> int:
        return len(self._pending) + len(self._extra)

    def due(self) -> bool:
        """True when a flush should happen now: the batch is full, or the oldest entry has
        waited the flush interval (``CATCHUP_DELAY_S`` while catching up on a backlog, so
        a user with many queued events is ranked once, not once per interval)."""
        if not self.pending or time.monotonic() < self._retry_at:
            return False
        if self.pending >= self._max_batch:
            return True
        delay = CATCHUP_DELAY_S if self._lag_s > CATCHUP_LAG_S else self._max_delay_s
        return self._oldest is not None and time.monotonic() - self._oldest >= delay

    async def flush(self) -> int:
        """Write everything pending; return the number of lists written (0 on failure)."""
        async with self._lock:
            if not self._pending and not self._extra:
                return 0
            pending, extra = self._pending, self._extra
            self._pending, self._extra, self._oldest = {}, {}, None
            puts: list[Put] = list(extra.values())
            for user_id, p in list(pending.items()):
                try:
                    puts.extend(self._render(p.profile, p.event_ts))
                except Exception:  # a bug for this user must not drop everyone's lists
                    log.exception("could not render the list of %s; skipped", user_id)
                    self._stats.render_errors += 1
                    del pending[user_id]
            try:
                for start in range(0, len(puts), self._max_batch):
                    await self._sink.write(puts[start : start + self._max_batch])
            except Exception as exc:  # the sink's client raises its own error types
                self._requeue(pending, extra)
                self._stats.redis_errors += 1
                self._failures += 1
                backoff = min(self._max_backoff_s, 0.05 * 2**self._failures)
                self._retry_at = time.monotonic() + backoff
                log.warning(
                    "sink write failed (%s); %d keys kept, retry in %.2fs",
                    exc,
                    self.pending,
                    backoff,
                )
                return 0
            self._failures = 0
            now = time.time()
            for p in pending.values():
                if p.produced_at is not None:
                    self._stats.freshness(now - p.produced_at)
            self._stats.lists_published += len(pending)
            return len(pending)

    def _requeue(self, pending: dict[str, _Pending], extra: dict[str, Put]) -> None:
        for user_id, p in pending.items():
            self._pending.setdefault(user_id, p)
        for key, put in extra.items():
            self._extra.setdefault(key, put)
        if self._oldest is None:
            self._oldest = time.monotonic()
