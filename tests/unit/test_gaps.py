"""Holes in the events offsets (``streams.gaps``): found, never committed past, read
again after a seek back (docs/reliability.md, "Outages", bug 1)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from faust.types import TP

from streams.app import build_app
from streams.gaps import GapTracker, Verdict
from streams.settings import Settings
from streams.sink import MemorySink


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_hole_is_sought_back_and_what_follows_it_dropped_until_it_arrives() -> None:
    gaps = GapTracker(reseek_s=2.0, max_seeks=3, clock=Clock())
    gaps.start(1, 60)
    assert [gaps.check(1, o) for o in (60, 61)] == [Verdict.TAKE, Verdict.TAKE]
    assert gaps.check(1, 72) is Verdict.SEEK  # 62-71 never came
    assert gaps.target(1) == 62
    assert [gaps.check(1, o) for o in (73, 83)] == [Verdict.DROP, Verdict.DROP]
    assert [gaps.check(1, o) for o in range(62, 75)] == [Verdict.TAKE] * 13
    assert gaps.check(1, 70) is Verdict.DROP  # a re-delivery
    assert (gaps.gaps, gaps.seeks, gaps.jumps, gaps.redelivered) == (1, 1, 0, 1)
    assert gaps.expected == {1: 75}
    assert not gaps.holes


def test_partitions_are_independent_and_a_revocation_forgets_them() -> None:
    gaps = GapTracker(clock=Clock())
    gaps.start(0, 0)
    gaps.start(1, 10)
    assert gaps.check(0, 0) is Verdict.TAKE
    assert gaps.check(1, 12) is Verdict.SEEK
    assert gaps.check(0, 1) is Verdict.TAKE
    gaps.clear()
    assert (gaps.known(0), gaps.known(1), gaps.holes) == (False, False, {})


def test_a_seek_that_brings_nothing_is_repeated_and_a_hole_not_in_the_log_is_jumped() -> None:
    clock = Clock()
    gaps = GapTracker(reseek_s=2.0, max_seeks=3, clock=clock)
    gaps.start(0, 5)
    assert gaps.check(0, 9) is Verdict.SEEK
    clock.now += 1.0
    assert gaps.check(0, 10) is Verdict.DROP
    assert gaps.due() == []
    clock.now += 1.0
    assert gaps.due() == [(0, 5)]  # the timer's side: nothing came since the seek
    clock.now += 2.0
    assert gaps.check(0, 9) is Verdict.SEEK  # the third seek
    clock.now += 2.0
    assert gaps.due() == []  # max_seeks reached: only a message may end it
    assert gaps.check(0, 9) is Verdict.JUMP  # 5-8 are not in the log
    assert gaps.check(0, 10) is Verdict.TAKE
    assert (gaps.gaps, gaps.seeks, gaps.jumps) == (1, 3, 1)


def click(user: str, item: str, ts: float) -> bytes:
    return json.dumps({"type": "click", "user_id": user, "item_id": item, "ts": ts}).encode()


def test_the_events_agent_never_hands_on_a_message_past_a_hole(tmp_path: Path) -> None:
    """The consumer skips offset 3 (the rebalance race): 4 is not applied nor committed,
    the consumer is sought back to 3, and 3 and 4 are applied once they come again.
    Without the gap check 4 was applied and committable (past 3), and 3, read again
    later, was skipped as a replay by the profile's offset watermark."""
    sink = MemorySink()
    settings = Settings(data_dir=tmp_path, app_id="unit", key_prefix="u")
    eddy = build_app(settings, sink=sink)
    tp = TP(settings.topic_events, 0)
    sought: list[tuple[TP, int]] = []

    async def seek_wait(partitions: dict[TP, int]) -> None:
        sought.extend(partitions.items())

    consumer: Any = eddy.app.consumer
    consumer.seek_wait = seek_wait
    consumer.assignment = lambda: {tp}
    now = time.time()

    async def run() -> None:
        async with eddy.events_agent.test_context() as agent:
            for n in range(3):
                await agent.put(click("u1", f"i{n}", now + n), key=b"u1")
            agent.sent_offset = 4  # offset 3 never reaches the agent
            await agent.put(click("u1", "i4", now + 4), key=b"u1")
            await eddy.drain()
            assert eddy.worker.committable == {0: 2}  # not past the hole
            agent.sent_offset = 3  # the seek back: 3, then 4 again
            await agent.put(click("u1", "i3", now + 3), key=b"u1")
            await agent.put(click("u1", "i4", now + 4), key=b"u1")
            agent.sent_offset = 2  # a re-delivery
            await agent.put(click("u1", "i2", now + 2), key=b"u1")
        await eddy.drain()

    asyncio.run(run())
    assert sought == [(tp, 3)]
    profile = json.loads(asyncio.run(sink.get("u:profile:u1")) or b"{}")
    assert profile["counts"] == {"click": 5}
    assert eddy.worker.committable == {0: 4}
    stats = eddy.worker.stats
    assert (stats.offset_gaps, stats.offset_gap_seeks, stats.offset_jumps) == (1, 1, 0)
    assert stats.redelivered_dropped == 1
    assert stats.duplicates == 0
