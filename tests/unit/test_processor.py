"""EventProcessor with plain dicts for tables and a MemorySink: the worker's logic, no Faust."""

from __future__ import annotations

import asyncio
import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest

from models.events import EventType
from models.recs import RecList
from streams.processor import EventProcessor, Rejected, profile_config
from streams.settings import Settings
from streams.sink import MemorySink

T0 = 1_700_000_000.0  # in the past: accepted by the real-clock future check
DAY = 86_400.0


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    for name in list(os.environ):
        if name.startswith("EDDY_"):
            monkeypatch.delenv(name)
    return Settings(
        _env_file=None,
        key_prefix="t",
        rec_size=3,
        history_size=5,
        half_life_days=1.0,
        rec_ttl_s=120,
        model_version="unit-v1",
        data_dir=tmp_path / "worker",
        state_dir=tmp_path / "state",
    )


class World:
    def __init__(self, settings: Settings) -> None:
        self.profiles: dict[str, Any] = {}
        self.catalog: dict[str, Any] = {}
        self.popularity: dict[str, Any] = {}
        self.sink = MemorySink()
        self.proc = EventProcessor(
            settings, self.profiles, self.catalog, self.popularity, self.sink
        )

    def item(self, item_id: str, *categories: str, available: bool = True) -> None:
        doc = {"item_id": item_id, "categories": list(categories), "available": available}
        assert self.proc.on_item(json.dumps(doc).encode(), item_id.encode()) is None

    def event(self, kind: str, user: str, item: str, ts: float, **extra: Any) -> Rejected | None:
        body = {"type": kind, "user_id": user, "item_id": item, "ts": ts, **extra}
        return self.proc.on_event(json.dumps(body).encode(), user.encode())

    def flush(self) -> int:
        return asyncio.run(self.proc.publisher.flush())

    def get(self, key: str) -> bytes | None:
        return asyncio.run(self.sink.get(key))

    def reclist(self, key: str) -> RecList:
        raw = self.get(key)
        assert raw is not None, f"{key} not written"
        return RecList.model_validate_json(raw)


@pytest.fixture
def world(settings: Settings) -> World:
    return World(settings)


def test_profile_config_from_settings(settings: Settings) -> None:
    cfg = profile_config(settings)
    assert cfg.half_life_s == DAY
    assert cfg.history_size == 5
    assert cfg.max_categories == 32
    assert cfg.event_weights[EventType.PURCHASE] == 8.0


def test_valid_event_updates_profile_popularity_and_schedules_user(world: World) -> None:
    world.item("i1", "Action", "Drama")
    assert world.event("click", "u1", "i1", T0) is None
    assert world.profiles["u1"] == {
        "user_id": "u1",
        "affinities": {"Action": 1.0, "Drama": 1.0},
        "recent": ["i1"],
        "purchased": [],
        "counts": {"click": 1},
        "last_ts": T0,
        "vector": None,
        "mass": 0.0,
        "applied": {},
        "event_ids": [],
    }
    assert world.popularity == {"i1": (2.0, T0)}
    assert world.proc.clock == T0
    assert world.proc.stats.events == {"click": 1}
    assert world.proc.stats.dead_letters == 0
    assert world.proc.publisher.pending == 2  # the user's list and the item document
    assert world.proc.profile("u1") is not None
    assert world.proc.profile("nobody") is None


def test_second_event_decays_and_clock_tracks_newest(world: World) -> None:
    world.item("i1", "Action")
    assert world.event("purchase", "u1", "i1", T0 + DAY) is None
    assert world.event("view", "u1", "i1", T0) is None  # a day late
    profile = world.profiles["u1"]
    assert profile["affinities"] == {"Action": pytest.approx(8.0 + 0.5)}
    assert profile["last_ts"] == T0 + DAY
    assert profile["purchased"] == ["i1"]
    assert world.popularity["i1"] == (pytest.approx(8.5), T0 + DAY)
    assert world.proc.clock == T0 + DAY


