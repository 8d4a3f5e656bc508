"""The worker's adapter around the pure step, free of Faust.

``Worker`` decodes events-topic messages into a micro-batch, loads the batch's users
from the state store (Redis, next to the lists the product reads), runs
``models.step.WorkerStep`` and writes its outbox in one pipeline: each touched user's
profile and list once per batch. Item deltas and impressions accumulate until the app
sends them, once per window. Offsets become committable only once the state they
produced is written (``streams.offsets``), so a ``kill -9`` replays at most what Redis
does not hold, and the profile's own offset watermark skips what it does.

Threads: the step's state (profiles in memory, items, popularity, catalog) belongs to
one *step thread*, a single-thread executor; ``call`` runs a function there, with one
BLAS/OpenMP thread. The event loop owns everything else (pending writes, offsets, held
events, stats) and never waits for the store: ``admit`` holds the events of users that
must be read from the store first, in order per user, while the users already in
memory go on; ``load_held`` reads them and releases their events. The synchronous
methods (``on_item``, ``refresh_popular``...) run on the calling thread, for tests and
in-process tools that use no event loop concurrently.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import zlib
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]

from models.artefact import ModelArtefact
from models.bandit import EpsilonSchedule
from models.events import DecodeError, ForgetUser, ItemUpsert, decode_item, decode_message
from models.itemlearn import ItemRecord, apply, encode_deltas
from models.popularity import half_life_seconds
from models.profile import ProfileConfig, UserProfile
from models.reclist import POPULAR_USER
from models.recommender import RankConfig
from models.step import POPULAR_SLACK, Inbound, ItemDelta, Outbox, StepConfig, WorkerStep
from streams.offsets import Offsets
from streams.settings import Settings
from streams.sink import Put, RecSink
from streams.stats import WorkerStats

log = logging.getLogger(__name__)

T = TypeVar("T")

USER_KEYS = ("rec", "profile")
"""Redis key kinds that hold one user's data (``Settings.key(kind, user_id)``)."""

SESSION_END_BATCH = 500
"""Users whose session ended re-ranked in one call at most (``Worker.end_sessions``)."""
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
            protected_slots=s.protected_slots,
        ),
        model_version=s.model_version or (prior.version if prior is not None else "popularity-v1"),
        variants=tuple(s.variant_list()),
        variant_salt=s.variant_salt,
        seed=s.seed,
        pool=s.rec_size + POPULAR_SLACK,
    )


def _short(key: bytes | None, limit: int = 80) -> str:
    """``repr(key)``, cut to ``limit`` characters so a dead letter stays small."""
    text = repr(key)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(key or b'')} bytes)"


def item_partition(item_id: str, partitions: int) -> int:
    """The item-updates partition that owns ``item_id`` (the same on every worker)."""
    return zlib.crc32(item_id.encode()) % partitions


