"""End to end on the real broker and redis-server: events in Kafka -> lists in Redis."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from models.artefact import save
from models.datasets import Dataset
from models.events import Event, EventType, ItemUpsert
from models.reclist import RecList
from models.training import TrainConfig, train
from streams.app import DLQ_OFFSET, DLQ_PARTITION, DLQ_REASON, DLQ_TOPIC
from streams.settings import Settings
from streams.topics import create_topics
from tests.support import (
    KAFKA_ONLY,
    Endpoints,
    WorkerProcess,
    consume_all,
    produce,
    wait_for,
)

pytestmark = pytest.mark.integration

CATALOG = {
    "a1": ("Die Hard", ["Action"]),
    "a2": ("Heat", ["Action", "Crime"]),
    "a3": ("Speed", ["Action"]),
    "a4": ("Ronin", ["Action"]),
    "c1": ("Up", ["Animation", "Children"]),
    "c2": ("Cars", ["Animation", "Children"]),
    "c3": ("Coco", ["Animation"]),
    "c4": ("Soul", ["Animation"]),
}


def event(kind: str, user: str, item: str, ts: float, **extra: Any) -> tuple[str, str]:
    body = {"type": kind, "user_id": user, "item_id": item, "ts": ts, **extra}
    return user, json.dumps(body)


def items_messages() -> list[tuple[str, str]]:
    return [
        (i, json.dumps({"item_id": i, "title": t, "categories": c}))
        for i, (t, c) in CATALOG.items()
    ]


def read_rec(r: redis.Redis, s: Settings, user: str) -> RecList | None:
    raw = r.get(s.key("rec", user))
    return RecList.model_validate_json(raw) if raw else None


def wait_list(r: redis.Redis, s: Settings, user: str, event_ts: float) -> RecList:
    def probe() -> RecList | None:
        recs = read_rec(r, s, user)
        return recs if recs and recs.event_ts == event_ts and recs.items else None

    return wait_for(probe, 30, f"list of {user} reflecting ts={event_ts}")


def read_profile(r: redis.Redis, s: Settings, user: str) -> dict[str, Any] | None:
    raw = r.get(s.key("profile", user))
    return json.loads(raw) if raw else None


@pytest.fixture
def r(settings: Settings) -> redis.Redis:
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    yield client
    client.close()


def seed(settings: Settings) -> float:
    """Create topics, send the catalog and background popularity; return base ts."""
    create_topics(settings)
    produce(settings.kafka_bootstrap, settings.topic_items, items_messages())
    now = time.time() - 3600
    crowd = [event("click", f"crowd{n}", item, now) for n in range(3) for item in CATALOG]
    produce(settings.kafka_bootstrap, settings.topic_events, crowd)
    return now


def test_events_lead_to_lists_that_follow_categories(
    settings: Settings, r: redis.Redis, start_worker: Callable[[Settings], WorkerProcess]
) -> None:
    now = seed(settings)
    start_worker(settings)
    wait_for(lambda: read_rec(r, settings, "crowd2"), 30, "crowd lists")
    t = now + 60
    produce(
        settings.kafka_bootstrap,
        settings.topic_events,
        [
            event("click", "alice", "a1", t),
            event("purchase", "alice", "a2", t + 1),
            event("click", "bob", "c1", t),
            event("add_to_cart", "bob", "c2", t + 1),
        ],
    )
    alice = wait_list(r, settings, "alice", t + 1)
    bob = wait_list(r, settings, "bob", t + 1)

    alice_ids = [i.item_id for i in alice.items]
    bob_ids = [i.item_id for i in bob.items]
    # Her strongest category comes first, and what she already had is not repeated.
    assert alice_ids[:2] == ["a3", "a4"] or alice_ids[:2] == ["a4", "a3"]
    assert alice.items[0].reason == "popular in Action"
    assert not {"a1", "a2"} & set(alice_ids)
    assert set(bob_ids[:2]) == {"c3", "c4"}
    assert bob.items[0].reason == "popular in Animation"
    assert not {"c1", "c2"} & set(bob_ids)
    assert alice.model_version == "popularity-v1"  # no artefact trained
    assert 0 < r.ttl(settings.key("rec", "alice")) <= settings.rec_ttl_s

    popular = RecList.model_validate_json(r.get(settings.key("rec", "_popular")))
    assert len(popular.items) == min(settings.rec_size, len(CATALOG))
    action = RecList.model_validate_json(r.get(settings.key("rec", "_popular", "action")))
    assert {i.item_id for i in action.items} == {"a1", "a2", "a3", "a4"}
    assert json.loads(r.get(settings.key("item", "a1")))["title"] == "Die Hard"

    profile = read_profile(r, settings, "alice")
    assert profile is not None
    assert profile["counts"] == {"click": 1, "purchase": 1}
    assert profile["recent"] == ["a2", "a1"]


INVALID: list[tuple[str, bytes | None, bytes, str]] = [
    # (name, key, value, expected fragment of the reason)
    ("not json", b"mallory", b"{not json", "Invalid JSON"),
    (
        "wrong types",
        b"mallory",
        b'{"type":"click","user_id":"mallory","item_id":"x","ts":"yesterday"}',
        "ts",
    ),
    (
        "missing field",
        b"mallory",
        b'{"type":"click","user_id":"mallory","ts":1700000000}',
        "item_id",
    ),
    (
        "unknown type",
        b"mallory",
        b'{"type":"like","user_id":"mallory","item_id":"x","ts":1700000000}',
        "type",
    ),
    (
        "oversized",
        b"mallory",
        b'{"type":"click","user_id":"mallory","item_id":"x","ts":1700000000,"pad":"'
        + b"x" * 70_000
        + b'"}',
        "over the",
    ),
    (
        "key-escaping id",
        b"eve:rec:alice",
        b'{"type":"click","user_id":"eve:rec:alice","item_id":"x","ts":1700000000}',
        "user_id",
    ),
    (
        "hash-tag id",
        b"{eve}",
        b'{"type":"click","user_id":"{eve}","item_id":"x","ts":1700000000}',
        "user_id",
    ),
    ("glob id", b"*", b'{"type":"click","user_id":"*","item_id":"x","ts":1700000000}', "user_id"),
    (
        "key mismatch",
        b"alice",
        b'{"type":"click","user_id":"mallory","item_id":"x","ts":1700000000}',
        "must equal",
    ),
    (
        "future ts",
        b"mallory",
        b'{"type":"click","user_id":"mallory","item_id":"x","ts":1700000000000}',
        "future",
    ),
    ("nan", b"mallory", b'{"type":"click","user_id":"mallory","item_id":"x","ts":NaN}', "ts"),
    ("empty", b"mallory", b"", "empty"),
]


def test_invalid_events_go_to_dlq_and_valid_ones_around_them_are_processed(
    settings: Settings, r: redis.Redis, start_worker: Callable[[Settings], WorkerProcess]
) -> None:
    now = seed(settings)
    start_worker(settings)
    messages: list[tuple[bytes | str | None, bytes | str]] = []
    for n, (_name, key, value, _reason) in enumerate(INVALID):
        messages.append(event("click", "carol", "a1", now + n))
        messages.append((key, value))
    last = now + len(INVALID)
    messages.append(event("view", "carol", "a3", last))
    produce(settings.kafka_bootstrap, settings.topic_events, messages)

    wait_list(r, settings, "carol", last)
    profile = read_profile(r, settings, "carol")
    assert profile is not None
    assert profile["counts"] == {EventType.CLICK.value: len(INVALID), EventType.VIEW.value: 1}

    dead = consume_all(settings.kafka_bootstrap, settings.topic_dlq, len(INVALID))
    assert len(dead) == len(INVALID)
    by_value = {m.value() or b"": m for m in dead}
    for name, key, value, fragment in INVALID:
        msg = by_value.get(value)
        assert msg is not None, f"{name} not in the DLQ"
        headers = {k: v.decode() for k, v in msg.headers()}
        assert fragment in headers[DLQ_REASON], (name, headers[DLQ_REASON])
        assert headers[DLQ_TOPIC] == settings.topic_events
        assert int(headers[DLQ_PARTITION]) >= 0
        assert int(headers[DLQ_OFFSET]) >= 0
        assert msg.key() == key
    assert r.get(settings.key("rec", "mallory")) is None
    assert r.keys(settings.key("rec", "eve*")) == []


def test_invalid_item_upserts_go_to_dlq(
    settings: Settings, r: redis.Redis, start_worker: Callable[[Settings], WorkerProcess]
) -> None:
    create_topics(settings)
    start_worker(settings)
    bad = [
        (b"x1", b'{"item_id":"x1","categories":"Action"}'),
        (b"x2", b'{"item_id":"x2","title":"bell\\u0007"}'),
        (b"x:3", b'{"item_id":"x:3"}'),
    ]
    produce(settings.kafka_bootstrap, settings.topic_items, [*bad, *items_messages()])
    dead = consume_all(settings.kafka_bootstrap, settings.topic_dlq, len(bad))
    assert sorted(m.value() for m in dead) == sorted(v for _, v in bad)
    assert all(dict(m.headers())[DLQ_TOPIC] == settings.topic_items.encode() for m in dead)
    wait_for(lambda: r.get(settings.key("item", "c4")), 30, "catalog written")
    assert r.get(settings.key("item", "x1")) is None


@KAFKA_ONLY  # the same EDDY_WORKER_ID restarted: noida-db 0.2.2 never reassigns it
def test_profiles_are_recovered_from_redis_after_a_restart(
    broker: Endpoints,
    settings: Settings,
    r: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    now = seed(settings)
    first = start_worker(settings, "first")
    n = 25
    produce(
        settings.kafka_bootstrap,
        settings.topic_events,
        [event("click", "dave", f"a{1 + k % 4}", now + k) for k in range(n)],
    )
    wait_list(r, settings, "dave", now + n - 1)
    assert first.stop() == 0

    # A new worker (same EDDY_WORKER_ID) with an empty local state dir must read dave's
    # profile back from Redis: his counts go on from where they were.
    restarted = settings.model_copy(update={"data_dir": settings.data_dir.parent / "fresh"})
    start_worker(restarted, "second")
    produce(
        settings.kafka_bootstrap, settings.topic_events, [event("purchase", "dave", "c1", now + n)]
    )
    try:
        wait_list(r, settings, "dave", now + n)
    except AssertionError as exc:
        stats = r.hgetall(settings.key("stats", settings.worker_id))
        rec = read_rec(r, settings, "dave")
        raise AssertionError(f"{exc}; list {rec}; {stats}") from None
    profile = read_profile(r, settings, "dave")
    assert profile is not None
    assert profile["counts"] == {"click": n, "purchase": 1}
    assert profile["affinities"]["Action"] > profile["affinities"]["Animation"]


def test_worker_starts_from_the_pretrained_artefact(
    settings: Settings, r: redis.Redis, start_worker: Callable[[Settings], WorkerProcess]
) -> None:
    now = time.time() - 3600
    items = [ItemUpsert(item_id=i, title=t, categories=tuple(c)) for i, (t, c) in CATALOG.items()]
    history = [
        Event(type=EventType.CLICK, user_id=f"old{n}", item_id=item, ts=now + n)
        for n in range(12)
        for item in (["a1", "a2", "a3"] if n % 2 else ["c1", "c2", "c3"])
    ]
    artefact = train(Dataset("history", items, history, 0, {}), TrainConfig(dim=4, seed=1))
    save(artefact, settings.model_dir)
    create_topics(settings)
    start_worker(settings)

    # Popular lists exist before any event reaches this worker: day-one value.
    popular = wait_for(lambda: r.get(settings.key("rec", "_popular")), 30, "popular list")
    doc = RecList.model_validate_json(popular)
    assert doc.model_version == artefact.version
    assert {i.item_id for i in doc.items} >= {"a1", "a2", "a3", "c1", "c2", "c3"}
    action = RecList.model_validate_json(r.get(settings.key("rec", "_popular", "action")))
    assert {i.item_id for i in action.items} == {"a1", "a2", "a3"}

    # A new user's first event already draws on the pre-trained item vectors (a1 was
    # co-clicked with a2 and a3), even though the catalog topic is empty.
    t = now + 100
    produce(settings.kafka_bootstrap, settings.topic_events, [event("click", "erin", "a1", t)])
    erin = wait_list(r, settings, "erin", t)
    assert {i.item_id for i in erin.items[:2]} == {"a2", "a3"}
    assert erin.items[0].reason == "because you clicked a1"  # no title: the catalog is empty
    assert erin.model_version == artefact.version
