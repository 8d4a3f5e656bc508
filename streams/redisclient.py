"""Redis clients built from ``Settings``: one server, or a Redis Cluster (``redis_cluster``).

Every Redis client in Eddy comes from here. With ``EDDY_REDIS_CLUSTER=true``,
``EDDY_REDIS_URL`` names any node of the cluster (``redis://`` or ``rediss://``, database
0); the client discovers the others and routes each key to the node that owns its slot.

No key needs a hash tag: every command Eddy sends touches one key (``GET``, ``SET EX``,
``DEL``, ``HSET``/``EXPIRE``/``HGETALL`` of a stats hash, ``TTL``, ``EXISTS``). Batches
are non-transactional pipelines, which redis-py's cluster client splits per node, and
``MGET`` on the cluster clients below is split per slot (``mget_nonatomic``); ``SCAN``
(``scan_iter``) visits every primary. Keys therefore spread evenly over the cluster.
"""

from __future__ import annotations

from typing import Any, TypeAlias, cast
from urllib.parse import parse_qs, urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio import cluster as aiocluster
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException
from redis.typing import EncodableT, KeysT, KeyT

from streams.settings import Settings


class ClusterUnreachableError(redis.ConnectionError):
    """No node of the Redis Cluster answered.

    redis-py raises ``RedisClusterException``, which is not a ``RedisError``; as a
    ``ConnectionError`` it is handled wherever Eddy handles an unreachable Redis.
    """


def _unreachable(exc: RedisClusterException) -> bool:
    """Whether redis-py's cluster error is a failure to reach any node."""
    return isinstance(exc.__cause__, redis.RedisError | OSError)


class SyncCluster(RedisCluster):
    """redis-py's ``RedisCluster`` with ``MGET`` split per slot (the keys are independent),
    and no reachable node raised as ``ClusterUnreachableError``."""

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().execute_command(*args, **kwargs)  # type: ignore[no-untyped-call]
        except RedisClusterException as exc:
            if _unreachable(exc):
                raise ClusterUnreachableError(str(exc)) from exc
            raise

    def mget(self, keys: KeysT, *args: EncodableT) -> list[Any]:
        return self.mget_nonatomic(keys, *cast(tuple[KeyT, ...], args))


class AsyncCluster(aiocluster.RedisCluster):
    """redis-py's asyncio ``RedisCluster`` with ``MGET`` split per slot, and an unreachable
    cluster raised as ``ClusterUnreachableError``."""

    async def initialize(self, *args: Any, **kwargs: Any) -> aiocluster.RedisCluster:
        try:
            return await super().initialize(*args, **kwargs)
        except RedisClusterException as exc:
            raise ClusterUnreachableError(str(exc)) from exc

    async def mget(self, keys: KeysT, *args: EncodableT) -> list[Any]:
        return await self.mget_nonatomic(keys, *cast(tuple[KeyT, ...], args))


def check_cluster_url(url: str) -> None:
    """``ValueError`` unless ``url`` can name a cluster node: TCP, database 0."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError("EDDY_REDIS_URL of a Redis Cluster must be redis:// or rediss://")
    dbs = {parts.path.strip("/"), *parse_qs(parts.query).get("db", [])}
    if not dbs <= {"", "0"}:
        raise ValueError("a Redis Cluster has only database 0: end EDDY_REDIS_URL with /0")


SyncClient: TypeAlias = redis.Redis | SyncCluster
AsyncClient: TypeAlias = aioredis.Redis | AsyncCluster


def sync_client(settings: Settings, **kwargs: Any) -> SyncClient:
    """A blocking client for ``settings.redis_url``; ``kwargs`` go to ``from_url``.

    A cluster client connects at once and raises ``ClusterUnreachableError`` if no node
    answers; a single-server client connects on first use.
    """
    url = settings.redis_url.get_secret_value()
    if not settings.redis_cluster:
        return redis.Redis.from_url(url, **kwargs)
    check_cluster_url(url)
    try:
        return cast(SyncCluster, SyncCluster.from_url(url, **kwargs))
    except RedisClusterException as exc:
        if _unreachable(exc):
            raise ClusterUnreachableError(str(exc)) from exc
        raise


def async_client(settings: Settings, **kwargs: Any) -> AsyncClient:
    """An asyncio client for ``settings.redis_url``; ``kwargs`` go to ``from_url``."""
    return async_client_for(settings.redis_url.get_secret_value(), settings.redis_cluster, **kwargs)


def async_client_for(url: str, cluster: bool, **kwargs: Any) -> AsyncClient:
    """An asyncio client for ``url``, a cluster client if ``cluster``; connects on first use."""
    if cluster:
        check_cluster_url(url)
        return cast(AsyncCluster, AsyncCluster.from_url(url, **kwargs))
    return aioredis.Redis.from_url(url, **kwargs)
