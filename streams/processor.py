"""The glue between a decoded message and the pure core, free of Faust.

The Faust agents hand every message to an ``EventProcessor``; it validates, updates the
profile table and popularity through ``models``, and schedules the writes. Keeping it
free of Faust lets it run in tests with plain dicts for tables and ``MemorySink``.
"""

from __future__ import annotations

import json
import logging
import random
import secrets
import time
from collections import OrderedDict, defaultdict
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from models.artefact import ModelArtefact
from models.bandit import EpsilonGreedyRanker, EpsilonSchedule
from models.events import (
    DecodeError,
    Event,
    EventType,
    ForgetUser,
    decode_control,
    decode_event,
    decode_item,
)
from models.itemstate import ItemState
from models.learner import item_context, learn_profile
from models.popularity import (
    Ranked,
    bump,
    half_life_seconds,
    merged,
    newest_anchor,
    top,
    top_by_category,
)
from models.profile import (
    Position,
    ProfileConfig,
    UserProfile,
    already_applied,
    event_weight,
    mark_applied,
)
from models.ranking import category_reason, popular_items, recommend
from models.recommender import EXPLORING, RankConfig
from models.recommender import recommend as rank_learned
from models.recs import POPULAR_USER, RecItem, RecList, category_slug
from models.rerank import ShownCounter
from models.variants import Variant, assign
from streams.publisher import Publisher
from streams.settings import Settings
from streams.sink import Put, RecSink
from streams.stats import WorkerStats

log = logging.getLogger(__name__)

MAX_USERS_IN_MEMORY = 100_000
"""Users whose last list and shown counts a worker remembers (least recent forgotten)."""

MAX_PENDING_IMPRESSIONS = 100_000
"""Impression records kept while the impressions topic cannot be written."""

USER_KEYS = ("rec", "profile")
"""Redis key kinds that hold one user's data (``Settings.key(kind, user_id)``)."""

DEFAULT_VARIANT = "default"
"""Variant label of every list when no experiment runs."""

REWARDS = {EventType.CLICK: 1.0, EventType.ADD_TO_CART: 2.0, EventType.PURCHASE: 4.0}
"""Reward credited to an item when an event on it carries the rec_id of its list."""


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


