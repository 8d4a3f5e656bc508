"""A/B variants (stable assignment, per-variant ranking and counts) and /metrics output."""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from models.datasets import Dataset
from models.events import EventType
from models.reclist import RecList
from models.recommender import DEFAULT_PROTECTED_SLOTS
from models.step import Inbound
from models.training import TrainConfig, train
from models.variants import Variant, assign, bucket
from streams.metrics import exposition, register
from streams.settings import Settings
from streams.sink import MemorySink
from streams.worker import Worker
from tests.unit.test_engine import ITEMS, history

AB = Variant("a", 1.0), Variant("b", 3.0)


def test_assignment_is_stable_and_follows_the_shares() -> None:
    users = [f"user-{n}" for n in range(20_000)]
    first = [assign(u, AB, "s").name for u in users]
    assert first == [assign(u, AB, "s").name for u in users]
    share_b = Counter(first)["b"] / len(users)
    assert share_b == pytest.approx(0.75, abs=0.015)
    moved = sum(a != assign(u, AB, "other").name for u, a in zip(users, first, strict=True))
    assert moved > len(users) / 5  # a new salt reshuffles


def test_bucket_is_in_the_unit_interval() -> None:
    points = [bucket(f"u{n}", "x") for n in range(1000)]
    assert all(0.0 <= p < 1.0 for p in points)
    assert min(points) < 0.01
    assert max(points) > 0.99


def test_variants_are_validated() -> None:
    with pytest.raises(ValueError, match="share"):
        Variant("a", 0.0)
    with pytest.raises(ValueError, match="epsilon"):
        Variant("a", 1.0, epsilon=1.5)
    with pytest.raises(ValueError, match="valid id"):
        Variant("a b", 1.0)
    with pytest.raises(ValueError, match="at least one"):
        assign("u", [], "s")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("EDDY_"):
            monkeypatch.delenv(name)


@pytest.mark.usefixtures("clean_env")
def test_variants_come_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = {"control": {"share": 0.5}, "explore": {"share": 0.5, "epsilon": 0.3}}
    monkeypatch.setenv("EDDY_VARIANTS", json.dumps(spec))
    settings = Settings(_env_file=None)
    assert settings.variant_list() == [
        Variant("control", 0.5),
        Variant("explore", 0.5, epsilon=0.3),
    ]
    assert json.loads(settings.to_env()["EDDY_VARIANTS"])["explore"]["epsilon"] == 0.3
    monkeypatch.setenv("EDDY_VARIANTS", json.dumps({"bad name": {"share": 1}}))
    with pytest.raises(ValidationError, match="valid id"):
        Settings(_env_file=None)


@pytest.fixture(scope="module")
def artefact() -> Any:
    return train(Dataset("groups", ITEMS, history(), 0, {}), TrainConfig(dim=8))


@pytest.mark.usefixtures("clean_env")
def test_each_variant_ranks_with_its_own_settings_and_is_counted(
    artefact: Any, tmp_path: Path
) -> None:
    variants = {"greedy": {"share": 1.0, "epsilon": 0.0}, "explore": {"share": 1.0, "epsilon": 1.0}}
    settings = Settings(
        _env_file=None,
        key_prefix="t",
        rec_size=3,
        variants=variants,
        variant_salt="s",
        data_dir=tmp_path / "w",
        state_dir=tmp_path / "s",
    )
    sink = MemorySink()
    proc = Worker(settings, sink, prior=artefact)
    offset = iter(range(10_000))
    for item in ITEMS:
        proc.on_item(item.model_dump_json().encode(), item.item_id.encode())
    users = [f"u{n}" for n in range(12)]
    expected = {u: assign(u, settings.variant_list(), "s").name for u in users}
    assert set(expected.values()) == {"greedy", "explore"}

    def send(user: str, item: str, ts: float, kind: str = "click", **extra: str) -> None:
        body = {"type": kind, "user_id": user, "item_id": item, "ts": ts, **extra}
        decoded = proc.decode(json.dumps(body).encode(), user.encode(), (0, next(offset)))
        assert isinstance(decoded, Inbound)
        asyncio.run(proc.process([decoded]))

    for n, user in enumerate(users):
        send(user, "s1", 1_700_000_000 + n)

    def stored(user: str) -> RecList:
        return RecList.model_validate_json(asyncio.run(sink.get(f"t:rec:{user}")) or b"")

    lists = {u: stored(u) for u in users}
    for user, recs in lists.items():
        assert recs.variant == expected[user]
        explored = [i.reason == "exploring" for i in recs.items]
        free = len(explored) - DEFAULT_PROTECTED_SLOTS  # the first slots never explore
        assert explored == [False] * DEFAULT_PROTECTED_SLOTS + [expected[user] == "explore"] * free
    n_greedy = sum(1 for v in expected.values() if v == "greedy")
    assert proc.stats.variant_impressions == {
        "greedy": 3 * n_greedy,
        "explore": 3 * (12 - n_greedy),
    }
    assert proc.stats.explored_slots == (3 - DEFAULT_PROTECTED_SLOTS) * (12 - n_greedy)
    # a click and a purchase on listed items, carrying the list's rec_id, count for its variant
    clicker = next(u for u in users if expected[u] == "explore")
    recs = lists[clicker]
    send(clicker, recs.items[0].item_id, 1_700_000_100, rec_id=recs.rec_id or "")
    again = stored(clicker)
    send(clicker, again.items[0].item_id, 1_700_000_200, "purchase", rec_id=again.rec_id or "")
    send(clicker, "g1", 1_700_000_300, rec_id="not-a-list-id")  # no attribution
    assert proc.stats.variant_clicks == {"explore": 1}
    assert proc.stats.variant_purchases == {"explore": 1}
    assert proc.stats.events[EventType.PURCHASE.value] == 1

    register(proc.stats, "w1")
    text = exposition(proc.stats).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    assert samples[("eddy_events_total", (("type", "click"), ("worker", "w1")))] == 14
    assert samples[("eddy_variant_clicks_total", (("variant", "explore"), ("worker", "w1")))] == 1
    assert samples[("eddy_explored_slots_total", (("worker", "w1"),))] == proc.stats.explored_slots
    assert "eddy_retrieval_seconds" in families
    assert samples[("eddy_retrieval_seconds_count", ())] == proc.stats.lists_ranked == 15
    assert "eddy_freshness_seconds" in families
    assert "eddy_consumer_lag" in families
