"""Item state shared between workers (``models.itemlearn``): deltas go to the item's
owner, whose absolute records every worker applies. No Kafka or Redis here: the
messages are passed by hand, through the same wire formats."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.datasets import Dataset
from models.itemlearn import ItemRecord, apply, decode, encode, learn
from models.step import ItemDelta
from models.training import TrainConfig, train
from streams.settings import Settings
from streams.sink import MemorySink
from streams.worker import Worker
from tests.unit.test_engine import ITEMS, history

T = 1_700_000_000.0


@pytest.fixture(scope="module")
def artefact() -> Any:
    return train(Dataset("groups", ITEMS, history(), 0, {}), TrainConfig(dim=8))


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(os.environ):
        if var.startswith("EDDY_"):
            monkeypatch.delenv(var)


def worker(artefact: Any, tmp_path: Path, name: str) -> Worker:
    settings = Settings(
        _env_file=None,
        key_prefix="t",
        rec_size=3,
        epsilon=0.0,
        worker_id=name,
        data_dir=tmp_path / name,
        state_dir=tmp_path / f"{name}-state",
    )
    w = Worker(settings, MemorySink(), prior=artefact)
    for item in ITEMS:
        w.on_item(item.model_dump_json().encode(), item.item_id.encode())
    return w


def send(w: Worker, events: list[tuple[str, str, float]]) -> None:
    batch = []
    for n, (user, item, ts) in enumerate(events):
        body = {"type": "click", "user_id": user, "item_id": item, "ts": ts}
        decoded = w.decode(json.dumps(body).encode(), user.encode(), (0, n), None)
        assert not hasattr(decoded, "reason"), decoded
        batch.append(decoded)
    asyncio.run(w.process(batch))  # type: ignore[arg-type]


def route(senders: list[Worker], owner: Worker, everyone: list[Worker]) -> list[ItemRecord]:
    """What the item-updates topic and the Redis feed do: every sender's deltas to the
    owner, the owner's records (through their wire format) to every worker."""
    records: list[ItemRecord] = []
    for sender in senders:
        for body in sender.drain_item_updates().values():
            deltas = {i: ItemDelta.from_json(d) for i, d in json.loads(body).items()}
            records.extend(
                learn(deltas, owner.step.popularity, owner.items, owner.step.item_versions)
            )
    wire = decode(encode(records))
    for w in everyone:
        if w is not owner:
            w.apply_records(wire)
    return records


def test_records_travel_as_float16_and_round_trip() -> None:
    vec = np.array([0.6, 0.8, 0.0], dtype=np.float32)
    records = [
        ItemRecord("a", vec, (3.0, 1.0), 12.5),
        ItemRecord("b", None, None, None),
        ItemRecord("c", -vec, (1.0, 0.0), None),
    ]
    blob = encode(records)
    assert len(blob.split(b"\n", 1)[1]) == 2 * 3 * 2  # two vectors of three float16s
    back = decode(blob)
    assert [(r.item_id, r.quality, r.mass) for r in back] == [
        ("a", (3.0, 1.0), 12.5),
        ("b", None, None),
        ("c", (1.0, 0.0), None),
    ]
    assert back[0].vector is not None
    assert back[2].vector is not None
    assert np.array_equal(back[0].vector, vec.astype(np.float16).astype(np.float32))
    assert back[1].vector is None


@pytest.mark.parametrize(
    "blob", [b"no header", b'{"v": 9}\n', b'{"v":1,"ids":["a"],"q":[],"m":[],"vec":[],"dim":0}\n']
)
def test_malformed_records_are_a_clear_error(blob: bytes) -> None:
    with pytest.raises(ValueError, match="item records"):
        decode(blob)


def test_two_workers_agree_after_the_owner_shares_its_records(
    artefact: Any, tmp_path: Path
) -> None:
    a, b = worker(artefact, tmp_path, "a"), worker(artefact, tmp_path, "b")
    send(a, [("u1", "s1", T), ("u1", "s2", T + 1), ("u1", "s3", T + 2)])
    send(b, [("u2", "g1", T), ("u2", "g2", T + 1), ("u2", "s1", T + 2)])
    records = route([a, b], owner=a, everyone=[a, b])
    assert {r.item_id for r in records} >= {"s1", "s2", "g2"}
    assert a.items is not None
    assert b.items is not None
    assert a.items.online_items > 0
    assert a.items.digest() == b.items.digest()
    # s1 had one click on each worker: the owner's total counts both, once each
    weight = 2.0  # a click
    both = np.logaddexp(
        np.log(weight) + T * np.log(2) / (30 * 86_400.0),
        np.log(weight) + (T + 2) * np.log(2) / (30 * 86_400.0),
    )
    assert a.step.popularity.online("s1") == pytest.approx(both)
    assert b.step.popularity.online("s1") == a.step.popularity.online("s1")


