"""A real Apache Kafka 4.x broker (infra.apache_kafka) next to noida-db: Eddy's topics,
produce and consume, a restart on the same log dir, `eddy dev up --broker kafka`, and
where the two brokers differ for a worker restarted with the same static member id."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]

from infra import apache_kafka, devstack
from infra.devstack import WORKER_READY
from streams.settings import Settings
from streams.topics import create_topics, topic_specs
from tests.integration.test_devstack import eddy
from tests.support import (
    Endpoints,
    WorkerProcess,
    consume_all,
    isolated_settings,
    produce,
)

pytestmark = pytest.mark.integration

NO_REDIS = "redis://127.0.0.1:1/0"
"""These tests talk to the broker only."""


def commit(bootstrap: str, group: str, topic: str, offsets: dict[int, int]) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = [TopicPartition(topic, p, o) for p, o in offsets.items()]
        consumer.commit(offsets=tps, asynchronous=False)
    finally:
        consumer.close()


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        return {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=10)}
    finally:
        consumer.close()


def cleanup_policy(bootstrap: str, topic: str) -> str:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource("topic", topic)
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    value: str = configs["cleanup.policy"].value
    return value


@pytest.mark.parametrize("kind", devstack.BROKERS)
def test_topics_messages_and_offsets_survive_a_broker_restart(
    kind: devstack.Broker, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    started = time.monotonic()
    bootstrap, pid = devstack.start_kafka(run, kind)
    start_s = time.monotonic() - started
    try:
        s = isolated_settings(Endpoints(bootstrap, NO_REDIS), tmp_path)
        names = [spec.name for spec in topic_specs(s)]
        assert create_topics(s) == dict.fromkeys(names, "created")
        assert cleanup_policy(bootstrap, s.topic_items) == "compact"
        events = [(f"u{n % 7}", json.dumps({"n": n})) for n in range(60)]
        produce(bootstrap, s.topic_events, events)
        assert len(consume_all(bootstrap, s.topic_events, len(events))) == len(events)
        group = "g-" + uuid.uuid4().hex[:8]
        commit(bootstrap, group, s.topic_events, {0: 3, 1: 5})

        ticks: list[float] = []
        restarted = time.monotonic()
        bootstrap_again, pid = devstack.restart_kafka(
            run, pid, down_s=1.0, check=lambda: ticks.append(time.monotonic())
        )
        restart_s = time.monotonic() - restarted
        assert ticks, "check was not called while the broker was down"
        assert bootstrap_again == bootstrap

        assert create_topics(s) == dict.fromkeys(names, "exists")
        assert cleanup_policy(bootstrap, s.topic_items) == "compact"
        back = consume_all(bootstrap, s.topic_events, len(events))
        got = sorted((m.key().decode(), m.value().decode()) for m in back)
        assert got == sorted(events)
        assert committed(bootstrap, group, s.topic_events, 2) == {0: 3, 1: 5}
        print(f"{kind}: start {start_s:.1f}s, restart (1 s down) {restart_s:.1f}s")
    finally:
        devstack.stop_pid(pid)
    assert not devstack.pid_alive(pid)


def test_eddy_topics_on_each_broker(broker: Endpoints, tmp_path: Path) -> None:
    """Runs as [noida] and [kafka] (the ``broker`` fixture in tests/conftest.py)."""
    s = isolated_settings(broker, tmp_path)
    result = create_topics(s)
    assert set(result.values()) == {"created"}
    assert set(create_topics(s).values()) == {"exists"}
    for topic in (s.topic_events, s.topic_items, s.topic_dlq):
        produce(s.kafka_bootstrap, topic, [("k1", f"v-{topic}")])
        [msg] = consume_all(s.kafka_bootstrap, topic, 1)
        assert (msg.key(), msg.value()) == (b"k1", f"v-{topic}".encode())


def test_dev_up_with_apache_kafka(tmp_path: Path) -> None:
    env = {"EDDY_STATE_DIR": str(tmp_path / "state")}
    up = eddy("dev", "up", "--broker", "kafka", cwd=tmp_path, env=env)
    assert up.returncode == 0, up.stderr
    stack = devstack.load(tmp_path / "state")
    assert stack is not None
    try:
        assert stack.broker == "kafka"
        assert (Path(stack.root) / "apache-kafka" / "server.properties").exists()
        status = eddy("dev", "status", cwd=tmp_path, env=env)
        assert '"broker": "kafka"' in status.stdout
        assert '"running": true' in status.stdout
        topics = eddy("topics", cwd=tmp_path, env=env)
        assert topics.returncode == 0, topics.stderr
        assert "eddy.events" in topics.stdout
    finally:
        down = eddy("dev", "down", cwd=tmp_path, env=env)
    assert down.returncode == 0
    assert not devstack.pid_alive(stack.kafka_pid)
    assert not Path(stack.root).exists()


def test_missing_mvn_or_java_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("EDDY_MVN", "/nonexistent/mvn")
    with pytest.raises(devstack.StackError, match="apt-get install -y maven"):
        apache_kafka.fetch_jars(tmp_path / "lib")  # not cached there: needs mvn
    monkeypatch.setenv("EDDY_JAVA", "/nonexistent/java")
    with pytest.raises(devstack.StackError, match=r"java >= 17.*default-jre-headless"):
        apache_kafka.find_java()
    with pytest.raises(devstack.StackError, match="default-jre-headless"):
        devstack.start_kafka(tmp_path / "run", "kafka")


RESTART_WINDOW_S = 15.0
"""How long a restarted static member gets, from asking to join, to get its partitions."""
JOINING = b"(Re-)joining group"
"""aiokafka's log line when the consumer sends its JoinGroup."""


