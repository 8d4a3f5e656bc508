"""The bench's baseline: a bare Faust agent on the events topic, ``json.loads`` only.

``python -m streams.cli.bare`` (settings from ``EDDY_*``, as for ``eddy worker``) runs a
Faust app configured as the worker's (``streams.app.faust_app``: the same broker, consumer
group settings, in-memory store, producer linger, web server on ``EDDY_WEB_HOST:
EDDY_WEB_PORT`` with Faust's own views dropped), with the events topic declared with acks
off as the worker declares it, and one agent that iterates ``stream.events()`` and parses
each value with ``json.loads``: no state, no writes, nothing else on the event path. It
counts the events and stamps the first and the newest (wall clock, as the worker's stats
do); a timer copies the counts to the Redis hash ``{prefix}:bare:{worker_id}`` four times
a second. It does not import the worker (models, numpy, FAISS), so it starts in about half
the time; ``eddy bench`` runs it after each worker, in its own consumer group, on the
worker's events topic: the same events on the same broker.
"""

from __future__ import annotations

import json
import time
from typing import Any, Final

import faust

from streams.logs import logging_config
from streams.redisclient import async_client
from streams.settings import Settings, load_settings
from streams.web import drop_faust_views

STATS_INTERVAL_S: Final = 0.25
STATS_TTL_S: Final = 3600


def stats_key(settings: Settings) -> str:
    """The Redis hash the bare agent writes its counts to."""
    return settings.key("bare", settings.worker_id)


def _credentials(settings: Settings) -> Any:
    if settings.kafka_security_protocol == "PLAINTEXT":
        return None
    from streams.app import broker_credentials  # the worker's, for TLS and SASL

    return broker_credentials(settings)


def bare_app(settings: Settings) -> faust.App:
    """A Faust app with the consumer configuration of ``streams.app.faust_app``."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        broker_credentials=_credentials(settings),
        store="memory://",
        datadir=str(settings.data_dir),
        topic_partitions=settings.events_partitions,
        topic_replication_factor=settings.replication_factor,
        broker_session_timeout=settings.broker_session_timeout_s,
        broker_rebalance_timeout=settings.broker_rebalance_timeout_s,
        stream_wait_empty=False,
        consumer_group_instance_id=settings.worker_id,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        web_host=settings.web_host,
        key_serializer="raw",
        value_serializer="raw",
        autodiscover=False,
        producer_linger=0.005,
        web_router_enabled=False,
        web_tables_enabled=False,
        web_graph_enabled=False,
        web_stats_enabled=False,
        web_metrics_enabled=False,
    )
    drop_faust_views(app)
    return app


def build_bare(settings: Settings) -> faust.App:
    """The bare app: one agent on the events topic and a timer writing its counts."""
    app = bare_app(settings)
    topic = app.topic(settings.topic_events, partitions=settings.events_partitions, acks=False)
    counts: dict[str, float] = {"events": 0, "bytes": 0}
    redis_client = async_client(settings, socket_timeout=5)

    @app.agent(topic, name="eddy.bare_events")
    async def bare_events(stream: faust.StreamT[Any]) -> None:
        async for event in stream.events():
            value = event.message.value
            json.loads(value)
            now = time.time()
            if not counts["events"]:
                counts["first_event_at"] = now
            counts["last_event_at"] = now
            counts["events"] += 1
            counts["bytes"] += len(value)

    @app.timer(STATS_INTERVAL_S, name="eddy.bare_stats")  # type: ignore[untyped-decorator]
    async def write_stats() -> None:
        fields: Any = {k: str(v) for k, v in counts.items()}
        fields["updated_at"] = str(time.time())
        await redis_client.hset(stats_key(settings), mapping=fields)
        await redis_client.expire(stats_key(settings), STATS_TTL_S)

    return app


def main() -> None:
    """Run the bare agent in the foreground until SIGINT/SIGTERM."""
    settings = load_settings()
    app = build_bare(settings)
    worker = faust.Worker(app, loglevel=settings.log_level, logging_config=logging_config(settings))
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
