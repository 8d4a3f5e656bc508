"""Committed offsets after worker kills and restarts (issue 11, item 2).

The outside test's scenario, scaled up: 20,000 events from 500 users (the outside test
sent 5,000, which the worker now counts before its first commit); the worker is killed with
SIGKILL, restarted, killed again while it catches up, restarted, stopped cleanly with
SIGTERM and restarted once more, each time with the same ``EDDY_WORKER_ID``. After every
restart, once the worker has counted every event, the group's committed offsets must
reach the end of the events topic (the old worker's stayed at the killed worker's last
commit, and the next restart re-read thousands of events). Counts stay exact throughout.

Runs as ``[kafka]`` only: noida-db 0.2.2 never assigns partitions to a worker restarted
with the same ``EDDY_WORKER_ID`` (``test_apache_kafka.py`` shows it).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis

from streams.settings import Settings
from streams.topics import create_topics
from tests.integration.test_outages import offsets
from tests.support import KAFKA_ONLY, Endpoints, WorkerProcess, produce, wait_for

pytestmark = pytest.mark.integration

USERS = 500


@KAFKA_ONLY
def test_committed_offsets_reach_the_end_after_every_kill_and_restart(
    broker: Endpoints,
    settings: Settings,
    r: redis.Redis,
    tmp_path: Path,
) -> None:
    create_topics(settings)
    stats_key = settings.key("stats", settings.worker_id)
    t0 = time.time() - 3600
    sent = 0

    def send(per_user: int) -> None:
        nonlocal sent
        events = []
        for n in range(sent, sent + per_user):
            for u in range(USERS):
                body = {"type": "click", "user_id": f"o{u}", "item_id": f"i{n % 9}", "ts": t0 + n}
                events.append((f"o{u}", json.dumps(body)))
        produce(settings.kafka_bootstrap, settings.topic_events, events)
        sent += per_user

    def processed() -> int:
        """Events counted in the profiles (the stats hash is per worker process)."""
        raws = r.mget([settings.key("profile", f"o{u}") for u in range(USERS)])
        return sum(sum(json.loads(raw)["counts"].values()) for raw in raws if raw)

    workers: list[WorkerProcess] = []
    kills: list[tuple[int, int]] = []
    """(events counted, offsets committed) at each kill."""

    def start(name: str, ready: bool = True) -> WorkerProcess:
        # Same static member id each time, an empty local state dir: profiles come back
        # from Redis, the offsets to resume from from Kafka.
        again = settings.model_copy(update={"data_dir": tmp_path / name})
        r.delete(stats_key)  # its replay count is its own
        w = WorkerProcess(again, tmp_path / f"{name}.log")
        workers.append(w)
        if ready:
            w.wait_ready()
        return w

    def kill(w: WorkerProcess) -> int:
        w.proc.kill()  # SIGKILL: no flush, no commit, no leaving the group
        w.proc.wait()
        kills.append((processed(), offsets(settings)[0]))
        return kills[-1][0]

    def counted_then_committed(w: WorkerProcess, label: str) -> float:
        """Wait until every profile counts every event sent, then until the committed
        offsets reach the end; return how long the commits took after the counts."""

        def alive() -> None:
            assert w.proc.poll() is None, f"{label}: worker exited\n{w.tail()}"

        def exact() -> bool:
            raws = r.mget([settings.key("profile", f"o{u}") for u in range(USERS)])
            return all(raw and json.loads(raw)["counts"] == {"click": sent} for raw in raws)

        wait_for(exact, 120, f"{label}: {sent} clicks in every profile", alive)
        counted_at = time.monotonic()
        committed, high = wait_for(
            lambda: ((o := offsets(settings))[0] == o[1] and o) or None,
            30,
            f"{label}: the committed offsets to reach the end of the events topic",
            alive,
        )
        assert committed == high == sent * USERS
        return round(time.monotonic() - counted_at, 1)

    try:
        send(40)  # 20,000 events: enough that the first commit comes mid-stream
        first = start("first", ready=False)
        # killed once it has committed something: the old worker's group stayed there
        wait_for(lambda: offsets(settings)[0] > 0 or None, 90, "a first commit")
        killed_first = kill(first)
        assert killed_first < sent * USERS, "the worker finished before it was killed"

        # killed again while it catches up (after at least 200 more events)
        second = start("second", ready=False)
        wait_for(lambda: processed() >= killed_first + 200 or None, 90, "catching up")
        kill(second)

        third = start("third")
        after_kills_s = counted_then_committed(third, "after two kills")
        replays_after_kills = int(r.hget(stats_key, "duplicates") or 0)

        send(2)  # 1,000 more, then a clean stop: it commits what it has written
        wait_for(lambda: processed() >= sent * USERS or None, 60, "the next 1,000")
        assert third.stop() == 0
        at_stop, high = offsets(settings)

        fourth = start("fourth")
        send(1)
        after_stop_s = counted_then_committed(fourth, "after SIGTERM and restart")
        replays = int(r.hget(stats_key, "duplicates") or 0)  # the last process's
        print(
            f"[{broker.broker}] (counted, committed) at the kills {kills} of {USERS * 40}; "
            f"commits at the end {after_kills_s}s after the counts (two kills), "
            f"committed at SIGTERM {at_stop}/{high}, "
            f"{after_stop_s}s after the counts (SIGTERM, restart); "
            f"replays skipped: {replays_after_kills} after the kills, {replays} after the stop"
        )
        assert at_stop == high  # the clean stop committed everything it had counted
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()
