"""Privacy: ``eddy forget USER`` deletes a user's profile, vectors, lists and memory."""

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
from tests.support import WorkerProcess, produce, wait_for

pytestmark = pytest.mark.integration


def changelog_values(s: Settings, table: str, key: str) -> list[bytes | None]:
    """Every value written for ``key`` to a Faust table's changelog, in order."""
    topic = f"{s.app_id}-{table}-changelog"
    consumer = Consumer(
        {
            "bootstrap.servers": s.kafka_bootstrap,
            "group.id": f"forget-check-{time.time_ns()}",
            "enable.auto.commit": False,
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        parts = [TopicPartition(topic, p, 0) for p in meta.partitions]
        consumer.assign(parts)
        ends = {p.partition: consumer.get_watermark_offsets(p, timeout=10)[1] for p in parts}
        values: list[bytes | None] = []
        done = {p for p, end in ends.items() if end == 0}
        deadline = time.monotonic() + 20
        while len(done) < len(ends) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            if msg.key() in (key.encode(), json.dumps(key).encode()):
                values.append(msg.value())
            if msg.offset() + 1 >= ends[msg.partition()]:
                done.add(msg.partition())
        return values
    finally:
        consumer.close()


def test_forget_leaves_nothing_behind(
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
    assert r.get(s.key("profile", "erin"))

    for name, value in s.to_env().items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(app, ["forget", "erin", "--wait", "30"])
    assert result.exit_code == 0, result.output
    assert "forgot erin" in result.output

    # Redis: no key names erin any more; finn is untouched.
    assert [k for k in r.scan_iter(match=f"{s.key_prefix}:*") if b"erin" in k] == []
    assert r.get(s.key("rec", "finn"))
    # The profile table (user vector included): the last changelog record is a tombstone.
    values = wait_for(
        lambda: ((v := changelog_values(s, "profiles", "erin")) and v[-1] is None and v) or None,
        30,
        "a tombstone for erin in the profiles changelog",
    )
    assert values[0] is not None
    assert json.loads(values[0])["user_id"] == "erin"
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
