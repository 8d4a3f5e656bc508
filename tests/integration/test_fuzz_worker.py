"""Hostile input end to end (issue 6): a seeded batch through a real worker.

A few hundred messages, hostile and valid mixed, are built with a seeded ``random``
from the case lists of ``tests/unit/test_fuzz.py`` and judged by its oracle, then
produced with confluent-kafka to the events and items topics of a real broker, consumed
by an ``eddy worker`` process writing to a real redis-server. Afterwards: the worker is
alive and no agent crashed; the DLQ holds exactly the rejected messages (matched by
source topic, partition and offset, with their original key and bytes) each with a
reason; every valid user has a list and profile and every valid item its document in
Redis, and no other user or item has any; the stats hash counts what was sent.
"""

from __future__ import annotations

import json
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

import pytest
import redis
from confluent_kafka import Consumer, Producer

from models.artefact import save
from models.events import MIN_TS
from models.reclist import POPULAR_USER
from streams.app import DLQ_OFFSET, DLQ_PARTITION, DLQ_REASON, DLQ_TOPIC
from streams.settings import Settings
from streams.topics import create_topics
from tests.support import WorkerProcess, wait_for
from tests.unit.test_fuzz import (
    EXTRA_KEYS,
    FAR_FUTURE,
    HOSTILE_IDS,
    HOSTILE_TEXT,
    NUMBER_TOKENS,
    TS_TOKENS,
    TYPE_TOKENS,
    UNSAFE_CHARS,
    InvalidError,
    assert_reason,
    dumps,
    escaped,
    expected_event,
    expected_item,
    nested,
    pad_to,
    render,
    tiny_prior,
    to_bytes,
)

pytestmark = pytest.mark.integration

SEED: Final = 6
"""Seed of the batch: the same messages on every run."""
N_EVENTS: Final = 320
N_ITEMS: Final = 80
USERS: Final = [f"user-{n}" for n in range(25)] + ["a" * 128, "x.y@example.com", "9_"]
ITEMS: Final = [f"i{n}" for n in range(8)] + ["sku-42", "B" * 128]
MAX_MESSAGE_BYTES: Final = 1_000_000


@dataclass
class Sent:
    """One produced message, where it landed, and the oracle's verdict on it."""

    topic: str
    key: bytes | None
    value: bytes | None
    valid_id: str | None
    """The user (events) or item (upserts) it must be applied to; None: DLQ."""
    kind: str = ""
    partition: int = -1
    offset: int = -1


def _splice(rng: random.Random, base: str) -> str:
    at = rng.randrange(len(base) + 1)
    return base[:at] + rng.choice(UNSAFE_CHARS) + base[at:]


def _hostile_value(rng: random.Random) -> str:
    """A JSON value token: hostile strings, numbers, nesting, anything."""
    pick = rng.randrange(7)
    if pick == 0:
        return dumps(rng.choice(HOSTILE_IDS), rng.random() < 0.5)
    if pick == 1:
        return dumps(_splice(rng, rng.choice(USERS)), rng.random() < 0.5)
    if pick == 2:
        return rng.choice(NUMBER_TOKENS)
    if pick == 3:
        return rng.choice(TS_TOKENS)
    if pick == 4:
        return nested(rng.choice([3, 50, 201, 202, 1000, 5000]), rng.randrange(3))
    if pick == 5:
        return dumps(rng.choice(HOSTILE_TEXT), rng.random() < 0.5)
    if rng.random() < 0.3:
        return dumps("a" * 70_000, True)  # over 64 KiB on its own
    return dumps(rng.choice("aé😀\x00{") * rng.choice([128, 129, 4096, 20_000]), True)