class EventProcessor:
    """Per-worker state and the event and item handlers."""

    def __init__(
        self,
        settings: Settings,
        profiles: MutableMapping[str, Any],
        catalog: MutableMapping[str, Any],
        popularity: MutableMapping[str, Any],
        sink: RecSink,
        stats: WorkerStats | None = None,
        prior: ModelArtefact | None = None,
    ) -> None:
        self.settings = settings
        self.prior = prior
        """The pre-trained artefact: popularity and categories before any event."""
        self.model_version = settings.model_version or (
            prior.version if prior is not None else "popularity-v1"
        )
        self.profiles = profiles
        self.catalog = catalog
        self.stats = stats or WorkerStats()
        self.cfg = profile_config(settings)
        self.popularity = popularity
        self.clock: float | None = None
        """Newest event time seen: the time popularity is ranked at."""
        self.global_top: Ranked = []
        self.category_top: Mapping[str, Ranked] = {}
        self.sink = sink
        self.publisher = Publisher(
            sink,
            self.render,
            self.stats,
            max_batch=settings.flush_max_batch,
            max_delay_s=settings.flush_interval_ms / 1000,
        )
        self._pool = settings.rec_size + settings.history_size + 50
        self.items = ItemState(prior, catalog) if prior is not None else None
        self.rank_cfg = RankConfig(
            k=settings.rec_size,
            diversity=settings.diversity,
            epsilon=EpsilonSchedule(settings.epsilon, settings.epsilon_decay, settings.min_epsilon),
        )
        self.ranker = EpsilonGreedyRanker(self.rank_cfg.epsilon, random.Random(settings.seed))
        self.variants = settings.variant_list()
        self._arms = {v.name: self._arm(v) for v in self.variants}
        self.lists_ranked = 0
        self._shown: OrderedDict[str, ShownCounter] = OrderedDict()
        self._last: OrderedDict[str, tuple[str, frozenset[str], str]] = OrderedDict()
        """User -> (rec_id, items, variant) of their last list, for attribution."""
        self.item_updates: list[tuple[str, list[str]]] = []
        """(item_id, the user's other recent items) awaiting the item-updates topic."""
        self.quality_deltas: defaultdict[str, list[float]] = defaultdict(_no_counts)
        """Item -> [impressions, rewards] not yet sent to the item's owner (``drain_quality``)."""
        self.impressions: list[dict[str, Any]] = []
        """Published lists awaiting the impressions topic (drained by the app)."""

    # --- handlers ---------------------------------------------------------------------
    def on_event(
        self,
        raw: bytes | None,
        key: bytes | None,
        produced_at: float | None = None,
        at: Position | None = None,
    ) -> Rejected | None:
        """Apply one ``eddy.events`` message (at ``(partition, offset)``, if known);
        return ``Rejected`` for the DLQ. A replayed or duplicate event is skipped."""
        message: Event | ForgetUser | None = decode_control(raw)
        if message is None:
            try:
                message = decode_event(raw, max_future_skew_s=self.settings.max_future_skew_s)
            except DecodeError as exc:
                return self._reject(exc.reason)
        if key is None or key != message.user_id.encode():
            return self._reject(
                f"message key {_short(key)} must equal user_id {message.user_id!r} "
                "(events are partitioned by user)"
            )
        if isinstance(message, ForgetUser):
            self.forget(message.user_id)
        else:
            self.apply(message, produced_at, at)
        return None

    def apply(
        self, event: Event, produced_at: float | None = None, at: Position | None = None
    ) -> UserProfile | None:
        """Update profile and popularity with a valid event and schedule the user's list;
        None (and nothing changed) if the event was already applied."""
        stored = self.profiles.get(event.user_id)
        before = UserProfile.from_dict(stored) if stored else None
        duplicate = already_applied(before, event, at)
        if duplicate is not None:
            self.stats.duplicates += 1
            log.debug("skipping %s's event: %s", event.user_id, duplicate)
            return None
        categories = self._categories(event.item_id)
        item_vector = self.items.vector(event.item_id) if self.items is not None else None
        profile = mark_applied(
            learn_profile(before, event, categories, self.cfg, item_vector), event, at
        )
        if self.items is not None:
            self._learn(profile, event)
        weight = event_weight(event, self.cfg.event_weights)
        self.profiles[event.user_id] = profile.to_dict()
        if weight > 0:
            entry = self.popularity.get(event.item_id)
            self.popularity[event.item_id] = bump(entry, weight, event.ts, self.cfg.half_life_s)
        self.clock = event.ts if self.clock is None else max(self.clock, event.ts)
        self.stats.event(event.type.value)
        self.publisher.mark(profile, event.ts, produced_at)
        return profile

    def _learn(self, profile: UserProfile, event: Event) -> None:
        """Credit the list the event came from; schedule the item's online step."""
        assert self.items is not None
        last = self._last.get(event.user_id)
        if event.rec_id and last and last[0] == event.rec_id and event.item_id in last[1]:
            self.quality_deltas[event.item_id][1] += REWARDS.get(event.type, 0.0)
            if event.type is EventType.CLICK:
                self.stats.variant_clicks[last[2]] += 1
            elif event.type is EventType.PURCHASE:
                self.stats.variant_purchases[last[2]] += 1
        context = item_context(profile)
        if context:
            self.item_updates.append((event.item_id, context))

    def forget(self, user_id: str) -> None:
        """Delete everything this worker holds about ``user_id``: the profile (a tombstone
        in its changelog), its taste vector, exploration memory, pending list and
        impression records, and the user's keys in Redis."""
        if user_id in self.profiles:
            del self.profiles[user_id]
        self._shown.pop(user_id, None)
        self._last.pop(user_id, None)
        self.publisher.forget(user_id)
        self.impressions = [i for i in self.impressions if i["user_id"] != user_id]
        for kind in USER_KEYS:
            self.publisher.put(Put(self.settings.key(kind, user_id), None))
        self.stats.forgotten += 1
        log.info("forgot user %s", user_id)

    def on_item_update(self, value: bytes) -> tuple[str, dict[str, Any]] | None:
        """An item-updates message, on the worker that owns the item: a learning step
        (``context``) or quality counts (``impressions``, ``rewards``). Returns the item's
        new broadcast value (``item_value``), or None if nothing changed."""
        if self.items is None:
            return None
        try:
            update = json.loads(value)
            item_id = str(update["item_id"])
            if "context" in update:
                context = [str(i) for i in update["context"]]
                vector = self.items.step(item_id, context)
                if vector is None:
                    return None
                self.items.set_vector(item_id, vector)
            else:
                impressions, rewards = float(update["impressions"]), float(update["rewards"])
                if not (impressions >= 0 and rewards >= 0):
                    raise ValueError(f"counts must be >= 0, got {impressions}, {rewards}")
                self.items.quality.record_impression(item_id, impressions)
                self.items.quality.record_reward(item_id, rewards)
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            log.warning("skipping a malformed item update: %s", exc)
            return None
        return item_id, self.item_value(item_id)

    def item_value(self, item_id: str) -> dict[str, Any]:
        """What the item-vectors table holds for ``item_id``: its online vector (None if
        it has none) and its quality totals [impressions, rewards]."""
        assert self.items is not None
        vector = self.items.online_vector(item_id)
        return {
            "vector": None if vector is None else [round(float(x), 6) for x in vector],
            "quality": list(self.items.quality.stats(item_id)),
        }

    def on_item_vector(self, item_id: str, value: Any) -> None:
        """An item's broadcast value (on every worker): vector and quality totals.

        A bare list is a vector (the format before quality was shared)."""
        if self.items is None or value is None:
            return
        if isinstance(value, list):
            value = {"vector": value}
        if value.get("vector") is not None:
            self.items.set_vector(item_id, value["vector"])
        if value.get("quality") is not None:
            impressions, rewards = value["quality"]
            self.items.quality.set(item_id, impressions, rewards)

    def drain_quality(self) -> list[dict[str, Any]]:
        """Quality deltas as item-updates messages, and forget them."""
        pending, self.quality_deltas = self.quality_deltas, defaultdict(_no_counts)
        return [{"item_id": i, "impressions": n, "rewards": r} for i, (n, r) in pending.items()]

    def on_item(self, raw: bytes | None, key: bytes | None) -> Rejected | None:
        """Apply one ``eddy.items`` upsert; return ``Rejected`` for the DLQ."""
        try:
            item = decode_item(raw)
        except DecodeError as exc:
            return self._reject(exc.reason)
        if key is not None and key != item.item_id.encode():
            return self._reject(f"message key {_short(key)} must equal item_id {item.item_id!r}")
        doc = item.model_dump(mode="json")
        self.catalog[item.item_id] = doc
        if self.items is not None:
            self.items.on_item(item, seen_at=self.clock)
        self.stats.items += 1
        self.publisher.put(Put(self.settings.key("item", item.item_id), json.dumps(doc).encode()))
        return None

    def _categories(self, item_id: str) -> list[str]:
        item = self.catalog.get(item_id)
        if item is not None:
            return list(item["categories"])
        if self.prior is not None:
            return list(self.prior.item_categories.get(item_id, ()))
        return []

    def _reject(self, reason: str) -> Rejected:
        self.stats.dead_letters += 1
        return Rejected(reason)

    # --- lists ------------------------------------------------------------------------
    def render(self, profile: UserProfile, event_ts: float) -> list[Put]:
        """The keys written for one user: their list and their profile summary."""
        s = self.settings
        if not self.global_top and (len(self.popularity) or self.prior is not None):
            self.refresh_popular()  # first lists of a fresh worker: do not wait for the timer
        rec_id = variant = None
        if self.items is None:
            items = recommend(profile, self.category_top, self.global_top, s.rec_size)
        else:
            rec_id, variant, items = self._rank(profile)
        doc = RecList(
            user_id=profile.user_id,
            items=items,
            rec_id=rec_id,
            generated_at=time.time(),
            event_ts=event_ts,
            model_version=self.model_version,
            variant=variant,
        )
        return [
            Put(s.key("rec", profile.user_id), doc.model_dump_json().encode(), s.rec_ttl_s),
            Put(
                s.key("profile", profile.user_id),
                json.dumps(profile.to_dict()).encode(),
                s.rec_ttl_s,
            ),
        ]

    def _arm(self, variant: Variant) -> tuple[RankConfig, EpsilonGreedyRanker]:
        """The ranking settings and bandit of one A/B variant."""
        s, cfg = self.settings, self.rank_cfg
        if variant.epsilon is not None:
            schedule = EpsilonSchedule(variant.epsilon, s.epsilon_decay, s.min_epsilon)
            cfg = replace(cfg, epsilon=schedule)
        if variant.diversity is not None:
            cfg = replace(cfg, diversity=variant.diversity)
        return cfg, EpsilonGreedyRanker(cfg.epsilon, random.Random(f"{s.seed}:{variant.name}"))

    def _rank(self, profile: UserProfile) -> tuple[str, str | None, list[RecItem]]:
        """The learning core's list for ``profile`` (rec_id, variant, items); remembers it
        for attribution and counts its impressions."""
        assert self.items is not None
        user_id = profile.user_id
        variant = None
        cfg, ranker = self.rank_cfg, self.ranker
        if self.variants:
            variant = assign(user_id, self.variants, self.settings.variant_salt).name
            cfg, ranker = self._arms[variant]
        shown = self._shown.pop(user_id, None) or ShownCounter()
        vector = np.asarray(profile.vector, dtype=np.float32) if profile.vector else None
        now_ts = self.clock if self.clock is not None else time.time()
        started = time.perf_counter()
        items = rank_learned(
            profile, vector, self.items, shown, now_ts, cfg, ranker, self.lists_ranked
        )
        self.stats.rank_hist.observe(time.perf_counter() - started)
        self.lists_ranked += 1
        rec_id = secrets.token_hex(8)
        ids = [i.item_id for i in items]
        shown.record(ids)
        for item_id in ids:
            self.quality_deltas[item_id][0] += 1
        arm = variant or DEFAULT_VARIANT
        self.stats.variant_impressions[arm] += len(ids)
        self.stats.slots += len(ids)
        self.stats.explored_slots += sum(1 for i in items if i.reason == EXPLORING)
        _remember(self._shown, user_id, shown)
        _remember(self._last, user_id, (rec_id, frozenset(ids), arm))
        if len(self.impressions) >= MAX_PENDING_IMPRESSIONS:
            del self.impressions[0]  # the topic is unreachable: keep the newest
        self.impressions.append(
            {
                "rec_id": rec_id,
                "user_id": user_id,
                "ts": time.time(),
                "model_version": self.model_version,
                "variant": variant,
                "items": [
                    {"item_id": i.item_id, "position": n, "propensity": i.propensity}
                    for n, i in enumerate(items)
                ],
            }
        )
        return rec_id, variant, items

    def refresh_popular(self) -> int:
        """Recompute the popular lists from current counts and schedule them; return count."""
        s = self.settings
        prior = self.prior.popularity if self.prior is not None else {}
        if self.clock is None:
            self.clock = newest_anchor(self.popularity) or newest_anchor(prior)
        if self.clock is None:
            return 0
        hl = self.cfg.half_life_s
        entries = merged(prior, self.popularity, self.clock, hl)
        unavailable = {i for i, doc in self.catalog.items() if not doc.get("available", True)}
        self.global_top = top(entries, self.clock, hl, self._pool, unavailable)
        item_categories: dict[str, list[str]] = {}
        if self.prior is not None:
            item_categories.update(self.prior.item_categories)
        for item_id, doc in self.catalog.items():
            item_categories[item_id] = doc["categories"]
        for item_id in unavailable:
            item_categories.pop(item_id, None)
        self.category_top = top_by_category(entries, item_categories, self.clock, hl, self._pool)
        if self.items is not None:
            self.items.global_top, self.items.category_top = self.global_top, self.category_top
        now = time.time()
        lists = {s.key("rec", POPULAR_USER): popular_items(self.global_top, s.rec_size)}
        for cat, ranked in self.category_top.items():
            key = s.key("rec", POPULAR_USER, category_slug(cat))
            lists[key] = popular_items(ranked, s.rec_size, category_reason(cat))
        for key, items in lists.items():
            self.publisher.put(Put(key, _fallback_doc(items, now, self.model_version), None))
        return len(lists)

    def profile(self, user_id: str) -> UserProfile | None:
        stored = self.profiles.get(user_id)
        return UserProfile.from_dict(stored) if stored else None


