"""Session fixtures: the real services the integration tests run against.

By default the session starts its own noida-db broker and redis-server on free ports.
Set ``EDDY_TEST_KAFKA_BOOTSTRAP`` (and optionally ``EDDY_TEST_REDIS_URL``) to run
against external services instead, e.g. an Apache Kafka broker.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra import devstack
from streams.settings import Settings
from tests.support import Endpoints, WorkerProcess, isolated_settings


@pytest.fixture(scope="session")
def endpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    run = tmp_path_factory.mktemp("stack")
    pids: list[int] = []
    kafka = os.environ.get("EDDY_TEST_KAFKA_BOOTSTRAP")
    redis_url = os.environ.get("EDDY_TEST_REDIS_URL")
    try:
        if not kafka:
            kafka, pid = devstack.start_kafka(run)
            pids.append(pid)
        if not redis_url:
            redis_url, pid = devstack.start_redis(run)
            pids.append(pid)
        yield Endpoints(kafka, redis_url)
    finally:
        for pid in pids:
            devstack.stop_pid(pid)


@pytest.fixture
def settings(endpoints: Endpoints, tmp_path: Path) -> Settings:
    """Settings isolated to this test (own topics, group and key prefix)."""
    return isolated_settings(endpoints, tmp_path)


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[object]:
    """Factory: start ``eddy worker`` processes; all are stopped at teardown."""
    workers: list[WorkerProcess] = []

    def start(s: Settings, name: str = "worker") -> WorkerProcess:
        w = WorkerProcess(s, tmp_path / f"{name}-{len(workers)}.log")
        workers.append(w)
        w.wait_ready()
        return w

    yield start
    for w in workers:
        w.stop()
