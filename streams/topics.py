"""Topic set-up: Eddy creates its topics explicitly instead of relying on auto-creation."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from streams.settings import Settings

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 2 * 1024 * 1024
"""Largest message Eddy produces, and the dead-letter topic's ``max.message.bytes``: twice
Kafka's default, so anything a broker accepted on the events topic fits in the DLQ with
its reason headers."""


@dataclass(frozen=True)
class TopicSpec:
    """A topic Eddy needs, with its partitions and topic-level config."""

    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    purpose: str = ""


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """The source and dead-letter topics (Faust creates its own changelog topics)."""
    retention = {"retention.ms": str(round(settings.log_retention_days * 86_400_000))}
    return [
        TopicSpec(
            settings.topic_events, settings.events_partitions, {}, "user events, key user_id"
        ),
        TopicSpec(
            settings.topic_items,
            settings.items_partitions,
            {"cleanup.policy": "compact"},
            "item catalog upserts, key item_id",
        ),
        TopicSpec(
            settings.topic_item_updates,
            settings.events_partitions,
            {},
            "item learning steps, key item_id",
        ),
        TopicSpec(
            settings.topic_impressions,
            settings.events_partitions,
            retention,
            "published lists with propensities, key user_id",
        ),
        TopicSpec(
            settings.topic_dlq,
            settings.dlq_partitions,
            {**retention, "max.message.bytes": str(MAX_MESSAGE_BYTES)},
            "dead letters: original bytes, reason in headers",
        ),
    ]


def admin_config(settings: Settings) -> dict[str, str | int | float | bool]:
    """Plain Kafka client settings shared by Eddy's admin, producer and consumer clients."""
    return {"bootstrap.servers": settings.kafka_bootstrap, **settings.kafka_security()}


def create_topics(settings: Settings, timeout_s: float = 30.0) -> dict[str, str]:
    """Create missing topics; return ``{topic: "created" | "exists"}``.

    Raises ``RuntimeError`` with the bootstrap address when the broker cannot be reached.
    """
    admin = AdminClient(admin_config(settings))
    try:
        existing = admin.list_topics(timeout=timeout_s).topics
    except KafkaException as exc:
        raise RuntimeError(
            f"cannot reach Kafka at {settings.kafka_bootstrap} ({exc}); "
            "start it with `eddy dev up` or set EDDY_KAFKA_BOOTSTRAP"
        ) from exc
    result: dict[str, str] = {}
    wanted = []
    for spec in topic_specs(settings):
        if spec.name in existing:
            have = len(existing[spec.name].partitions)
            if have != spec.partitions:
                log.warning(
                    "topic %s has %d partitions, settings ask %d: keeping %d",
                    spec.name,
                    have,
                    spec.partitions,
                    have,
                )
            result[spec.name] = "exists"
        else:
            wanted.append(
                NewTopic(
                    spec.name, spec.partitions, settings.replication_factor, config=spec.config
                )
            )
    if wanted:
        for name, future in admin.create_topics(wanted, request_timeout=timeout_s).items():
            try:
                future.result(timeout=timeout_s)
                result[name] = "created"
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" in str(exc):
                    result[name] = "exists"
                else:
                    raise RuntimeError(f"could not create topic {name}: {exc}") from exc
    return result
