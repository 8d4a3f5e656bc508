"""The live page a worker serves: a user's list as it changes, plus throughput and freshness.

``register_page`` adds these views to the worker's Faust web server:

- ``GET /``: the page itself (one static HTML file with inline JS, no external resources);
- ``GET /api/recs/{user_id}``: the user's list from Redis with each item's title;
- ``GET /api/users?n=10``: ids of users whose lists were written most recently;
- ``GET /api/stats``: every worker's stats hash and the server's clock.

Every id is checked with ``is_valid_id`` before a Redis key is built from it.
"""

from __future__ import annotations

import json
import math
import time
from importlib import resources
from typing import Any

import faust
import redis.asyncio as aioredis
from faust.web import Request, Response, View

from models.events import is_valid_id
from models.reclist import POPULAR_USER
from streams.redisclient import AsyncClient, async_client
from streams.settings import Settings

PAGE_FILE = "live.html"
USERS_DEFAULT = 10
USERS_MAX = 100
USERS_SCAN_MAX = 2000
"""Most ``rec`` keys ``/api/users`` looks at (it ranks them by remaining TTL)."""
STATS_SCAN_MAX = 1000

API_HEADERS = {"Cache-Control": "no-store"}
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    # The page loads nothing from anywhere: inline script and style, data from this origin.
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; "
    "style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def page_html() -> str:
    """The page's HTML, shipped as package data in ``streams/static/``."""
    return resources.files("streams").joinpath("static", PAGE_FILE).read_text(encoding="utf-8")


