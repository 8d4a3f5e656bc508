"""The Faust app: topics, tables, agents and timers, built from ``Settings``.

Agents stay thin: they hand each message to ``EventProcessor`` and send rejects to the
dead-letter topic with the reason and the source position in headers.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import faust
import redis.asyncio as aioredis

from models.artefact import ModelArtefact, latest, load
from streams.logs import logging_config
from streams.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from streams.metrics import exposition
from streams.metrics import register as register_metrics
from streams.page import register_page
from streams.processor import EventProcessor, Rejected, stats_mapping
from streams.redisclient import async_client
from streams.settings import Settings
from streams.sink import RecSink, RedisSink
from streams.topics import MAX_MESSAGE_BYTES
from streams.web import drop_faust_views

log = logging.getLogger(__name__)

DLQ_REASON = "eddy.dlq.reason"
DLQ_TOPIC = "eddy.dlq.topic"
DLQ_PARTITION = "eddy.dlq.partition"
DLQ_OFFSET = "eddy.dlq.offset"
STATS_INTERVAL_S = 1.0
GLOBAL_RECOVERY_BUFFER = 1
"""Faust resumes a GlobalTable's changelog partitions that this worker does not also hold
as standby only when the table's recovery buffer is 1; otherwise they stay paused after
recovery and updates written by other workers stop arriving. Keeping them fetching also
keeps Faust's set of active partitions non-empty after recovery: a fetch that sees it
empty returns every partition, and Faust drops the stream records it was not asking for."""
RECOVERY_DELAY_S = 2.0
"""Pause after each rebalance before table recovery seeks its changelogs.

A Faust fetch that was already waiting when the rebalance began returns within its 1 s
timeout; if that happens after recovery has seeked a changelog to its start, Faust drops
the records (flow stopped) while aiokafka has already moved past them, and recovery then
waits forever for offsets it will never see again. Waiting longer than that timeout
first lets the stale fetch return before the seek (docs/reliability.md, "Faust recovery").
"""


@dataclass
class EddyApp:
    """The Faust app with handles on what tests and the CLI need."""

    app: faust.App
    processor: EventProcessor
    events_topic: Any
    items_topic: Any
    dlq_topic: Any
    profiles: Any
    catalog: Any
    popularity: Any
    events_agent: Any
    items_agent: Any


def broker_credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    """Faust (aiokafka) credentials for the configured Kafka security protocol."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = None
    if protocol.endswith("SSL"):
        cafile = settings.kafka_ssl_cafile
        context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
        if settings.kafka_ssl_certfile is not None:
            keyfile = settings.kafka_ssl_keyfile
            context.load_cert_chain(str(settings.kafka_ssl_certfile), keyfile and str(keyfile))
    if protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password.get_secret_value(),
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,
        )
    assert context is not None
    return faust.SSLCredentials(context)


