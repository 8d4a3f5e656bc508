"""``eddy evaluate``: Eddy and the baselines under one protocol, on one dataset.

Everything runs in process on ``models`` code (``models.engine`` is the worker's model).
Protocols (``models.protocols``):

* ``prequential``: test-then-train in time order after a warm-up (the first
  ``1 - fraction`` of events, or a given training set); each later event is scored
  against its user's current top-k list before it is learned.
* ``holdout-user`` / ``holdout-item``: a random split stratified by user or by item.
* ``temporal`` / ``temporal-user``: the last ``fraction`` of events, globally or per user.

Models (``MODELS``, all run by default; definitions and tuned parameters in
``docs/baselines.md``): ``random``, ``popularity``, ``itemknn`` (asymmetric cosine,
parameters tuned on MovieLens validation), ``itemknn-session`` (the same with recency
weighting, tuned on YOOCHOOSE validation), ``ease`` (lambda tuned inside every ``fit`` on a
split of the training part), ``vsknn`` and ``sr`` (session baselines, tuned on YOOCHOOSE
validation), and Eddy frozen and online.

For Eddy the results also hold ``pool_recall``: the share of test items in the
candidate pool its ranker scored (``models.recall``), so a loss in retrieval and a loss
in ranking can be told apart.

Intra-list diversity is measured for every model in one space: cosine of the item
vectors of Eddy's model pre-trained on the training part.

The bandit report (``bandit_replay``) replays the same stream through the exploring
policy: the click-through of the lists it logs, and IPS / SNIPS estimates of the greedy
policy's top-slot click-through from the logged propensities, next to the value measured
directly, so the estimator can be checked against the truth.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from models.baselines import (
    ItemKNNRecommender,
    PopularityRecommender,
    RandomRecommender,
    Recommender,
)
from models.datasets import Dataset
from models.ease import EASERecommender
from models.engine import EddyRecommender, EngineConfig
from models.events import Event
from models.metrics import ips, snips
from models.protocols import (
    evaluate_holdout,
    evaluate_prequential,
    holdout_split,
    items_by_user,
    temporal_split,
    time_key,
)
from models.sequential_rules import SequentialRulesRecommender
from models.sessionknn import VSKNNRecommender

Protocol = Literal["prequential", "holdout-user", "holdout-item", "temporal", "temporal-user"]
PROTOCOLS: tuple[Protocol, ...] = (
    "prequential",
    "holdout-user",
    "holdout-item",
    "temporal",
    "temporal-user",
)
MODELS = (
    "random",
    "popularity",
    "itemknn",
    "itemknn-session",
    "ease",
    "vsknn",
    "sr",
    "eddy-frozen",
    "eddy",
)
COUNTS = frozenset({"users", "events", "cold_users", "repeats", "first_events", "warmup"})
"""Result keys that are counts, not rates. Every model's results also hold ``fit_seconds``
(wall time of its last ``fit``) and, for models that tune themselves in ``fit`` (EASE),
the chosen parameters as ``tuned_<name>``."""
Progress = Callable[[str, int, int], None]
"""``progress(model, done, total)``."""


@dataclass(frozen=True)
class EvalConfig:
    """What to run: the protocol, its split, the cut-offs and the models."""

    protocol: Protocol = "holdout-user"
    ks: tuple[int, ...] = (10, 20)
    fraction: float = 0.2
    """Test share: holdout ratio, temporal fraction, prequential scored tail."""
    seed: int = 0
    models: tuple[str, ...] = MODELS
    engine: EngineConfig = field(default_factory=EngineConfig)
    skip_new_users: bool = False
    """Prequential: do not score a user's first event (session data: next-click only)."""
    max_events: int | None = None
    """Prequential: score at most this many events (the latest), learning from the rest."""

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {self.protocol!r}; choose from {PROTOCOLS}")
        unknown = [m for m in self.models if m not in MODELS]
        if unknown:
            raise ValueError(f"unknown models {unknown}; choose from {list(MODELS)}")
        if not 0.0 < self.fraction < 1.0:
            raise ValueError(f"fraction must be in (0, 1), got {self.fraction}")


