"""Privacy: ``eddy forget USER`` deletes a user's profile, vectors, lists and memory.

The profile (taste vector included) lives in Redis, ``{prefix}:profile:<user>``; runs on
both brokers (``[noida]``, ``[kafka]``)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest
import redis
from confluent_kafka import Consumer, TopicPartition
from typer.testing import CliRunner

from streams.cli import app
from streams.settings import Settings
from tests.integration.test_learning import click, start_with_catalog, wait_list
from tests.support import Endpoints, WorkerProcess, produce, wait_for

pytestmark = pytest.mark.integration


def changelog_values(s: Settings, key: str) -> dict[str, list[bytes | None]]:
    """Every value written for ``key`` to each of the app's Faust table changelogs, in
    order, by topic (topics with no record for ``key`` left out)."""
    consumer = Consumer(
        {
            "bootstrap.servers": s.kafka_bootstrap,
            "group.id": f"forget-check-{time.time_ns()}",
            "enable.auto.commit": False,
        }
    )
    try:
        topics = consumer.list_topics(timeout=10).topics
        changelogs = [
            name
            for name in topics
            if name.startswith(f"{s.app_id}-") and name.endswith("-changelog")
        ]
        parts = [TopicPartition(t, p, 0) for t in changelogs for p in topics[t].partitions]
        if not parts:
            return {}
        consumer.assign(parts)
        ends = {
            (p.topic, p.partition): consumer.get_watermark_offsets(p, timeout=10)[1] for p in parts
        }
        values: dict[str, list[bytes | None]] = {}
        done = {tp for tp, end in ends.items() if end == 0}
        deadline = time.monotonic() + 20
        while len(done) < len(ends) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            if msg.key() in (key.encode(), json.dumps(key).encode()):
                values.setdefault(msg.topic(), []).append(msg.value())
            if msg.offset() + 1 >= ends[(msg.topic(), msg.partition())]:
                done.add((msg.topic(), msg.partition()))
        assert len(done) == len(ends), f"changelogs not read to the end: {set(ends) - done}"
        return values
    finally:
        consumer.close()


def test_forget_leaves_nothing_behind(
    broker: Endpoints,
    trained: Settings,
    r: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = start_with_catalog(trained, r, start_worker)
    t = time.time() - 300
    produce(
        s.kafka_bootstrap,
        s.topic_events,
        [click("erin", "s1", t), click("erin", "s2", t + 1), click("finn", "g1", t + 2)],
    )
    wait_list(r, s, "erin", t + 1)
    wait_list(r, s, "finn", t + 2)
    # erin's state is in Redis (the profile: taste vector, history, counts, dedup state).
    before = json.loads(r.get(s.key("profile", "erin")) or b"{}")
    assert before["user_id"] == "erin"
    assert before["counts"] == {"click": 2}

    for name, value in s.to_env().items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(app, ["forget", "erin", "--wait", "30"])
    assert result.exit_code == 0, result.output
    assert "forgot erin" in result.output

    # Redis: no key names erin any more (her profile and list are deleted); finn is
    # untouched.
    assert r.get(s.key("profile", "erin")) is None
    assert r.get(s.key("rec", "erin")) is None
    assert [k for k in r.scan_iter(match=f"{s.key_prefix}:*") if b"erin" in k] == []
    assert r.get(s.key("rec", "finn"))
    assert json.loads(r.get(s.key("profile", "finn")) or b"{}")["counts"] == {"click": 1}
    # No Faust table holds her either: any changelog record for erin ends in a tombstone.
    kept = {topic: v for topic, v in changelog_values(s, "erin").items() if v[-1] is not None}
    assert kept == {}, kept
    stats_key = s.key("stats", s.worker_id)
    wait_for(lambda: r.hget(stats_key, "forgotten") == b"1", 10, "the stats to count it")
    # A later event starts a new profile from nothing.
    produce(s.kafka_bootstrap, s.topic_events, [click("erin", "g2", t + 3)])
    wait_list(r, s, "erin", t + 3)
    profile = json.loads(r.get(s.key("profile", "erin")) or b"{}")
    assert profile["counts"] == {"click": 1}
    assert profile["recent"] == ["g2"]


def test_forget_rejects_a_bad_id() -> None:
    result = CliRunner().invoke(app, ["forget", "bad id*"])
    assert result.exit_code == 1
    assert "not a valid user id" in result.output