def _no_counts() -> list[float]:
    """[impressions, rewards] of an item not yet shown since the last drain."""
    return [0.0, 0.0]


def _short(key: bytes | None, limit: int = 80) -> str:
    """``repr(key)``, cut to ``limit`` characters so a dead letter stays small."""
    text = repr(key)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(key or b'')} bytes)"


def _remember(memory: OrderedDict[str, Any], key: str, value: Any) -> None:
    memory[key] = value
    memory.move_to_end(key)
    while len(memory) > MAX_USERS_IN_MEMORY:
        memory.popitem(last=False)


def _fallback_doc(items: list[RecItem], now: float, model_version: str) -> bytes:
    doc = RecList(
        user_id=POPULAR_USER,
        items=items,
        generated_at=now,
        event_ts=None,
        model_version=model_version,
    )
    return doc.model_dump_json().encode()


def stats_mapping(
    stats: WorkerStats, worker_id: str, items: ItemState | None = None
) -> Mapping[str, str]:
    """The stats snapshot as string fields for a Redis hash."""
    snap = stats.snapshot()
    snap["worker_id"] = worker_id
    if items is not None:
        snap["online_item_vectors"] = items.online_items
        snap["item_vectors_digest"] = items.digest()
    snap["updated_at"] = time.time()
    return {k: str(v) for k, v in snap.items()}
