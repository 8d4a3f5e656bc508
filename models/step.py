"""The worker's step: one pure function of (state, micro-batch) -> outbox.

``WorkerStep.run(batch, now)`` applies a micro-batch of decoded events-topic messages to
the worker's state (user profiles, exploration memory, the bandit's rounds) and returns
an ``Outbox``: every write the batch causes, coalesced per key. The Faust agent decodes
a batch, calls ``run`` and writes the outbox; ``eddy evaluate`` (``models.engine``)
drives the same step, so what is evaluated is what the worker runs.

Per batch, at most: one profile write and one list per touched user, one item delta
per touched item (popularity, impressions, rewards and the co-consumed items for its
vector, aggregated for the worker that owns the item), one impression record per list.
Item deltas come back as absolute ``ItemRecord`` values from the owner
(``models.itemlearn``) and are applied to every worker's ``ItemState`` with ``apply``.
The sequential rules (``models.transitions``) are the exception: each worker adds the
rules its own users' events complete to its copy of the pre-trained rules, at once
(``docs/model-choice.md`` says why they are not shared).
No I/O: the clock and all randomness are injected.
"""

from __future__ import annotations

import random
import time
from collections import Counter, OrderedDict
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from models.artefact import ModelArtefact
from models.bandit import EpsilonGreedyRanker, EpsilonSchedule
from models.batchrank import Ranker, RankRequest, VectorRanker
from models.events import Event, EventType, ForgetUser, ItemUpsert
from models.fallback import category_reason, popular_items, popular_list
from models.itemstate import ItemState
from models.learner import item_context, learn_profile
from models.popularity import PopularityIndex, log_mass
from models.profile import Position, ProfileConfig, UserProfile, already_applied, event_weight
from models.profile import mark_applied as _mark_applied
from models.reclist import POPULAR_USER, RecItem, RecList, category_slug
from models.recommender import EXPLORING, RankConfig, with_blend
from models.rerank import ShownCounter
from models.variants import Variant, assign

MAX_USERS_IN_MEMORY = 100_000
"""Users whose last list and shown counts a worker remembers (least recent forgotten)."""

DEFAULT_VARIANT = "default"
"""Variant label of every list when no experiment runs."""

REWARDS = {EventType.CLICK: 1.0, EventType.ADD_TO_CART: 2.0, EventType.PURCHASE: 4.0}
"""Reward credited to an item when an event on it carries the rec_id of its list."""

MAX_CONTEXT_PER_ITEM = 32
"""Co-consumed items an item's delta carries per batch at most (its vector step)."""


@dataclass(frozen=True, slots=True)
class Inbound:
    """One decoded events-topic message with where it came from."""

    message: Event | ForgetUser
    position: Position | None = None
    """(partition, offset) on the events topic, for replay detection."""
    produced_at: float | None = None
    """Broker timestamp of the message, unix seconds (for freshness)."""


POPULAR_SLACK = 550
"""Popular items kept per top list beyond a recommendation list's length (the worker's
and ``eddy evaluate``'s ``StepConfig.pool``): a user who has seen the 500 most popular
still gets 50 of them. Fixed, not ``history_size``: a top list is re-sorted whenever it
changes, at a cost that grows with its length."""


@dataclass(frozen=True)
class StepConfig:
    """How the step learns and ranks (built from ``Settings`` by the worker)."""

    profile: ProfileConfig = field(default_factory=ProfileConfig)
    rank: RankConfig = field(default_factory=RankConfig)
    model_version: str = "popularity-v1"
    variants: tuple[Variant, ...] = ()
    variant_salt: str = "eddy"
    seed: int = 0
    pool: int = 120
    """Popular items kept per list, globally and per category."""
    learn_items: bool = True
    """Send item deltas (popularity, quality, vectors) for the item owners."""


