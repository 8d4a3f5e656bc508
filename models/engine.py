"""Eddy's whole model in one process: what ``eddy evaluate`` scores.

``EddyRecommender`` implements the ``models.baselines.Recommender`` protocol with the
code the worker runs (``streams.processor``): pre-training (``models.training.train``),
per-event learning (``models.learner``), item state (``models.itemstate``), merged
popularity (``models.popularity``) and the learned ranking (``models.recommender``).
Only the transport differs: no Kafka, no tables, no Redis, and item steps are applied
at once instead of through the item-updates topic.

``online=False`` gives the frozen pre-trained model: user profiles still follow the
events (that is what a user vector is), but item vectors and popularity stay as trained.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from models.artefact import ModelArtefact
from models.bandit import EpsilonGreedyRanker, EpsilonSchedule
from models.datasets import Dataset
from models.events import Event, ItemUpsert
from models.itemstate import ItemState
from models.learner import item_context, learn_profile
from models.popularity import Entry, bump, merged, top, top_by_category
from models.profile import ProfileConfig, UserProfile, event_weight
from models.recommender import RankConfig, recommend
from models.recs import RecItem
from models.training import TrainConfig, train

GREEDY = EpsilonSchedule(0.0)


@dataclass(frozen=True)
class EngineConfig:
    """How the in-process model trains, learns and ranks (the worker's defaults)."""

    train: TrainConfig = field(default_factory=TrainConfig)
    rank: RankConfig = field(default_factory=lambda: RankConfig(epsilon=GREEDY))
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    online: bool = True
    """Learn item vectors and popularity from observed events (False: frozen model)."""
    refresh_every: int = 200
    """Observed events between popularity refreshes (the worker refreshes on a timer)."""
    pool: int = 200
    """Popular items kept per list, globally and per category."""
    seed: int = 0


class EddyRecommender:
    """Pre-trained on ``fit``, learning online on ``observe``, ranking on ``recommend``."""

    def __init__(self, catalog: Sequence[ItemUpsert], config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self.name = "eddy" if self.config.online else "eddy-frozen"
        self._catalog_items = list(catalog)
        self._catalog: dict[str, Any] = {i.item_id: i.model_dump(mode="json") for i in catalog}
        self.artefact: ModelArtefact | None = None
        self.items: ItemState | None = None
        self.profiles: dict[str, UserProfile] = {}
        self.popularity: dict[str, Entry] = {}
        self.clock = 0.0
        self.ranker = EpsilonGreedyRanker(self.config.rank.epsilon, random.Random(self.config.seed))
        self.rounds = 0
        self._since_refresh = 0

    # --- Recommender ------------------------------------------------------------------
    def fit(self, events: Sequence[Event]) -> None:
        """Pre-train on ``events`` and build every user's profile from them."""
        cfg = self.config
        dataset = Dataset("fit", self._catalog_items, list(events), 0, {})
        self.artefact = train(dataset, cfg.train, created_at=0.0)
        self.items = ItemState(self.artefact, self._catalog)
        self.profiles, self.popularity = {}, {}
        self.clock = max((e.ts for e in events), default=0.0)
        for event in sorted(events, key=lambda e: e.ts):
            self._learn_user(event)
        self.refresh()

    def observe(self, event: Event) -> None:
        """Learn from one event, as the worker does."""
        items = self._state()
        profile = self._learn_user(event)
        self.clock = max(self.clock, event.ts)
        if not self.config.online:
            return
        weight = event_weight(event, self.config.profile.event_weights)
        if weight > 0:
            entry = self.popularity.get(event.item_id)
            hl = self.config.profile.half_life_s
            self.popularity[event.item_id] = bump(entry, weight, event.ts, hl)
        context = item_context(profile)
        vector = items.step(event.item_id, context) if context else None
        if vector is not None:
            items.set_vector(event.item_id, vector)
        self._since_refresh += 1
        if self._since_refresh >= self.config.refresh_every:
            self.refresh()

    def recommend(self, user_id: str, k: int, exclude: Collection[str] = ()) -> list[str]:
        """The top ``k`` item ids for ``user_id`` (greedy unless the config explores)."""
        return [i.item_id for i in self.rank(user_id, k, exclude)]

    # --- the worker's ranking ---------------------------------------------------------
    def rank(
        self,
        user_id: str,
        k: int,
        exclude: Collection[str] = (),
        ranker: EpsilonGreedyRanker | None = None,
    ) -> list[RecItem]:
        """The worker's list for ``user_id`` (reasons, propensities), without ``exclude``."""
        items = self._state()
        profile = self.profiles.get(user_id) or UserProfile(user_id=user_id)
        cfg = replace(self.config.rank, k=k)
        vector = np.asarray(profile.vector, dtype=np.float32) if profile.vector else None
        ranker = ranker or self.ranker
        rounds, self.rounds = self.rounds, self.rounds + 1
        return recommend(profile, vector, items, {}, self.clock, cfg, ranker, rounds, exclude)

    def refresh(self) -> None:
        """Recompute the global and per-category popular lists at the current clock."""
        items, artefact = self._state(), self.artefact
        assert artefact is not None
        hl = self.config.profile.half_life_s
        entries = merged(artefact.popularity, self.popularity, self.clock, hl)
        categories: dict[str, Sequence[str]] = dict(artefact.item_categories)
        categories.update({i: doc["categories"] for i, doc in self._catalog.items()})
        items.global_top = top(entries, self.clock, hl, self.config.pool)
        items.category_top = top_by_category(entries, categories, self.clock, hl, self.config.pool)
        self._since_refresh = 0

    def _learn_user(self, event: Event) -> UserProfile:
        items = self._state()
        doc = self._catalog.get(event.item_id)
        assert self.artefact is not None
        categories: Sequence[str] = (
            doc["categories"] if doc else self.artefact.item_categories.get(event.item_id, [])
        )
        before = self.profiles.get(event.user_id)
        profile = learn_profile(
            before, event, categories, self.config.profile, items.vector(event.item_id)
        )
        self.profiles[event.user_id] = profile
        return profile

    def _state(self) -> ItemState:
        if self.items is None:
            raise RuntimeError("call fit() before observe() or recommend()")
        return self.items

    @property
    def item_vectors(self) -> Mapping[str, Any]:
        """Item id -> current vector (for intra-list diversity)."""
        items = self._state()
        return {i: v for i in items.retriever.ids() if (v := items.vector(i)) is not None}