def _mutated(rng: random.Random, body: dict[str, Any]) -> bytes:
    """``body`` as JSON with one or two hostile edits, sometimes padded to ~64 KiB."""
    ascii_only = rng.random() < 0.5
    pairs = [(dumps(k, ascii_only), dumps(v, ascii_only)) for k, v in body.items()]
    for _ in range(rng.choice([1, 1, 2])):
        at = rng.randrange(len(pairs)) if pairs else 0
        op = rng.randrange(6)
        if op in (0, 1) and pairs:  # replace a value
            name = json.loads(pairs[at][0])
            token = rng.choice(TYPE_TOKENS) if name == "type" and op == 1 else _hostile_value(rng)
            pairs[at] = (pairs[at][0], token)
        elif op == 2 and pairs:
            del pairs[at]
        elif op == 3:
            pairs.insert(at, (dumps(rng.choice(EXTRA_KEYS), ascii_only), _hostile_value(rng)))
        elif op == 4 and pairs:  # a duplicate key, before or after
            pairs.insert(rng.choice([0, len(pairs)]), (pairs[at][0], _hostile_value(rng)))
        elif pairs:
            pairs[at] = (escaped(json.loads(pairs[at][0])), pairs[at][1])
    text = render(pairs, rng.choice(["", " ", "\n"]))
    if rng.random() < 0.08:
        return pad_to(text, 65_536 + rng.randint(-2, 2))
    return to_bytes(text)


def _garbage(rng: random.Random, base: bytes) -> bytes | None:
    """Byte-level garbage, some of it around a real payload."""
    pick = rng.randrange(8)
    if pick == 0:
        return rng.randbytes(rng.randrange(1, 200))
    if pick == 1:
        return base[: rng.randrange(len(base))]
    if pick == 2:
        return b"\xef\xbb\xbf" + base
    if pick == 3:
        return base.decode().encode("utf-16")
    if pick == 4:
        return base + b"\x00"
    if pick == 5:
        return nested(rng.choice([202, 5000]), rng.randrange(3)).encode()
    if pick == 6:
        return rng.choice([b"", b"null", b"[]", b'"view"', b"NaN", b"{}"])
    return None  # a tombstone


def _key(rng: random.Random, right: str | None) -> bytes | None:
    """Usually the id the payload names; sometimes garbage or a near miss."""
    pick = rng.randrange(10)
    if right is not None and pick < 7:
        return right.encode("utf-8", "surrogatepass")
    if pick == 7:
        return to_bytes(rng.choice(HOSTILE_IDS)) or None
    if pick == 8:
        return rng.randbytes(rng.randrange(1, 40))
    return rng.choice(USERS).encode()


def _event_body(rng: random.Random, now: float) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": rng.choice(["view", "click", "add_to_cart", "purchase"]),
        "user_id": rng.choice(USERS),
        "item_id": rng.choice(ITEMS),
        "ts": rng.choice([MIN_TS, now - rng.uniform(60, 30 * 86_400)]),
    }
    if rng.random() < 0.3:
        body["quantity"] = rng.choice([1, 2, 10_000])
    if rng.random() < 0.3:
        body["price"] = rng.choice([0, -0.0, 9.99, 1e9])
    if rng.random() < 0.2:
        body["session_id"] = "s-" + uuid.UUID(int=rng.getrandbits(128)).hex[:8]
    return body


def _item_body(rng: random.Random) -> dict[str, Any]:
    body: dict[str, Any] = {"item_id": rng.choice(ITEMS)}
    if rng.random() < 0.7:
        body["title"] = rng.choice(["Die Hard", "Amélie", "七人の侍", "\u202eRTL", "x" * 512])
    if rng.random() < 0.7:
        body["categories"] = rng.sample(["Action", "Drama", "Sci-Fi", "Комедия", "🎬"], 2)
    if rng.random() < 0.3:
        body["available"] = rng.random() < 0.8
    return body


def hostile_batch(seed: int, now: float) -> list[Sent]:
    """The seeded batch: 4 in 10 messages clean, the rest mutated or garbage."""
    rng = random.Random(seed)
    out: list[Sent] = []
    for n in range(N_EVENTS + N_ITEMS):
        topic = "events" if n < N_EVENTS else "items"
        body = _event_body(rng, now) if topic == "events" else _item_body(rng)
        field = "user_id" if topic == "events" else "item_id"
        pick = rng.randrange(10)
        value: bytes | None
        if pick < 4:
            kind, value = "clean", json.dumps(body).encode()
        elif pick < 8:
            kind, value = "mutated", _mutated(rng, body)
        elif pick < 9 and topic == "events":
            future = {**body, "ts": rng.choice([FAR_FUTURE, 1e300])}
            kind, value = "future", json.dumps(future).encode()
        else:
            kind, value = "garbage", _garbage(rng, json.dumps(body).encode())
        named = _named(value, field)
        key = _key(rng, named)
        if topic == "items" and key is None:
            key = b"\x00"  # compacted topics refuse null keys
        out.append(Sent(topic, key, value, _verdict(topic, value, key, now), kind))
    rng.shuffle(out)
    return out


