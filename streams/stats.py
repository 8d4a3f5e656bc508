"""A worker's running counters and its freshness samples."""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import CollectorRegistry, Histogram

FRESHNESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
RANK_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


@dataclass
class WorkerStats:
    """Counters and a bounded window of freshness samples (seconds)."""

    window: int = 20_000
    started_at: float = field(default_factory=time.time)
    events: Counter[str] = field(default_factory=Counter)
    dead_letters: int = 0
    duplicates: int = 0
    dlq_errors: int = 0
    forgotten: int = 0
    """Users deleted on request (``eddy forget``)."""
    """Dead letters that could not be written (logged with their position)."""
    """Events skipped because their profile already reflected them (replays, retries)."""
    offset_gaps: int = 0
    """Holes in an events partition's offsets: records the consumer skipped, read again
    after a seek back (``streams.gaps``)."""
    offset_gap_seeks: int = 0
    """Seeks back over those holes (one or more per hole)."""
    offset_jumps: int = 0
    """Holes given up on after ``streams.gaps.MAX_SEEKS`` seeks (records not in the log)."""
    redelivered_dropped: int = 0
    """Events messages dropped below the next offset expected (already read)."""
    items: int = 0
    lists_published: int = 0
    lists_ranked: int = 0
    redis_errors: int = 0
    render_errors: int = 0
    item_updates_sent: int = 0
    item_updates_done: int = 0
    slots: int = 0
    explored_slots: int = 0
    variant_impressions: Counter[str] = field(default_factory=Counter)
    variant_clicks: Counter[str] = field(default_factory=Counter)
    variant_purchases: Counter[str] = field(default_factory=Counter)
    consumer_lag: dict[str, dict[int, int]] = field(default_factory=dict)
    """Topic -> partition -> messages behind the log end (set by the worker's timer)."""
    freshness_s: deque[float] = field(default_factory=deque)
    first_event_at: float | None = None
    last_event_at: float | None = None
    registry: CollectorRegistry = field(default_factory=CollectorRegistry, repr=False)
    """Prometheus registry of this worker's histograms (``streams.metrics`` adds counters)."""

    def __post_init__(self) -> None:
        self.freshness_hist = Histogram(
            "eddy_freshness_seconds",
            "Event produced -> list written to Redis.",
            buckets=FRESHNESS_BUCKETS,
            registry=self.registry,
        )
        self.rank_hist = Histogram(
            "eddy_retrieval_seconds",
            "Time to retrieve, score and re-rank one list.",
            buckets=RANK_BUCKETS,
            registry=self.registry,
        )

    def event(self, kind: str, n: int = 1) -> None:
        """``n`` events of ``kind`` applied now."""
        now = time.time()
        if self.first_event_at is None:
            self.first_event_at = now
        self.last_event_at = now
        self.events[kind] += n

    def freshness(self, seconds: float) -> None:
        if len(self.freshness_s) >= self.window:
            self.freshness_s.popleft()
        self.freshness_s.append(max(0.0, seconds))
        self.freshness_hist.observe(max(0.0, seconds))

    def snapshot(self) -> dict[str, float | int | str]:
        """Flat numbers, suitable for a Redis hash."""
        total = sum(self.events.values())
        out: dict[str, float | int | str] = {
            "started_at": self.started_at,
            "events_total": total,
            "dead_letters": self.dead_letters,
            "duplicates": self.duplicates,
            "dlq_errors": self.dlq_errors,
            "forgotten": self.forgotten,
            "offset_gaps": self.offset_gaps,
            "offset_gap_seeks": self.offset_gap_seeks,
            "offset_jumps": self.offset_jumps,
            "redelivered_dropped": self.redelivered_dropped,
            "items": self.items,
            "lists_published": self.lists_published,
            "redis_errors": self.redis_errors,
            "render_errors": self.render_errors,
            "item_updates_sent": self.item_updates_sent,
            "item_updates_done": self.item_updates_done,
        }
        out.update({f"events_{k}": v for k, v in self.events.items()})
        if self.slots:
            out["slots"] = self.slots
            out["explored_slots"] = self.explored_slots
        for name, counts in (
            ("impressions", self.variant_impressions),
            ("clicks", self.variant_clicks),
            ("purchases", self.variant_purchases),
        ):
            out.update({f"variant_{v}_{name}": n for v, n in counts.items()})
        if self.first_event_at is not None and self.last_event_at is not None:
            out["first_event_at"] = self.first_event_at
            out["last_event_at"] = self.last_event_at
        if self.freshness_s:
            arr = np.fromiter(self.freshness_s, dtype=np.float64)
            p50, p99 = np.percentile(arr, [50, 99])
            out["freshness_ms_p50"] = round(float(p50) * 1000, 3)
            out["freshness_ms_p99"] = round(float(p99) * 1000, 3)
            out["freshness_ms_max"] = round(float(arr.max()) * 1000, 3)
            out["freshness_samples"] = len(arr)
        return out


def stats_mapping(
    stats: WorkerStats, worker_id: str, digest: tuple[int, str] | None = None
) -> Mapping[str, str]:
    """The stats snapshot as string fields for a Redis hash; ``digest``: (items learned
    online, digest of the item state), from ``Worker.digest`` (costly: computed rarely,
    on the step thread)."""
    snap = stats.snapshot()
    snap["worker_id"] = worker_id
    if digest is not None:
        snap["online_item_vectors"], snap["item_vectors_digest"] = digest
    snap["updated_at"] = time.time()
    return {k: str(v) for k, v in snap.items()}
