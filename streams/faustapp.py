"""The Faust app's configuration from ``Settings``, shared by the worker and the bench's
bare agent (``streams.cli.bare``): light, it imports neither models nor numpy."""

from __future__ import annotations

import ssl
from typing import Any

import faust

from streams.settings import Settings
from streams.topics import MAX_MESSAGE_BYTES
from streams.web import drop_faust_views


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
    app = faust.App(settings.app_id, **config)
    drop_faust_views(app)  # no /table/ (profiles), /router/, /graph/...: see streams/web.py
    return app
