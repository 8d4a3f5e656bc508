"""The worker's adapter around the pure step, free of Faust.

``Worker`` decodes events-topic messages into a micro-batch, loads the batch's users
from the state store (Redis, next to the lists the product reads), runs
``models.step.WorkerStep`` and writes its outbox in one pipeline: each touched user's
profile and list once per batch. Item deltas and impressions accumulate until the app
sends them, once per window. Offsets become committable only once the state they
produced is written, so a ``kill -9`` replays at most what Redis does not hold, and the
profile's own offset watermark skips what it does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import zlib
from collections import OrderedDict, defaultdict
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from models.artefact import ModelArtefact
from models.bandit import EpsilonSchedule
from models.events import DecodeError, ForgetUser, decode_item, decode_message
from models.itemlearn import ItemRecord, apply, encode_deltas
from models.popularity import half_life_seconds
from models.profile import ProfileConfig, UserProfile
from models.reclist import POPULAR_USER
from models.recommender import RankConfig
from models.step import Inbound, ItemDelta, Outbox, StepConfig, WorkerStep
from streams.settings import Settings
from streams.sink import Put, RecSink
from streams.stats import WorkerStats

log = logging.getLogger(__name__)

USER_KEYS = ("rec", "profile")
"""Redis key kinds that hold one user's data (``Settings.key(kind, user_id)``)."""

MAX_CACHED_USERS = 200_000
"""Profiles a worker keeps in memory (least recently used are re-read from Redis)."""

MAX_PENDING_IMPRESSIONS = 100_000
"""Impression records kept while the impressions topic cannot be written."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why a message was refused; the agent sends it to the DLQ."""

    reason: str


def profile_config(settings: Settings) -> ProfileConfig:
    return ProfileConfig(
        event_weights=dict(settings.event_weights),
        half_life_s=half_life_seconds(settings.half_life_days),
        history_size=settings.history_size,
        max_categories=settings.max_categories,
    )


def step_config(settings: Settings, prior: ModelArtefact | None) -> StepConfig:
    """The step's configuration from ``settings`` (and the artefact's version)."""
    s = settings
    return StepConfig(
        profile=profile_config(s),
        rank=RankConfig(
            k=s.rec_size,
            diversity=s.diversity,
            epsilon=EpsilonSchedule(s.epsilon, s.epsilon_decay, s.min_epsilon),
        ),
        model_version=s.model_version or (prior.version if prior is not None else "popularity-v1"),
        variants=tuple(s.variant_list()),
        variant_salt=s.variant_salt,
        seed=s.seed,
        pool=s.rec_size + s.history_size + 50,
    )


def _short(key: bytes | None, limit: int = 80) -> str:
    """``repr(key)``, cut to ``limit`` characters so a dead letter stays small."""
    text = repr(key)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(key or b'')} bytes)"


def item_partition(item_id: str, partitions: int) -> int:
    """The item-updates partition that owns ``item_id`` (the same on every worker)."""
    return zlib.crc32(item_id.encode()) % partitions


