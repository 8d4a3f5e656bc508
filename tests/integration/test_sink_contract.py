"""One contract for every ``RecSink``: the in-memory sink and Redis behave the same."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import pytest
import redis

from streams.sink import MemorySink, Put, RecSink, RedisSink
from tests.support import Endpoints

Body = Callable[[RecSink], Awaitable[object]]


@pytest.fixture(params=["memory", "redis"])
def with_sink(request: pytest.FixtureRequest, endpoints: Endpoints) -> Callable[[Body], object]:
    """Run an async test body against a fresh sink on its own event loop."""

    def run(body: Body) -> object:
        async def main() -> object:
            sink: RecSink = (
                MemorySink() if request.param == "memory" else RedisSink(endpoints.redis_url)
            )
            try:
                return await body(sink)
            finally:
                await sink.close()

        return asyncio.run(main())

    return run


def key() -> str:
    return f"contract:{uuid.uuid4().hex}"


def test_written_values_are_read_back(with_sink: Callable[[Body], object]) -> None:
    a, b = key(), key()

    async def body(sink: RecSink) -> object:
        await sink.write([Put(a, b"one"), Put(b, b"two", ttl_s=60)])
        return await sink.get(a), await sink.get(b), await sink.get(key())

    assert with_sink(body) == (b"one", b"two", None)


def test_last_write_in_a_batch_wins(with_sink: Callable[[Body], object]) -> None:
    k = key()

    async def body(sink: RecSink) -> object:
        await sink.write([Put(k, b"old"), Put(k, b"new")])
        return await sink.get(k)

    assert with_sink(body) == b"new"


def test_expired_values_are_gone(with_sink: Callable[[Body], object]) -> None:
    k = key()

    async def body(sink: RecSink) -> object:
        await sink.write([Put(k, b"short", ttl_s=1)])
        first = await sink.get(k)
        await asyncio.sleep(1.2)
        return first, await sink.get(k)

    assert with_sink(body) == (b"short", None)


def test_empty_batch_writes_nothing(with_sink: Callable[[Body], object]) -> None:
    k = key()

    async def body(sink: RecSink) -> object:
        await sink.write([])
        return await sink.get(k)

    assert with_sink(body) is None


def test_a_none_value_deletes_the_key(with_sink: Callable[[Body], object]) -> None:
    k, other = key(), key()

    async def body(sink: RecSink) -> object:
        await sink.write([Put(k, b"v1"), Put(other, b"kept")])
        await sink.write([Put(k, None), Put(key(), None)])  # deleting a missing key is fine
        return await sink.get(k), await sink.get(other)

    assert with_sink(body) == (None, b"kept")


def test_redis_sink_sets_ttl(endpoints: Endpoints) -> None:
    k = key()
    s = RedisSink(endpoints.redis_url)

    async def run() -> None:
        await s.write([Put(k, b"v", ttl_s=120)])
        await s.close()

    asyncio.run(run())
    client = redis.Redis.from_url(endpoints.redis_url)
    assert 0 < client.ttl(k) <= 120
    client.close()
