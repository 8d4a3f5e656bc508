"""Session fixtures: the real services the integration tests run against.

By default the session starts its own noida-db broker and redis-server on free ports.
Set ``EDDY_TEST_KAFKA_BOOTSTRAP`` (and optionally ``EDDY_TEST_REDIS_URL``) to run
against external services instead, e.g. an Apache Kafka broker.

``apache_kafka`` is a session-wide Apache Kafka 4.x broker (infra.apache_kafka), started
only when a test asks for it. To run a test on both brokers, ask for ``broker``: it is
parametrized ``noida`` / ``kafka`` (the ids in the test name, e.g.
``test_x[kafka]``; ``-k kafka`` selects one) and yields the Endpoints of the session's
noida-db (``endpoints``) or of ``apache_kafka``::

    def test_x(broker: Endpoints, tmp_path: Path) -> None:
        s = isolated_settings(broker, tmp_path)

A test that asks for ``broker`` gets its ``settings`` (and ``trained``, ``r``) on that
broker too. ``KAFKA_ONLY`` runs such a test as ``[kafka]`` only.
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
def session_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The session's redis-server (or ``EDDY_TEST_REDIS_URL``)."""
    external = os.environ.get("EDDY_TEST_REDIS_URL")
    if external:
        yield external
        return
    url, pid = devstack.start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield url
    finally:
        devstack.stop_pid(pid)


@pytest.fixture(scope="session")
def endpoints(
    tmp_path_factory: pytest.TempPathFactory, session_redis_url: str
) -> Iterator[Endpoints]:
    """The session's noida-db (or ``EDDY_TEST_KAFKA_BOOTSTRAP``) and Redis."""
    kafka = os.environ.get("EDDY_TEST_KAFKA_BOOTSTRAP")
    if kafka:
        yield Endpoints(kafka, session_redis_url, "external")
        return
    kafka, pid = devstack.start_kafka(tmp_path_factory.mktemp("stack"))
    try:
        yield Endpoints(kafka, session_redis_url)
    finally:
        devstack.stop_pid(pid)


@pytest.fixture(scope="session")
def apache_kafka(
    tmp_path_factory: pytest.TempPathFactory, session_redis_url: str
) -> Iterator[Endpoints]:
    """A session-wide Apache Kafka broker (started on first use) and the session's Redis."""
    kafka, pid = devstack.start_kafka(tmp_path_factory.mktemp("apache-kafka"), "kafka")
    try:
        yield Endpoints(kafka, session_redis_url, "kafka")
    finally:
        devstack.stop_pid(pid)


@pytest.fixture(params=devstack.BROKERS, ids=devstack.BROKERS)
def broker(request: pytest.FixtureRequest) -> Endpoints:
    """Each broker in turn: ``[noida]`` the session's ``endpoints``, ``[kafka]``
    ``apache_kafka``."""
    name = "apache_kafka" if request.param == "kafka" else "endpoints"
    endpoints: Endpoints = request.getfixturevalue(name)
    return endpoints


@pytest.fixture
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings isolated to this test (own topics, group and key prefix), on ``broker``
    when the test asks for it (``[noida]`` / ``[kafka]``), else on the session's
    noida-db (``endpoints``)."""
    name = "broker" if "broker" in request.fixturenames else "endpoints"
    endpoints: Endpoints = request.getfixturevalue(name)
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
