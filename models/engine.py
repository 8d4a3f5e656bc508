"""Eddy's whole model in one process: what ``eddy evaluate`` scores.

``EddyRecommender`` implements the ``models.baselines.Recommender`` protocol by driving
the worker's own step (``models.step.WorkerStep``): pre-training
(``models.training.train``), the step's per-batch learning, the item owner's learning
(``models.itemlearn``) and the batched ranking. Only the transport differs: no Kafka,
no Redis, and each observed event's item deltas are applied at once instead of through
the item-updates topic. A list scored for a user is the list the worker would have
published after that user's previous event, so shown counts and attribution follow.

``online=False`` gives the frozen pre-trained model: user profiles still follow the
events (that is what a user vector is), but item vectors, quality and popularity stay
as trained.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from models.bandit import EpsilonSchedule
from models.datasets import Dataset
from models.events import Event, ItemUpsert
from models.itemlearn import learn
from models.itemstate import ItemState
from models.profile import ProfileConfig, UserProfile
from models.reclist import RecItem
from models.recommender import RankConfig
from models.step import POPULAR_SLACK, Inbound, StepConfig, WorkerStep
from models.training import TrainConfig, train

GREEDY = EpsilonSchedule(0.0)


@dataclass(frozen=True)
class EngineConfig:
    """How the in-process model trains, learns and ranks (the worker's defaults)."""

    train: TrainConfig = field(default_factory=TrainConfig)
    rank: RankConfig = field(default_factory=lambda: RankConfig(epsilon=GREEDY))
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    online: bool = True
    """Learn item vectors, quality and popularity from observed events (False: frozen)."""
    pool: int | None = None
    """Popular items kept per list, globally and per category (None: the worker's,
    ``rank.k + POPULAR_SLACK``)."""
    seed: int = 0


class EddyRecommender:
    """Pre-trained on ``fit``, learning online on ``observe``, ranking on ``recommend``."""

    def __init__(self, catalog: Sequence[ItemUpsert], config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self.name = "eddy" if self.config.online else "eddy-frozen"
        self._catalog_items = list(catalog)
        self.step: WorkerStep | None = None
        self.profiles: dict[str, UserProfile] = {}
        self.clock = 0.0

    def _step_config(self, online: bool) -> StepConfig:
        cfg = self.config
        return StepConfig(
            profile=cfg.profile,
            rank=cfg.rank,
            model_version="eddy-evaluate",
            seed=cfg.seed,
            pool=cfg.rank.k + POPULAR_SLACK if cfg.pool is None else cfg.pool,
            learn_items=online,
        )

    # --- Recommender ------------------------------------------------------------------
    def fit(self, events: Sequence[Event]) -> None:
        """Pre-train on ``events`` and build every user's profile from them."""
        cfg = self.config
        dataset = Dataset("fit", self._catalog_items, list(events), 0, {})
        artefact = train(dataset, cfg.train, created_at=0.0)
        self.profiles = {}
        step = WorkerStep(self._step_config(cfg.online), self.profiles, artefact)
        for item in self._catalog_items:
            step.upsert_item(item)
        # History builds profiles only: the artefact already holds its popularity.
        step.config = replace(step.config, learn_items=False)
        ordered = sorted(events, key=lambda e: e.ts)
        for start in range(0, len(ordered), 1000):
            step.run([Inbound(e) for e in ordered[start : start + 1000]], rank=False)
        step.config = replace(step.config, learn_items=cfg.online)  # keeps the artefact's blend
        step.refresh()
        self.step = step
        self.clock = max((e.ts for e in events), default=0.0)

    def observe(self, event: Event) -> None:
        """Learn from one event, as the worker does (its item deltas applied at once).

        An event on an item of the list last scored for the user counts as a click on
        that list, as if the product had sent its ``rec_id`` back (replayed datasets
        carry none), so item quality learns from hits as well as from impressions."""
        step = self._state()
        last = step.last.get(event.user_id)
        if event.rec_id is None and last is not None and event.item_id in last[1]:
            event = event.model_copy(update={"rec_id": last[0]})
        out = step.run([Inbound(event)], rank=False)
        self.clock = max(self.clock, event.ts)
        if out.items:
            learn(out.items, step.popularity, step.items, step.item_versions)
            step.refresh()

    def recommend(self, user_id: str, k: int, exclude: Collection[str] = ()) -> list[str]:
        """The top ``k`` item ids for ``user_id`` (greedy unless the config explores)."""
        return [i.item_id for i in self.rank(user_id, k, exclude)]

    # --- the worker's ranking ---------------------------------------------------------
    def rank(
        self,
        user_id: str,
        k: int,
        exclude: Collection[str] = (),
        epsilon: float | None = None,
        record: bool = True,
    ) -> list[RecItem]:
        """The worker's list for ``user_id`` (reasons, propensities), without ``exclude``,
        exploring at ``epsilon`` if given; ``record=False`` leaves no trace."""
        step = self._state()
        out = step.rank([user_id], self.clock, k, {user_id: frozenset(exclude)}, epsilon, record)
        if out.items and self.config.online:
            learn(
                out.items, step.popularity, step.items, step.item_versions
            )  # impressions, for item quality
        doc = out.lists.get(user_id)
        return [] if doc is None else list(doc.items)

    def candidates(self, user_id: str, exclude: Collection[str] = ()) -> list[str]:
        """The candidate pool the worker would rank ``user_id``'s list from."""
        return self._state().candidates(user_id, frozenset(exclude))

    def _state(self) -> WorkerStep:
        if self.step is None:
            raise RuntimeError("call fit() before observe() or recommend()")
        return self.step

    @property
    def items(self) -> ItemState:
        items = self._state().items
        assert items is not None
        return items

    @property
    def item_vectors(self) -> Mapping[str, Any]:
        """Item id -> current vector (for intra-list diversity)."""
        items = self.items
        return {i: v for i in items.retriever.ids() if (v := items.vector(i)) is not None}