@pytest.fixture
def r(settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    yield client
    client.close()


def test_a_restarted_static_member_gets_partitions_on_kafka_only(
    broker: Endpoints,
    settings: Settings,
    r: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    """Why the worker-restart tests run as ``[kafka]`` only: noida-db 0.2.2 never assigns
    partitions to a worker restarted with the same ``EDDY_WORKER_ID`` (the same
    ``group.instance.id``); Apache Kafka hands the static member its partitions at once."""
    s = settings
    create_topics(s)
    stats_key = s.key("stats", s.worker_id)
    first = start_worker(s, "first")

    def owned() -> int:
        return int(r.hget(stats_key, "events_partitions") or 0)

    deadline = time.monotonic() + 30
    while owned() != s.events_partitions and time.monotonic() < deadline:
        time.sleep(0.2)
    assert owned() == s.events_partitions, first.tail()
    assert first.stop() == 0
    r.delete(stats_key)

    again = WorkerProcess(
        s.model_copy(update={"data_dir": s.data_dir.parent / "again"}), tmp_path / "again.log"
    )
    try:
        # The window opens when the restarted worker asks to join (not at its start: a
        # loaded machine takes seconds to import and start a worker).
        joining = time.monotonic() + 60
        while JOINING not in again.log.read_bytes():
            assert again.proc.poll() is None, again.tail()
            assert time.monotonic() < joining, again.tail()
            time.sleep(0.1)
        started = time.monotonic()
        ready_s = None
        while time.monotonic() - started < RESTART_WINDOW_S:
            assert again.proc.poll() is None, again.tail()
            if ready_s is None and WORKER_READY in again.log.read_bytes():
                ready_s = time.monotonic() - started
            if ready_s is not None and owned() == s.events_partitions:
                break
            time.sleep(0.2)
        partitions = owned()
        print(
            f"[{broker.broker}] restarted static member: ready {ready_s} s after asking to "
            f"join, owns {partitions} of {s.events_partitions} events partitions"
        )
        if broker.broker == "kafka":
            assert ready_s is not None, again.tail()
            assert partitions == s.events_partitions, again.tail()
        elif broker.broker == "noida":
            assert ready_s is None, again.tail()
            assert partitions == 0, again.tail()
    finally:
        again.stop()