class _Cache(OrderedDict[str, UserProfile]):
    """Profiles in memory, least recently used first, bounded."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def __setitem__(self, key: str, value: UserProfile) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


class Worker:
    """One worker's state and the writes of each micro-batch."""

    def __init__(
        self,
        settings: Settings,
        sink: RecSink,
        prior: ModelArtefact | None = None,
        stats: WorkerStats | None = None,
        catalog: MutableMapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.sink = sink
        self.stats = stats or WorkerStats()
        self.prior = prior
        self.profiles: MutableMapping[str, UserProfile] = _Cache(MAX_CACHED_USERS)
        self.step = WorkerStep(step_config(settings, prior), self.profiles, prior, catalog)
        self.model_version = self.step.config.model_version
        self.items = self.step.items
        self.catalog = self.step.catalog
        self.pending: dict[str, Put] = {}
        """Writes not yet in the sink (kept across failures, newest per key)."""
        self.committable: dict[int, int] = {}
        """Events partition -> newest offset whose state is in the sink."""
        self._unwritten: dict[int, int] = {}
        self.item_deltas: dict[str, ItemDelta] = {}
        """Item -> what the batches since the last send learned about it."""
        self.impressions: list[dict[str, Any]] = []
        self._produced: dict[str, float] = {}
        """User -> broker time behind their pending list (freshness, once written)."""
        self._lists_pending = 0
        self._popular_written = False
        self._failures = 0
        self._retry_at = 0.0

    # --- decoding -------------------------------------------------------------------
    def decode(
        self,
        raw: bytes | None,
        key: bytes | None,
        at: tuple[int, int] | None = None,
        produced_at: float | None = None,
    ) -> Inbound | Rejected:
        """An events-topic message as the step's input, or why it goes to the DLQ."""
        try:
            message = decode_message(raw, max_future_skew_s=self.settings.max_future_skew_s)
        except DecodeError as exc:
            return self._reject(exc.reason)
        if key is None or key != message.user_id.encode():
            return self._reject(
                f"message key {_short(key)} must equal user_id {message.user_id!r} "
                "(events are partitioned by user)"
            )
        return Inbound(message, at, produced_at)

    def _reject(self, reason: str) -> Rejected:
        self.stats.dead_letters += 1
        return Rejected(reason)

    # --- the batch --------------------------------------------------------------------
    async def load(self, batch: Sequence[Inbound]) -> None:
        """Read the batch's users that are not in memory from the state store."""
        missing = list(
            dict.fromkeys(
                i.message.user_id
                for i in batch
                if not isinstance(i.message, ForgetUser) and i.message.user_id not in self.profiles
            )
        )
        if not missing:
            return
        keys = [self.settings.key("profile", u) for u in missing]
        for user_id, raw in zip(missing, await self.sink.get_many(keys), strict=True):
            if raw is not None:
                self.profiles[user_id] = UserProfile.from_dict(json.loads(raw))

    async def load_until_loaded(self, batch: Sequence[Inbound], max_backoff_s: float = 5.0) -> None:
        """``load``, retried with backoff while the state store cannot answer: a user's
        events are never applied to a profile that was not read."""
        failures = 0
        while True:
            try:
                await self.load(batch)
                return
            except Exception as exc:  # the store's client raises its own error types
                failures += 1
                self.stats.redis_errors += 1
                backoff = min(max_backoff_s, 0.05 * 2**failures)
                log.warning("cannot read profiles (%s); retry in %.2fs", exc, backoff)
                await asyncio.sleep(backoff)

    def mark_skipped(self, partition: int, offset: int) -> None:
        """A message that changes no state (a dead letter): committable with the next
        write."""
        self._unwritten[partition] = max(offset, self._unwritten.get(partition, -1))

    async def process(self, batch: Sequence[Inbound], now: float | None = None) -> Outbox:
        """Run the step on ``batch`` and write its outbox (``flush``)."""
        await self.load(batch)
        out = self.step.run(batch, time.time() if now is None else now)
        self._record(out)
        self.refresh_popular()
        await self.flush()
        return out

    def _record(self, out: Outbox) -> None:
        """Queue the outbox's writes and fold its counters into the stats."""
        s, st = self.settings, self.stats
        for user_id, profile in out.profiles.items():
            if profile is None:
                for kind in USER_KEYS:
                    self.pending[s.key(kind, user_id)] = Put(s.key(kind, user_id), None)
                continue
            body = json.dumps(profile.to_dict(), separators=(",", ":")).encode()
            self.pending[s.key("profile", user_id)] = Put(
                s.key("profile", user_id), body, s.profile_ttl_s
            )
        for user_id, doc in out.lists.items():
            self.pending[s.key("rec", user_id)] = Put(
                s.key("rec", user_id), doc.model_dump_json().encode(), s.rec_ttl_s
            )
        for partition, offset in out.watermarks.items():
            self._unwritten[partition] = max(offset, self._unwritten.get(partition, -1))
        for item_id, delta in out.items.items():
            found = self.item_deltas.get(item_id)
            if found is None:
                self.item_deltas[item_id] = delta
            else:
                found.merge(delta)
        self.impressions.extend(out.impressions)
        if len(self.impressions) > MAX_PENDING_IMPRESSIONS:  # the topic is unreachable
            del self.impressions[: len(self.impressions) - MAX_PENDING_IMPRESSIONS]
        if out.forgotten:
            gone = set(out.forgotten)
            self.impressions = [i for i in self.impressions if i["user_id"] not in gone]
            st.forgotten += len(out.forgotten)
            for user_id in out.forgotten:
                log.info("forgot user %s", user_id)
        for kind, n in out.events.items():
            st.event(kind, n)
        st.duplicates += out.duplicates
        st.slots += out.slots
        st.explored_slots += out.explored_slots
        st.variant_impressions.update(out.variant_impressions)
        st.variant_clicks.update(out.variant_clicks)
        st.variant_purchases.update(out.variant_purchases)
        if out.lists:
            per_list = out.rank_seconds / len(out.lists)  # ranked together: amortised
            for _ in out.lists:
                st.rank_hist.observe(per_list)
        st.lists_ranked += len(out.lists)
        self._produced.update(out.produced_at)
        self._lists_pending += len(out.lists)

    def put(self, put: Put) -> None:
        """Queue a write that is not a user's (popular lists, item documents)."""
        self.pending[put.key] = put

    async def flush(self) -> bool:
        """Write everything pending in pipelined batches; False (kept) if the sink fails."""
        if not self.pending:
            self._commit_written()
            return True
        if time.monotonic() < self._retry_at:
            return False
        puts = list(self.pending.values())
        step = self.settings.flush_max_batch
        try:
            for start in range(0, len(puts), step):
                await self.sink.write(puts[start : start + step])
        except Exception as exc:  # the sink's client raises its own error types
            self.stats.redis_errors += 1
            self._failures += 1
            backoff = min(5.0, 0.05 * 2**self._failures)
            self._retry_at = time.monotonic() + backoff
            log.warning(
                "sink write failed (%s); %d keys kept, retry in %.2fs", exc, len(puts), backoff
            )
            return False
        for put in puts:
            if self.pending.get(put.key) is put:
                del self.pending[put.key]
        self._failures = 0
        now = time.time()
        for produced in self._produced.values():
            self.stats.freshness(now - produced)
        self._produced = {}
        self.stats.lists_published += self._lists_pending
        self._lists_pending = 0
        self._commit_written()
        return True

    def _commit_written(self) -> None:
        for partition, offset in self._unwritten.items():
            self.committable[partition] = max(offset, self.committable.get(partition, -1))
        self._unwritten = {}

    def forget_partitions(self) -> None:
        """Drop what memory holds of users (a rebalance may hand their partitions to
        another worker; the state store has it all)."""
        self.profiles.clear()

    # --- items ----------------------------------------------------------------------------
    def on_item(self, raw: bytes | None, key: bytes | None) -> Rejected | None:
        """Apply one ``eddy.items`` upsert; return ``Rejected`` for the DLQ."""
        try:
            item = decode_item(raw)
        except DecodeError as exc:
            return self._reject(exc.reason)
        if key is not None and key != item.item_id.encode():
            return self._reject(f"message key {_short(key)} must equal item_id {item.item_id!r}")
        doc = item.model_dump(mode="json")
        self.step.upsert_item(item, doc)
        self.stats.items += 1
        self.put(Put(self.settings.key("item", item.item_id), json.dumps(doc).encode()))
        return None

    def on_catalog(self, doc: Mapping[str, Any]) -> None:
        """A catalog document from the shared catalog table (every worker)."""
        try:
            item = decode_item(json.dumps(dict(doc)).encode())
        except DecodeError as exc:
            log.warning("skipping a catalog entry: %s", exc.reason)
            return
        self.step.upsert_item(item)

    def on_store_restart(self) -> int:
        """Redis restarted (maybe empty): queue every item document and popular list
        again, which are written only when they change; return the keys queued."""
        for item_id, doc in self.catalog.items():
            self.put(Put(self.settings.key("item", item_id), json.dumps(doc).encode()))
        self._popular_written = False
        return len(self.catalog) + self.refresh_popular()

    def drain_item_updates(self) -> dict[int, bytes]:
        """The item deltas since the last call as one message per owning partition."""
        deltas, self.item_deltas = self.item_deltas, {}
        parts: defaultdict[int, dict[str, ItemDelta]] = defaultdict(dict)
        n = self.settings.events_partitions
        for item_id, delta in deltas.items():
            parts[item_partition(item_id, n)][item_id] = delta
        return {p: encode_deltas(body) for p, body in parts.items()}

    def apply_records(self, records: Sequence[ItemRecord]) -> int:
        """Item records from an owner (any worker, this one included)."""
        return apply(records, self.step.popularity, self.items, self.step.item_versions)

    def refresh_popular(self) -> int:
        """Re-sort the popular lists that changed and queue them; return how many."""
        self.step.refresh()
        changed = self.step.drain_unpublished()
        if not changed and self._popular_written:
            return 0
        lists = self.step.popular_lists(
            time.time(), list(changed) if self._popular_written else None
        )
        self._popular_written = True
        for slug, doc in lists.items():
            parts = ("rec", POPULAR_USER, slug) if slug else ("rec", POPULAR_USER)
            self.put(Put(self.settings.key(*parts), doc.model_dump_json().encode()))
        return len(lists)

    def profile(self, user_id: str) -> UserProfile | None:
        return self.profiles.get(user_id)
