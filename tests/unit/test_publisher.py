"""The publisher: coalescing, size/age flushing, chunking, sink failures and backoff."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from types import SimpleNamespace

import pytest

import streams.publisher as publisher_module
from models.profile import UserProfile
from streams.publisher import Publisher
from streams.sink import MemorySink, Put
from streams.stats import WorkerStats

WALL0 = 1_700_000_000.0


class Clock:
    """A fake ``time`` module for the publisher: monotonic and wall time move together."""

    def __init__(self) -> None:
        self.mono = 1_000.0
        self.wall = WALL0

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    # Only the publisher's view of time is faked; asyncio keeps the real clock.
    monkeypatch.setattr(
        publisher_module, "time", SimpleNamespace(monotonic=c.monotonic, time=c.time)
    )
    return c


class Renderer:
    """Renders one key per user holding the profile's n_events and the event time."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, float]] = []

    def __call__(self, profile: UserProfile, event_ts: float) -> list[Put]:
        self.calls.append((profile.user_id, profile.n_events, event_ts))
        body = {"n": profile.n_events, "ts": event_ts}
        return [Put(f"rec:{profile.user_id}", json.dumps(body).encode(), 60)]


class FlakySink(MemorySink):
    """A MemorySink that raises while ``fail`` is set, after running ``on_write``."""

    def __init__(self) -> None:
        super().__init__()
        self.fail = False
        self.attempts = 0
        self.on_write: Callable[[], None] | None = None

    async def write(self, puts: Sequence[Put]) -> None:
        self.attempts += 1
        if self.on_write is not None:
            self.on_write()
        if self.fail:
            raise ConnectionError("redis is down")
        await super().write(puts)


def prof(user: str, n: int = 1) -> UserProfile:
    return UserProfile(user_id=user, counts={"view": n})


def stored(sink: MemorySink, key: str) -> dict[str, float]:
    value = asyncio.run(sink.get(key))
    assert value is not None, key
    result: dict[str, float] = json.loads(value)
    return result


def make(
    sink: MemorySink, *, max_batch: int = 100, max_delay_s: float = 0.02, max_backoff_s: float = 5.0
) -> tuple[Publisher, Renderer, WorkerStats]:
    render = Renderer()
    stats = WorkerStats()
    pub = Publisher(
        sink,
        render,
        stats,
        max_batch=max_batch,
        max_delay_s=max_delay_s,
        max_backoff_s=max_backoff_s,
    )
    return pub, render, stats


def test_nothing_pending_is_not_due_and_flushes_nothing(clock: Clock) -> None:
    sink = MemorySink()
    pub, render, stats = make(sink)
    assert pub.pending == 0
    assert not pub.due()
    clock.advance(100)
    assert not pub.due()
    assert asyncio.run(pub.flush()) == 0
    assert sink.batches == 0
    assert render.calls == []
    assert stats.lists_published == 0


def test_due_on_age(clock: Clock) -> None:
    pub, _, _ = make(MemorySink(), max_batch=100, max_delay_s=0.5)
    pub.mark(prof("u1"), 10.0, None)
    assert not pub.due()
    clock.advance(0.25)
    pub.mark(prof("u2"), 11.0, None)  # age counts from the oldest pending entry
    clock.advance(0.25 - 1e-6)
    assert not pub.due()
    clock.advance(2e-6)
    assert pub.due()


def test_due_on_size(clock: Clock) -> None:
    pub, _, _ = make(MemorySink(), max_batch=3, max_delay_s=60)
    pub.mark(prof("u1"), 1.0, None)
    pub.mark(prof("u2"), 1.0, None)
    pub.mark(prof("u1"), 2.0, None)  # same user: still two pending
    assert pub.pending == 2
    assert not pub.due()
    pub.put(Put("popular", b"[]"))  # non-user keys count towards the batch
    assert pub.pending == 3
    assert pub.due()


