"""``streams.pipeline.EventPipeline`` on a ``Worker`` with a ``MemorySink``, no Faust: a
backlog's next users are read while the step runs, and every event is applied once, in
order per user."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from models.step import Inbound
from streams.pipeline import EventPipeline
from streams.settings import Settings
from streams.sink import MemorySink
from streams.worker import Rejected, Worker

T0 = 1_700_000_000.0
BATCH = 4


class Journal(MemorySink):
    """A sink that journals its reads and whether the step was running meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.stepping = threading.Event()
        self.reads: list[tuple[list[str], bool]] = []

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        self.reads.append(([k.rsplit(":", 1)[-1] for k in keys], self.stepping.is_set()))
        return await super().get_many(keys)


class SlowWorker(Worker):
    """A worker whose step takes 50 ms: long enough for a read to happen meanwhile.

    "Stepping" is from the moment the pipeline hands a batch to the step until the step
    is done (the event loop's view): the step thread itself may start late on a busy
    machine, after the loader has already read."""

    def _step(self, batch: Sequence[Inbound], now: float) -> Any:
        time.sleep(0.05)
        return super()._step(batch, now)

    async def apply(self, batch: Sequence[Inbound], now: float | None = None) -> Any:
        sink = self.sink
        assert isinstance(sink, Journal)
        sink.stepping.set()
        try:
            return await super().apply(batch, now)
        finally:
            sink.stepping.clear()


async def _dead_letter(msg: Any, rejected: Rejected) -> None:
    raise AssertionError(f"no event is rejected here: {rejected}")


def test_a_backlog_reads_the_next_users_during_the_step_and_applies_each_event_once(
    settings: Settings,
) -> None:
    users = [f"u{n}" for n in range(10)]
    sink = Journal()
    worker = SlowWorker(settings, sink)
    pipeline = EventPipeline(worker, BATCH, 0.02, _dead_letter)
    offset = 0
    for round_ in range(3):  # users take turns: each batch mixes new and known users
        for user in users:
            body = {"type": "click", "user_id": user, "item_id": f"i{round_}", "ts": T0 + offset}
            decoded = worker.decode(json.dumps(body).encode(), user.encode(), (0, offset), T0)
            assert isinstance(decoded, Inbound)
            pipeline.add(SimpleNamespace(partition=0, offset=offset), decoded)
            offset += 1

    async def run() -> None:
        loader = asyncio.create_task(pipeline.run_loader())
        try:
            await pipeline.drain()
        finally:
            loader.cancel()
        worker.close()

    asyncio.run(run())
    read = [user for keys, _ in sink.reads for user in keys]
    assert sorted(read) == users  # each user read once, before their first event
    assert any(during for _, during in sink.reads), sink.reads  # read ahead, during a step
    for user in users:
        profile = worker.profile(user)
        assert profile is not None
        assert profile.counts == {"click": 3}
        assert profile.recent == ["i2", "i1", "i0"]  # in order
    assert worker.stats.duplicates == 0
    assert sum(worker.stats.events.values()) == offset
    assert worker.committable == {0: offset - 1}
    assert not worker.pending
