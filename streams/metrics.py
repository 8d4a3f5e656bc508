"""Prometheus exposition of a worker's ``WorkerStats`` (served at ``/metrics``).

Counters are read from the stats at scrape time (one source of truth for the Redis
stats hash and Prometheus); the histograms live in the stats' own registry.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streams.stats import WorkerStats

CONTENT_TYPE = "text/plain; version=0.0.4"
"""Prometheus text format 0.0.4 (UTF-8; aiohttp adds no charset parameter here)."""


class StatsCollector(Collector):
    """Counters and gauges from a ``WorkerStats``, labelled by worker."""

    def __init__(self, stats: WorkerStats, worker_id: str) -> None:
        self.stats = stats
        self.worker_id = worker_id

    def collect(self) -> Iterator[Metric]:
        s, w = self.stats, self.worker_id
        events = CounterMetricFamily(
            "eddy_events", "Valid events processed, by type.", labels=["worker", "type"]
        )
        for kind, n in sorted(s.events.items()):
            events.add_metric([w, kind], n)
        yield events
        for name, doc, value in (
            ("eddy_dead_letters", "Messages sent to the dead-letter topic.", s.dead_letters),
            ("eddy_duplicates", "Replayed or repeated events skipped.", s.duplicates),
            ("eddy_dlq_errors", "Dead letters that could not be written.", s.dlq_errors),
            ("eddy_forgotten_users", "Users deleted on request.", s.forgotten),
            ("eddy_offset_gaps", "Holes in events offsets, read again.", s.offset_gaps),
            ("eddy_offset_jumps", "Holes in events offsets given up on.", s.offset_jumps),
            ("eddy_items", "Catalog upserts applied.", s.items),
            ("eddy_lists_published", "Lists written to Redis.", s.lists_published),
            ("eddy_redis_errors", "Failed Redis writes (retried).", s.redis_errors),
            ("eddy_render_errors", "Lists that could not be computed.", s.render_errors),
            ("eddy_slots", "Recommended slots filled.", s.slots),
            ("eddy_explored_slots", "Slots filled by exploration.", s.explored_slots),
        ):
            yield _counter(name, doc, w, value)
        for name, doc, counts in (
            ("eddy_variant_impressions", "Items shown, by A/B variant.", s.variant_impressions),
            ("eddy_variant_clicks", "Clicks attributed to a list, by variant.", s.variant_clicks),
            (
                "eddy_variant_purchases",
                "Purchases attributed to a list, by variant.",
                s.variant_purchases,
            ),
        ):
            family = CounterMetricFamily(name, doc, labels=["worker", "variant"])
            for variant, n in sorted(counts.items()):
                family.add_metric([w, variant], n)
            yield family
        lag = GaugeMetricFamily(
            "eddy_consumer_lag",
            "Messages behind the log end, by topic partition.",
            labels=["worker", "topic", "partition"],
        )
        for topic, partitions in sorted(s.consumer_lag.items()):
            for partition, behind in sorted(partitions.items()):
                lag.add_metric([w, topic, str(partition)], behind)
        yield lag


def _counter(name: str, doc: str, worker: str, value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=["worker"])
    family.add_metric([worker], value)
    return family


def register(stats: WorkerStats, worker_id: str) -> None:
    """Add the stats' counters to its registry (once per ``WorkerStats``)."""
    stats.registry.register(StatsCollector(stats, worker_id))


def exposition(stats: WorkerStats) -> bytes:
    """The Prometheus text format of everything in the stats' registry."""
    return generate_latest(stats.registry)