def _named(value: bytes | None, field: str) -> str | None:
    try:
        doc = json.loads(value or b"")
    except (ValueError, RecursionError):
        return None
    named = doc.get(field) if isinstance(doc, dict) else None
    return named if isinstance(named, str) else None


def _verdict(topic: str, value: bytes | None, key: bytes | None, now: float) -> str | None:
    """The oracle: the id the message must be applied to, or None if it must be rejected."""
    try:
        if topic == "events":
            user = str(expected_event(value, now=now)["user_id"])
            return user if key == user.encode() else None
        item = str(expected_item(value)["item_id"])
        return item if key in (None, item.encode()) else None
    except InvalidError:
        return None


def produce_tracked(
    bootstrap: str,
    topics: dict[str, str],
    batch: list[Sent],
    max_message_bytes: int = MAX_MESSAGE_BYTES,
) -> None:
    """Produce ``batch`` and record each message's partition and offset."""
    errors: list[str] = []

    def recorder(sent: Sent) -> Callable[[Any, Any], None]:
        def on_delivery(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(f"{sent.kind} {sent.key!r:.60}: {err}")
            else:
                sent.partition, sent.offset = msg.partition(), msg.offset()

        return on_delivery

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "partitioner": "murmur2_random",
            "message.max.bytes": max_message_bytes,
        }
    )
    for sent in batch:
        producer.produce(
            topics[sent.topic], key=sent.key, value=sent.value, on_delivery=recorder(sent)
        )
        producer.poll(0)
    assert producer.flush(30) == 0, "messages not delivered"
    assert not errors, errors