def test_marks_for_one_user_coalesce_into_one_write_with_newest_state(clock: Clock) -> None:
    sink = MemorySink()
    pub, render, stats = make(sink)
    pub.mark(prof("u1", 1), 100.0, None)
    pub.mark(prof("u1", 2), 105.0, None)
    pub.mark(prof("u1", 3), 103.0, None)  # late event: newest profile, newest event time kept
    assert pub.pending == 1
    assert asyncio.run(pub.flush()) == 1
    assert render.calls == [("u1", 3, 105.0)]
    assert sink.batches == 1
    assert stored(sink, "rec:u1") == {"n": 3, "ts": 105.0}
    assert stats.lists_published == 1
    assert pub.pending == 0
    assert not pub.due()


def test_flush_writes_in_chunks_of_max_batch(clock: Clock) -> None:
    sink = MemorySink()
    pub, render, stats = make(sink, max_batch=2)
    for n in range(5):
        pub.mark(prof(f"u{n}"), float(n), None)
    pub.put(Put("extra", b"x"))
    assert asyncio.run(pub.flush()) == 5  # lists written; the extra key is not a list
    assert sink.batches == 3  # 6 puts in batches of 2
    assert set(sink.data) == {"extra", *(f"rec:u{n}" for n in range(5))}
    assert sink.data["extra"] == (b"x", None)
    assert stats.lists_published == 5
    assert len(render.calls) == 5


def test_put_for_the_same_key_keeps_the_latest(clock: Clock) -> None:
    sink = MemorySink()
    pub, _, _ = make(sink)
    pub.put(Put("k", b"old"))
    pub.put(Put("k", b"new", 7))
    assert pub.pending == 1
    assert asyncio.run(pub.flush()) == 0
    assert asyncio.run(sink.get("k")) == b"new"


def test_failed_sink_keeps_everything_backs_off_and_retries(clock: Clock) -> None:
    sink = FlakySink()
    pub, _, stats = make(sink, max_batch=2, max_delay_s=0.01)
    pub.mark(prof("u1", 1), 1.0, None)
    pub.mark(prof("u2", 1), 2.0, None)
    pub.put(Put("extra", b"x"))
    sink.fail = True

    assert asyncio.run(pub.flush()) == 0
    assert stats.redis_errors == 1
    assert stats.lists_published == 0
    assert pub.pending == 3
    assert sink.data == {}

    # First failure: 0.05 * 2 = 0.1 s of backoff, even though the batch is full.
    assert not pub.due()
    clock.advance(0.1 - 1e-6)
    assert not pub.due()
    clock.advance(2e-6)
    assert pub.due()

    # Second failure doubles the backoff.
    assert asyncio.run(pub.flush()) == 0
    assert stats.redis_errors == 2
    clock.advance(0.2 - 1e-6)
    assert not pub.due()
    clock.advance(2e-6)
    assert pub.due()

    sink.fail = False
    assert asyncio.run(pub.flush()) == 2
    assert pub.pending == 0
    assert stats.lists_published == 2
    assert stats.redis_errors == 2
    assert set(sink.data) == {"extra", "rec:u1", "rec:u2"}

    # Success resets the backoff: the next failure waits 0.1 s again.
    pub.mark(prof("u3"), 3.0, None)
    sink.fail = True
    assert asyncio.run(pub.flush()) == 0
    clock.advance(0.1 + 1e-6)
    assert pub.due()


def test_backoff_is_capped(clock: Clock) -> None:
    sink = FlakySink()
    sink.fail = True
    pub, _, stats = make(sink, max_batch=1, max_backoff_s=0.3)
    pub.mark(prof("u1"), 1.0, None)
    for _ in range(6):
        assert asyncio.run(pub.flush()) == 0
    assert stats.redis_errors == 6
    clock.advance(0.3 - 1e-6)
    assert not pub.due()
    clock.advance(2e-6)
    assert pub.due()


