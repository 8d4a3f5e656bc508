"""Processing guarantee: kill -9 mid-stream, restart, and every event counts exactly once.

Runs as ``[kafka]`` only: noida-db 0.2.2 never assigns partitions to a worker restarted
with the same ``EDDY_WORKER_ID`` (``test_apache_kafka.py`` shows it)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest
import redis

from streams.settings import Settings
from streams.topics import create_topics
from tests.support import KAFKA_ONLY, Endpoints, WorkerProcess, produce, wait_for

pytestmark = pytest.mark.integration

USERS = 40
PER_USER = 1000


@KAFKA_ONLY
def test_kill_9_mid_stream_then_restart_counts_every_event_once(
    broker: Endpoints,
    settings: Settings,
    r: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    create_topics(settings)
    t0 = time.time() - 3600
    events = []
    for n in range(PER_USER):
        for u in range(USERS):
            body = {"type": "click", "user_id": f"k{u}", "item_id": f"i{n % 7}", "ts": t0 + n}
            if n % 3 == 0:
                body["event_id"] = f"k{u}-{n}"
            events.append((f"k{u}", json.dumps(body)))
    total = len(events)
    produce(settings.kafka_bootstrap, settings.topic_events, events)
    stats_key = settings.key("stats", settings.worker_id)

    first = start_worker(settings, "first")

    def processed() -> int:
        return int(r.hget(stats_key, "events_total") or 0)

    # kill as soon as the stats (written every second) show progress: well before the end
    wait_for(lambda: processed() >= 100 or None, 60, "the first events")
    first.proc.kill()  # SIGKILL: no flush, no commit, no leaving the group
    first.proc.wait()
    killed_at = processed()
    assert killed_at < total, "the worker finished before it was killed; raise PER_USER"

    # Same static member id (EDDY_WORKER_ID), empty local state dir: the profiles come
    # back from Redis, the offsets to resume from from Kafka.
    again = settings.model_copy(update={"data_dir": settings.data_dir.parent / "again"})
    start_worker(again, "again")

    def counted() -> int | None:
        counts = 0
        for u in range(USERS):
            raw = r.get(settings.key("profile", f"k{u}"))
            if raw is None:
                return None
            profile = json.loads(raw)
            if profile["last_ts"] < t0 + PER_USER - 1:
                return None
            counts += sum(profile["counts"].values())
        return counts

    seen = wait_for(counted, 120, "every user's last event")
    time.sleep(3)  # anything replayed late would show up as a higher count
    seen = counted()
    duplicates = int(r.hget(stats_key, "duplicates") or 0)
    print(f"killed after {killed_at} of {total} events; {duplicates} replays skipped")
    if seen != total:
        for u in range(USERS):
            raw = r.get(settings.key("profile", f"k{u}"))
            got = sum(json.loads(raw)["counts"].values()) if raw else None
            if got != PER_USER:
                print("user", u, got, json.loads(raw)["applied"] if raw else None)
    assert seen == total
