"""The learning core in the worker: vectors from the artefact, online updates, the bandit."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest
import redis

from infra.devstack import free_port
from models.events import ItemUpsert
from models.reclist import RecList
from models.recommender import DEFAULT_PROTECTED_SLOTS
from streams.settings import Settings
from tests.integration.groups import TITLES
from tests.support import (
    KAFKA_ONLY,
    Endpoints,
    WorkerProcess,
    consume_all,
    produce,
    wait_for,
)

pytestmark = pytest.mark.integration


def click(user: str, item: str, ts: float, **extra: str) -> tuple[str, str]:
    body = {"type": "click", "user_id": user, "item_id": item, "ts": ts, **extra}
    return user, json.dumps(body)


def start_with_catalog(
    trained: Settings,
    r: redis.Redis,
    start_worker: Callable[[Settings], WorkerProcess],
    **update: object,
) -> Settings:
    """Start a worker with ``update`` applied to the settings once the catalog is in."""
    s = trained.model_copy(update=update)
    start_worker(s)
    wait_for(lambda: r.get(s.key("item", "g5")), 30, "catalog")
    return s


def wait_list(r: redis.Redis, s: Settings, user: str, ts: float) -> RecList:
    def probe() -> RecList | None:
        raw = r.get(s.key("rec", user))
        doc = RecList.model_validate_json(raw) if raw else None
        return doc if doc is not None and doc.event_ts == ts else None

    return wait_for(probe, 30, f"{user}'s list at {ts}")


def test_lists_follow_the_item_vectors_with_reasons_and_propensities(
    trained: Settings, r: redis.Redis, start_worker: Callable[[Settings], WorkerProcess]
) -> None:
    s = start_with_catalog(trained, r, start_worker, epsilon=0.0)
    t = time.time() - 60
    produce(s.kafka_bootstrap, s.topic_events, [click("nova", "s1", t)])
    recs = wait_list(r, s, "nova", t)

    top = [i.item_id for i in recs.items[:4]]
    assert set(top) == {"s2", "s3", "s4", "s5"}, recs.items
    assert recs.items[0].reason == f"because you clicked {TITLES['s1']}"
    assert all(i.propensity == 1.0 for i in recs.items)  # epsilon 0: all greedy
    assert recs.rec_id is not None

    # Every published list is logged with its propensities: one impressions message per
    # window, {"lists": [record, ...]}.
    logged = consume_all(s.kafka_bootstrap, s.topic_impressions, 1)
    records = [rec for m in logged for rec in json.loads(m.value())["lists"]]
    record = next(rec for rec in records if rec["user_id"] == "nova")
    assert record["rec_id"] == recs.rec_id
    assert [i["item_id"] for i in record["items"]] == [i.item_id for i in recs.items]
    assert [i["propensity"] for i in record["items"]] == [i.propensity for i in recs.items]


def test_a_new_catalog_item_reaches_relevant_users_before_any_interaction(
    trained: Settings, r: redis.Redis, start_worker: Callable[[Settings], WorkerProcess]
) -> None:
    s = start_with_catalog(trained, r, start_worker, epsilon=0.0)
    new = ItemUpsert(item_id="s-new", title="Space Rocket Voyage Returns", categories=("Books",))
    produce(s.kafka_bootstrap, s.topic_items, [(new.item_id, new.model_dump_json())])
    wait_for(lambda: r.get(s.key("item", "s-new")), 30, "new item in the catalog")

    t = time.time() - 60
    produce(s.kafka_bootstrap, s.topic_events, [click("ava", "s1", t), click("ava", "s2", t + 1)])
    recs = wait_list(r, s, "ava", t + 1)
    by_id = {i.item_id: i for i in recs.items}
    assert "s-new" in by_id, recs.items
    assert by_id["s-new"].reason == "new in Books"


def test_exploration_fills_slots_with_exact_propensities(
    trained: Settings, r: redis.Redis, start_worker: Callable[[Settings], WorkerProcess]
) -> None:
    s = start_with_catalog(trained, r, start_worker, epsilon=1.0)
    t = time.time() - 60
    produce(s.kafka_bootstrap, s.topic_events, [click("eli", "s1", t)])
    recs = wait_list(r, s, "eli", t)
    # Every catalog item but the one she clicked is a candidate: 9 of them, all listed.
    assert len(recs.items) == len(TITLES) - 1
    top, rest = recs.items[:DEFAULT_PROTECTED_SLOTS], recs.items[DEFAULT_PROTECTED_SLOTS:]
    assert all(i.reason != "exploring" and i.propensity == 1.0 for i in top)  # protected
    assert all(i.reason == "exploring" for i in rest)
    for n, item in enumerate(rest, len(top)):  # each free slot is uniform over what remains
        assert item.propensity == pytest.approx(1 / (len(TITLES) - 1 - n))


def test_two_workers_share_item_vectors_learned_online(
    broker: Endpoints,
    trained: Settings,
    r: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    workers = [
        trained.model_copy(
            update={
                "worker_id": f"{trained.worker_id}-{n}",
                "web_port": free_port(),
                "data_dir": trained.data_dir / str(n),
            }
        )
        for n in range(2)
    ]
    for n, s in enumerate(workers):
        start_worker(s, f"w{n}")
    wait_for(lambda: r.get(trained.key("item", "g5")), 30, "catalog")

    def split() -> list[int] | None:
        """Events partitions per worker, once the group has spread them over both."""
        owned = [
            int(r.hget(trained.key("stats", s.worker_id), "events_partitions") or 0)
            for s in workers
        ]
        return owned if all(owned) and sum(owned) == trained.events_partitions else None

    wait_for(split, 60, "the group to give each worker events partitions")
    t = time.time() - 600
    events = []
    for u in range(24):  # users spread over both workers' partitions
        for k, item in enumerate(["s1", "s2", "s3", "g1"]):
            events.append(click(f"reader{u}", item, t + u * 10 + k))
    produce(trained.kafka_bootstrap, trained.topic_events, events)
    wait_list(r, trained, "reader23", t + 233)

    def digests() -> list[tuple[int, str]] | None:
        out = []
        for s in workers:
            stats = r.hgetall(trained.key("stats", s.worker_id))
            if b"item_vectors_digest" not in stats:
                return None
            out.append((int(stats[b"online_item_vectors"]), stats[b"item_vectors_digest"].decode()))
        both_busy = all(  # each worker took events and published its users' lists
            float(r.hget(trained.key("stats", s.worker_id), field) or 0) > 0
            for s in workers
            for field in ("events_total", "lists_published")
        )
        same = out[0] == out[1] and out[0][0] > 0
        return out if same and both_busy else None

    try:
        agreed = wait_for(digests, 60, "both workers to hold the same online item vectors")
    except AssertionError:
        seen = [r.hgetall(trained.key("stats", s.worker_id)) for s in workers]
        raise AssertionError(f"workers disagree: {seen}") from None
    assert agreed[0][0] >= 3  # s2, s3 and g1 moved toward what was clicked before them


@KAFKA_ONLY  # the same EDDY_WORKER_ID restarted: noida-db 0.2.2 never reassigns it
def test_a_restarted_worker_recovers_item_vectors_and_quality(
    broker: Endpoints,
    trained: Settings,
    r: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    s = trained
    first = start_worker(s, "first")
    wait_for(lambda: r.get(s.key("item", "g5")), 30, "catalog")
    t = time.time() - 600
    produce(s.kafka_bootstrap, s.topic_events, [click("ann", "s1", t), click("ann", "g1", t + 1)])
    recs = wait_list(r, s, "ann", t + 1)
    picked = recs.items[0].item_id
    produce(s.kafka_bootstrap, s.topic_events, [click("ann", picked, t + 2, rec_id=recs.rec_id)])
    wait_list(r, s, "ann", t + 2)
    stats_key = s.key("stats", s.worker_id)

    def settled() -> tuple[str, int] | None:
        """The digest, once the owner has applied every update sent so far (deltas go to
        the owner once per item window, aggregated: not one message per event)."""
        stats = r.hgetall(stats_key)
        events = int(stats.get(b"events_total", 0))
        sent = int(stats.get(b"item_updates_sent", 0))
        done = int(stats.get(b"item_updates_done", 0))
        online = int(stats.get(b"online_item_vectors", 0))
        if events < 3 or online < 1 or sent < 1 or done < sent:  # g1 and picked moved
            return None
        time.sleep(2.5)  # over two item windows: the last batch's deltas land, if any
        again = r.hgetall(stats_key)
        same = again.get(b"item_vectors_digest") == stats.get(b"item_vectors_digest") and (
            int(again.get(b"item_updates_done", 0)) == int(again.get(b"item_updates_sent", 0))
        )
        return (stats[b"item_vectors_digest"].decode(), online) if same else None

    try:
        digest, online = wait_for(settled, 30, "item learning to settle")
    except AssertionError:
        raise AssertionError(f"item learning did not settle: {r.hgetall(stats_key)}") from None
    first_started = r.hget(stats_key, "started_at")
    assert first.stop() == 0

    start_worker(s.model_copy(update={"data_dir": s.data_dir.parent / "again"}), "again")

    def recovered() -> bool | None:
        stats = r.hgetall(stats_key)
        same = (
            stats.get(b"started_at") != first_started
            and stats.get(b"item_vectors_digest", b"").decode() == digest
            and int(stats.get(b"online_item_vectors", 0)) == online
        )
        return same or None

    wait_for(recovered, 30, "the restarted worker to hold the same item vectors and quality")
