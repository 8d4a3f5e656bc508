"""Replay a dataset into Kafka: the catalog to the items topic, then events in time order.

Wire format is the event contract (``models.events.encode``): items keyed by
``item_id``, events keyed by ``user_id``. Kafka message timestamps are left to the
producer (send time), not set to the event time: historical times such as MovieLens's
1996 ratings would fall outside any time-based retention and be deleted at once. The
event time travels in the payload's ``ts``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from models.datasets import Dataset
from models.events import Event, ItemUpsert, encode

DEFAULT_TIMEOUT_S: Final = 60.0
"""How long to wait for the broker's metadata and for the final flush."""

_PROGRESS_EVERY: Final = 500
"""Messages between progress-bar updates (updating per message costs throughput)."""

Record = tuple[str, bytes]
"""A Kafka message as (key, value)."""


def producer_config(bootstrap: str, **extra: Any) -> dict[str, Any]:
    """Plain Kafka producer settings for Eddy; ``extra`` entries override them.

    Idempotent, fully acknowledged writes; lz4 batches with a short linger for
    throughput; and the Java client's murmur2 partitioner, so every producer (Java,
    librdkafka, aiokafka) sends a given user to the same partition. Pass dotted keys
    as a mapping: ``producer_config(bootstrap, **{"linger.ms": 50})``.
    """
    if not bootstrap.strip():
        raise ValueError("bootstrap must be host:port[,host:port], not empty")
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "compression.type": "lz4",
        "partitioner": "murmur2_random",
        "batch.size": 1_000_000,
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": 200_000,
    }
    config.update(extra)
    return config


class Pacer:
    """Rate limiter: call ``wait()`` before each send to hold a long-run ``rate`` per second.

    Call ``n`` (from 0) is released no earlier than ``start + n / rate``, where
    ``start`` is the first call's time: a caller that falls behind catches up at full
    speed rather than losing throughput. ``rate=None`` never waits. ``clock`` and
    ``sleep`` are injectable; ``sleep`` may return early (for example a producer's
    ``poll``), ``wait`` sleeps again until the release time.
    """

    def __init__(
        self,
        rate: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        if rate is not None and not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"rate must be a positive number of events per second, not {rate}")
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._start: float | None = None
        self._count = 0

    @property
    def count(self) -> int:
        """Calls of ``wait()`` released so far."""
        return self._count

    def wait(self) -> None:
        """Block until the next send is due."""
        if self.rate is not None:
            now = self._clock()
            if self._start is None:
                self._start = now
            due = self._start + self._count / self.rate
            while now < due:
                self._sleep(due - now)
                now = self._clock()
        self._count += 1


@dataclass(frozen=True)
class ReplayStats:
    """Outcome of a replay: messages sent, delivery failures, wall time and event rate.

    ``seconds`` covers the whole replay; ``events_per_s`` is events over the time from
    the first event sent to the end of the final flush.
    """

    items_sent: int
    events_sent: int
    failed: int
    seconds: float
    events_per_s: float


class DeliveryError(RuntimeError):
    """Some messages were not acknowledged by Kafka; ``stats`` says how far it got."""

    def __init__(self, message: str, stats: ReplayStats) -> None:
        super().__init__(message)
        self.stats = stats


class _Sender:
    """A producer that never drops a record locally and counts broker-side failures."""

    def __init__(self, bootstrap: str, extra: dict[str, Any] | None) -> None:
        self.bootstrap = bootstrap
        self.producer = Producer(producer_config(bootstrap, **(extra or {})))
        self.failed = 0
        self.first_error: str | None = None

    def check_topics(self, topics: Iterable[str], timeout_s: float) -> None:
        """Raise ``RuntimeError`` if the broker is unreachable or a topic is missing."""
        try:
            existing = self.producer.list_topics(timeout=timeout_s).topics
        except KafkaException as exc:
            raise RuntimeError(
                f"cannot reach Kafka at {self.bootstrap} ({exc}); "
                "start it with `eddy dev up` or set EDDY_KAFKA_BOOTSTRAP"
            ) from exc
        missing = sorted(set(topics) - set(existing))
        if missing:
            raise RuntimeError(
                f"topic(s) {', '.join(missing)} do not exist on {self.bootstrap}; "
                "create Eddy's topics first (streams.topics.create_topics)"
            )

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.failed += 1
            if self.first_error is None:
                self.first_error = f"{msg.topic()}: {err.str()}"

    def send(self, topic: str, key: str, value: bytes) -> None:
        """Queue one message, waiting for room if the local queue is full."""
        while True:
            try:
                self.producer.produce(
                    topic, value=value, key=key.encode(), on_delivery=self._on_delivery
                )
                break
            except BufferError:
                self.producer.poll(0.05)  # queue full: serve deliveries to make room
        self.producer.poll(0)

    def flush(self, timeout_s: float) -> int:
        """Wait for outstanding deliveries; count any still unacknowledged as failed."""
        remaining = int(self.producer.flush(timeout_s))
        if remaining:
            self.failed += remaining
            if self.first_error is None:
                self.first_error = f"{remaining} message(s) unacknowledged after {timeout_s:.0f}s"
        return remaining


