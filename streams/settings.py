"""All of Eddy's configuration: one pydantic-settings class, environment prefix ``EDDY_``.

Values come from, highest priority first: ``EDDY_*`` environment variables, the env
file ``<state_dir>/dev.env`` (default ``.eddy/dev.env``, written by ``eddy dev up``),
then the defaults below. Nothing else in Eddy reads the environment.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.events import DEFAULT_MAX_FUTURE_SKEW_S, EventType, is_valid_id
from models.profile import DEFAULT_EVENT_WEIGHTS
from models.recommender import DEFAULT_PROTECTED_SLOTS
from models.variants import Variant

DEFAULT_ENV_FILE = ".eddy/dev.env"


class VariantSettings(BaseModel):
    """One A/B variant: its share of users and its ranking overrides."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    share: float = Field(gt=0, description="Relative share of users (shares are normalised).")
    epsilon: float | None = Field(default=None, ge=0, le=1)
    diversity: float | None = Field(default=None, ge=0, le=1)


class Settings(BaseSettings):
    """Eddy settings; every field is read from ``EDDY_<FIELD_NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix="EDDY_",
        env_file=DEFAULT_ENV_FILE,
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,  # an invalid value may be, or hold, a secret
    )

    # --- Kafka -----------------------------------------------------------------------
    kafka_bootstrap: str = Field(
        default="127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,host:port]."
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="Kafka security protocol for every Eddy client."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        default="PLAIN", description="SASL mechanism (with a SASL_* protocol)."
    )
    kafka_sasl_username: str = Field(default="", description="SASL user name.")
    kafka_sasl_password: SecretStr = Field(
        default=SecretStr(""), description="SASL password (never logged)."
    )
    kafka_ssl_cafile: Path | None = Field(
        default=None, description="CA bundle to verify the brokers (SSL, SASL_SSL)."
    )
    kafka_ssl_certfile: Path | None = Field(
        default=None, description="Client certificate for mutual TLS (PEM)."
    )
    kafka_ssl_keyfile: Path | None = Field(
        default=None, description="Client private key for mutual TLS (PEM)."
    )
    app_id: str = Field(
        default="eddy",
        description="Faust app id: the consumer group and the prefix of internal topics.",
    )
    topic_events: str = Field(default="eddy.events", description="User events topic.")
    topic_items: str = Field(default="eddy.items", description="Item catalog upserts topic.")
    topic_dlq: str = Field(default="eddy.events.dlq", description="Dead-letter topic.")
    topic_item_updates: str = Field(
        default="eddy.item-updates",
        description="Item learning steps, keyed by item_id (item-partitioned state).",
    )
    topic_impressions: str = Field(
        default="eddy.impressions", description="Published lists with propensities (for IPS)."
    )
    events_partitions: int = Field(default=4, ge=1, description="Partitions of the events topic.")
    items_partitions: int = Field(default=1, ge=1, description="Partitions of the items topic.")
    dlq_partitions: int = Field(default=1, ge=1, description="Partitions of the DLQ topic.")
    replication_factor: int = Field(default=1, ge=1, description="Replication of created topics.")
    broker_session_timeout_s: float = Field(
        default=30.0, gt=0, description="Consumer group session timeout."
    )
    broker_rebalance_timeout_s: float = Field(
        default=60.0, gt=0, description="Longest a rebalance waits for members to rejoin."
    )

    # --- Redis -----------------------------------------------------------------------
    redis_url: SecretStr = Field(
        default=SecretStr("redis://127.0.0.1:6379/0"),
        description="Redis URL (redis:// or rediss://; may hold a password, percent-encoded, "
        "never logged).",
    )
    redis_cluster: bool = Field(
        default=False,
        description="Connect to a Redis Cluster (EDDY_REDIS_URL names any node).",
    )
    key_prefix: str = Field(default="eddy", description="Prefix of every Redis key Eddy writes.")
    rec_ttl_s: int = Field(default=7 * 86_400, ge=1, description="TTL of a user's list in Redis.")
    profile_ttl_s: int = Field(
        default=90 * 86_400,
        ge=1,
        description="TTL of a user's profile (the worker's state) in Redis, renewed by "
        "every event: a user idle this long starts afresh.",
    )
    profile_cache_size: int = Field(
        default=200_000,
        ge=1,
        description="Profiles a worker keeps in memory (least recently used out); others "
        "are read from Redis when their user's next event arrives. About 5 KB each.",
    )
    log_retention_days: float = Field(
        default=14.0,
        gt=0,
        description="Retention of the impressions (exploration log) and dead-letter topics.",
    )
    flush_interval_ms: int = Field(
        default=20,
        ge=1,
        description="Longest an event waits in the worker's micro-batch before the batch is "
        "processed and its lists written to Redis.",
    )
    batch_max_events: int = Field(
        default=500,
        ge=1,
        description="Events per micro-batch at most (a batch also closes after "
        "EDDY_FLUSH_INTERVAL_MS).",
    )
    item_window_ms: int = Field(
        default=1000,
        ge=10,
        description="How often item deltas go to the items' owners and impressions to "
        "their topic (one message per partition per window).",
    )
    flush_max_batch: int = Field(
        default=500, ge=1, description="Keys written per Redis pipeline at most."
    )

    # --- Model -----------------------------------------------------------------------
    rec_size: int = Field(default=20, ge=1, le=500, description="Items per recommendation list.")
    history_size: int = Field(
        default=2000,
        ge=1,
        description="Recent items kept per user (the item-item model scores them all).",
    )
    max_categories: int = Field(default=32, ge=1, description="Category affinities kept per user.")
    half_life_days: float = Field(
        default=30.0, gt=0, description="Half-life of user affinities and item popularity."
    )
    event_weights: dict[EventType, float] = Field(
        default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS),
        description='Weight per event type, JSON, e.g. {"view":1,"click":2,...}.',
    )
    popular_refresh_s: float = Field(
        default=5.0, gt=0, description="How often the popular lists are rewritten."
    )
    max_future_skew_s: float = Field(
        default=DEFAULT_MAX_FUTURE_SKEW_S,
        gt=0,
        description="Events further ahead of the worker's clock are rejected.",
    )
    model_version: str = Field(
        default="",
        description="Model name written with every list (default: the artefact's version, "
        "or popularity-v1 without one).",
    )
    epsilon: float = Field(
        default=0.1, ge=0, le=1, description="Exploration rate of the bandit re-ranker."
    )
    epsilon_decay: float = Field(
        default=0.0, ge=0, description="Epsilon decay: epsilon / (1 + decay * lists_published)."
    )
    min_epsilon: float = Field(default=0.0, ge=0, le=1, description="Floor of decayed epsilon.")
    protected_slots: int = Field(
        default=DEFAULT_PROTECTED_SLOTS,
        ge=0,
        description="The first slots of every list, which never explore (always greedy).",
    )
    diversity: float = Field(
        default=0.05, ge=0, le=1, description="MMR diversity weight (0: pure relevance)."
    )
    seed: int = Field(default=0, description="Seed of the worker's exploration randomness.")
    variants: dict[str, VariantSettings] = Field(
        default_factory=dict,
        description='A/B variants as JSON, e.g. `{"control": {"share": 0.5}, "explore": '
        '{"share": 0.5, "epsilon": 0.3}}` (optional `epsilon`, `diversity` per variant); '
        "empty: no experiment.",
    )
    variant_salt: str = Field(
        default="eddy", description="Salt of the user-to-variant hash; change it to reshuffle."
    )
    model_dir: Path = Field(
        default=Path("artifacts"),
        description="Directory of trained model artefacts; the worker loads the latest.",
    )

    # --- Worker process --------------------------------------------------------------
    worker_id: str = Field(
        default_factory=lambda: f"{os.uname().nodename}-{os.getpid()}",
        description="Name of this worker in stats keys and logs, and its static Kafka group "
        "member id: keep it stable across restarts and unique across workers.",
    )
    web_host: str = Field(default="127.0.0.1", description="Worker web server bind address.")
    web_port: int = Field(default=6066, ge=1, le=65535, description="Worker web server port.")
    data_dir: Path = Field(
        default=Path(".eddy/worker"), description="Worker's local state directory."
    )
    log_level: str = Field(default="info", description="Worker log level.")
    log_format: Literal["text", "json"] = Field(
        default="text", description="Worker log lines: text, or one JSON object per line."
    )
    state_dir: Path = Field(
        default=Path(".eddy"),
        description="Where `eddy dev up` records the embedded stack (dev.env, dev.json).",
    )

    @field_validator("redis_url")
    @classmethod
    def _redis_url_parses(cls, url: SecretStr) -> SecretStr:
        problem = redis_url_problem(url.get_secret_value())
        if problem is not None:
            raise ValueError(
                f"EDDY_REDIS_URL cannot be parsed: {problem}. If the password (or user "
                "name) holds any of / ? # @ [ ] % : or spaces, percent-encode it, e.g. "
                "python3 -c 'import sys, urllib.parse; "
                "print(urllib.parse.quote(sys.argv[1], safe=\"\"))' 'THE-PASSWORD' "
                "(the URL is not shown: it may hold a password)"
            )
        return url

    @field_validator("event_weights")
    @classmethod
    def _weights_non_negative(cls, weights: dict[EventType, float]) -> dict[EventType, float]:
        missing = set(EventType) - set(weights)
        if missing:
            raise ValueError(f"event_weights lacks {sorted(missing)}")
        if any(w < 0 for w in weights.values()):
            raise ValueError("event_weights must be >= 0")
        return weights

    @field_validator("variants")
    @classmethod
    def _variant_names(cls, variants: dict[str, VariantSettings]) -> dict[str, VariantSettings]:
        for name in variants:
            if not is_valid_id(name):
                raise ValueError(f"variant name {name!r} must be a valid id (letters, digits, -_.)")
        return variants

    def variant_list(self) -> list[Variant]:
        """The configured variants as ``models.variants.Variant`` (empty: no experiment)."""
        return [Variant(name, v.share, v.epsilon, v.diversity) for name, v in self.variants.items()]

    def kafka_security(self) -> dict[str, str]:
        """librdkafka (confluent-kafka) settings for the configured security protocol."""
        out: dict[str, str] = {"security.protocol": self.kafka_security_protocol}
        if self.kafka_security_protocol.startswith("SASL"):
            out["sasl.mechanism"] = self.kafka_sasl_mechanism
            out["sasl.username"] = self.kafka_sasl_username
            out["sasl.password"] = self.kafka_sasl_password.get_secret_value()
        if self.kafka_security_protocol.endswith("SSL"):
            for name, path in (
                ("ssl.ca.location", self.kafka_ssl_cafile),
                ("ssl.certificate.location", self.kafka_ssl_certfile),
                ("ssl.key.location", self.kafka_ssl_keyfile),
            ):
                if path is not None:
                    out[name] = str(path)
        return out

    def key(self, *parts: str) -> str:
        """A Redis key under ``key_prefix``: ``key("rec", "u1") == "eddy:rec:u1"``."""
        return ":".join((self.key_prefix, *parts))

    def to_env(self) -> dict[str, str]:
        """``EDDY_*`` variables that reproduce these settings in a child process."""
        env = {}
        for name, value in self.model_dump(mode="json").items():
            if value is None:
                continue  # unset: the child falls back to the same default
            if isinstance(getattr(self, name), SecretStr):
                value = getattr(self, name).get_secret_value()
            text = json.dumps(value) if isinstance(value, dict | list) else str(value)
            env[f"EDDY_{name.upper()}"] = text
        return env

    def safe_dict(self) -> dict[str, Any]:
        """Settings as a dict with secrets masked, for logs and ``eddy config``."""
        return self.model_dump(mode="json")


def redis_url_problem(url: str) -> str | None:
    """What makes a ``redis://`` or ``rediss://`` URL unusable, or None; never quotes it.

    An unencoded ``/``, ``?`` or ``#`` in the password ends the host part early (the rest
    becomes a bogus port, or the database path); ``[`` or ``]`` make a bad IPv6 host."""
    try:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            return None  # unix:// and others: left to redis-py
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return "its host:port part is not a host and a port number"
    if "@" in parts.path + parts.query + parts.fragment:
        return "an @ comes after the host: the user name or password seems to hold / ? or #"
    return None


def load_settings(**overrides: Any) -> Settings:
    """Build settings; with a non-default ``state_dir``, also read its ``dev.env``."""
    settings = Settings(**overrides)
    env_file = settings.state_dir / "dev.env"
    if env_file != Path(DEFAULT_ENV_FILE) and env_file.exists():
        settings = Settings(_env_file=env_file, **overrides)
    return settings
