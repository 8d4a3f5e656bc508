"""Where recommendation lists go: the ``RecSink`` protocol, Redis and in-memory sinks."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from streams.redisclient import async_client_for


@dataclass(frozen=True, slots=True)
class Put:
    """One key to write: ``value`` with an optional TTL in seconds; ``value=None`` deletes."""

    key: str
    value: bytes | None
    ttl_s: int | None = None


class RecSink(Protocol):
    """A key-value store for lists; ``write`` is one batch (one round trip where possible)."""

    async def write(self, puts: Sequence[Put]) -> None: ...

    async def get(self, key: str) -> bytes | None: ...

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of ``keys`` in order (None where absent), in one round trip."""
        ...

    async def close(self) -> None: ...


class RedisSink:
    """Writes each batch in one non-transactional pipeline (cluster-friendly)."""

    def __init__(self, url: str, *, cluster: bool = False, socket_timeout_s: float = 5.0) -> None:
        """A sink on the Redis at ``url``; ``cluster``: a Redis Cluster, ``url`` any node."""
        self._redis = async_client_for(
            url, cluster, socket_timeout=socket_timeout_s, socket_connect_timeout=socket_timeout_s
        )

    async def write(self, puts: Sequence[Put]) -> None:
        if not puts:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for put in puts:
                if put.value is None:
                    pipe.delete(put.key)
                else:
                    pipe.set(put.key, put.value, ex=put.ttl_s)
            await pipe.execute()

    async def get(self, key: str) -> bytes | None:
        value = await self._redis.get(key)
        if isinstance(value, str):
            return value.encode()
        return value if value is None else bytes(value)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        values = await self._redis.mget(list(keys))
        return [v.encode() if isinstance(v, str) else v for v in values]

    async def close(self) -> None:
        await self._redis.aclose()


class MemorySink:
    """A dict with TTLs, for tests and in-process runs; same contract as ``RedisSink``."""

    def __init__(self) -> None:
        self.data: dict[str, tuple[bytes, float | None]] = {}
        self.batches = 0

    async def write(self, puts: Sequence[Put]) -> None:
        if not puts:
            return
        now = time.monotonic()
        for put in puts:
            if put.value is None:
                self.data.pop(put.key, None)
                continue
            expires = None if put.ttl_s is None else now + put.ttl_s
            self.data[put.key] = (put.value, expires)
        self.batches += 1

    async def get(self, key: str) -> bytes | None:
        entry = self.data.get(key)
        if entry is None:
            return None
        value, expires = entry
        if expires is not None and expires <= time.monotonic():
            del self.data[key]
            return None
        return value

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return [await self.get(key) for key in keys]

    async def close(self) -> None:
        self.data.clear()
