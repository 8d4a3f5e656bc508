"""A hung Redis (SIGSTOPped, the socket open and silent) while events flow.

The worker keeps consuming and applying the events of the users it holds in memory;
the events of users it must first read from Redis wait, in order per user; nothing is
committed that Redis does not hold; after SIGCONT every list catches up and every
event is counted once. The worker's ``/health`` (served by its event loop, never by
Redis) gives the processed count while Redis is stopped.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streams.settings import Settings
from tests.integration.test_outages import (
    Service,
    alive,
    offsets,
    profile_counts,
    rec_ts,
    redis_service,
    redis_setup,
    stats_counting,
)
from tests.integration.test_pipeline import event
from tests.support import Endpoints, WorkerProcess, get_json, produce, wait_for

pytestmark = pytest.mark.integration

CACHED = [f"u{n:02d}" for n in range(40)]
"""Users with a list before Redis hangs: in the worker's memory."""
NEWCOMERS = [f"n{n:02d}" for n in range(20)]
"""Users first seen while Redis hangs: their profiles must be read from Redis first."""
STOP_S = 8.0
PER_USER = 4
"""Events per user in the burst sent while Redis is stopped."""


@pytest.fixture
def hung_redis(tmp_path: Path) -> Iterator[Service]:
    service = redis_service(tmp_path / "hung-redis")
    service.start()
    yield service
    if service.proc is not None:
        os.kill(service.proc.pid, signal.SIGCONT)
    service.stop()


def events_total(s: Settings) -> int:
    """The worker's applied-event count from ``/health``."""
    _status, body = get_json(f"http://127.0.0.1:{s.web_port}/health")
    return int(body["events_total"])


def test_a_hung_redis_stops_neither_consumption_nor_state_and_lists_catch_up(
    broker: Endpoints,
    tmp_path: Path,
    hung_redis: Service,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    s, r = redis_setup(broker, tmp_path, hung_redis)
    worker = start_worker(s)
    check = alive(worker)
    base = time.time() - 3600
    newest: dict[str, float] = {}
    sent = 0

    def send(users: list[str], rounds: int) -> None:
        nonlocal sent
        messages = []
        for n in range(rounds):  # users take turns, so cached and new users share batches
            for user in users:
                ts = round(base + sent / 100, 2)
                messages.append(event("click", user, "a1" if n % 2 else "c1", ts))
                newest[user] = ts
                sent += 1
        produce(s.kafka_bootstrap, s.topic_events, messages)

    send(CACHED, 1)
    wait_for(lambda: all(rec_ts(r, s, CACHED).values()) or None, 60, "first lists", check)
    wait_for(lambda: events_total(s) == sent or None, 30, "the first events applied", check)
    before = events_total(s)
    committed_before = wait_for(
        lambda: ((o := offsets(s))[0] == o[1] and o[0]) or None, 30, "first commits", check
    )

    assert hung_redis.proc is not None
    os.kill(hung_redis.proc.pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        mixed = [u for pair in zip(CACHED, NEWCOMERS * 2, strict=True) for u in pair]
        send(list(dict.fromkeys(mixed)), PER_USER)
        cached_events = len(CACHED) * PER_USER
        # While Redis is stopped the cached users' events are applied, and only theirs:
        # the newcomers' wait for their profiles to be read.
        applied = wait_for(
            lambda: (n := events_total(s)) >= before + cached_events and n,
            STOP_S,
            "the cached users' events applied while Redis is stopped",
            check,
        )
        time.sleep(max(0.0, stopped_at + STOP_S - time.monotonic()))
        during = events_total(s)
        committed_during, _ = offsets(s)
    finally:
        os.kill(hung_redis.proc.pid, signal.SIGCONT)
    assert applied == during == before + cached_events, (before, applied, during)
    assert committed_during == committed_before  # nothing is committed that Redis lacks

    users = CACHED + NEWCOMERS
    wait_for(lambda: rec_ts(r, s, users) == newest or None, 60, "every list caught up", check)
    stats = wait_for(stats_counting(r, s, sent), 30, f"stats to count {sent} events", check)
    assert int(stats["events_total"]) == sent
    assert int(stats["dead_letters"]) == 0
    counts = profile_counts(r, s, users)
    expected = {u: 1 + PER_USER for u in CACHED} | {u: PER_USER for u in NEWCOMERS}
    assert {u: c.get("click", 0) for u, c in counts.items()} == expected
    wait_for(lambda: ((o := offsets(s))[0] == o[1] and o) or None, 30, "commits to the end", check)
    assert worker.proc.poll() is None, worker.tail()
    print(json.dumps({"sent": sent, "applied_while_stopped": during - before}))