def _send_all(
    sender: _Sender,
    topic: str,
    records: Iterable[Record],
    *,
    pacer: Pacer | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Send ``records`` to ``topic`` (paced if given); return how many were queued.

    Stops early once a delivery has failed: the caller flushes and reports.
    """
    sent = pending = 0
    for key, value in records:
        if sender.failed:
            break
        if pacer is not None:
            pacer.wait()
        sender.send(topic, key, value)
        sent += 1
        pending += 1
        if on_progress is not None and pending >= _PROGRESS_EVERY:
            on_progress(pending)
            pending = 0
    if on_progress is not None and pending:
        on_progress(pending)
    return sent


def _event_records(events: Iterable[Event]) -> Iterable[Record]:
    return ((event.user_id, encode(event)) for event in events)


def _item_records(items: Iterable[ItemUpsert]) -> Iterable[Record]:
    return ((item.item_id, encode(item)) for item in items)


def _produce(
    bootstrap: str,
    topic: str,
    records: Iterable[Record],
    producer_extra: dict[str, Any] | None,
    timeout_s: float,
) -> int:
    sender = _Sender(bootstrap, producer_extra)
    sender.check_topics([topic], timeout_s)
    sent = _send_all(sender, topic, records)
    sender.flush(timeout_s)
    if sender.failed:
        raise RuntimeError(
            f"{sender.failed} of {sent} message(s) to {topic} were not delivered: "
            f"{sender.first_error}"
        )
    return sent


def produce_events(
    bootstrap: str,
    topic: str,
    events: Iterable[Event],
    *,
    producer_extra: dict[str, Any] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> int:
    """Send ``events`` in the given order, keyed by ``user_id``; return how many were sent.

    Raises ``RuntimeError`` if Kafka is unreachable, the topic is missing, or any
    message is not acknowledged.
    """
    return _produce(bootstrap, topic, _event_records(events), producer_extra, timeout_s)


def produce_items(
    bootstrap: str,
    topic: str,
    items: Iterable[ItemUpsert],
    *,
    producer_extra: dict[str, Any] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> int:
    """Send catalog ``items`` keyed by ``item_id``; errors as for ``produce_events``."""
    return _produce(bootstrap, topic, _item_records(items), producer_extra, timeout_s)


class _RateColumn(ProgressColumn):
    """Messages per second, as estimated by rich."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f}/s", style="progress.data.speed")


def _progress_bar(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )


def replay(
    bootstrap: str,
    events_topic: str,
    items_topic: str,
    dataset: Dataset,
    *,
    rate: float | None = None,
    limit: int | None = None,
    progress: bool = True,
    producer_extra: dict[str, Any] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> ReplayStats:
    """Produce ``dataset`` to Kafka: all items first, then events in time order.

    ``rate`` caps events per second (items go at full speed); ``limit`` sends only the
    first ``limit`` events. Raises ``RuntimeError`` if Kafka is unreachable or a topic is
    missing, and ``DeliveryError`` (a ``RuntimeError`` carrying the stats) if any
    message was not acknowledged.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, not {limit}")
    events: Sequence[Event] = dataset.events if limit is None else dataset.events[:limit]
    started = time.monotonic()
    sender = _Sender(bootstrap, producer_extra)
    sender.check_topics([items_topic, events_topic], timeout_s)
    pacer = Pacer(rate, sleep=lambda s: sender.producer.poll(min(s, 0.1)))
    with _progress_bar(progress) as bar:
        items_task = bar.add_task(f"items -> {items_topic}", total=len(dataset.items))
        events_task = bar.add_task(f"events -> {events_topic}", total=len(events))
        try:
            items_sent = _send_all(
                sender,
                items_topic,
                _item_records(dataset.items),
                on_progress=lambda n: bar.advance(items_task, n),
            )
            events_started = time.monotonic()
            events_sent = _send_all(
                sender,
                events_topic,
                _event_records(events),
                pacer=pacer,
                on_progress=lambda n: bar.advance(events_task, n),
            )
        except KeyboardInterrupt:
            sender.producer.flush(min(timeout_s, 5.0))  # keep what was already queued
            raise
        sender.flush(timeout_s)
    ended = time.monotonic()
    events_seconds = ended - events_started
    stats = ReplayStats(
        items_sent=items_sent,
        events_sent=events_sent,
        failed=sender.failed,
        seconds=ended - started,
        events_per_s=events_sent / events_seconds if events_seconds > 0 else 0.0,
    )
    if stats.failed:
        raise DeliveryError(
            f"{stats.failed} of {items_sent + events_sent} message(s) were not delivered "
            f"to {bootstrap}: {sender.first_error}",
            stats,
        )
    return stats