def read_dlq(bootstrap: str, topic: str, expected: int, timeout_s: float) -> list[Any]:
    """Every message of the DLQ: ``expected`` of them, then nothing more for a second."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "fuzz-" + uuid.uuid4().hex,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    quiet_until = math.inf
    try:
        while time.monotonic() < min(deadline, quiet_until):
            msg = consumer.poll(0.25)
            if msg is not None and msg.error() is None:
                out.append(msg)
            if len(out) >= expected and quiet_until == math.inf:
                quiet_until = time.monotonic() + 1.0
    finally:
        consumer.close()
    return out


def stats_of(r: redis.Redis, s: Settings) -> dict[str, str]:
    raw: dict[bytes, bytes] = r.hgetall(s.key("stats", s.worker_id))  # type: ignore[assignment]
    return {k.decode(): v.decode() for k, v in raw.items()}


@pytest.fixture
def r(settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    yield client
    client.close()


def test_hostile_batch_through_a_real_worker(
    settings: Settings, r: redis.Redis, start_worker: Callable[[Settings], WorkerProcess]
) -> None:
    save(tiny_prior(), settings.model_dir)  # the learning path runs too
    create_topics(settings)
    worker = start_worker(settings)
    now = time.time()
    batch = hostile_batch(SEED, now)
    topics = {"events": settings.topic_events, "items": settings.topic_items}
    produce_tracked(settings.kafka_bootstrap, topics, batch)

    valid = [m for m in batch if m.valid_id is not None]
    invalid = [m for m in batch if m.valid_id is None]
    events = Counter(m.valid_id for m in valid if m.topic == "events" and m.valid_id)
    items = {m.valid_id for m in valid if m.topic == "items"}
    print(
        f"\nhostile worker batch (seed {SEED}): {len(batch)} messages, {len(valid)} valid "
        f"({sum(events.values())} events of {len(events)} users, "
        f"{len(valid) - sum(events.values())} upserts), {len(invalid)} for the DLQ; "
        f"by kind {dict(Counter(m.kind for m in batch))}"
    )
    assert sum(events.values()) > 50
    assert len(invalid) > 100

    def counted() -> dict[str, str] | None:
        s = stats_of(r, settings)
        done = (
            int(s.get("events_total", -1)) + int(s.get("duplicates", 0)) == sum(events.values())
            and int(s.get("dead_letters", -1)) == len(invalid)
            and int(s.get("items", -1)) == len(valid) - sum(events.values())
        )
        return s if done else None

    def alive() -> None:
        assert worker.proc.poll() is None, f"the worker exited\n{worker.tail()}"

    stats = wait_for(counted, 45, f"stats counting {len(batch)} messages", check=alive)
    assert int(stats["duplicates"]) == 0
    assert int(stats["render_errors"]) == 0
    assert int(stats["redis_errors"]) == 0
    assert int(stats.get("dlq_errors", 0)) == 0

    # The DLQ holds exactly the rejected messages, each with its source and a reason.
    dead = read_dlq(settings.kafka_bootstrap, settings.topic_dlq, len(invalid), 30)
    by_position = {(m.topic, m.partition, m.offset): m for m in invalid}
    seen = set()
    for msg in dead:
        headers = {name: bytes(v).decode() for name, v in msg.headers() or []}
        position = (
            next(t for t, name in topics.items() if name == headers[DLQ_TOPIC]),
            int(headers[DLQ_PARTITION]),
            int(headers[DLQ_OFFSET]),
        )
        assert position in by_position, f"a valid message was dead-lettered: {position}"
        assert position not in seen, f"dead-lettered twice: {position}"
        seen.add(position)
        original = by_position[position]
        assert msg.value() == original.value
        assert msg.key() == original.key
        assert_reason(headers[DLQ_REASON])
    assert seen == set(by_position)

    # Every valid user got a list and a profile, every valid item its document; no one
    # else got anything, and no key escaped its segment.
    for user in events:
        wait_for(partial(r.get, settings.key("rec", user)), 30, f"list of {user}")
    prefix = settings.key_prefix + ":"
    keys = [k.decode() for k in r.scan_iter(match=prefix + "*", count=1000)]
    segments = [k[len(prefix) :].split(":") for k in keys]
    assert {p[1] for p in segments if p[0] == "rec" and p[1] != POPULAR_USER} == set(events)
    assert {p[1] for p in segments if p[0] == "profile"} == set(events)
    assert {p[1] for p in segments if p[0] == "item"} == items
    assert all(len(p) == 2 for p in segments if p[0] in {"profile", "item"})
    assert all(len(p) == 2 or p[1] == POPULAR_USER for p in segments if p[0] == "rec")
    for user, n in events.items():
        profile = json.loads(r.get(settings.key("profile", user)) or b"{}")
        assert sum(profile["counts"].values()) == n, user

    alive()
    assert b"Crashed" not in worker.log.read_bytes(), worker.tail()


JAVA_MAX_REQUEST_BYTES: Final = 1_048_576
"""Java producers' default ``max.request.size``; Kafka brokers accept up to 1,048,588."""


def test_a_message_as_big_as_kafka_allows_is_dead_lettered(
    settings: Settings, r: redis.Redis, start_worker: Callable[[Settings], WorkerProcess]
) -> None:
    create_topics(settings)
    worker = start_worker(settings)
    body = {"type": "click", "user_id": "u2", "item_id": "i1", "ts": time.time() - 60}
    huge = b'{"pad": "' + b"x" * 1_030_000 + b'"}'
    batch = [
        Sent("events", b"u2", huge, None),
        Sent("events", b"u2", json.dumps(body).encode(), "u2"),
    ]
    topics = {"events": settings.topic_events}
    produce_tracked(settings.kafka_bootstrap, topics, batch, JAVA_MAX_REQUEST_BYTES)
    wait_for(lambda: r.get(settings.key("rec", "u2")), 30, "the list of u2 (after the big one)")
    dead = read_dlq(settings.kafka_bootstrap, settings.topic_dlq, 1, 10)
    assert worker.proc.poll() is None
    assert len(dead) == 1, "the dead letter is lost"
    assert dead[0].value() == huge
