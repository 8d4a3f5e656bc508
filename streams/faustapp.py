"""The Faust app's configuration from ``Settings``, shared by the worker and the bench's
bare agent (``streams.cli.bare``): light, it imports neither models nor numpy."""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
from typing import Any, Final

import faust
from aiokafka.consumer.fetcher import Fetcher  # type: ignore[import-untyped]

from streams.settings import Settings
from streams.topics import MAX_MESSAGE_BYTES
from streams.web import drop_faust_views

EMPTY_FETCH_PAUSE_S: Final = 0.01
"""Shortest time between two fetches from one broker that return no records.

Faust asks the broker to hold a fetch for up to 1.5 s until records arrive
(``fetch_max_wait_ms``); a broker that answers at once instead (noida-db, the embedded
default) made aiokafka's consumer thread send fetch after fetch: 55-60% of a core, and as
much of the GIL taken from the step thread, which then ran at half speed. On Apache Kafka
an empty answer comes after the broker's wait, so this changes nothing there."""


def pace_empty_fetches(pause_s: float = EMPTY_FETCH_PAUSE_S) -> None:
    """Make aiokafka wait until ``pause_s`` after sending a fetch that brought no records
    before it sends the next one to that broker (process-wide, idempotent)."""
    original: Any = Fetcher._proc_fetch_request
    if getattr(original, "__eddy_paced__", False):
        return

    @functools.wraps(original)
    async def paced(self: Fetcher, assignment: Any, node_id: int, request: Any) -> bool:
        started = time.monotonic()
        got: bool = await original(self, assignment, node_id, request)
        if not got:  # the fetcher sends the node nothing else while this task runs
            rest = started + pause_s - time.monotonic()
            if rest > 0:
                await asyncio.sleep(rest)
        return got

    paced.__eddy_paced__ = True  # type: ignore[attr-defined]
    Fetcher._proc_fetch_request = paced


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


def faust_app(settings: Settings, **extra: Any) -> faust.App:
    """A Faust app configured from settings (aiokafka transport, in-memory stores, static
    group membership, ``stream_wait_empty`` off), serving none of Faust's own web views;
    ``extra`` adds or overrides Faust settings."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "broker": f"kafka://{settings.kafka_bootstrap}",
        "broker_credentials": broker_credentials(settings),
        "store": "memory://",
        "datadir": str(settings.data_dir),
        "topic_partitions": settings.events_partitions,
        "topic_replication_factor": settings.replication_factor,
        "broker_session_timeout": settings.broker_session_timeout_s,
        "broker_rebalance_timeout": settings.broker_rebalance_timeout_s,
        "stream_wait_empty": False,  # the events agent batches and commits by itself
        "consumer_group_instance_id": settings.worker_id,
        "web_bind": settings.web_host,
        "web_port": settings.web_port,
        "web_host": settings.web_host,
        "key_serializer": "raw",
        "value_serializer": "raw",
        "autodiscover": False,
        "producer_linger": 0.005,
        "producer_max_request_size": MAX_MESSAGE_BYTES,
        # Faust's own web views (see streams/web.py):
        "web_router_enabled": False,
        "web_tables_enabled": False,
        "web_graph_enabled": False,
        "web_stats_enabled": False,
        "web_metrics_enabled": False,
    }
    config.update(extra)
    pace_empty_fetches()
    app = faust.App(settings.app_id, **config)
    drop_faust_views(app)  # no /table/ (profiles), /router/, /graph/...: see streams/web.py
    return app