def make_model(name: str, dataset: Dataset, cfg: EvalConfig) -> Recommender:
    """A fresh model by name; the Eddy ones use ``cfg.engine``."""
    if name == "random":
        return RandomRecommender(seed=cfg.seed)
    if name == "popularity":
        return PopularityRecommender()
    if name == "itemknn":
        return ItemKNNRecommender()
    if name == "itemknn-session":
        return session_itemknn()
    if name == "ease":
        return EASERecommender(seed=cfg.seed)
    if name == "vsknn":
        return VSKNNRecommender()
    if name == "sr":
        return SequentialRulesRecommender()
    if name in ("eddy", "eddy-frozen"):
        return EddyRecommender(dataset.items, replace(cfg.engine, online=name == "eddy"))
    raise ValueError(f"unknown model {name!r}; choose from {list(MODELS)}")


def session_itemknn() -> ItemKNNRecommender:
    """``itemknn-session``: item-kNN with the knobs chosen on YOOCHOOSE validation."""
    return ItemKNNRecommender(k_neighbours=100, shrink=10.0, alpha=0.7, history_half_life=0.5)


class TimedFit:
    """A ``Recommender`` that times its model's ``fit`` (wall seconds, the last call)."""

    def __init__(self, model: Recommender) -> None:
        self.model = model
        self.name = model.name
        self.fit_seconds = math.nan

    def fit(self, events: Sequence[Event]) -> None:
        started = time.perf_counter()
        self.model.fit(events)
        self.fit_seconds = time.perf_counter() - started

    def observe(self, event: Event) -> None:
        self.model.observe(event)

    def recommend(self, user_id: str, k: int, exclude: Collection[str] = ()) -> list[str]:
        return self.model.recommend(user_id, k, exclude)

    def report(self) -> dict[str, float]:
        """``fit_seconds`` and the model's ``tuned`` parameters as ``tuned_<name>``."""
        tuned: Mapping[str, float] = getattr(self.model, "tuned", {})
        return {"fit_seconds": self.fit_seconds} | {f"tuned_{k}": v for k, v in tuned.items()}


def split(
    events: Sequence[Event], cfg: EvalConfig, test: Sequence[Event] | None = None
) -> tuple[list[Event], list[Event]]:
    """``(train, test)`` for the protocol (prequential: ``(warm-up, scored tail)``)."""
    if test is not None:
        return sorted(events, key=time_key), sorted(test, key=time_key)
    if cfg.protocol in ("holdout-user", "holdout-item"):
        by: Literal["user", "item"] = "user" if cfg.protocol == "holdout-user" else "item"
        return holdout_split(events, ratio=cfg.fraction, seed=cfg.seed, by=by)
    return temporal_split(events, fraction=cfg.fraction, per_user=cfg.protocol == "temporal-user")


def evaluate(
    dataset: Dataset,
    cfg: EvalConfig,
    test: Sequence[Event] | None = None,
    progress: Progress | None = None,
) -> dict[str, dict[str, float]]:
    """Metrics per model. ``test`` gives a fixed test set (``dataset`` is then the train)."""
    train, held = split(dataset.events, cfg, test)
    if cfg.protocol == "prequential":
        train, held = capped(train, held, cfg.max_events)
    catalog = {i.item_id for i in dataset.items} | {e.item_id for e in (*train, *held)}
    similarity = None
    if cfg.protocol != "prequential":
        yardstick = EddyRecommender(dataset.items, replace(cfg.engine, online=False))
        yardstick.fit(train)  # one vector space to measure every model's diversity in
        similarity = _cosine(yardstick)
    results: dict[str, dict[str, float]] = {}
    for name in cfg.models:
        made = make_model(name, dataset, cfg)
        model = TimedFit(made)
        pools = made.candidates if isinstance(made, EddyRecommender) else None
        report = _reporter(progress, name)
        if cfg.protocol == "prequential":
            stream = train + held
            results[name] = evaluate_prequential(
                model,
                stream,
                ks=cfg.ks,
                warmup=len(train),
                progress=_of_total(report, len(stream)),
                score_new_users=not cfg.skip_new_users,
                pools=pools,
            )
        else:
            results[name] = evaluate_holdout(
                model,
                train,
                held,
                ks=cfg.ks,
                catalog=catalog,
                progress=report,
                similarity=similarity,
                pools=pools,
            )
        results[name].update(model.report())
    return results


def _reporter(progress: Progress | None, name: str) -> Callable[[int, int], None]:
    return (lambda done, total: progress(name, done, total)) if progress else (lambda d, t: None)


def _of_total(report: Callable[[int, int], None], total: int) -> Callable[[int], None]:
    return lambda done: report(done, total)


def capped(
    train: list[Event], held: list[Event], max_events: int | None
) -> tuple[list[Event], list[Event]]:
    """Only the latest ``max_events`` of ``held`` are scored; the rest join ``train``."""
    if max_events is None or len(held) <= max_events:
        return train, held
    cut = len(held) - max_events
    return train + held[:cut], held[cut:]