class _Cache(OrderedDict[str, UserProfile]):
    """Profiles in memory, least recently used first, bounded.

    A profile whose user has events on the way to the step is never the one evicted:
    ``waiting`` (admitted or read events not yet applied; the event loop's) and
    ``stepping`` (the users of the batch being stepped; the step thread's). Otherwise
    an event counted as "user in memory" could meet an evicted profile and start it
    anew. While every profile is pinned the cache may hold more than ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.waiting: Counter[str] = Counter()
        self.stepping: frozenset[str] = frozenset()

    def __setitem__(self, key: str, value: UserProfile) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        self.trim()

    def trim(self) -> None:
        """Evict the least recently used unpinned profiles down to ``limit``."""
        while len(self) > self.limit:
            for oldest in self:
                if oldest not in self.waiting and oldest not in self.stepping:
                    break
            else:
                return
            del self[oldest]


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
        self.profiles = _Cache(settings.profile_cache_size)
        self.step = WorkerStep(step_config(settings, prior), self.profiles, prior, catalog)
        self.model_version = self.step.config.model_version
        self.items = self.step.items
        self.catalog = self.step.catalog
        self.pending: dict[str, Put] = {}
        """Writes not yet in the sink (kept across failures, newest per key)."""
        self.offsets = Offsets()
        self.item_deltas: dict[str, ItemDelta] = {}
        """Item -> what the batches since the last send learned about it."""
        self.impressions: list[dict[str, Any]] = []
        self.loading_since: float | None = None
        """When the store read in flight started (monotonic; None: no read in flight)."""
        self._held: dict[str, list[Inbound]] = {}
        """User -> their events waiting for the store to answer, in order."""
        self._released: list[Inbound] = []
        self._absent: set[str] = set()
        """Users read from the store and found absent, not yet in a step."""
        self._pinned: set[int] = set()
        """Events (``id``) whose user's profile is pinned in memory until they are applied."""
        self._epoch = 0
        self._io = asyncio.Lock()
        """One store round trip at a time: a read never misses a write in flight."""
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="eddy-step")
        self._threads = ThreadpoolController()
        self._produced: dict[str, float] = {}
        """User -> broker time behind their pending list (freshness, once written)."""
        self._lists_pending = 0
        self._popular_written = False
        self._failures = 0
        self._retry_at = 0.0

    @property
    def committable(self) -> dict[int, int]:
        """Events partition -> newest offset whose state (and all before it) is written."""
        return self.offsets.committable

    # --- the step thread ---------------------------------------------------------------
    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the step thread, the one thread that changes the step's state."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(self._one_thread, fn, *args))

    def submit(self, fn: Callable[..., object], *args: Any) -> None:
        """Queue ``fn(*args)`` on the step thread without waiting: it runs before any work
        queued after it (an error is logged)."""
        future = self._executor.submit(self._one_thread, fn, *args)
        future.add_done_callback(_log_failure)

    def _one_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` with one BLAS and OpenMP thread: small products run faster so."""
        with self._threads.limit(limits=1):
            return fn(*args)

    def close(self) -> None:
        """Stop the step thread (after the work queued on it)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    # --- decoding -------------------------------------------------------------------
    def decode(
        self,
        raw: bytes | None,
        key: bytes | None,
        at: tuple[int, int] | None = None,
        produced_at: float | None = None,
    ) -> Inbound | Rejected:
        """An events-topic message as the step's input, or why it goes to the DLQ; the
        message's offset is open until it is durable (``mark_skipped`` for a reject)."""
        if at is not None:
            self.offsets.read(at)
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

    # --- loading users ------------------------------------------------------------------
    def admit(self, batch: Iterable[Inbound]) -> list[Inbound]:
        """The events of ``batch`` that can be applied now, in order; the others (their
        user must be read from the store, or has events waiting for that) are held."""
        ready: list[Inbound] = []
        for inbound in batch:
            user_id = inbound.message.user_id
            waiting = self._held.get(user_id)
            if waiting is not None:
                waiting.append(inbound)
            elif user_id in self.profiles:
                self._pin(inbound)
                ready.append(inbound)
            elif isinstance(inbound.message, ForgetUser) or user_id in self._absent:
                ready.append(inbound)
            else:
                self._held[user_id] = [inbound]
        return ready

    def take_released(self) -> list[Inbound]:
        """Held events whose users are now loaded, in the order they were read."""
        released, self._released = self._released, []
        return released

    @property
    def released(self) -> int:
        """Held events released and not yet taken."""
        return len(self._released)

    @property
    def held(self) -> int:
        """Events waiting for their users to be read from the store."""
        return sum(len(events) for events in self._held.values())

    async def load_held(self) -> int:
        """Read the users of the held events from the store and release those events;
        return how many users. Raises the store's error (nothing released)."""
        users = list(self._held)
        if not users:
            return 0
        epoch = self._epoch
        found = await self._read_profiles(users)
        if any(raw is not None for raw in found.values()):  # new users need no step-thread hop
            for user_id, raw in found.items():
                if raw is not None:
                    for inbound in self._held.get(user_id, ()):
                        self._pin(inbound)
            await self.call(self._insert, found)
        if epoch != self._epoch:  # the partitions were revoked meanwhile
            return 0
        for user_id in users:
            events = self._held.pop(user_id, None)
            if events is not None:
                self._released.extend(events)
                if found[user_id] is None:
                    self._absent.add(user_id)
        return len(users)

    async def _read_profiles(self, users: Sequence[str]) -> dict[str, bytes | None]:
        """The stored profiles of ``users``, a pending write taking precedence."""
        keys = [self.settings.key("profile", u) for u in users]
        async with self._io:
            self.loading_since = time.monotonic()
            try:
                raws = await self.sink.get_many(keys)
            finally:
                self.loading_since = None
            out: dict[str, bytes | None] = {}
            for user_id, key, raw in zip(users, keys, raws, strict=True):
                put = self.pending.get(key)
                out[user_id] = raw if put is None else put.value
            return out

    def _insert(self, found: Mapping[str, bytes | None]) -> None:
        """Put the profiles read into memory (step thread); memory is never older."""
        for user_id, raw in found.items():
            if raw is not None and user_id not in self.profiles:
                self.profiles[user_id] = UserProfile.from_dict(json.loads(raw))

    async def load(self, batch: Sequence[Inbound]) -> None:
        """Read the batch's users that are not in memory from the state store."""
        missing = list(
            dict.fromkeys(
                i.message.user_id
                for i in batch
                if not isinstance(i.message, ForgetUser) and i.message.user_id not in self.profiles
            )
        )
        if missing:
            found = await self._read_profiles(missing)
            if any(raw is not None for raw in found.values()):
                await self.call(self._insert, found)

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
        """A message that changes no state (a dead letter): durable with the next write."""
        self.offsets.read((partition, offset))
        self.offsets.at_next_write([(partition, offset)])

    # --- the batch --------------------------------------------------------------------
    async def process(self, batch: Sequence[Inbound], now: float | None = None) -> Outbox:
        """Load the batch's users, run the step on ``batch`` and write its outbox."""
        await self.load(batch)
        out = await self.apply(batch, now)
        await self.flush()
        return out

    async def apply(self, batch: Sequence[Inbound], now: float | None = None) -> Outbox:
        """Run the step on ``batch`` (its users loaded) on the step thread and queue its
        writes; its offsets become durable with the next successful ``flush``."""
        positions = [i.position for i in batch if i.position is not None]
        for position in positions:
            self.offsets.read(position)
        at = time.time() if now is None else now
        try:
            out, puts = await self.call(self._step, batch, at)
        finally:
            self._unpin(batch)
        self._record(out, puts)
        self._absent.difference_update(i.message.user_id for i in batch)
        self.offsets.at_next_write(positions)
        return out

    def _step(self, batch: Sequence[Inbound], now: float) -> tuple[Outbox, list[Put]]:
        """The step and the serialising of its writes (step thread)."""
        self.profiles.stepping = frozenset(i.message.user_id for i in batch)
        try:
            out = self.step.run(batch, now)
        finally:
            self.profiles.stepping = frozenset()
            self.profiles.trim()
        return out, self._puts(out) + self._popular_puts()

    async def end_sessions(self, now: float | None = None) -> int:
        """Re-rank the lists of users whose session ended (``WorkerStep.end_sessions``,
        on the step thread) and queue them; return how many."""
        at = time.time() if now is None else now
        out, puts = await self.call(self._end_sessions, at)
        self._record(out, puts)
        return len(out.lists)

    def _end_sessions(self, now: float) -> tuple[Outbox, list[Put]]:
        out = self.step.end_sessions(now, SESSION_END_BATCH)
        return out, self._puts(out)

    def _pin(self, inbound: Inbound) -> None:
        """Keep the event's user in memory until the event is applied (event loop)."""
        if id(inbound) not in self._pinned:
            self._pinned.add(id(inbound))
            self.profiles.waiting[inbound.message.user_id] += 1

    def _unpin(self, batch: Sequence[Inbound]) -> None:
        waiting = self.profiles.waiting
        for inbound in batch:
            if id(inbound) in self._pinned:
                self._pinned.discard(id(inbound))
                user_id = inbound.message.user_id
                waiting[user_id] -= 1
                if waiting[user_id] <= 0:
                    del waiting[user_id]

    def _puts(self, out: Outbox) -> list[Put]:
        s = self.settings
        puts: list[Put] = []
        for user_id, profile in out.profiles.items():
            if profile is None:
                puts.extend(Put(s.key(kind, user_id), None) for kind in USER_KEYS)
                continue
            body = json.dumps(profile.to_dict(), separators=(",", ":")).encode()
            puts.append(Put(s.key("profile", user_id), body, s.profile_ttl_s))
        for user_id, doc in out.lists.items():
            puts.append(Put(s.key("rec", user_id), doc.model_dump_json().encode(), s.rec_ttl_s))
        return puts

    def _record(self, out: Outbox, puts: Sequence[Put]) -> None:
        """Queue the outbox's writes and fold its counters into the stats (event loop)."""
        st = self.stats
        for put in puts:
            self.pending[put.key] = put
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
        for user_id, produced in out.produced_at.items():
            self._produced.setdefault(user_id, produced)
        self._lists_pending += len(out.lists)

    def put(self, put: Put) -> None:
        """Queue a write that is not a user's (popular lists, item documents)."""
        self.pending[put.key] = put

    async def flush(self) -> bool:
        """Write everything pending in pipelined batches; False (kept) if the sink fails."""
        if not self.pending:
            self.offsets.durable(self.offsets.take())
            return True
        if time.monotonic() < self._retry_at:
            return False
        async with self._io:
            return await self._write()

    async def _write(self) -> bool:
        taken = self.offsets.take()
        puts = list(self.pending.values())
        produced, self._produced = self._produced, {}
        lists, self._lists_pending = self._lists_pending, 0
        step = self.settings.flush_max_batch
        try:
            for start in range(0, len(puts), step):
                await self.sink.write(puts[start : start + step])
        except Exception as exc:  # the sink's client raises its own error types
            self.offsets.restore(taken)
            self._produced = {**self._produced, **produced}  # the older stamp stays
            self._lists_pending += lists
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
        for stamp in produced.values():
            self.stats.freshness(now - stamp)
        self.stats.lists_published += lists
        self.offsets.durable(taken)
        return True

    @property
    def retry_in(self) -> float:
        """Seconds until a failed write may be tried again (0: now)."""
        return max(0.0, self._retry_at - time.monotonic())

    def forget_partitions(self) -> None:
        """Drop what memory holds of users (a rebalance may hand their partitions to
        another worker; the state store has it all)."""
        self.profiles.clear()
        self._absent.clear()

    async def forget_memory(self) -> None:
        """``forget_partitions`` from the event loop: memory is the step thread's."""
        await self.call(self.profiles.clear)
        self._absent.clear()

    async def reset(self) -> None:
        """After a revocation: forget memory, held events, open offsets and unwritten
        user state. The next owner reads it all again from the last commit, and a write
        of ours arriving after its own would be older than its state."""
        self._epoch += 1
        await self.forget_memory()
        self._held.clear()
        self._released.clear()
        self._pinned.clear()
        self.profiles.waiting.clear()
        self.offsets.clear()
        prefixes = tuple(self.settings.key(kind, "") for kind in USER_KEYS)
        for key in [k for k in self.pending if k.startswith(prefixes)]:
            del self.pending[key]
        self._produced.clear()
        self._lists_pending = 0

    # --- items ----------------------------------------------------------------------------
    def _decode_item(self, raw: bytes | None, key: bytes | None) -> ItemUpsert | Rejected:
        try:
            item = decode_item(raw)
        except DecodeError as exc:
            return self._reject(exc.reason)
        if key is not None and key != item.item_id.encode():
            return self._reject(f"message key {_short(key)} must equal item_id {item.item_id!r}")
        return item

    def on_item(self, raw: bytes | None, key: bytes | None) -> Rejected | None:
        """Apply one ``eddy.items`` upsert; return ``Rejected`` for the DLQ."""
        item = self._decode_item(raw, key)
        if isinstance(item, Rejected):
            return item
        doc = item.model_dump(mode="json")
        self.step.upsert_item(item, doc)
        self._item_written(item.item_id, doc)
        return None

    def on_item_queued(self, raw: bytes | None, key: bytes | None) -> Rejected | dict[str, Any]:
        """``on_item`` from the event loop: the upsert is queued on the step thread, ahead
        of any later batch; the validated, complete document, or why it is refused."""
        item = self._decode_item(raw, key)
        if isinstance(item, Rejected):
            return item
        doc = item.model_dump(mode="json")
        self.submit(self.step.upsert_item, item, doc)
        self._item_written(item.item_id, doc)
        return doc

    def _item_written(self, item_id: str, doc: Mapping[str, Any]) -> None:
        self.stats.items += 1
        self.put(Put(self.settings.key("item", item_id), json.dumps(doc).encode()))

    def _catalog_item(self, doc: Mapping[str, Any]) -> ItemUpsert | None:
        try:
            return decode_item(json.dumps(dict(doc)).encode())
        except DecodeError as exc:
            log.warning("skipping a catalog entry: %s", exc.reason)
            return None

    def on_catalog(self, doc: Mapping[str, Any]) -> None:
        """A catalog document from the shared catalog table (every worker)."""
        item = self._catalog_item(doc)
        if item is not None:
            self.step.upsert_item(item)

    def on_catalog_queued(self, doc: Mapping[str, Any]) -> None:
        """``on_catalog`` from the event loop (queued on the step thread)."""
        item = self._catalog_item(doc)
        if item is not None:
            self.submit(self.step.upsert_item, item)

    def on_store_restart(self) -> int:
        """Redis restarted (maybe empty): queue every item document and popular list
        again, which are written only when they change; return the keys queued."""
        return self._queue(self._restart_puts())

    async def on_store_restart_async(self) -> int:
        """``on_store_restart`` from the event loop."""
        return self._queue(await self.call(self._restart_puts))

    def _restart_puts(self) -> list[Put]:
        puts = [
            Put(self.settings.key("item", item_id), json.dumps(doc).encode())
            for item_id, doc in self.catalog.items()
        ]
        self._popular_written = False
        return puts + self._popular_puts()

    def _queue(self, puts: Iterable[Put]) -> int:
        n = 0
        for put in puts:
            self.put(put)
            n += 1
        return n

    def drain_item_updates(self) -> dict[int, bytes]:
        """The item deltas since the last call as one message per owning partition."""
        return encode_parts(self.take_item_updates())

    def take_item_updates(self) -> dict[int, dict[str, ItemDelta]]:
        """The item deltas since the last call, per owning partition (``encode_parts``)."""
        deltas, self.item_deltas = self.item_deltas, {}
        parts: defaultdict[int, dict[str, ItemDelta]] = defaultdict(dict)
        n = self.settings.events_partitions
        for item_id, delta in deltas.items():
            parts[item_partition(item_id, n)][item_id] = delta
        return dict(parts)

    def apply_records(self, records: Sequence[ItemRecord]) -> int:
        """Item records from an owner (any worker, this one included)."""
        return apply(records, self.step.popularity, self.items, self.step.item_versions)

    def refresh_popular(self) -> int:
        """Re-sort the popular lists that changed and queue them; return how many."""
        return self._queue(self._popular_puts())

    async def refresh_popular_async(self) -> int:
        """``refresh_popular`` from the event loop (the sorting on the step thread)."""
        return self._queue(await self.call(self._popular_puts))

    def _popular_puts(self) -> list[Put]:
        """The popular lists that changed, re-sorted (step thread)."""
        self.step.refresh()
        changed = self.step.drain_unpublished()
        if not changed and self._popular_written:
            return []
        lists = self.step.popular_lists(
            time.time(), list(changed) if self._popular_written else None
        )
        self._popular_written = True
        puts: list[Put] = []
        for slug, doc in lists.items():
            parts = ("rec", POPULAR_USER, slug) if slug else ("rec", POPULAR_USER)
            puts.append(Put(self.settings.key(*parts), doc.model_dump_json().encode()))
        return puts

    def digest(self) -> tuple[int, str] | None:
        """(items learned online, digest of the item state); step thread: it reads all."""
        if self.items is None:
            return None
        return self.items.online_items, self.items.digest()

    def profile(self, user_id: str) -> UserProfile | None:
        return self.profiles.get(user_id)


def _log_failure(future: Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("work on the step thread failed", exc_info=future.exception())


def encode_parts(parts: Mapping[int, Mapping[str, ItemDelta]]) -> dict[int, bytes]:
    """One item-updates message body per owning partition."""
    return {p: encode_deltas(body) for p, body in parts.items()}
