"""The Faust app: topics, agents and timers, built from ``Settings``; wiring only.

The events agent decodes messages and hands them to ``streams.pipeline`` (micro-batches,
user loads, writes: nothing on the event loop waits for Redis or for the step, which
runs on the worker's step thread); rejects go to the dead-letter topic with the reason
and the source position in headers. The events and item-updates topics are read with
Faust's acks off: the worker commits an offset only once the state it produced is in
Redis. Item deltas go to each item's owner on ``eddy.item-updates`` once per window,
one message per partition; the owner publishes the records it learned in the window as
one entry through Redis (``streams.itemfeed``), which every worker follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import faust
import redis.asyncio as aioredis
from faust.types import TP

from models.artefact import ModelArtefact, latest, load
from models.itemlearn import decode_deltas, learn
from models.step import Inbound
from streams.faustapp import faust_app
from streams.gaps import GapTracker, Verdict
from streams.itemfeed import ItemFeed, Window
from streams.logs import logging_config
from streams.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from streams.metrics import exposition
from streams.metrics import register as register_metrics
from streams.page import register_page
from streams.pipeline import EventPipeline
from streams.redisclient import async_client
from streams.settings import Settings
from streams.shutdown import BoundedWorker
from streams.sink import RecSink, RedisSink
from streams.stats import stats_mapping
from streams.worker import SESSION_END_BATCH, Rejected, Worker, encode_parts

log = logging.getLogger(__name__)

DLQ_REASON = "eddy.dlq.reason"
DLQ_TOPIC = "eddy.dlq.topic"
DLQ_PARTITION = "eddy.dlq.partition"
DLQ_OFFSET = "eddy.dlq.offset"
STATS_INTERVAL_S = 1.0
SEEK_TIMEOUT_S = 5.0
"""Longest wait for the events consumer to seek back over a hole (``streams.gaps``)."""
SHUTDOWN_WRITES_S = 6.0
"""Longest a stopping worker spends on its last writes and commit."""
SESSION_CHECK_S = 5.0
"""How often the worker re-ranks the lists of users whose session ended."""
COMMIT_INTERVAL_S = 1.0
"""How often the events offsets whose state is written are committed."""
REVOKE_WRITES_S = 5.0
"""Longest a revocation waits for the buffered events to be written."""
FREEZE_FOR_S = 60.0
"""For how long after recovery the worker moves what is alive into the garbage collector's
permanent generation, once a second (``gc.freeze``): the artefact, the catalog and the
item index then never slow a full collection, which took 0.4-2.5 s with them, blocking
both threads."""
GC_THRESHOLDS = (10_000, 10, 10)
"""The worker's garbage-collector thresholds: a young collection per 10,000 allocations
instead of 700. The step allocates many short-lived containers; with the default, 6,000
live-mix events in process caused 1,787 collections (0.46-0.57 s of CPU) whose full ones
took 36-62 ms each, holding the GIL and so the event loop; with these, 109 collections
(0.18-0.19 s), the longest 10 ms (docs/benchmarks.md)."""
DIGEST_INTERVAL_S = 5.0
"""How often the item-state digest in the stats hash is computed (on the step thread)."""

__all__ = ["EddyApp", "build_app", "impressions_body", "load_prior", "run_worker"]
GLOBAL_RECOVERY_BUFFER = 1
"""Faust resumes a GlobalTable's changelog partitions that this worker does not also hold
as standby only when the table's recovery buffer is 1 (docs/reliability.md)."""
RECOVERY_DELAY_S = 2.0
"""Pause after each rebalance before table recovery seeks its changelogs (a stale fetch
returns first; docs/reliability.md, "Faust recovery")."""


@dataclass
class EddyApp:
    """The Faust app with handles on what tests and the CLI need."""

    app: faust.App
    worker: Worker
    events_topic: Any
    items_topic: Any
    dlq_topic: Any
    catalog: Any
    events_agent: Any
    items_agent: Any
    drain: Callable[[], Awaitable[None]]
    """Process the buffered events now (what the flush timer does)."""