def test_applying_a_record_twice_or_late_changes_nothing(artefact: Any, tmp_path: Path) -> None:
    a, b = worker(artefact, tmp_path, "a"), worker(artefact, tmp_path, "b")
    send(a, [("u1", "s1", T), ("u1", "s2", T + 1)])
    first = route([a], owner=a, everyone=[a, b])
    send(a, [("u3", "s1", T + 5), ("u3", "s2", T + 6)])
    route([a], owner=a, everyone=[a, b])
    assert a.items is not None
    assert b.items is not None
    digest = b.items.digest()
    popular = b.step.popularity.online("s1")
    apply(
        decode(encode(first)), b.step.popularity, b.items, b.step.item_versions
    )  # an old record, late
    assert b.step.popularity.online("s1") == popular  # popularity never goes back
    apply(decode(encode(first)), b.step.popularity, b.items, b.step.item_versions)
    assert b.step.popularity.online("s1") == popular
    apply(
        decode(encode(route([a], owner=a, everyone=[a]))),
        b.step.popularity,
        b.items,
        b.step.item_versions,
    )
    assert b.items.digest() == digest  # nothing new since: the same state


def test_quality_totals_follow_impressions_and_rewarded_clicks(
    artefact: Any, tmp_path: Path
) -> None:
    a, b = worker(artefact, tmp_path, "a"), worker(artefact, tmp_path, "b")
    send(a, [("u1", "s1", T)])
    route([a], owner=b, everyone=[a, b])
    shown = json.loads(asyncio.run(a.sink.get("t:rec:u1")) or b"{}")
    top = shown["items"][0]["item_id"]
    body = {
        "type": "click",
        "user_id": "u1",
        "item_id": top,
        "ts": T + 1,
        "rec_id": shown["rec_id"],
    }
    decoded = a.decode(json.dumps(body).encode(), b"u1", (0, 1), None)
    asyncio.run(a.process([decoded]))  # type: ignore[list-item]
    route([a], owner=b, everyone=[a, b])
    assert a.items is not None
    assert b.items is not None
    impressions, rewards = b.items.quality.stats(top)
    assert impressions == 1  # shown once: once clicked, it is in her history
    assert rewards == 1.0  # one click on a list it was in
    assert a.items.quality.stats(top) == (impressions, rewards)
    assert a.stats.variant_clicks == {"default": 1}


def test_a_catalog_change_reaches_the_next_list(artefact: Any, tmp_path: Path) -> None:
    """The ranker caches items' catalog inputs across batches (``catalog_changes``): an
    item made unavailable, or moved to another category, is seen by the next batch."""
    w = worker(artefact, tmp_path, "w1")
    items = w.items
    assert items is not None
    version, _ = items.catalog_changes(-1)
    send(w, [("u1", "s1", T)])
    first = w.step.rank(["u1"], T + 1, record=False).lists["u1"].items[0].item_id
    gone = next(i for i in ITEMS if i.item_id == first).model_copy(update={"available": False})
    w.on_item(gone.model_dump_json().encode(), gone.item_id.encode())
    assert items.catalog_changes(version)[1] == [first]
    send(w, [("u1", "s1", T + 2)])
    listed = [i.item_id for i in w.step.rank(["u1"], T + 3, record=False).lists["u1"].items]
    assert listed
    assert first not in listed
    again = gone.model_copy(update={"available": True, "categories": ("Garden",)})
    w.on_item(again.model_dump_json().encode(), again.item_id.encode())
    send(w, [("u1", "s1", T + 4)])
    assert w.step.categories(first) == ["Garden"]
    assert first in [i.item_id for i in w.step.rank(["u1"], T + 5, record=False).lists["u1"].items]


def test_catalog_changes_say_when_they_cannot_tell(
    artefact: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import models.itemstate as itemstate

    monkeypatch.setattr(itemstate, "CHANGE_LOG", 2)
    items = itemstate.ItemState(artefact, {})
    start, changed = items.catalog_changes(0)
    assert (start, list(changed or ())) == (0, [])
    for item in ITEMS[:3]:
        items.on_item(item)
    version, changed = items.catalog_changes(start + 1)
    assert version == start + 3
    assert sorted(changed or ()) == sorted(i.item_id for i in ITEMS[1:3])
    assert items.catalog_changes(start)[1] is None  # the log no longer reaches back
    assert items.catalog_changes(version) == (version, ())


def test_the_digest_tells_item_states_apart(artefact: Any) -> None:
    import models.itemstate as itemstate

    a, b = itemstate.ItemState(artefact, {}), itemstate.ItemState(artefact, {})
    assert a.digest() == b.digest()
    vector = np.asarray(artefact.item_vectors[0]) + 0.5
    a.set_vector("s1", vector)
    assert a.digest() != b.digest()
    b.set_vector("s1", vector)
    assert a.digest() == b.digest()
    a.quality.record_impression("s1", 2)
    assert a.digest() != b.digest()


def test_the_worker_writes_the_lists_of_ended_sessions(artefact: Any, tmp_path: Path) -> None:
    from dataclasses import replace

    from models.reclist import RecList
    from models.training import PROFILE_BLEND

    w = worker(replace(artefact, rank_blend=dict(PROFILE_BLEND)), tmp_path, "w1")
    send(w, [("u1", "s1", T)])
    first = RecList.model_validate_json(asyncio.run(w.sink.get("t:rec:u1")) or b"")
    later = T + 3_600.0
    assert asyncio.run(w.end_sessions(later)) == 1
    assert asyncio.run(w.flush())
    again = RecList.model_validate_json(asyncio.run(w.sink.get("t:rec:u1")) or b"")
    assert again.generated_at == later
    assert again.rec_id != first.rec_id
    assert asyncio.run(w.end_sessions(later)) == 0