@dataclass(slots=True)
class ItemDelta:
    """What one batch learned about one item, for the worker that owns it."""

    mass: float = -np.inf
    """Popularity added, in the log domain (``models.popularity.log_mass``)."""
    impressions: float = 0.0
    rewards: float = 0.0
    context: list[str] = field(default_factory=list)
    """Items co-consumed with it (the users' other recent items), for its vector step."""

    def merge(self, other: ItemDelta) -> None:
        self.mass = float(np.logaddexp(self.mass, other.mass))
        self.impressions += other.impressions
        self.rewards += other.rewards
        room = MAX_CONTEXT_PER_ITEM - len(self.context)
        if room > 0:
            self.context.extend(other.context[:room])

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if np.isfinite(self.mass):
            out["m"] = self.mass
        if self.impressions:
            out["n"] = self.impressions
        if self.rewards:
            out["r"] = self.rewards
        if self.context:
            out["c"] = self.context
        return out

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ItemDelta:
        """The inverse of ``to_json``; ``ValueError`` on a malformed document."""
        if not isinstance(doc, Mapping):
            raise ValueError("an item delta must be an object")
        mass = float(doc.get("m", -np.inf))
        n, r = float(doc.get("n", 0.0)), float(doc.get("r", 0.0))
        if not (n >= 0 and r >= 0 and np.isfinite(n + r)) or np.isnan(mass) or mass == np.inf:
            raise ValueError(f"bad item delta counts: {doc!r}")
        context = doc.get("c", [])
        if not isinstance(context, list):
            raise ValueError("item delta context must be a list")
        return cls(mass, n, r, [str(i) for i in context[:MAX_CONTEXT_PER_ITEM]])


@dataclass
class Outbox:
    """Every write one batch causes, at most one per key."""

    profiles: dict[str, UserProfile | None] = field(default_factory=dict)
    """User -> new profile (None: forget the user), one per touched user."""
    lists: dict[str, RecList] = field(default_factory=dict)
    """User -> fresh list, one per touched user."""
    produced_at: dict[str, float] = field(default_factory=dict)
    """User -> broker time of the oldest event behind the list (freshness)."""
    items: dict[str, ItemDelta] = field(default_factory=dict)
    """Item -> what the batch learned about it, for the item's owner."""
    impressions: list[dict[str, Any]] = field(default_factory=list)
    """Published lists with propensities (the exploration log)."""
    forgotten: list[str] = field(default_factory=list)
    watermarks: dict[int, int] = field(default_factory=dict)
    """Events partition -> newest offset in the batch (applied or skipped)."""
    events: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    slots: int = 0
    explored_slots: int = 0
    variant_impressions: Counter[str] = field(default_factory=Counter)
    variant_clicks: Counter[str] = field(default_factory=Counter)
    variant_purchases: Counter[str] = field(default_factory=Counter)
    rank_seconds: float = 0.0

    def delta(self, item_id: str) -> ItemDelta:
        found = self.items.get(item_id)
        if found is None:
            found = self.items[item_id] = ItemDelta()
        return found


def _remember(memory: OrderedDict[str, Any], key: str, value: Any) -> None:
    memory[key] = value
    memory.move_to_end(key)
    while len(memory) > MAX_USERS_IN_MEMORY:
        memory.popitem(last=False)


@dataclass(slots=True)
class _Touched:
    profile: UserProfile
    event_ts: float
    produced_at: float | None