def test_event_for_unknown_item_has_no_categories(world: World) -> None:
    assert world.event("add_to_cart", "u1", "ghost", T0) is None
    assert world.profiles["u1"]["affinities"] == {}
    assert world.profiles["u1"]["recent"] == ["ghost"]
    assert world.popularity == {"ghost": (4.0, T0)}


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
        (b"{broken", "payload: Invalid JSON"),
    ],
)
def test_invalid_payload_is_rejected_and_changes_nothing(
    world: World, payload: bytes, reason: str
) -> None:
    world.item("i1", "Action")
    assert world.event("click", "u1", "i1", T0) is None
    before = copy.deepcopy((world.profiles, world.catalog, world.popularity))
    pending, events = world.proc.publisher.pending, dict(world.proc.stats.events)

    rejected = world.proc.on_event(payload, b"u1")

    assert isinstance(rejected, Rejected)
    assert reason in rejected.reason
    assert world.proc.stats.dead_letters == 1
    assert (world.profiles, world.catalog, world.popularity) == before
    assert world.proc.publisher.pending == pending
    assert dict(world.proc.stats.events) == events
    assert world.proc.clock == T0


@pytest.mark.parametrize("key", [b"u2", None, b"U1", b"u1 "])
def test_key_must_equal_user_id(world: World, key: bytes | None) -> None:
    body = json.dumps({"type": "click", "user_id": "u1", "item_id": "i1", "ts": T0}).encode()
    rejected = world.proc.on_event(body, key)
    assert rejected == Rejected(
        f"message key {key!r} must equal user_id 'u1' (events are partitioned by user)"
    )
    assert world.proc.stats.dead_letters == 1
    assert world.profiles == {}
    assert world.popularity == {}
    assert world.proc.publisher.pending == 0
    assert world.proc.clock is None


def test_on_item_stores_doc_and_schedules_item_key(world: World) -> None:
    payload = {"item_id": "i1", "title": "Alien", "categories": ["Sci-Fi", "Horror"], "price": 3}
    assert world.proc.on_item(json.dumps(payload).encode(), b"i1") is None
    doc = {
        "item_id": "i1",
        "title": "Alien",
        "categories": ["Sci-Fi", "Horror"],
        "tags": [],
        "price": 3.0,
        "available": True,
    }
    assert world.catalog == {"i1": doc}
    assert world.proc.stats.items == 1
    assert world.proc.publisher.pending == 1
    assert world.flush() == 0  # no user lists, only the item key
    assert json.loads(world.get("t:item:i1") or b"") == doc
    assert world.sink.data["t:item:i1"][1] is None  # item documents do not expire


def test_on_item_without_key_is_accepted_and_replaces(world: World) -> None:
    assert world.proc.on_item(b'{"item_id": "i1", "title": "Old"}', None) is None
    assert world.proc.on_item(b'{"item_id": "i1", "title": "New"}', None) is None
    assert world.catalog["i1"]["title"] == "New"
    assert world.proc.stats.items == 2
    assert world.proc.publisher.pending == 1


def test_on_item_rejections(world: World) -> None:
    assert world.proc.on_item(b'{"item_id": "i1"}', b"i2") == Rejected(
        "message key b'i2' must equal item_id 'i1'"
    )
    bad_title = json.dumps({"item_id": "i1", "title": "a\nb"}).encode()
    assert world.proc.on_item(bad_title, b"i1") == Rejected(
        "title: Value error, title contains control characters"
    )
    assert world.proc.stats.dead_letters == 2
    assert world.proc.stats.items == 0
    assert world.catalog == {}
    assert world.proc.publisher.pending == 0


def test_refresh_popular_with_nothing_known(world: World) -> None:
    assert world.proc.refresh_popular() == 0
    assert world.proc.publisher.pending == 0


