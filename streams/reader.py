"""Reading lists back from Redis, as a product (or ``eddy recommend``) would."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

import redis

from models.reclist import POPULAR_USER, RecList
from streams.redisclient import sync_client
from streams.settings import Settings


@dataclass(frozen=True)
class Lookup:
    """A user's list and whether it is the popular fallback."""

    recs: RecList | None
    fallback: bool


def connect(settings: Settings) -> redis.Redis:
    """A blocking client; with ``redis_cluster``, a cluster client with the same commands."""
    # TODO: annotate the clients taken here and in demo/bench as ``SyncClient``, drop the cast
    return cast(redis.Redis, sync_client(settings, socket_timeout=5))


def read_list(client: redis.Redis, settings: Settings, user_id: str) -> Lookup:
    """The user's list, or the global popular list (``fallback=True``) if they have none."""
    raw = client.get(settings.key("rec", user_id))
    if raw is not None:
        return Lookup(RecList.model_validate_json(raw), fallback=False)
    raw = client.get(settings.key("rec", POPULAR_USER))
    recs = RecList.model_validate_json(raw) if raw is not None else None
    return Lookup(recs, fallback=True)


def item_titles(client: redis.Redis, settings: Settings, item_ids: Iterable[str]) -> dict[str, str]:
    """Titles of the given items from the catalog keys the worker writes."""
    ids = list(item_ids)
    if not ids:
        return {}
    docs = client.mget([settings.key("item", i) for i in ids])
    out = {}
    for item_id, raw in zip(ids, docs, strict=True):
        if raw is not None:
            out[item_id] = str(json.loads(raw).get("title", ""))
    return out