class WorkerStep:
    """A worker's learning and ranking state, advanced one micro-batch at a time.

    ``profiles`` is injected: the worker fills it with the batch's users (from its state
    store) before ``run``; ``items`` is None without a pre-trained model (popularity
    lists only). All randomness comes from ``seed``.
    """

    def __init__(
        self,
        config: StepConfig,
        profiles: MutableMapping[str, UserProfile],
        prior: ModelArtefact | None = None,
        catalog: MutableMapping[str, Any] | None = None,
        ranker: Ranker | None = None,
    ) -> None:
        self.config = config
        self.profiles = profiles
        self.catalog: MutableMapping[str, Any] = {} if catalog is None else catalog
        self.prior = prior
        self.items = ItemState(prior, self.catalog) if prior is not None else None
        self.popularity = PopularityIndex(config.profile.half_life_s, config.pool)
        if prior is not None:
            for item_id, cats in prior.item_categories.items():
                self.popularity.set_categories(item_id, cats, True)
            self.popularity.set_prior(prior.popularity)
        self.ranker: Ranker = ranker or VectorRanker(config.seed)
        self.rng = random.Random(f"{config.seed}:rec-ids")
        self._arms = {DEFAULT_VARIANT: self._arm(None)}
        for variant in config.variants:
            self._arms[variant.name] = self._arm(variant)
        blend = prior.rank_blend if prior is not None else {}
        self._returning = {name: with_blend(cfg, blend) for name, (cfg, _) in self._arms.items()}
        """Variant -> its config for a user between sessions (``_config``)."""
        self.in_session: OrderedDict[str, float] = OrderedDict()
        """User -> their newest event time, while their published list was ranked with the
        session weights and a between-sessions blend differs (``end_sessions``)."""
        self.item_versions: dict[str, int] = {}
        """Item -> version of the newest shared record applied (``models.itemlearn``)."""
        self.lists_ranked = 0
        self.clock: float | None = None
        """Newest event time seen."""
        self.shown: OrderedDict[str, ShownCounter] = OrderedDict()
        self.last: OrderedDict[str, tuple[str, frozenset[str], str]] = OrderedDict()
        """User -> (rec_id, items, variant) of their last list, for attribution."""
        self.unpublished: set[str | None] = set()
        """Popular lists re-sorted since ``drain_unpublished`` (None: the global one)."""
        self.refresh()

    def _arm(self, variant: Variant | None) -> tuple[RankConfig, EpsilonGreedyRanker]:
        cfg, seed = self.config.rank, self.config.seed
        if variant is None:
            return cfg, EpsilonGreedyRanker(cfg.epsilon, random.Random(seed))
        if variant.epsilon is not None:
            old = cfg.epsilon
            schedule = EpsilonSchedule(
                variant.epsilon, old.decay, min(old.min_epsilon, variant.epsilon)
            )
            cfg = replace(cfg, epsilon=schedule)
        if variant.diversity is not None:
            cfg = replace(cfg, diversity=variant.diversity)
        return cfg, EpsilonGreedyRanker(cfg.epsilon, random.Random(f"{seed}:{variant.name}"))

    # --- the step ---------------------------------------------------------------------
    def run(self, batch: Sequence[Inbound], now: float | None = None, rank: bool = True) -> Outbox:
        """Apply ``batch`` in order; rank every touched user once, at the end (unless
        ``rank`` is False: learning only, as when replaying history)."""
        now = time.time() if now is None else now
        out = Outbox()
        touched: dict[str, _Touched] = {}
        for inbound in batch:
            if inbound.position is not None:
                partition, offset = inbound.position
                out.watermarks[partition] = max(offset, out.watermarks.get(partition, -1))
            message = inbound.message
            if isinstance(message, ForgetUser):
                self._forget(message.user_id, out)
                touched.pop(message.user_id, None)
                continue
            profile = self._apply(message, inbound.position, out)
            if profile is None:
                continue
            prev = touched.get(message.user_id)
            produced = inbound.produced_at
            if prev is not None:
                ts = max(prev.event_ts, message.ts)
                if prev.produced_at is not None:
                    produced = (
                        prev.produced_at if produced is None else min(produced, prev.produced_at)
                    )
                touched[message.user_id] = _Touched(profile, ts, produced)
            else:
                touched[message.user_id] = _Touched(profile, message.ts, produced)
        for item_id, delta in out.items.items():
            if np.isfinite(delta.mass):
                self.popularity.add_local(item_id, delta.mass)
        if out.items:
            self.refresh()
        for user_id, t in touched.items():
            out.profiles[user_id] = t.profile
            if t.produced_at is not None:
                out.produced_at[user_id] = t.produced_at
        if touched and rank:
            started = time.perf_counter()
            self._rank([t.profile for t in touched.values()], touched, now, out)
            out.rank_seconds = time.perf_counter() - started
            self._open_sessions(touched)
        return out

    def _open_sessions(self, touched: Mapping[str, _Touched]) -> None:
        """Remember the users just ranked with the session weights whose lists a
        between-sessions blend would rank differently once their session ends."""
        clock = self.clock if self.clock is not None else 0.0
        for user_id, t in touched.items():
            variant = self._variant(user_id)
            cfg = self._arms[variant][0]
            if self._returning[variant] != cfg and clock - t.profile.last_ts <= cfg.session_gap_s:
                _remember(self.in_session, user_id, t.profile.last_ts)

    def end_sessions(self, now: float, limit: int = 500) -> Outbox:
        """Re-rank, with the between-sessions blend, the lists of up to ``limit`` users
        whose session ended (no event for ``RankConfig.session_gap_s`` by ``now`` or the
        event clock, whichever is later), so that a returning user finds the list
        ``eddy evaluate``'s holdout protocols score. Users no longer in memory keep their
        list until their next event."""
        out = Outbox()
        clock = now if self.clock is None else max(self.clock, now)
        due: list[UserProfile] = []
        for user_id, last_ts in list(self.in_session.items()):
            gap = self._arms[self._variant(user_id)][0].session_gap_s
            if clock - last_ts <= gap or len(due) >= limit:
                break
            del self.in_session[user_id]
            profile = self.profiles.get(user_id)
            if profile is not None and profile.last_ts == last_ts:
                due.append(profile)
        if due:
            touched = {p.user_id: _Touched(p, p.last_ts, None) for p in due}
            started = time.perf_counter()
            self._rank(due, touched, now, out, clock=clock)
            out.rank_seconds = time.perf_counter() - started
        return out

    def rank(
        self,
        user_ids: Sequence[str],
        now: float,
        k: int | None = None,
        exclude: Mapping[str, frozenset[str]] | None = None,
        epsilon: float | None = None,
        record: bool = True,
    ) -> Outbox:
        """Rank lists for ``user_ids`` now (as after their last event), with ``k`` items,
        without ``exclude[user]`` and at exploration rate ``epsilon`` if given
        (evaluation). ``record=False`` leaves no trace (shows, attribution, deltas)."""
        out = Outbox()
        profiles = [self.profiles.get(u) or UserProfile(user_id=u) for u in user_ids]
        touched = {p.user_id: _Touched(p, p.last_ts, None) for p in profiles}
        self._rank(profiles, touched, now, out, k, exclude or {}, epsilon, record)
        return out

    def candidates(self, user_id: str, exclude: frozenset[str] = frozenset()) -> list[str]:
        """The candidate pool ``user_id``'s next list would be ranked from (every
        retrieval source, before scoring), without ``exclude``; [] without a model."""
        if self.items is None:
            return []
        profile = self.profiles.get(user_id) or UserProfile(user_id=user_id)
        now_ts = self.clock if self.clock is not None else 0.0
        rank_cfg, bandit = self._config(profile, self._variant(user_id), now_ts)
        vector = np.asarray(profile.vector, dtype=np.float32) if profile.vector else None
        shown = self.shown.get(user_id) or ShownCounter()
        request = RankRequest(profile, vector, shown, rank_cfg, bandit, 0.0, exclude=exclude)
        return VectorRanker().pools([request], self.items, now_ts)[0]

    def _config(
        self, profile: UserProfile, variant: str, now_ts: float
    ) -> tuple[RankConfig, EpsilonGreedyRanker]:
        """The variant's config and bandit for ``profile`` at ``now_ts``: the session
        weights while the user's newest event is at most ``session_gap_s`` old, else the
        artefact's blend for a user between sessions (``ModelArtefact.rank_blend``)."""
        cfg, bandit = self._arms[variant]
        if now_ts - profile.last_ts > cfg.session_gap_s:
            return self._returning[variant], bandit
        return cfg, bandit

    def _apply(self, event: Event, at: Position | None, out: Outbox) -> UserProfile | None:
        cfg = self.config
        before = self.profiles.get(event.user_id)
        if already_applied(before, event, at) is not None:
            out.duplicates += 1
            return None
        item_vector = self.items.vector(event.item_id) if self.items is not None else None
        categories = self.categories(event.item_id)
        learned = learn_profile(before, event, categories, cfg.profile, item_vector)
        rules = self.items.transitions if self.items is not None else None
        if cfg.learn_items and rules is not None and learned.recent[:1] == [event.item_id]:
            rules.learn(before.recent if before is not None else (), event.item_id)
        profile = _mark_applied(learned, event, at)
        self.profiles[event.user_id] = profile
        self.clock = event.ts if self.clock is None else max(self.clock, event.ts)
        out.events[event.type.value] += 1
        if not cfg.learn_items:
            return profile
        weight = event_weight(event, cfg.profile.event_weights)
        delta: ItemDelta | None = None
        if weight > 0:
            delta = out.delta(event.item_id)
            delta.mass = float(
                np.logaddexp(delta.mass, log_mass(weight, event.ts, cfg.profile.half_life_s))
            )
        last = self.last.get(event.user_id)
        if event.rec_id and last and last[0] == event.rec_id and event.item_id in last[1]:
            reward = REWARDS.get(event.type, 0.0)
            if reward:
                (delta or out.delta(event.item_id)).rewards += reward
            if event.type is EventType.CLICK:
                out.variant_clicks[last[2]] += 1
            elif event.type is EventType.PURCHASE:
                out.variant_purchases[last[2]] += 1
        if self.items is not None:
            context = item_context(profile)
            if context:
                found = delta or out.delta(event.item_id)
                room = MAX_CONTEXT_PER_ITEM - len(found.context)
                found.context.extend(context[: max(0, room)])
        return profile

    def _forget(self, user_id: str, out: Outbox) -> None:
        self.profiles.pop(user_id, None)
        self.in_session.pop(user_id, None)
        self.shown.pop(user_id, None)
        self.last.pop(user_id, None)
        out.profiles[user_id] = None
        out.lists.pop(user_id, None)
        out.produced_at.pop(user_id, None)
        out.impressions = [i for i in out.impressions if i["user_id"] != user_id]
        out.forgotten.append(user_id)

    # --- ranking ------------------------------------------------------------------------
    def _variant(self, user_id: str) -> str:
        if not self.config.variants:
            return DEFAULT_VARIANT
        return assign(user_id, self.config.variants, self.config.variant_salt).name

    def _rank(
        self,
        profiles: Sequence[UserProfile],
        touched: Mapping[str, _Touched],
        now: float,
        out: Outbox,
        k: int | None = None,
        exclude: Mapping[str, frozenset[str]] | None = None,
        epsilon: float | None = None,
        record: bool = True,
        clock: float | None = None,
    ) -> None:
        """Rank ``profiles`` into ``out``, at the event clock (or ``clock`` if given)."""
        cfg = self.config
        if self.items is None:
            for p in profiles:
                items = popular_list(
                    p, self.popularity.category_top, self.popularity.global_top, k or cfg.rank.k
                )
                out.lists[p.user_id] = RecList(
                    user_id=p.user_id,
                    items=items,
                    generated_at=now,
                    event_ts=touched[p.user_id].event_ts,
                    model_version=cfg.model_version,
                )
            return
        now_ts = clock if clock is not None else self.clock if self.clock is not None else now
        requests: list[RankRequest] = []
        for p in profiles:
            variant = self._variant(p.user_id)
            rank_cfg, bandit = self._config(p, variant, now_ts)
            if k is not None and k != rank_cfg.k:
                rank_cfg = replace(rank_cfg, k=k)
            if epsilon is not None:
                rank_cfg = replace(rank_cfg, epsilon=EpsilonSchedule(epsilon))
            shown = self.shown.get(p.user_id) or ShownCounter()
            vector = np.asarray(p.vector, dtype=np.float32) if p.vector else None
            requests.append(
                RankRequest(
                    p,
                    vector,
                    shown,
                    rank_cfg,
                    bandit,
                    float(self.lists_ranked),
                    variant,
                    (exclude or {}).get(p.user_id, frozenset()),
                )
            )
            self.lists_ranked += 1
        ranked = self.ranker.rank_batch(requests, self.items, now_ts)
        for request, items in zip(requests, ranked, strict=True):
            event_ts = touched[request.profile.user_id].event_ts
            self._publish(request, items, event_ts, now, out, record)

    def _publish(
        self,
        request: RankRequest,
        items: list[RecItem],
        event_ts: float,
        now: float,
        out: Outbox,
        record: bool = True,
    ) -> None:
        cfg = self.config
        user_id = request.profile.user_id
        rec_id = f"{self.rng.getrandbits(64):016x}"
        ids = [i.item_id for i in items]
        if record:
            request.shown.record(ids)
            _remember(self.shown, user_id, request.shown)
            _remember(self.last, user_id, (rec_id, frozenset(ids), request.variant))
        if cfg.learn_items and record:
            for item_id in ids:
                out.delta(item_id).impressions += 1
        variant = request.variant if cfg.variants else None
        out.variant_impressions[request.variant] += len(ids)
        out.slots += len(ids)
        out.explored_slots += sum(1 for i in items if i.reason == EXPLORING)
        out.lists[user_id] = RecList(
            user_id=user_id,
            items=items,
            rec_id=rec_id,
            generated_at=now,
            event_ts=event_ts,
            model_version=cfg.model_version,
            variant=variant,
        )
        out.impressions.append(
            {
                "rec_id": rec_id,
                "user_id": user_id,
                "ts": now,
                "model_version": cfg.model_version,
                "variant": variant,
                "items": [
                    {"item_id": i.item_id, "position": n, "propensity": i.propensity}
                    for n, i in enumerate(items)
                ],
            }
        )

    # --- items ----------------------------------------------------------------------------
    def categories(self, item_id: str) -> list[str]:
        doc = self.catalog.get(item_id)
        if doc is not None:
            return list(doc.get("categories", ()))
        if self.prior is not None:
            return list(self.prior.item_categories.get(item_id, ()))
        return []

    def upsert_item(self, item: ItemUpsert, doc: Mapping[str, Any] | None = None) -> None:
        """A catalog upsert: categories, availability, and a content vector if new."""
        self.catalog[item.item_id] = dict(doc) if doc is not None else item.model_dump(mode="json")
        self.popularity.set_categories(item.item_id, item.categories, item.available)
        if self.items is not None:
            self.items.on_item(item, seen_at=self.clock)

    def refresh(self) -> set[str | None]:
        """Re-sort the popular lists that changed; return them (None: the global one)."""
        changed = self.popularity.refresh()
        if self.items is not None:
            self.items.global_top = self.popularity.global_top
            self.items.category_top = self.popularity.category_top
        self.unpublished.update(changed)
        return changed

    def drain_unpublished(self) -> set[str | None]:
        """The popular lists changed since the last call (None: the global one)."""
        changed, self.unpublished = self.unpublished, set()
        return changed

    def popular_lists(
        self, now: float, categories: Sequence[str | None] | None = None
    ) -> dict[str, RecList]:
        """The fallback lists (pseudo user ``POPULAR_USER``): global (key ``""``) and per
        category slug, for ``categories`` (None: every list)."""
        cfg = self.config
        k = cfg.rank.k
        names: Sequence[str | None] = (
            [None, *self.popularity.category_top] if categories is None else categories
        )
        out: dict[str, RecList] = {}
        for name in names:
            if name is None:
                items = popular_items(self.popularity.global_top, k)
                slug = ""
            else:
                ranked = self.popularity.category_top.get(name, ())
                items = popular_items(ranked, k, category_reason(name))
                slug = category_slug(name)
            out[slug] = RecList(
                user_id=POPULAR_USER,
                items=items,
                generated_at=now,
                event_ts=None,
                model_version=cfg.model_version,
            )
        return out