def build_app(settings: Settings, sink: RecSink | None = None) -> EddyApp:
    """Define topics, the catalog table, agents and timers on a new Faust app."""
    s = settings
    app = faust_app(s, stream_recovery_delay=RECOVERY_DELAY_S)
    register_page(app, s)
    events_topic = app.topic(s.topic_events, partitions=s.events_partitions, acks=False)
    items_topic = app.topic(s.topic_items, partitions=s.items_partitions)
    dlq_topic = app.topic(s.topic_dlq, partitions=s.dlq_partitions)
    impressions_topic = app.topic(s.topic_impressions, partitions=s.events_partitions)
    item_updates_topic = app.topic(s.topic_item_updates, partitions=s.events_partitions, acks=False)

    async def on_catalog_changelog(event: faust.EventT[Any]) -> None:
        value = event.value
        if isinstance(value, bytes | str):
            value = json.loads(value)
        if isinstance(value, dict):
            worker.on_catalog_queued(value)

    catalog = app.GlobalTable(
        "catalog",
        key_type=str,
        recovery_buffer_size=GLOBAL_RECOVERY_BUFFER,
        partitions=s.items_partitions,
        on_changelog_event=on_catalog_changelog,
        help="Item catalog keyed by item_id, on every worker.",
    )
    redis_url = s.redis_url.get_secret_value()
    prior = load_prior(s)
    worker = Worker(s, sink or RedisSink(redis_url, cluster=s.redis_cluster), prior=prior)
    redis_client = async_client(s, socket_timeout=5)
    feed = ItemFeed(s, redis_client)
    window = Window()
    """Item records learned since the last publish (this worker's items)."""
    read_offsets: dict[int, int] = {}
    """Events partition -> last offset read (for consumer lag)."""
    committed: dict[tuple[str, int], int] = {}
    owner_offsets: dict[int, int] = {}
    """Item-updates partition -> newest offset applied (cached from Redis)."""
    published: dict[int, int] = {}
    """Item-updates partition -> newest offset whose records are in Redis (committable)."""
    digest: list[tuple[int, str] | None] = [None]
    digest_at = [0.0]
    ready_at: list[float | None] = [None]

    async def dead_letter(msg: faust.types.Message, rejected: Rejected) -> None:
        headers = [
            (DLQ_REASON, rejected.reason.encode()),
            (DLQ_TOPIC, msg.topic.encode()),
            (DLQ_PARTITION, str(msg.partition).encode()),
            (DLQ_OFFSET, str(msg.offset).encode()),
        ]
        try:
            await dlq_topic.send(key=msg.key, value=msg.value, headers=headers)
        except Exception:  # the dead letter cannot be written: never stop the agent for it
            worker.stats.dlq_errors += 1
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

    pipeline = EventPipeline(worker, s.batch_max_events, s.flush_interval_ms / 1000, dead_letter)

    async def one_by_one(batch: list[tuple[faust.types.Message, Inbound]]) -> None:
        """Process a failed batch event by event; dead-letter the events that fail.

        The step may have applied part of the batch in memory: memory is dropped and each
        user is read again from Redis (or from the writes still pending), where nothing
        of the batch was written."""
        await worker.forget_memory()
        for msg, inbound in batch:
            try:
                await worker.load_until_loaded([inbound])
                await worker.apply([inbound])
            except Exception as exc:
                await worker.forget_memory()
                worker.stats.dead_letters += 1
                await dead_letter(msg, Rejected(f"processing failed: {exc!r:.300}"))
                worker.mark_skipped(msg.partition, msg.offset)

    pipeline.failed = one_by_one

    gaps = GapTracker()
    gap_epoch = [0]
    """Revocations so far: a start offset read across one is stale."""

    async def start_offset(partition: int, first: int) -> int:
        """Where the consumer reads ``partition`` from since its assignment: the committed
        offset Faust sought it to (``Consumer.perform_seek``), else (nothing committed,
        or 0) the log start, where ``auto_offset_reset`` (earliest) put it."""
        consumer: Any = app.consumer
        tp = TP(events_topic_name, partition)
        sought = consumer._committed_offset.get(tp)
        if sought is not None:
            return int(sought)
        if first == 0:
            return 0
        try:
            earliest = await asyncio.wait_for(consumer.earliest_offsets(tp), SEEK_TIMEOUT_S)
            return min(first, int(earliest[tp]))
        except Exception as exc:  # the broker does not answer: trust the consumer
            log.warning("no start offset for partition %d (%r): from %d", partition, exc, first)
            return first

    async def seek_back(partition: int, offset: int) -> None:
        """Seek the events consumer back to ``offset`` (a hole: ``streams.gaps``)."""
        tp = TP(events_topic_name, partition)
        try:
            if tp not in app.consumer.assignment():
                return  # revoked meanwhile: the next owner reads from the commit
            await asyncio.wait_for(app.consumer.seek_wait({tp: offset}), SEEK_TIMEOUT_S)
        except Exception as exc:  # the hole stays open: sought again in RESEEK_S
            log.warning("could not seek partition %d back to %d: %r", partition, offset, exc)

    def gap_stats() -> None:
        stats = worker.stats
        stats.offset_gaps, stats.offset_gap_seeks = gaps.gaps, gaps.seeks
        stats.offset_jumps, stats.redelivered_dropped = gaps.jumps, gaps.redelivered

    async def admit_offset(msg: faust.types.Message) -> bool:
        """Whether the agent hands ``msg`` on: only the next offset of its partition
        (``streams.gaps``); seeks back over a hole."""
        partition = msg.partition
        if not gaps.known(partition):
            epoch = gap_epoch[0]
            start = await start_offset(partition, msg.offset)
            if epoch != gap_epoch[0]:
                return False  # revoked while asking: a message of the old assignment
            gaps.start(partition, start)
        verdict = gaps.check(partition, msg.offset)
        if verdict is not Verdict.TAKE and verdict is not Verdict.JUMP:
            if verdict is Verdict.SEEK:
                await seek_back(partition, gaps.target(partition))
            gap_stats()
            return False
        if verdict is Verdict.JUMP:
            gap_stats()
        return True

    @app.timer(1.0, name="eddy.gaps")
    async def reseek() -> None:
        """Seek again where a seek over a hole brought nothing (no message may come)."""
        for partition, offset in gaps.due():
            await seek_back(partition, offset)
        gap_stats()

    @app.agent(events_topic, name="eddy.process_events")
    async def process_events(stream: faust.StreamT[Any]) -> None:
        async for event in stream.events():
            msg = event.message
            if not await admit_offset(msg):
                continue
            read_offsets[msg.partition] = msg.offset
            produced_at = msg.timestamp if msg.timestamp and msg.timestamp > 0 else None
            decoded = worker.decode(msg.value, msg.key, (msg.partition, msg.offset), produced_at)
            pipeline.add(msg, decoded)
            await pipeline.room()

    @app.task
    async def pump() -> None:
        await pipeline.run_pump()

    @app.task
    async def loader() -> None:
        await pipeline.run_loader()

    @app.task
    async def writer() -> None:
        await pipeline.run_writer()

    @app.timer(s.flush_interval_ms / 1000, name="eddy.flush")
    async def flush() -> None:
        pipeline.tick()

    async def send_items() -> None:
        """Once per window: item deltas to their owners, the impressions log, and the
        records this worker learned as an owner."""
        parts = worker.take_item_updates()
        if parts:
            bodies = await asyncio.to_thread(encode_parts, parts)
            for partition, body in bodies.items():
                await item_updates_topic.send(
                    key=str(partition).encode(), value=body, partition=partition
                )
                worker.stats.item_updates_sent += 1
        pending, worker.impressions = worker.impressions, []
        if pending:
            body = await asyncio.to_thread(impressions_body, pending)
            await impressions_topic.send(key=pending[0]["user_id"].encode(), value=body)
        await publish_window()

    async def publish_window() -> None:
        """The records learned this window, as one feed entry (kept if Redis fails)."""
        if not window:
            return
        taken = window.take()
        try:
            await feed.publish(list(taken.records.values()), taken.offsets)
        except aioredis.RedisError as exc:
            log.warning("could not publish item records: %s; kept for the next window", exc)
            window.restore(taken)
            return
        for p, o in taken.offsets.items():
            published[p] = max(o, published.get(p, -1))

    # Faust's timer decorator returns a wrapper that does nothing once the app stops, so
    # the timers call plain functions and the shutdown calls those directly.
    app.timer(s.item_window_ms / 1000, name="eddy.send_items")(send_items)

    @app.timer(SESSION_CHECK_S, name="eddy.end_sessions")
    async def end_sessions() -> None:
        """Lists of users whose session ended, re-ranked with the between-sessions blend."""
        while await worker.end_sessions() >= SESSION_END_BATCH:
            pass

    @app.timer(COMMIT_INTERVAL_S, name="eddy.commit")
    async def commit() -> None:
        await commit_offsets()

    async def commit_offsets() -> None:
        """Commit the events offsets whose state is written and the item-updates offsets
        whose records are published."""
        wanted = [(events_topic_name, worker.committable), (s.topic_item_updates, published)]
        offsets = {
            TP(topic, p): o + 1
            for topic, done in wanted
            for p, o in done.items()
            if o + 1 > committed.get((topic, p), -1)
        }
        if not offsets:
            return
        try:
            if await cast(Any, app.consumer)._commit(offsets):
                committed.update({(tp.topic, tp.partition): o for tp, o in offsets.items()})
        except Exception as exc:  # the next commit carries the same offsets
            log.warning("could not commit offsets: %s", exc)

    @app.agent(items_topic, name="eddy.process_items")
    async def process_items(stream: faust.StreamT[Any]) -> None:
        async for event in stream.events():
            msg = event.message
            result = worker.on_item_queued(msg.value, msg.key)
            if isinstance(result, Rejected):
                await dead_letter(msg, result)
            else:
                catalog[result["item_id"]] = result  # the validated, complete document

    @app.agent(item_updates_topic, name="eddy.learn_items")
    async def learn_items(stream: faust.StreamT[Any]) -> None:
        """Item-partitioned learning: one worker owns each item's state and shares it,
        once per window (``send_items``)."""
        async for event in stream.events():
            msg = event.message
            if msg.partition not in owner_offsets:
                owner_offsets[msg.partition] = await feed.applied_offset(msg.partition)
            if msg.offset <= owner_offsets[msg.partition]:
                published[msg.partition] = max(msg.offset, published.get(msg.partition, -1))
                continue  # replayed after a restart: already applied
            try:
                deltas = decode_deltas(msg.value)
            except ValueError as exc:
                log.warning("skipping a malformed item update: %s", exc)
                deltas = {}
            records = await worker.call(
                learn, deltas, worker.step.popularity, worker.items, worker.step.item_versions
            )
            window.add(records, msg.partition, msg.offset)
            owner_offsets[msg.partition] = msg.offset
            worker.stats.item_updates_done += 1

    @app.task
    async def follow_items() -> None:
        """Apply the item records every owner publishes (this worker's own included)."""
        while not app.should_stop:
            try:
                last_id, records = await feed.snapshot()
                await worker.call(worker.apply_records, records)
                await worker.refresh_popular_async()
                while not app.should_stop:
                    last_id, records = await feed.follow(last_id)
                    if records:
                        await worker.call(worker.apply_records, records)
            except aioredis.RedisError as exc:
                log.warning("item feed: %s; reloading in 1 s", exc)
                await asyncio.sleep(1.0)

    @app.timer(s.popular_refresh_s, name="eddy.refresh_popular")
    async def refresh_popular() -> None:
        await worker.refresh_popular_async()

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        try:
            await asyncio.wait_for(pipeline.drain(), REVOKE_WRITES_S)
        except Exception as exc:  # the store is down: the next owner reads it again
            log.warning("revoked with writes not done (%r): they are dropped", exc)
        await publish_window()
        await commit_offsets()
        window.take()  # not published: the next owner learns it again (not committed)
        published.clear()
        pipeline.reset()
        gaps.clear()  # with the pipeline: what it held is read again from the commit
        gap_epoch[0] += 1
        await worker.reset()
        owner_offsets.clear()
        committed.clear()

    events_topic_name = s.topic_events
    redis_run: list[str | None] = [None]
    """Redis's run id when last seen: a new one means Redis restarted, maybe empty."""

    def measure_lag() -> int:
        """Record the lag of each events partition this worker owns; return how many."""
        owned = [tp for tp in app.assignor.assigned_actives() if tp.topic == events_topic_name]
        lags: dict[int, int] = {}
        for tp in owned:
            end = app.consumer.highwater(tp)
            if end is not None and end >= 0:
                read = read_offsets.get(tp.partition)
                lags[tp.partition] = max(0, end - (read + 1 if read is not None else 0))
        worker.stats.consumer_lag = {events_topic_name: lags}
        return len(owned)

    async def write_stats() -> None:
        key = s.key("stats", s.worker_id)
        owned = measure_lag()
        if time.monotonic() - digest_at[0] >= DIGEST_INTERVAL_S:
            digest_at[0] = time.monotonic()
            digest[0] = await worker.call(worker.digest)  # on the step thread: it reads all
        try:
            fields: Any = dict(stats_mapping(worker.stats, s.worker_id, digest[0]))
            fields["events_partitions"] = str(owned)
            await redis_client.hset(key, mapping=fields)
            await redis_client.expire(key, 3600)
            server: Any = await redis_client.info("server")
            run_id = str(server.get("run_id", ""))
            if redis_run[0] is not None and run_id != redis_run[0]:
                log.warning("Redis restarted (run id changed): writing item documents again")
                await worker.on_store_restart_async()
            redis_run[0] = run_id
        except aioredis.RedisError as exc:
            log.warning("could not write stats: %s", exc)

    app.timer(STATS_INTERVAL_S, name="eddy.stats")(write_stats)

    @app.timer(STATS_INTERVAL_S, name="eddy.gc_freeze")
    async def freeze_startup_objects() -> None:
        recovery: Any = getattr(app.tables, "recovery", None)
        if recovery is None or not recovery.completed.is_set():
            return
        ready = ready_at[0]
        if ready is None:
            ready = ready_at[0] = time.monotonic()
        if time.monotonic() - ready < FREEZE_FOR_S:
            gc.freeze()  # O(1); garbage alive now is kept: only the first minute's

    register_metrics(worker.stats, s.worker_id)

    @app.page("/metrics")
    class MetricsView(faust.web.View):
        """Prometheus exposition of this worker."""

        async def get(self, request: faust.web.Request) -> faust.web.Response:
            return self.bytes(exposition(worker.stats), content_type=METRICS_CONTENT_TYPE)

    @app.page("/health")
    class HealthView(faust.web.View):
        """200 once the worker has recovered its tables and serves; 503 before."""

        async def get(self, request: faust.web.Request) -> faust.web.Response:
            recovery: Any = getattr(app.tables, "recovery", None)
            ready = bool(recovery and recovery.completed.is_set()) and not app.rebalancing
            body = {
                "status": "ok" if ready else "recovering",
                "worker_id": s.worker_id,
                "events_total": sum(worker.stats.events.values()),
                "model_version": worker.model_version,
            }
            return self.json(body, status=200 if ready else 503)

    async def final_writes() -> None:
        """Process and write what can be, then commit it in any case."""
        try:
            await asyncio.wait_for(pipeline.drain(), SHUTDOWN_WRITES_S - 2.0)
        except Exception as exc:  # the store or the broker is down
            log.warning("stopping with writes not done (%r)", exc)
        await publish_window()
        await commit_offsets()
        await send_items()
        await write_stats()

    async def final_flush(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        """Write and commit what can be, within ``SHUTDOWN_WRITES_S``: an unreachable
        broker or Redis must not keep a stopping worker alive (what is not committed is
        read again by the next owner, and skipped where a profile already has it)."""
        try:
            await asyncio.wait_for(final_writes(), SHUTDOWN_WRITES_S)
        except (TimeoutError, aioredis.RedisError) as exc:
            log.warning("stopping without the last writes (%r)", exc)
        for closing in (redis_client.aclose(), worker.sink.close()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(closing, 1.0)
        worker.close()

    app.on_before_shutdown.connect(final_flush)

    return EddyApp(
        app,
        worker,
        events_topic,
        items_topic,
        dlq_topic,
        catalog,
        process_events,
        process_items,
        pipeline.drain,
    )


def impressions_body(pending: list[dict[str, Any]]) -> bytes:
    """``{"lists": [...]}``, one ``json.dumps`` per list: a single call for the whole
    window would hold the GIL (and so the event loop) for tens of milliseconds."""
    lists = [json.dumps(doc, separators=(",", ":")) for doc in pending]
    return ('{"lists":[' + ",".join(lists) + "]}").encode()


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
    gc.set_threshold(*GC_THRESHOLDS)
    eddy = build_app(settings)
    worker = BoundedWorker(
        eddy.app, loglevel=settings.log_level, logging_config=logging_config(settings)
    )
    worker.execute_from_commandline()
