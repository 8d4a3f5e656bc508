"""The bench's baseline: a bare Faust agent on the events topic, ``json.loads`` only.

``python -m streams.cli.bare`` (settings from ``EDDY_*``, as for ``eddy worker``) runs a
Faust app built by the worker's own configuration function (``streams.faustapp.faust_app``:
broker, credentials, session and rebalance timeouts, static group membership, in-memory
store, ``stream_wait_empty`` off, producer linger, web server on ``EDDY_WEB_HOST:
EDDY_WEB_PORT`` with Faust's own views dropped; not the 2 s recovery delay, which only
delays the start) and the events topic declared with acks off as the worker declares it.
Its one agent iterates ``stream.events()`` and parses each value with ``json.loads``: no
state, no writes, nothing else on the event path. It counts the events and stamps the
first and the newest (wall clock, as the worker's stats do); a timer copies the counts to
the Redis hash ``{prefix}:bare:{worker_id}`` four times a second. It does not import the
worker (models, numpy, FAISS), so it starts in about half the time. ``eddy bench`` runs it
after each worker has exited, in its own consumer group, on the worker's events topic:
the same events on the same broker.
"""

from __future__ import annotations

import json
import time
from typing import Any, Final

import faust

from streams.faustapp import faust_app
from streams.logs import logging_config
from streams.redisclient import async_client
from streams.settings import Settings, load_settings

STATS_INTERVAL_S: Final = 0.25
STATS_TTL_S: Final = 3600


def stats_key(settings: Settings) -> str:
    """The Redis hash the bare agent writes its counts to."""
    return settings.key("bare", settings.worker_id)


def bare_app(settings: Settings) -> faust.App:
    """A Faust app with the worker's configuration (``streams.faustapp.faust_app``),
    without the worker's 2 s recovery delay, which only delays the start."""
    return faust_app(settings)


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