def _cosine(model: EddyRecommender) -> Callable[[str, str], float]:
    """Cosine of two items' vectors in ``model``, clipped to [0, 1] (0 without a vector)."""

    def similarity(a: str, b: str) -> float:
        items = model.items
        va = items.vector(a) if items is not None else None
        vb = items.vector(b) if items is not None else None
        if va is None or vb is None:
            return 0.0
        denom = float(np.linalg.norm(va) * np.linalg.norm(vb))
        return max(0.0, float(np.dot(va, vb)) / denom) if denom > 0 else 0.0

    return similarity


@dataclass
class BanditLog:
    """What ``bandit_replay`` saw, round by round (one round per scored event)."""

    hits: list[float] = field(default_factory=list)
    """1 if the event's item was in the logged (exploring) list."""
    top_rewards: list[float] = field(default_factory=list)
    """1 if the event's item was the logged list's first item."""
    top_propensities: list[float] = field(default_factory=list)
    greedy_agrees: list[float] = field(default_factory=list)
    """1 if the greedy policy would put the logged first item first too."""
    greedy_top_hits: list[float] = field(default_factory=list)
    explored_slots: int = 0
    slots: int = 0

    def report(self, k: int) -> dict[str, float]:
        n = len(self.hits)
        if n == 0:
            raise ValueError("no scored events: nothing to replay")
        rewards, p0, p1 = self.top_rewards, self.top_propensities, self.greedy_agrees
        return {
            f"ctr@{k}": sum(self.hits) / n,
            "ctr@1": sum(rewards) / n,
            "greedy_ctr@1": sum(self.greedy_top_hits) / n,
            "ips_greedy_ctr@1": ips(rewards, p0, p1),
            "snips_greedy_ctr@1": snips(rewards, p0, p1),
            "explored_share": self.explored_slots / max(1, self.slots),
            "events": n,
        }


def bandit_replay(
    dataset: Dataset,
    cfg: EvalConfig,
    epsilon: float = 0.1,
    test: Sequence[Event] | None = None,
    progress: Progress | None = None,
) -> dict[str, float]:
    """Replay the prequential stream through the epsilon-greedy policy (see module doc).

    Rewards are attributed as in the worker: an event on an item of the user's logged
    list is a click on that list (impressions and rewards feed item quality)."""
    train, held = capped(
        *split(dataset.events, replace(cfg, protocol="temporal"), test), cfg.max_events
    )
    k = max(cfg.ks)
    model = EddyRecommender(dataset.items, replace(cfg.engine, online=True))
    model.fit(train)
    seen = items_by_user(train)
    log = BanditLog()
    report = _reporter(progress, f"bandit ε={epsilon}")
    for n, event in enumerate(held, 1):
        history = seen.setdefault(event.user_id, set())
        if event.item_id not in history and (history or not cfg.skip_new_users):
            _replay_round(model, event, history, k, epsilon, log)
        model.observe(event)
        history.add(event.item_id)
        report(n, len(held))
    return log.report(k)


def _replay_round(
    model: EddyRecommender,
    event: Event,
    history: set[str],
    k: int,
    epsilon: float,
    log: BanditLog,
) -> None:
    best = model.rank(event.user_id, 1, exclude=history, epsilon=0.0, record=False)
    logged = model.rank(event.user_id, k, exclude=history, epsilon=epsilon)  # impressions
    if not logged:
        return
    ids = [i.item_id for i in logged]
    log.hits.append(float(event.item_id in ids))
    log.top_rewards.append(float(ids[0] == event.item_id))
    log.top_propensities.append(logged[0].propensity)
    log.greedy_agrees.append(float(bool(best) and best[0].item_id == ids[0]))
    log.greedy_top_hits.append(float(bool(best) and best[0].item_id == event.item_id))
    log.slots += len(logged)
    log.explored_slots += sum(1 for i in logged if i.reason == "exploring")


def summary_rows(
    results: Mapping[str, Mapping[str, float]], keys: Sequence[str]
) -> list[list[str]]:
    """Rows of formatted numbers for a table: one per model, one column per key."""
    rows = []
    for name, metrics in results.items():
        row = [name]
        for key in keys:
            value = metrics.get(key)
            if value is None or math.isnan(value):
                row.append("")
            else:
                row.append(f"{value:,.0f}" if key in COUNTS else f"{value:.4f}")
        rows.append(row)
    return rows