def test_refresh_popular_writes_global_and_category_lists(world: World) -> None:
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
    asyncio.run(world.proc.publisher.flush())

    assert world.proc.refresh_popular() == 3
    world.flush()
    popular = world.reclist("t:rec:_popular")
    assert popular.user_id == "_popular"
    assert popular.event_ts is None
    assert popular.model_version == "unit-v1"
    assert [(i.item_id, i.score, i.reason) for i in popular.items] == [
        ("a1", 1.0, "trending"),
        ("x1", 0.75, "trending"),
        ("a2", 0.5, "trending"),  # rec_size 3: n1 is cut
    ]
    scifi = world.reclist("t:rec:_popular:sci-fi")
    assert [(i.item_id, i.score, i.reason) for i in scifi.items] == [
        ("a1", 1.0, "popular in Sci-Fi"),
        ("a2", 0.5, "popular in Sci-Fi"),
    ]
    noir = world.reclist("t:rec:_popular:film-noir")
    assert [(i.item_id, i.score, i.reason) for i in noir.items] == [
        ("a2", 1.0, "popular in Film Noir"),
        ("n1", 0.5, "popular in Film Noir"),
    ]
    for key in ("t:rec:_popular", "t:rec:_popular:sci-fi", "t:rec:_popular:film-noir"):
        assert world.sink.data[key][1] is None  # fallback lists do not expire
    assert "gone" not in {i for i, _ in world.proc.global_top}
    assert all("gone" not in {i for i, _ in r} for r in world.proc.category_top.values())
    assert set(world.proc.category_top) == {"Sci-Fi", "Film Noir"}


def test_user_list_after_flush(world: World) -> None:
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
    # u1 likes Action; the newest event is T0 + 60, the last one sent is late.
    world.event("click", "u1", "a1", T0 + 30)
    world.event("view", "u1", "d1", T0 + 60)
    world.event("click", "u1", "a1", T0 + 10)
    assert world.flush() == 4  # u1, u7, u8, u9: one list each

    doc = world.reclist("t:rec:u1")
    assert doc.user_id == "u1"
    assert doc.event_ts == T0 + 60
    assert doc.model_version == "unit-v1"
    assert doc.generated_at > T0
    ids = [i.item_id for i in doc.items]
    assert len(ids) == 3  # rec_size
    assert "a1" not in ids  # already seen
    assert "d1" not in ids
    assert [(i.item_id, i.reason) for i in doc.items] == [
        ("a2", "popular in Action"),
        ("a3", "popular in Action"),
        ("g1", "trending"),
    ]
    assert all(i.score > 0 for i in doc.items)
    assert world.sink.data["t:rec:u1"][1] is not None  # user lists carry the TTL

    profile = json.loads(world.get("t:profile:u1") or b"")
    assert profile == world.profiles["u1"]
    assert profile["recent"] == ["d1", "a1"]
    assert profile["counts"] == {"click": 2, "view": 1}


def test_first_render_refreshes_popularity_without_waiting_for_the_timer(world: World) -> None:
    world.item("a1", "Action")
    world.event("purchase", "u2", "a1", T0)
    world.event("view", "u1", "x", T0)
    assert world.proc.global_top == []
    world.flush()
    assert world.proc.global_top == [("a1", 1.0), ("x", 0.125)]
    doc = world.reclist("t:rec:u1")
    assert [(i.item_id, i.reason) for i in doc.items] == [("a1", "trending")]


def test_forget_control_message_deletes_the_user(world: World) -> None:
    world.item("i1", "Action")
    assert world.event("click", "u1", "i1", T0) is None
    assert world.event("click", "u2", "i1", T0 + 1) is None
    world.flush()
    assert world.get("t:rec:u1") is not None
    forget = json.dumps({"type": "forget", "user_id": "u1"}).encode()
    assert world.proc.on_event(forget, b"u1") is None
    world.flush()
    assert "u1" not in world.profiles
    assert world.get("t:rec:u1") is None
    assert world.get("t:profile:u1") is None
    assert world.get("t:rec:u2") is not None
    assert world.proc.stats.forgotten == 1
    # the control message must be keyed by its user, like events
    rejected = world.proc.on_event(forget, b"u2")
    assert isinstance(rejected, Rejected)
    assert "must equal user_id" in rejected.reason


@pytest.mark.parametrize(
    "raw",
    [
        b'{"type": "forget"}',
        b'{"type": "forget", "user_id": "bad id"}',
        b'{"type": "forget", "user_id": "u1", "extra": 1}',
        b'{"type": "click", "user_id": "forget", "item_id": "i", "ts": 1700000000}',
        b"not json forget",
    ],
)
def test_only_a_well_formed_forget_is_a_control_message(raw: bytes) -> None:
    from models.events import decode_control

    assert decode_control(raw) is None