def test_failed_flush_does_not_overwrite_newer_marks(clock: Clock) -> None:
    sink = FlakySink()
    pub, render, _ = make(sink)
    pub.mark(prof("u1", 1), 10.0, None)
    pub.put(Put("extra", b"old"))
    sink.fail = True

    def newer_state_arrives() -> None:  # while the failing write is in flight
        pub.mark(prof("u1", 2), 20.0, None)
        pub.put(Put("extra", b"new"))

    sink.on_write = newer_state_arrives
    assert asyncio.run(pub.flush()) == 0
    sink.on_write = None
    sink.fail = False
    assert pub.pending == 2
    assert asyncio.run(pub.flush()) == 1
    assert stored(sink, "rec:u1") == {"n": 2, "ts": 20.0}
    assert asyncio.run(sink.get("extra")) == b"new"
    assert render.calls[-1] == ("u1", 2, 20.0)


def test_freshness_samples_come_from_produced_at(clock: Clock) -> None:
    sink = MemorySink()
    pub, _, stats = make(sink)
    pub.mark(prof("u1"), 1.0, WALL0 - 0.5)
    pub.mark(prof("u2"), 1.0, None)  # no producer timestamp: no sample
    pub.mark(prof("u3"), 1.0, WALL0 - 3.0)
    pub.mark(prof("u3"), 2.0, WALL0 - 0.25)  # the newest mark's producer time counts
    clock.advance(0.5)
    assert asyncio.run(pub.flush()) == 3
    assert sorted(stats.freshness_s) == [0.75, 1.0]
    snap = stats.snapshot()
    assert snap["freshness_samples"] == 2
    assert snap["freshness_ms_max"] == 1000.0


def test_no_freshness_samples_on_failure(clock: Clock) -> None:
    sink = FlakySink()
    sink.fail = True
    pub, _, stats = make(sink)
    pub.mark(prof("u1"), 1.0, WALL0 - 0.5)
    assert asyncio.run(pub.flush()) == 0
    assert list(stats.freshness_s) == []
    sink.fail = False
    clock.advance(1.0)
    assert asyncio.run(pub.flush()) == 1
    assert list(stats.freshness_s) == [1.5]  # measured when it finally reached the sink


def test_ttl_is_passed_to_the_sink(clock: Clock) -> None:
    sink = MemorySink()
    pub, _, _ = make(sink)
    pub.mark(prof("u1"), 1.0, None)
    asyncio.run(pub.flush())
    value, expires = sink.data["rec:u1"]
    assert json.loads(value) == {"n": 1, "ts": 1.0}
    assert expires is not None


def test_a_render_error_skips_only_that_user(clock: Clock) -> None:
    sink = MemorySink()
    stats = WorkerStats()
    good = Renderer()

    def render(profile: UserProfile, event_ts: float) -> list[Put]:
        if profile.user_id == "broken":
            raise ValueError("bug in ranking")
        return good(profile, event_ts)

    pub = Publisher(sink, render, stats, max_batch=100, max_delay_s=0.02)
    for user in ("u1", "broken", "u2"):
        pub.mark(prof(user), 100.0, None)
    assert asyncio.run(pub.flush()) == 2
    assert stored(sink, "rec:u1") == {"n": 1, "ts": 100.0}
    assert stored(sink, "rec:u2") == {"n": 1, "ts": 100.0}
    assert asyncio.run(sink.get("rec:broken")) is None
    assert stats.render_errors == 1
    assert stats.lists_published == 2
    assert pub.pending == 0


def test_lists_are_coalesced_longer_while_catching_up(clock: Clock) -> None:
    sink = MemorySink()
    pub, _render, _stats = make(sink, max_delay_s=0.02)
    pub.mark(prof("u1"), 100.0, clock.time() - 60)  # a minute behind: a backlog
    clock.advance(0.05)
    assert not pub.due()
    clock.advance(publisher_module.CATCHUP_DELAY_S)
    assert pub.due()
    asyncio.run(pub.flush())
    pub.mark(prof("u1", 2), 101.0, clock.time())  # caught up: the normal interval
    clock.advance(0.05)
    assert pub.due()
