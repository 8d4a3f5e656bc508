"""Item state shared between workers: learning steps and quality go to the item's owner,
whose broadcast value every worker applies (no Kafka here: the messages are passed by hand)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from models.datasets import Dataset
from models.recs import RecList
from models.training import TrainConfig, train
from streams.processor import EventProcessor
from streams.settings import Settings
from streams.sink import MemorySink
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


def worker(artefact: Any, tmp_path: Path, name: str) -> EventProcessor:
    settings = Settings(
        _env_file=None,
        key_prefix="t",
        rec_size=3,
        epsilon=0.0,
        data_dir=tmp_path / name,
        state_dir=tmp_path / f"{name}-state",
    )
    proc = EventProcessor(settings, {}, {}, {}, MemorySink(), prior=artefact)
    for item in ITEMS:
        proc.on_item(item.model_dump_json().encode(), item.item_id.encode())
    return proc


def send(proc: EventProcessor, user: str, item: str, ts: float, **extra: str) -> None:
    body = {"type": "click", "user_id": user, "item_id": item, "ts": ts, **extra}
    assert proc.on_event(json.dumps(body).encode(), user.encode()) is None


def deliver(owner: EventProcessor, others: list[EventProcessor]) -> None:
    """Route pending learning steps and quality counts to ``owner``; broadcast its values."""
    messages = [
        json.dumps({"item_id": i, "context": c}).encode() for i, c in owner.item_updates
    ] + [json.dumps(m).encode() for m in owner.drain_quality()]
    owner.item_updates = []
    for raw in messages:
        learned = owner.on_item_update(raw)
        if learned is not None:
            for proc in others:
                proc.on_item_vector(*learned)


def test_quality_and_vectors_reach_every_worker_through_the_owner(
    artefact: Any, tmp_path: Path
) -> None:
    a, b = worker(artefact, tmp_path, "a"), worker(artefact, tmp_path, "b")
    send(a, "reader", "s1", T)
    asyncio.run(a.publisher.flush())
    recs = RecList.model_validate_json(asyncio.run(a.sink.get("t:rec:reader")) or b"")
    shown = [i.item_id for i in recs.items]
    # impressions are not counted locally: they wait for the owner
    assert a.items is not None
    assert a.items.quality.stats(shown[0]) == (0.0, 0.0)
    send(a, "reader", shown[0], T + 1, rec_id=recs.rec_id or "")  # a click on the list
    deliver(a, [b])
    assert a.items.quality.stats(shown[0]) == (1.0, 1.0)
    assert b.items is not None
    assert b.items.quality.stats(shown[0]) == (1.0, 1.0)
    for item in shown[1:]:
        assert b.items.quality.stats(item) == (1.0, 0.0)
    assert a.items.online_items >= 1  # shown[0] moved toward s1
    assert a.items.digest() == b.items.digest()


def test_a_broadcast_value_replaces_quality_and_keeps_the_old_list_format(
    artefact: Any, tmp_path: Path
) -> None:
    proc = worker(artefact, tmp_path, "c")
    assert proc.items is not None
    proc.on_item_vector("g2", {"vector": None, "quality": [10.0, 2.0]})
    proc.on_item_vector("g2", {"vector": None, "quality": [12.0, 3.0]})  # absolute, not added
    assert proc.items.quality.stats("g2") == (12.0, 3.0)
    assert proc.items.online_vector("g2") is None
    proc.on_item_vector("g3", [0.5] * 8)  # a vector as written before quality was shared
    vector = proc.items.online_vector("g3")
    assert vector is not None
    assert list(vector) == pytest.approx([0.5] * 8)
    assert proc.item_value("g3")["vector"] == pytest.approx([0.5] * 8)


def test_malformed_item_updates_are_skipped(artefact: Any, tmp_path: Path) -> None:
    proc = worker(artefact, tmp_path, "d")
    bad = [b"not json", b"{}", b'{"item_id": "g1"}', b'{"item_id": "g1", "impressions": 1}']
    bad += [b'{"item_id": "g1", "impressions": -1, "rewards": 0}', b"[" * 5000 + b"]" * 5000]
    for raw in bad:
        assert proc.on_item_update(raw) is None
    assert proc.items is not None
    assert proc.items.quality.stats("g1") == (0.0, 0.0)
