"""``streams.worker.Worker`` with a ``MemorySink``: the worker's logic, no Faust.

Messages are decoded into micro-batches and each batch's writes are coalesced per key;
the item owner's learning (``models.itemlearn.learn``) is applied in process, as the
``learn_items`` agent does it on the worker that owns the item.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Sequence
from typing import Any

import pytest

from models.events import EventType
from models.itemlearn import learn
from models.reclist import RecList
from models.step import POPULAR_SLACK, Inbound, ItemDelta
from streams.settings import Settings
from streams.sink import MemorySink, Put
from streams.worker import Rejected, Worker, item_partition, profile_config, step_config

T0 = 1_700_000_000.0  # in the past: accepted by the real-clock future check
DAY = 86_400.0


class FailingSink(MemorySink):
    """A sink whose writes fail while ``down`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def write(self, puts: Sequence[Put]) -> None:
        if self.down:
            raise ConnectionError("redis is down")
        await super().write(puts)


class World:
    def __init__(self, settings: Settings) -> None:
        self.sink = FailingSink()
        self.worker = Worker(settings, self.sink)
        self.offset = 0
        self.batch: list[Inbound] = []

    def item(self, item_id: str, *categories: str, available: bool = True) -> None:
        doc = {"item_id": item_id, "categories": list(categories), "available": available}
        assert self.worker.on_item(json.dumps(doc).encode(), item_id.encode()) is None

    def message(self, body: bytes, key: bytes | None) -> Rejected | None:
        decoded = self.worker.decode(body, key, (0, self.offset), T0)
        self.offset += 1
        if isinstance(decoded, Rejected):
            return decoded
        self.batch.append(decoded)
        return None

    def event(self, kind: str, user: str, item: str, ts: float, **extra: Any) -> Rejected | None:
        body = {"type": kind, "user_id": user, "item_id": item, "ts": ts, **extra}
        return self.message(json.dumps(body).encode(), user.encode())

    def process(self, owner: bool = True) -> int:
        """Run the batch; apply its item deltas as their owner would; return lists."""
        batch, self.batch = self.batch, []
        out = asyncio.run(self.worker.process(batch))
        if owner:
            deltas, self.worker.item_deltas = self.worker.item_deltas, {}
            learn(
                deltas,
                self.worker.step.popularity,
                self.worker.items,
                self.worker.step.item_versions,
            )
        return len(out.lists)

    def get(self, key: str) -> bytes | None:
        return asyncio.run(self.sink.get(key))

    def reclist(self, key: str) -> RecList:
        raw = self.get(key)
        assert raw is not None, f"{key} not written"
        return RecList.model_validate_json(raw)

    def profile(self, user: str) -> dict[str, Any] | None:
        raw = self.get(f"t:profile:{user}")
        return None if raw is None else json.loads(raw)


@pytest.fixture
def world(settings: Settings) -> World:
    return World(settings)


def test_profile_config_from_settings(settings: Settings) -> None:
    cfg = profile_config(settings)
    assert cfg.half_life_s == DAY
    assert cfg.history_size == 5
    assert cfg.max_categories == 32
    assert cfg.event_weights[EventType.PURCHASE] == 8.0


def test_popular_lists_do_not_grow_with_the_history(settings: Settings) -> None:
    long = settings.model_copy(update={"history_size": 10_000})
    assert step_config(long, None).pool == step_config(settings, None).pool
    assert step_config(settings, None).pool == settings.rec_size + POPULAR_SLACK


def test_step_config_takes_the_ranking_settings(settings: Settings) -> None:
    tuned = settings.model_copy(update={"protected_slots": 3, "epsilon": 0.2})
    cfg = step_config(tuned, None)
    assert cfg.rank.protected_slots == 3
    assert cfg.rank.epsilon.epsilon0 == 0.2
    assert cfg.rank.k == 3


def test_valid_event_writes_profile_popularity_and_list(world: World) -> None:
    world.item("i1", "Action", "Drama")
    assert world.event("click", "u1", "i1", T0) is None
    assert world.process() == 1
    assert world.profile("u1") == {
        "user_id": "u1",
        "affinities": {"Action": 1.0, "Drama": 1.0},
        "recent": ["i1"],
        "purchased": [],
        "counts": {"click": 1},
        "last_ts": T0,
        "vector": None,
        "mass": 0.0,
        "applied": {"0": 0},
        "event_ids": [],
    }
    assert world.sink.data["t:profile:u1"][1] is not None  # state carries its own TTL
    w = world.worker
    assert w.step.popularity.online("i1") == pytest.approx(math.log(2.0) + T0 * math.log(2) / DAY)
    assert w.step.clock == T0
    assert w.stats.events == {"click": 1}
    assert w.stats.dead_letters == 0
    assert w.stats.lists_published == 1
    assert w.pending == {}
    assert w.committable == {0: 0}
    assert w.profile("u1") is not None
    assert w.profile("nobody") is None


def test_a_batch_writes_each_user_once_with_the_newest_state(world: World) -> None:
    world.item("i1", "Action")
    writes: list[list[str]] = []
    original = world.sink.write

    async def spy(puts: Sequence[Put]) -> None:
        writes.append([p.key for p in puts])
        await original(puts)

    world.sink.write = spy  # type: ignore[method-assign]
    for n in range(10):
        world.event("click", "u1", "i1", T0 + n)
    world.event("click", "u2", "i1", T0)
    assert world.process() == 2
    keys = [k for batch in writes for k in batch]
    assert sorted(k for k in keys if k.startswith(("t:profile", "t:rec:u"))) == [
        "t:profile:u1",
        "t:profile:u2",
        "t:rec:u1",
        "t:rec:u2",
    ]
    assert world.profile("u1")["counts"] == {"click": 10}  # type: ignore[index]
    assert world.reclist("t:rec:u1").event_ts == T0 + 9
    assert world.worker.committable == {0: 10}


def test_second_event_decays_and_clock_tracks_newest(world: World) -> None:
    world.item("i1", "Action")
    assert world.event("purchase", "u1", "i1", T0 + DAY) is None
    assert world.event("view", "u1", "i1", T0) is None  # a day late
    world.process()
    profile = world.profile("u1")
    assert profile is not None
    assert profile["affinities"] == {"Action": pytest.approx(8.0 + 0.5)}
    assert profile["last_ts"] == T0 + DAY
    assert profile["purchased"] == ["i1"]
    online = world.worker.step.popularity.online("i1")
    assert online == pytest.approx(math.log(8.5) + (T0 + DAY) * math.log(2) / DAY)
    assert world.worker.step.clock == T0 + DAY


def test_event_for_unknown_item_has_no_categories(world: World) -> None:
    assert world.event("add_to_cart", "u1", "ghost", T0) is None
    world.process()
    profile = world.profile("u1")
    assert profile is not None
    assert profile["affinities"] == {}
    assert profile["recent"] == ["ghost"]
    assert world.worker.step.popularity.global_top == [("ghost", 1.0)]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "empty payload"),
        (
            b'{"type": "view"}',
            "user_id: Field required; item_id: Field required; ts: Field required",
        ),
        (
            json.dumps(
                {"type": "view", "user_id": "u1", "item_id": "i1", "ts": T0 * 1000}
            ).encode(),
            "milliseconds? send unix seconds",
        ),
        (
            json.dumps({"type": "buy", "user_id": "u1", "item_id": "i1", "ts": T0}).encode(),
            "type: Input should be",
        ),
        (b"{broken", "Invalid JSON"),
    ],
)
def test_invalid_payload_is_rejected_and_changes_nothing(
    world: World, payload: bytes, reason: str
) -> None:
    world.item("i1", "Action")
    assert world.event("click", "u1", "i1", T0) is None
    world.process()
    before = (dict(world.sink.data), dict(world.worker.stats.events))

    rejected = world.message(payload, b"u1")

    assert isinstance(rejected, Rejected)
    assert reason in rejected.reason
    assert world.batch == []
    assert world.worker.stats.dead_letters == 1
    world.process()
    assert (dict(world.sink.data), dict(world.worker.stats.events)) == before
    assert world.worker.step.clock == T0


@pytest.mark.parametrize("key", [b"u2", None, b"U1", b"u1 "])
def test_key_must_equal_user_id(world: World, key: bytes | None) -> None:
    body = json.dumps({"type": "click", "user_id": "u1", "item_id": "i1", "ts": T0}).encode()
    rejected = world.message(body, key)
    assert rejected == Rejected(
        f"message key {key!r} must equal user_id 'u1' (events are partitioned by user)"
    )
    assert world.worker.stats.dead_letters == 1
    assert world.batch == []


def test_on_item_stores_doc_and_schedules_item_key(world: World) -> None:
    payload = {"item_id": "i1", "title": "Alien", "categories": ["Sci-Fi", "Horror"], "price": 3}
    assert world.worker.on_item(json.dumps(payload).encode(), b"i1") is None
    doc = {
        "item_id": "i1",
        "title": "Alien",
        "categories": ["Sci-Fi", "Horror"],
        "tags": [],
        "price": 3.0,
        "available": True,
    }
    assert world.worker.catalog == {"i1": doc}
    assert world.worker.stats.items == 1
    assert list(world.worker.pending) == ["t:item:i1"]
    assert asyncio.run(world.worker.flush())
    assert json.loads(world.get("t:item:i1") or b"") == doc
    assert world.sink.data["t:item:i1"][1] is None  # item documents do not expire


def test_on_item_without_key_is_accepted_and_replaces(world: World) -> None:
    assert world.worker.on_item(b'{"item_id": "i1", "title": "Old"}', None) is None
    assert world.worker.on_item(b'{"item_id": "i1", "title": "New"}', None) is None
    assert world.worker.catalog["i1"]["title"] == "New"
    assert world.worker.stats.items == 2
    assert len(world.worker.pending) == 1


def test_on_item_rejections(world: World) -> None:
    assert world.worker.on_item(b'{"item_id": "i1"}', b"i2") == Rejected(
        "message key b'i2' must equal item_id 'i1'"
    )
    bad_title = json.dumps({"item_id": "i1", "title": "a\nb"}).encode()
    assert world.worker.on_item(bad_title, b"i1") == Rejected(
        "title: Value error, title contains control characters"
    )
    assert world.worker.stats.dead_letters == 2
    assert world.worker.stats.items == 0
    assert world.worker.catalog == {}
    assert world.worker.pending == {}


def test_refresh_popular_with_nothing_known_writes_empty_fallbacks(world: World) -> None:
    assert world.worker.refresh_popular() == 1
    assert world.worker.refresh_popular() == 0  # nothing changed since
    assert asyncio.run(world.worker.flush())
    assert world.reclist("t:rec:_popular").items == []


def test_popular_lists_global_and_per_category(world: World) -> None:
    world.item("a1", "Sci-Fi")
    world.item("a2", "Sci-Fi", "Film Noir")
    world.item("n1", "Film Noir")
    world.item("gone", "Sci-Fi", available=False)
    world.event("purchase", "u1", "gone", T0)  # 8, but unavailable
    world.event("add_to_cart", "u1", "a1", T0)  # 4
    world.event("click", "u2", "a2", T0)  # 2
    world.event("view", "u2", "n1", T0)  # 1
    world.event("click", "u3", "x1", T0)  # 2 + 1, not in the catalog
    world.event("view", "u3", "x1", T0)
    world.process()
    world.worker.refresh_popular()
    assert asyncio.run(world.worker.flush())

    popular = world.reclist("t:rec:_popular")
    assert popular.user_id == "_popular"
    assert popular.event_ts is None
    assert popular.model_version == "unit-v1"
    got = [(i.item_id, i.score, i.reason) for i in popular.items]
    assert got == [
        ("a1", 1.0, "trending"),
        ("x1", pytest.approx(0.75), "trending"),
        ("a2", pytest.approx(0.5), "trending"),  # rec_size 3: n1 is cut
    ]
    scifi = world.reclist("t:rec:_popular:sci-fi")
    assert [(i.item_id, i.score, i.reason) for i in scifi.items] == [
        ("a1", 1.0, "popular in Sci-Fi"),
        ("a2", pytest.approx(0.5), "popular in Sci-Fi"),
    ]
    noir = world.reclist("t:rec:_popular:film-noir")
    assert [(i.item_id, i.score, i.reason) for i in noir.items] == [
        ("a2", 1.0, "popular in Film Noir"),
        ("n1", pytest.approx(0.5), "popular in Film Noir"),
    ]
    for key in ("t:rec:_popular", "t:rec:_popular:sci-fi", "t:rec:_popular:film-noir"):
        assert world.sink.data[key][1] is None  # fallback lists do not expire
    popularity = world.worker.step.popularity
    assert "gone" not in {i for i, _ in popularity.global_top}
    assert set(popularity.category_top) == {"Sci-Fi", "Film Noir"}


def test_user_list_follows_categories_and_skips_what_was_seen(world: World) -> None:
    world.item("a1", "Action")
    world.item("a2", "Action")
    world.item("a3", "Action")
    world.item("d1", "Drama")
    world.item("g1", "Games")
    # Other users make things popular.
    world.event("purchase", "u9", "a2", T0)
    world.event("click", "u9", "a3", T0)
    world.event("view", "u9", "d1", T0)
    world.event("purchase", "u8", "g1", T0)
    world.event("purchase", "u7", "g1", T0)
    world.process()
    # u1 likes Action; the newest event is T0 + 60, the last one sent is late.
    world.event("click", "u1", "a1", T0 + 30)
    world.event("view", "u1", "d1", T0 + 60)
    world.event("click", "u1", "a1", T0 + 10)
    assert world.process() == 1

    doc = world.reclist("t:rec:u1")
    assert doc.user_id == "u1"
    assert doc.event_ts == T0 + 60
    assert doc.model_version == "unit-v1"
    assert doc.generated_at > T0
    assert [(i.item_id, i.reason) for i in doc.items] == [
        ("a2", "popular in Action"),
        ("a3", "popular in Action"),
        ("g1", "trending"),
    ]
    assert all(i.score > 0 for i in doc.items)
    assert world.sink.data["t:rec:u1"][1] is not None  # user lists carry the TTL
    profile = world.profile("u1")
    assert profile is not None
    assert profile["recent"] == ["d1", "a1"]
    assert profile["counts"] == {"click": 2, "view": 1}


def test_own_events_count_at_once_and_the_owner_total_is_not_doubled(world: World) -> None:
    world.item("a1", "Action")
    world.event("purchase", "u2", "a1", T0)
    world.process(owner=False)  # the owner has not answered yet
    popularity = world.worker.step.popularity
    provisional = popularity.global_top
    assert provisional == [("a1", 1.0)]
    deltas, world.worker.item_deltas = world.worker.item_deltas, {}
    learn(
        deltas, popularity, world.worker.items, world.worker.step.item_versions
    )  # the owner's total arrives
    assert popularity.online("a1") == pytest.approx(math.log(8.0) + T0 * math.log(2) / DAY)


def test_forget_control_message_deletes_the_user(world: World) -> None:
    world.item("i1", "Action")
    assert world.event("click", "u1", "i1", T0) is None
    assert world.event("click", "u2", "i1", T0 + 1) is None
    world.process()
    assert world.get("t:rec:u1") is not None
    forget = json.dumps({"type": "forget", "user_id": "u1"}).encode()
    assert world.message(forget, b"u1") is None
    world.process()
    assert world.worker.profile("u1") is None
    assert world.get("t:rec:u1") is None
    assert world.get("t:profile:u1") is None
    assert world.get("t:rec:u2") is not None
    assert world.worker.stats.forgotten == 1
    rejected = world.message(forget, b"u2")  # keyed by its user, like events
    assert isinstance(rejected, Rejected)
    assert "must equal user_id" in rejected.reason


def test_a_forget_in_the_same_batch_drops_the_users_list(world: World) -> None:
    world.item("i1", "Action")
    world.event("click", "u1", "i1", T0)
    world.message(json.dumps({"type": "forget", "user_id": "u1"}).encode(), b"u1")
    assert world.process() == 0
    assert world.get("t:rec:u1") is None
    assert world.get("t:profile:u1") is None


def test_a_replayed_batch_is_skipped_by_the_profile_watermark(world: World) -> None:
    world.item("i1", "Action")
    for n in range(3):
        world.event("click", "u1", "i1", T0 + n)
    world.process()
    world.worker.forget_partitions()  # a restart: nothing in memory, the store has it
    world.offset = 0
    for n in range(3):
        world.event("click", "u1", "i1", T0 + n)
    world.event("click", "u1", "i1", T0 + 5)
    world.process()
    profile = world.profile("u1")
    assert profile is not None
    assert profile["counts"] == {"click": 4}
    assert world.worker.stats.duplicates == 3


def test_a_failing_store_keeps_writes_and_holds_offsets_back(world: World) -> None:
    world.item("i1", "Action")
    assert asyncio.run(world.worker.flush())
    world.sink.down = True
    world.event("click", "u1", "i1", T0)
    world.process()
    assert world.worker.committable == {}  # nothing is committed that Redis lacks
    assert {"t:profile:u1", "t:rec:u1"} <= set(world.worker.pending)
    assert world.worker.stats.redis_errors == 1
    world.sink.down = False
    world.worker._retry_at = 0.0  # skip the backoff
    assert asyncio.run(world.worker.flush())
    assert world.worker.committable == {0: 0}
    assert world.worker.pending == {}
    assert world.profile("u1") is not None


def test_item_deltas_go_to_their_owners_one_message_per_partition(
    world: World, settings: Settings
) -> None:
    world.item("a1", "Action")
    world.item("a2", "Action")
    world.event("click", "u1", "a1", T0)
    world.event("click", "u1", "a2", T0 + 1)
    world.event("purchase", "u2", "a1", T0 + 2)
    world.process(owner=False)
    messages = world.worker.drain_item_updates()
    assert world.worker.item_deltas == {}
    deltas = {
        item: (partition, ItemDelta.from_json(d))
        for partition, body in messages.items()
        for item, d in json.loads(body).items()
    }
    assert set(deltas) == {"a1", "a2"}
    n = settings.events_partitions
    assert all(p == item_partition(i, n) for i, (p, _) in deltas.items())
    assert len(messages) == len({p for p, _ in deltas.values()})
    ln2 = math.log(2) / DAY
    a1 = deltas["a1"][1]
    assert math.exp(a1.mass - T0 * ln2) == pytest.approx(2.0 + 8.0 * 2 ** (2 / DAY))
    assert a1.impressions == 0  # no model: popularity lists, no impressions counted


def test_after_redis_restarts_empty_item_documents_and_popular_lists_come_back(
    world: World,
) -> None:
    world.item("a1", "Action")
    world.item("a2", "Drama")
    world.event("click", "u1", "a1", T0)
    world.process()
    assert world.get("t:item:a1") is not None
    world.sink.data.clear()  # Redis came back empty
    assert world.worker.on_store_restart() == 2 + 2  # two documents; global and Action lists
    assert asyncio.run(world.worker.flush())
    assert json.loads(world.get("t:item:a2") or b"{}")["categories"] == ["Drama"]
    assert world.reclist("t:rec:_popular").items[0].item_id == "a1"
    assert world.get("t:rec:_popular:action") is not None


def test_a_catalog_document_without_optional_fields_is_completed(world: World) -> None:
    world.worker.on_catalog({"item_id": "a9"})  # what a producer may write: defaults left out
    assert world.worker.catalog["a9"]["categories"] == []
    world.event("click", "u1", "a9", T0)
    world.process()
    assert world.profile("u1") is not None


@pytest.fixture
def small_cache(settings: Settings) -> World:
    """A worker that keeps two profiles in memory."""
    return World(settings.model_copy(update={"profile_cache_size": 2}))


def test_a_full_cache_never_evicts_a_user_of_the_batch_being_stepped(small_cache: World) -> None:
    """The batch's new users fill the cache before the step reaches u1's event: u1's
    profile stays in memory for it (evicted, it would start anew and lose its count)."""
    world = small_cache
    world.item("i1", "Action")
    world.event("click", "u1", "i1", T0)
    world.process()
    for user in ("x1", "x2", "u1"):
        world.event("click", user, "i1", T0 + 10)
    world.process()
    profile = world.profile("u1")
    assert profile is not None
    assert profile["counts"] == {"click": 2}
    assert len(world.worker.profiles) == 2  # the limit holds again after the step


def test_a_full_cache_never_evicts_an_admitted_user_for_a_read_one(small_cache: World) -> None:
    """u1 is admitted as "in memory"; reading x1 from the store before the step must not
    evict u1 to make room."""
    world = small_cache
    world.item("i1", "Action")
    world.event("click", "x1", "i1", T0)
    world.process()
    world.worker.forget_partitions()  # x1 is only in the store now
    world.event("click", "u1", "i1", T0 + 1)
    world.event("click", "u2", "i1", T0 + 2)
    world.process()  # memory: u1 (oldest), u2
    world.event("click", "x1", "i1", T0 + 3)
    world.event("click", "u1", "i1", T0 + 4)
    batch, world.batch = world.batch, []
    worker = world.worker

    async def through_the_pipeline() -> None:
        ready = worker.admit(batch)
        assert [i.message.user_id for i in ready] == ["u1"]
        await worker.load_held()  # reads x1 into memory (the cache is full)
        await worker.apply(worker.take_released() + ready)
        await worker.flush()

    asyncio.run(through_the_pipeline())
    assert (world.profile("u1") or {})["counts"] == {"click": 2}
    assert (world.profile("x1") or {})["counts"] == {"click": 2}
    assert not worker.profiles.waiting  # every pin released once applied
