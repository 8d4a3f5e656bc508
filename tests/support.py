"""Helpers shared by the integration tests: isolated settings, workers, Kafka I/O."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from confluent_kafka import Consumer, Producer

from infra.devstack import StackError, free_port, spawn_worker, wait_worker_ready
from streams.settings import Settings

T = TypeVar("T")

KAFKA_ONLY = pytest.mark.parametrize("broker", ["kafka"], indirect=True)
"""Run a ``broker`` test as ``[kafka]`` only: for tests that restart a worker with the
same ``EDDY_WORKER_ID``, which noida-db 0.2.2 never assigns partitions again
(``test_apache_kafka.py::test_a_restarted_static_member_gets_partitions_on_kafka_only``
shows it)."""


@dataclass(frozen=True)
class Endpoints:
    kafka_bootstrap: str
    redis_url: str
    broker: str = "noida"
    """Which broker ``kafka_bootstrap`` is: ``noida``, ``kafka`` or ``external``
    (``EDDY_TEST_KAFKA_BOOTSTRAP``)."""


def isolated_settings(endpoints: Endpoints, tmp: Path, **overrides: Any) -> Settings:
    """Settings with unique topics, group, key prefix and web port for one test."""
    tag = "t" + uuid.uuid4().hex[:10]
    values: dict[str, Any] = {
        "kafka_bootstrap": endpoints.kafka_bootstrap,
        "redis_url": endpoints.redis_url,
        "app_id": f"eddy-{tag}",
        "topic_events": f"{tag}.events",
        "topic_items": f"{tag}.items",
        "topic_dlq": f"{tag}.events.dlq",
        "topic_item_updates": f"{tag}.item-updates",
        "topic_impressions": f"{tag}.impressions",
        "events_partitions": 2,
        "key_prefix": tag,
        "web_port": free_port(),
        "data_dir": tmp / "worker",
        "state_dir": tmp / "state",
        "model_dir": tmp / "artifacts",
        "broker_session_timeout_s": 6.0,
        "broker_rebalance_timeout_s": 10.0,
        "popular_refresh_s": 0.5,
        "worker_id": f"w-{tag}",
    }
    values.update(overrides)
    return Settings(**values)


class WorkerProcess:
    """``eddy worker`` in a child process, logging to a file."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.settings = settings
        self.log = log
        self.proc = spawn_worker(settings.to_env(), log)

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        try:
            wait_worker_ready(self.proc, self.log, timeout_s)
        except StackError as exc:
            raise AssertionError(f"{exc}\n{self.tail()}") from None

    def tail(self, n: int = 4000) -> str:
        return self.log.read_bytes()[-n:].decode(errors="replace")

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def wait_for(
    probe: Callable[[], T | None],
    timeout_s: float,
    what: str,
    check: Callable[[], None] | None = None,
) -> T:
    """Poll ``probe`` until it returns something other than None or False."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = probe()
        if result is not None and result is not False:
            return result
        if check is not None:
            check()
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def produce(
    bootstrap: str, topic: str, messages: Iterable[tuple[bytes | str | None, bytes | str]]
) -> None:
    """Send (key, value) pairs and wait for every delivery."""
    errors: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})
    for key, value in messages:
        producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
    assert producer.flush(30) == 0, "messages not delivered"
    assert not errors, errors


def consume_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 30.0) -> list[Any]:
    """Read ``expected`` messages from the start of ``topic`` with a fresh group."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "test-" + uuid.uuid4().hex,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                out.append(msg)
        time.sleep(0.5)  # anything beyond `expected` would show up here
        while (msg := consumer.poll(0.5)) is not None:
            if msg.error() is None:
                out.append(msg)
    finally:
        consumer.close()
    return out


def http_get(url: str) -> tuple[int, bytes]:
    """(status, body) of a GET, for success and error statuses alike."""
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def get_json(url: str) -> tuple[int, Any]:
    """(status, decoded JSON body) of a GET."""
    status, body = http_get(url)
    return status, json.loads(body)