def faust_app(settings: Settings) -> faust.App:
    """A Faust app configured from settings (aiokafka transport, in-memory stores), serving
    none of Faust's own web views."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        broker_credentials=broker_credentials(settings),
        store="memory://",
        datadir=str(settings.data_dir),
        topic_partitions=settings.events_partitions,
        topic_replication_factor=settings.replication_factor,
        broker_session_timeout=settings.broker_session_timeout_s,
        broker_rebalance_timeout=settings.broker_rebalance_timeout_s,
        stream_recovery_delay=RECOVERY_DELAY_S,
        consumer_group_instance_id=settings.worker_id,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        web_host=settings.web_host,
        key_serializer="raw",
        value_serializer="raw",
        autodiscover=False,
        producer_linger=0.005,
        producer_max_request_size=MAX_MESSAGE_BYTES,
        # Faust's own web views (see streams/web.py):
        web_router_enabled=False,
        web_tables_enabled=False,
        web_graph_enabled=False,
        web_stats_enabled=False,
        web_metrics_enabled=False,
    )
    drop_faust_views(app)  # no /table/ (profiles), /router/, /graph/...: see streams/web.py
    return app


def build_app(settings: Settings, sink: RecSink | None = None) -> EddyApp:
    """Define topics, tables, agents and timers on a new Faust app."""
    app = faust_app(settings)
    register_page(app, settings)
    events_topic = app.topic(settings.topic_events, partitions=settings.events_partitions)
    items_topic = app.topic(settings.topic_items, partitions=settings.items_partitions)
    dlq_topic = app.topic(settings.topic_dlq, partitions=settings.dlq_partitions)
    impressions_topic = app.topic(settings.topic_impressions, partitions=settings.events_partitions)
    profiles = app.Table(
        "profiles",
        key_type=str,
        partitions=settings.events_partitions,
        help="User profiles keyed by user_id.",
    )
    catalog = app.GlobalTable(
        "catalog",
        key_type=str,
        recovery_buffer_size=GLOBAL_RECOVERY_BUFFER,
        partitions=settings.items_partitions,
        help="Item catalog keyed by item_id, on every worker.",
    )
    item_updates_topic = app.topic(
        settings.topic_item_updates, partitions=settings.events_partitions
    )

    async def on_vector_changelog(event: faust.EventT[Any]) -> None:
        key, value = event.key, event.value
        item_id = key.decode() if isinstance(key, bytes) else str(key)
        value = json.loads(value) if isinstance(value, bytes | str) else value
        processor.on_item_vector(item_id, value)

    item_vectors = app.GlobalTable(
        "item_vectors",
        key_type=str,
        recovery_buffer_size=GLOBAL_RECOVERY_BUFFER,
        partitions=settings.events_partitions,
        on_changelog_event=on_vector_changelog,
        help="Item state learned online, keyed by item_id: {vector, quality}; written by the "
        "worker that owns the item, applied by every worker.",
    )
    popularity = app.GlobalTable(
        "popularity",
        key_type=str,
        recovery_buffer_size=GLOBAL_RECOVERY_BUFFER,
        partitions=settings.events_partitions,
        help="Time-decayed popularity keyed by item_id: [score, anchor_ts], on every worker.",
    )
    redis_url = settings.redis_url.get_secret_value()
    prior = load_prior(settings)
    processor = EventProcessor(
        settings,
        profiles,
        catalog,
        popularity,
        sink or RedisSink(redis_url, cluster=settings.redis_cluster),
        prior=prior,
    )
    publisher = processor.publisher

    async def dead_letter(event: faust.EventT[Any], rejected: Rejected) -> None:
        msg = event.message
        headers = [
            (DLQ_REASON, rejected.reason.encode()),
            (DLQ_TOPIC, msg.topic.encode()),
            (DLQ_PARTITION, str(msg.partition).encode()),
            (DLQ_OFFSET, str(msg.offset).encode()),
        ]
        try:
            await dlq_topic.send(key=msg.key, value=msg.value, headers=headers)
        except Exception:  # the dead letter cannot be written: never stop the agent for it
            processor.stats.dlq_errors += 1
            log.exception(
                "could not write dead letter %s[%d]@%d (%s); skipped",
                msg.topic,
                msg.partition,
                msg.offset,
                rejected.reason[:200],
            )
            return
        log.warning(
            "dead letter %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset, rejected.reason
        )

    async def publish() -> None:
        """Write pending lists to Redis, then log what was published to the impressions topic."""
        await publisher.flush()
        quality = processor.drain_quality()
        processor.stats.item_updates_sent += len(quality)
        for update in quality:
            await item_updates_topic.send(
                key=update["item_id"].encode(), value=json.dumps(update).encode()
            )
        pending, processor.impressions = processor.impressions, []
        for record in pending:
            await impressions_topic.send(
                key=record["user_id"].encode(), value=json.dumps(record).encode()
            )

    read_offsets: dict[int, int] = {}
    """Events partition -> last offset handed to the processor (for consumer lag)."""

    @app.agent(events_topic, name="eddy.process_events")
    async def process_events(stream: faust.StreamT[Any]) -> AsyncIterator[None]:
        async for event in stream.events():
            msg = event.message
            read_offsets[msg.partition] = msg.offset
            produced_at = msg.timestamp if msg.timestamp and msg.timestamp > 0 else None
            at = (msg.partition, msg.offset)
            rejected = processor.on_event(msg.value, msg.key, produced_at, at)
            if rejected is not None:
                await dead_letter(event, rejected)
            updates, processor.item_updates = processor.item_updates, []
            processor.stats.item_updates_sent += len(updates)
            for item_id, context in updates:
                await item_updates_topic.send(
                    key=item_id.encode(),
                    value=json.dumps({"item_id": item_id, "context": context}).encode(),
                )
            if publisher.due():
                await publish()
            yield None

    @app.agent(items_topic, name="eddy.process_items")
    async def process_items(stream: faust.StreamT[Any]) -> AsyncIterator[None]:
        async for event in stream.events():
            rejected = processor.on_item(event.message.value, event.message.key)
            if rejected is not None:
                await dead_letter(event, rejected)
            yield None

    @app.agent(item_updates_topic, name="eddy.learn_items")
    async def learn_items(stream: faust.StreamT[Any]) -> AsyncIterator[None]:
        """Item-partitioned learning: one worker owns each item's vector and broadcasts it."""
        async for event in stream.events():
            learned = processor.on_item_update(event.message.value)
            processor.stats.item_updates_done += 1
            if learned is not None:
                item_id, value = learned
                item_vectors[item_id] = value
            yield None

    @app.timer(settings.flush_interval_ms / 1000, name="eddy.flush")
    async def flush() -> None:
        if publisher.due():
            await publish()

    @app.timer(settings.popular_refresh_s, name="eddy.refresh_popular")
    async def refresh_popular() -> None:
        processor.refresh_popular()

    stats_redis = async_client(settings, socket_timeout=5)
    events_topic_name = settings.topic_events

    def measure_lag() -> int:
        """Record the lag of each events partition this worker owns; return how many."""
        owned = [tp for tp in app.assignor.assigned_actives() if tp.topic == events_topic_name]
        lags: dict[int, int] = {}
        for tp in owned:
            end = app.consumer.highwater(tp)
            if end is not None and end >= 0:
                read = read_offsets.get(tp.partition)
                lags[tp.partition] = max(0, end - (read + 1 if read is not None else 0))
        processor.stats.consumer_lag = {events_topic_name: lags}
        return len(owned)

    @app.timer(STATS_INTERVAL_S, name="eddy.stats")
    async def write_stats() -> None:
        key = settings.key("stats", settings.worker_id)
        owned = measure_lag()
        try:
            fields: Any = dict(stats_mapping(processor.stats, settings.worker_id, processor.items))
            fields["events_partitions"] = str(owned)
            await stats_redis.hset(key, mapping=fields)
            await stats_redis.expire(key, 3600)
        except aioredis.RedisError as exc:
            log.warning("could not write stats: %s", exc)

    register_metrics(processor.stats, settings.worker_id)

    @app.page("/metrics")
    class MetricsView(faust.web.View):
        """Prometheus exposition of this worker."""

        async def get(self, request: faust.web.Request) -> faust.web.Response:
            return self.bytes(exposition(processor.stats), content_type=METRICS_CONTENT_TYPE)

    @app.page("/health")
    class HealthView(faust.web.View):
        """200 once the worker has recovered its tables and serves; 503 before."""

        async def get(self, request: faust.web.Request) -> faust.web.Response:
            recovery: Any = getattr(app.tables, "recovery", None)
            ready = bool(recovery and recovery.completed.is_set()) and not app.rebalancing
            body = {
                "status": "ok" if ready else "recovering",
                "worker_id": settings.worker_id,
                "events_total": sum(processor.stats.events.values()),
                "model_version": processor.model_version,
            }
            return self.json(body, status=200 if ready else 503)

    async def final_flush(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        await publish()
        await write_stats()
        await stats_redis.aclose()
        await processor.sink.close()

    app.on_before_shutdown.connect(final_flush)

    return EddyApp(
        app,
        processor,
        events_topic,
        items_topic,
        dlq_topic,
        profiles,
        catalog,
        popularity,
        process_events,
        process_items,
    )


def load_prior(settings: Settings) -> ModelArtefact | None:
    """The latest artefact in ``settings.model_dir``, or None if none was trained."""
    if latest(settings.model_dir) is None:
        log.warning(
            "no model artefact in %s: starting from popularity learned online "
            "(run `eddy train` to start from history)",
            settings.model_dir,
        )
        return None
    artefact = load(settings.model_dir)
    log.info(
        "loaded model %s (%d items) from %s", artefact.version, len(artefact), settings.model_dir
    )
    return artefact


def run_worker(settings: Settings) -> None:
    """Run one worker in the foreground until SIGINT/SIGTERM."""
    eddy = build_app(settings)
    worker = faust.Worker(
        eddy.app, loglevel=settings.log_level, logging_config=logging_config(settings)
    )
    worker.execute_from_commandline()