def glob_escape(text: str) -> str:
    """``text`` with Redis glob metacharacters escaped, for a literal ``SCAN MATCH`` prefix."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def _number(value: str) -> float | str:
    """A stats field as a finite number if it is one, else the string."""
    try:
        number = float(value)
    except ValueError:
        return value
    return number if math.isfinite(number) else value


class PageData:
    """Reads what the page shows from Redis, through one lazily created async client."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: AsyncClient | None = None

    @property
    def client(self) -> AsyncClient:
        """The Redis client, created on first use (in the worker's event loop)."""
        if self._client is None:
            self._client = async_client(self.settings, socket_timeout=5, decode_responses=True)
        return self._client

    async def close(self) -> None:
        """Close the client if one was created."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def recs(self, user_id: str) -> dict[str, Any] | None:
        """The user's list with titles and categories, or None if they have none.

        ``user_id`` must already be valid (``is_valid_id``).
        """
        raw = await self.client.get(self.settings.key("rec", user_id))
        if raw is None:
            return None
        doc: dict[str, Any] = json.loads(raw)
        items = [i for i in doc.get("items", []) if is_valid_id(str(i.get("item_id", "")))]
        catalog = await self._items([str(i["item_id"]) for i in items])
        out_items = []
        for rank, item in enumerate(items, start=1):
            entry = catalog.get(str(item["item_id"]), {})
            out_items.append(
                {
                    "rank": rank,
                    "item_id": item["item_id"],
                    "title": entry.get("title"),
                    "categories": entry.get("categories", []),
                    "score": item.get("score"),
                    "reason": item.get("reason"),
                    "propensity": item.get("propensity"),
                }
            )
        return {
            "user_id": doc.get("user_id", user_id),
            "rec_id": doc.get("rec_id"),
            "generated_at": doc.get("generated_at"),
            "event_ts": doc.get("event_ts"),
            "model_version": doc.get("model_version"),
            "items": out_items,
            "server_time": time.time(),
        }

    async def _items(self, item_ids: list[str]) -> dict[str, dict[str, Any]]:
        if not item_ids:
            return {}
        docs = await self.client.mget([self.settings.key("item", i) for i in item_ids])
        out: dict[str, dict[str, Any]] = {}
        for item_id, raw in zip(item_ids, docs, strict=True):
            if raw is not None:
                out[item_id] = json.loads(raw)
        return out

    async def users(self, n: int) -> list[str]:
        """Up to ``n`` user ids with a list, most recently written first.

        Looks at no more than ``USERS_SCAN_MAX`` keys; lists are rewritten with a fresh TTL,
        so the longest remaining TTL marks the most recent list.
        """
        prefix = self.settings.key("rec", "")
        ids: list[str] = []
        async for key in self.client.scan_iter(match=glob_escape(prefix) + "*", count=500):
            user_id = key[len(prefix) :]
            if user_id != POPULAR_USER and is_valid_id(user_id):
                ids.append(user_id)
            if len(ids) >= USERS_SCAN_MAX:
                break
        if not ids:
            return []
        pipe = self.client.pipeline(transaction=False)
        for user_id in ids:
            pipe.ttl(self.settings.key("rec", user_id))
        ttls: list[int] = await pipe.execute()
        ranked = sorted(zip(ttls, ids, strict=True), key=lambda p: (-p[0], p[1]))
        return [user_id for ttl, user_id in ranked if ttl != -2][:n]

    async def stats(self) -> dict[str, Any]:
        """Every worker's stats hash (numbers as numbers) and the server's clock."""
        prefix = self.settings.key("stats", "")
        keys: list[str] = []
        async for key in self.client.scan_iter(match=glob_escape(prefix) + "*", count=500):
            keys.append(key)
            if len(keys) >= STATS_SCAN_MAX:
                break
        pipe = self.client.pipeline(transaction=False)
        for key in sorted(keys):
            pipe.hgetall(key)
        hashes: list[dict[str, str]] = await pipe.execute() if keys else []
        workers = []
        for key, fields in zip(sorted(keys), hashes, strict=True):
            if fields:
                entry: dict[str, Any] = {k: _number(v) for k, v in fields.items()}
                entry["worker_id"] = fields.get("worker_id", key[len(prefix) :])
                workers.append(entry)
        return {"server_time": time.time(), "workers": workers}


def register_page(app: faust.App, settings: Settings) -> None:
    """Serve the live page and its JSON API from ``app``'s web server."""
    html = page_html()
    data = PageData(settings)

    class LivePage(View):
        """The page: pick a user, watch their list and the worker's charts."""

        async def get(self, request: Request) -> Response:
            return self.html(html, headers=dict(PAGE_HEADERS))

    class UserRecs(View):
        """One user's list with titles."""

        async def get(self, request: Request, user_id: str) -> Response:
            if not is_valid_id(user_id):
                return _error(
                    self,
                    400,
                    "invalid user id: use 1-128 characters of A-Z a-z 0-9 . _ @ -,"
                    " starting with a letter or digit",
                )
            try:
                recs = await data.recs(user_id)
            except aioredis.RedisError as exc:
                return _redis_error(self, exc)
            if recs is None:
                return _error(
                    self,
                    404,
                    f"no recommendations for user {user_id!r}: unknown user, or their list expired",
                    user_id=user_id,
                )
            return self.json(recs, headers=dict(API_HEADERS))

    class Users(View):
        """Some user ids with lists, for suggestions."""

        async def get(self, request: Request) -> Response:
            raw = request.query.get("n", str(USERS_DEFAULT))
            try:
                n = int(raw)
            except ValueError:
                n = 0
            if not 1 <= n <= USERS_MAX:
                return _error(self, 400, f"n must be an integer from 1 to {USERS_MAX}")
            try:
                users = await data.users(n)
            except aioredis.RedisError as exc:
                return _redis_error(self, exc)
            return self.json({"users": users}, headers=dict(API_HEADERS))

    class Stats(View):
        """Every worker's stats."""

        async def get(self, request: Request) -> Response:
            try:
                stats = await data.stats()
            except aioredis.RedisError as exc:
                return _redis_error(self, exc)
            return self.json(stats, headers=dict(API_HEADERS))

    # Catch-all pattern: a user id with "/" gets the same clear 400 as any other bad id.
    for path, view in (
        ("/", LivePage),
        ("/api/recs/{user_id:.*}", UserRecs),
        ("/api/users", Users),
        ("/api/stats", Stats),
    ):
        app.page(path, name=f"eddy.{view.__name__}")(view)

    async def close(sender: Any, /, *args: Any, **kwargs: Any) -> None:
        await data.close()

    app.on_before_shutdown.connect(close)


def _error(view: View, status: int, message: str, **extra: str) -> Response:
    """A JSON error body ``{"error": message, **extra}`` with the API headers."""
    response: Response = view.json(
        {"error": message, **extra}, status=status, headers=dict(API_HEADERS)
    )
    return response


def _redis_error(view: View, exc: Exception) -> Response:
    return _error(view, 503, f"Redis is unavailable: {type(exc).__name__}")
