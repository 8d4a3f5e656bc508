"""The learning core's ranking pipeline: candidates -> blended score -> re-rank -> bandit.

``recommend`` is pure: everything it reads about items comes through an ``ItemView``
(the worker implements it over its live state; ``SimpleItemView`` is an in-memory one),
and all randomness comes from the injected ``EpsilonGreedyRanker``.

Pipeline for one user:

1. **Candidates**: the retriever's top ``n_candidates`` for the user vector (if any),
   the ``n_item_candidates`` best items by item-item score of the user's history (the
   union of the history items' neighbour lists, ``models.signals``), the
   ``n_sequence_candidates`` best by sequential score (the rules of the newest history
   items), the popular items of the user's ``n_categories`` strongest categories, the
   globally trending items, and the items first seen within ``new_item_window_s`` in
   those categories (``ItemView.new_items``).
2. **Filter**: unavailable, purchased and recently interacted items are dropped
   (``models.rerank.filter_candidates``).
3. **Exploit score** (the blend; every term is in [-1, 1] or [0, 1])::

       score = w_item * ii + w_sequence * seq + w_similarity * sim + w_quality * qual
             + w_affinity * aff + w_popularity * pop + w_freshness * fresh

   * ``ii``: the item-item score ``s(j)`` of the user's history (``models.itemitem``,
     recency weights with ``history_half_life`` and ``history_boost``) divided by the
     best positive ``s`` of any item not left out, clipped to [-1, 1] (0 without an
     item-item model).
   * ``seq``: the sequential score ``t(j)`` (``models.transitions``): the share of what
     followed the newest history items (and, at half weight by default, preceded them)
     that was ``j``, weighted by position (0..1.84).
   * ``sim``: cosine of the user vector and the item vector (0 without either),
     times ``content_discount`` when the item's vector comes from the content model
     only (``docs/model-choice.md``: content vectors must not compete equally with CF).
   * ``qual``: ``tanh(ln(q / q0))`` for the ``ItemQuality`` posterior ``q`` and its prior
     mean ``q0``: 0 for an unknown item, positive when it earns more than the prior.
   * ``aff``: the user's share of total category affinity held by the item's
     categories (0..1).
   * ``pop``: the item's normalised popularity, the best of its global score and its
     score within each of its categories (0..1). CF is blended with popularity, not
     replaced by it (same document).
   * ``fresh``: ``1 - age / new_item_window_s`` for an item first seen within the
     window, else 0.
4. **Repeat decay**: ``score *= repeat_factor ** times_shown`` (``shown``).
5. **Diversity**: MMR over the retriever's item vectors, with relevance the decayed
   score divided by the largest magnitude in the pool (so it is on the cosine scale).
   The whole pool is ordered, so exploration can still reach every candidate.
6. **Bandit**: ``EpsilonGreedyRanker.rank(k)`` fills the slots; each ``RecItem`` carries
   the slot's exact propensity and the MMR score the ranker used.

Reasons (product-displayable), first match wins: ``"exploring"`` for a slot the
exploration coin filled; ``"new in <category>"`` for a fresh item in a category the
user likes; ``"because you clicked <title>"`` when the history terms together
(``w_item * ii + w_sequence * seq + w_similarity * sim``) are at least the affinity and
the popularity terms: it names the history item contributing most to the item's
item-item and sequential terms (``models.signals.contributions``; ties: the most
recent), or, when no history item contributes, the recent history item nearest to the
item by vector if ``sim > 0``; ``"popular in <category>"`` for a popular item in a
category the user likes; ``"because you clicked ..."`` for any other item with such a
history item; ``"popular in <category>"`` for any other item in a liked
category; ``"trending"`` otherwise. A brand-new user (no vector, no
affinities) therefore gets the trending list, with reason ``"trending"``.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from models.bandit import Candidate, EpsilonGreedyRanker, EpsilonSchedule
from models.itemitem import ItemItem
from models.popularity import Ranked
from models.profile import UserProfile
from models.quality import ItemQuality
from models.reclist import RecItem
from models.rerank import decay_repeats, filter_candidates, mmr
from models.retrieval import Retriever
from models.signals import Signals, contributions, history_signals, top_contributor
from models.transitions import Transitions

EXPLORING: Final = "exploring"
TRENDING: Final = "trending"
DEFAULT_EPSILON: Final = EpsilonSchedule(0.1)
"""Explore one slot in ten, constant over time."""
DEFAULT_PROTECTED_SLOTS: Final = 2
"""Slots at the top of a list that never explore (``docs/benchmarks.md``)."""


def clicked_reason(title: str) -> str:
    return f"because you clicked {title}"


def popular_reason(category: str) -> str:
    return f"popular in {category}"


def new_reason(category: str) -> str:
    return f"new in {category}"


@dataclass(frozen=True, slots=True)
class RankConfig:
    """How ``recommend`` gathers, scores and re-ranks candidates (see the module doc)."""

    k: int = 20
    n_candidates: int = 100
    """Retrieval top-n for the user vector."""
    n_item_candidates: int = 100
    """Best items by item-item score taken as candidates."""
    n_sequence_candidates: int = 50
    """Best items by sequential score taken as candidates."""
    history_half_life: float = 1.0
    """Recency of the item-item history weights, in history positions (0: flat)."""
    history_boost: float = 3.0
    """Extra weight of the newest history item (``models.itemitem.history_weights``)."""
    w_item: float = 1.0
    w_sequence: float = 25.0
    w_similarity: float = 0.1
    w_quality: float = 0.05
    w_affinity: float = 0.05
    w_popularity: float = 0.05
    w_freshness: float = 0.2
    """Blend weights, chosen on validation splits (``docs/model-choice.md``): the
    item-item and sequential terms carry the ranking; the others break its ties and
    rank users without a history."""
    content_discount: float = 0.5
    """Multiplier on the similarity of items whose vector comes from the content model."""
    new_item_window_s: float = 7 * 86_400.0
    diversity: float = 0.05
    """MMR weight in [0, 1] (0 = by score only)."""
    repeat_factor: float = 1.0
    """Score multiplier per previous show, in (0, 1] (1: no decay; 0.8 cost next-click
    accuracy on YOOCHOOSE validation, ``docs/model-choice.md``)."""
    epsilon: EpsilonSchedule = DEFAULT_EPSILON
    """Exploration schedule for ``make_ranker`` (``recommend`` uses the ranker it is given)."""
    protected_slots: int = DEFAULT_PROTECTED_SLOTS
    """The first slots of every list, which never explore (greedy, propensity 1)."""
    n_categories: int = 3
    """How many of the user's strongest categories feed popular and new candidates."""
    per_category: int = 30
    """Popular items taken from each of those categories."""
    n_trending: int = 30
    """Globally trending items added to every pool."""
    n_new: int = 20
    """New items taken from each of those categories."""
    history_for_reasons: int = 20
    """Recent history items searched for the nearest one named in a reason."""
    session_gap_s: float = 1800.0
    """A user whose newest event is older than this when their list is ranked is between
    sessions: ranked with the artefact's ``rank_blend`` (``WorkerStep``)."""
    artefact_blend: bool = True
    """Use the artefact's ``rank_blend`` for users between sessions (chosen by ``eddy
    train`` from the training data, ``BLEND_KEYS``); False: these weights for everyone."""

    def __post_init__(self) -> None:
        ints = (
            "k",
            "n_candidates",
            "n_item_candidates",
            "n_sequence_candidates",
            "n_categories",
            "per_category",
            "n_trending",
            "n_new",
        )
        problems = [f"{name} >= 0" for name in ints if getattr(self, name) < 0]
        if self.protected_slots < 0:
            problems.append("protected_slots >= 0")
        if self.history_for_reasons < 1:
            problems.append("history_for_reasons >= 1")
        weights = (
            "w_item",
            "w_sequence",
            "w_similarity",
            "w_quality",
            "w_affinity",
            "w_popularity",
            "w_freshness",
            "history_half_life",
            "history_boost",
        )
        for name in weights:
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                problems.append(f"{name} finite and >= 0")
        if not 0.0 <= self.content_discount <= 1.0:
            problems.append("content_discount in [0, 1]")
        if not self.session_gap_s >= 0:
            problems.append("session_gap_s >= 0")
        if not (self.new_item_window_s >= 0 and math.isfinite(self.new_item_window_s)):
            problems.append("new_item_window_s finite and >= 0")
        if not 0.0 <= self.diversity <= 1.0:
            problems.append("diversity in [0, 1]")
        if not 0.0 < self.repeat_factor <= 1.0:
            problems.append("repeat_factor in (0, 1]")
        if problems:
            raise ValueError(f"invalid RankConfig, need: {', '.join(problems)}")


BLEND_KEYS: Final = frozenset({"w_sequence", "history_boost", "w_similarity"})
"""The ``RankConfig`` fields an artefact's ``rank_blend`` may set."""


def with_blend(cfg: RankConfig, blend: Mapping[str, float]) -> RankConfig:
    """``cfg`` with the weights of ``blend`` (an artefact's ``rank_blend``) if
    ``cfg.artefact_blend``, else ``cfg``; raises ``ValueError`` for a key not in
    ``BLEND_KEYS`` or a weight ``RankConfig`` refuses."""
    unknown = sorted(set(blend) - BLEND_KEYS)
    if unknown:
        raise ValueError(f"rank blend keys must be in {sorted(BLEND_KEYS)}, got {unknown}")
    if not cfg.artefact_blend or not blend:
        return cfg
    weights: dict[str, Any] = {k: float(v) for k, v in blend.items()}
    return replace(cfg, **weights)


def make_ranker(cfg: RankConfig, rng: random.Random) -> EpsilonGreedyRanker:
    """The epsilon-greedy ranker ``cfg`` asks for, drawing from ``rng``."""
    return EpsilonGreedyRanker(cfg.epsilon, rng)


class ItemView(Protocol):
    """What the ranker may read about items (the worker implements it)."""

    @property
    def retriever(self) -> Retriever: ...

    def categories(self, item_id: str) -> Sequence[str]: ...

    def title(self, item_id: str) -> str:
        """The display title, or "" if unknown."""
        ...

    def available(self, item_id: str) -> bool: ...

    def first_seen(self, item_id: str) -> float | None:
        """Event time the item was first seen or added (None if unknown)."""
        ...

    def from_content(self, item_id: str) -> bool:
        """True when the item's vector comes from the content model only."""
        ...

    def new_items(self, category: str) -> Sequence[str]:
        """Recently added items of ``category``, newest first (the ranker applies
        ``RankConfig.new_item_window_s`` itself, so a longer list is fine)."""
        ...

    @property
    def quality(self) -> ItemQuality: ...

    @property
    def item_item(self) -> ItemItem | None:
        """The pre-trained item-item model (None: no item-item term)."""
        ...

    @property
    def transitions(self) -> Transitions | None:
        """The sequential rules, learning online (None: no sequential term)."""
        ...

    @property
    def global_top(self) -> Ranked: ...

    @property
    def category_top(self) -> Mapping[str, Ranked]: ...

    def catalog_changes(self, since: int) -> tuple[int, Collection[str] | None]:
        """The catalog version now, and the items whose categories, availability,
        content flag or first-seen time changed after version ``since`` (None: any item
        may have; a ranker caches those per item only while this says what changed)."""
        ...


@dataclass
class SimpleItemView:
    """In-memory ``ItemView`` over plain dicts (tests, and small embedded workers)."""

    retriever: Retriever
    item_categories: Mapping[str, Sequence[str]] = field(default_factory=dict)
    titles: Mapping[str, str] = field(default_factory=dict)
    unavailable: Collection[str] = frozenset()
    first_seen_ts: Mapping[str, float] = field(default_factory=dict)
    content_items: Collection[str] = frozenset()
    quality: ItemQuality = field(default_factory=ItemQuality)
    global_top: Ranked = ()
    category_top: Mapping[str, Ranked] = field(default_factory=dict)
    item_item: ItemItem | None = None
    transitions: Transitions | None = None

    def categories(self, item_id: str) -> Sequence[str]:
        return self.item_categories.get(item_id, ())

    def title(self, item_id: str) -> str:
        return self.titles.get(item_id, "")

    def available(self, item_id: str) -> bool:
        return item_id not in self.unavailable

    def first_seen(self, item_id: str) -> float | None:
        return self.first_seen_ts.get(item_id)

    def from_content(self, item_id: str) -> bool:
        return item_id in self.content_items

    def catalog_changes(self, since: int) -> tuple[int, Collection[str] | None]:
        return 0, None  # plain mutable fields: no change log, so no caching

    def new_items(self, category: str) -> Sequence[str]:
        found = [
            (ts, item_id)
            for item_id, ts in self.first_seen_ts.items()
            if category in self.item_categories.get(item_id, ())
        ]
        return [item_id for _, item_id in sorted(found, key=lambda p: (-p[0], p[1]))]


@dataclass(frozen=True, slots=True)
class _Terms:
    """The blend's inputs for one candidate (unweighted)."""

    ii: float
    seq: float
    sim: float
    qual: float
    aff: float
    pop: float
    fresh: float


def _unit(vec: npt.ArrayLike) -> npt.NDArray[np.float64] | None:
    arr = np.asarray(vec, dtype=np.float64).ravel()
    norm = float(np.linalg.norm(arr))
    if not math.isfinite(norm) or norm == 0.0:
        return None
    return arr / norm


def _user_unit(user_vector: npt.ArrayLike | None, dim: int) -> npt.NDArray[np.float64] | None:
    if user_vector is None:
        return None
    arr = np.asarray(user_vector, dtype=np.float64)
    if arr.ndim != 1 or arr.shape[0] != dim:
        raise ValueError(
            f"user vector must be 1-D of dimension {dim} (the retriever's), got shape {arr.shape}"
        )
    if not np.isfinite(arr).all():
        raise ValueError("user vector contains NaN or infinite values")
    return _unit(arr)


def _liked_category(cats: Sequence[str], shares: Mapping[str, float]) -> str | None:
    """The item's category the user likes most (ties: first listed), or None."""
    best: str | None = None
    for cat in cats:
        if shares.get(cat, 0.0) > 0 and (best is None or shares[cat] > shares[best]):
            best = cat
    return best


def _quality_term(quality: ItemQuality, item_id: str) -> float:
    return math.tanh(math.log(quality.score(item_id) / quality.prior_mean))


def _first(ranked: Ranked, n: int, exclude: set[str]) -> dict[str, None]:
    """The first ``n`` ids of ``ranked`` not in ``exclude``."""
    return dict.fromkeys(itertools.islice((i for i, _ in ranked if i not in exclude), n))


class _Pool:
    """Candidate gathering and scoring state for one ``recommend`` call."""

    def __init__(
        self,
        profile: UserProfile,
        user_unit: npt.NDArray[np.float64] | None,
        items: ItemView,
        now_ts: float,
        cfg: RankConfig,
    ) -> None:
        self.profile = profile
        self.user = user_unit
        self.items = items
        self.now_ts = now_ts
        self.cfg = cfg
        total = sum(w for w in profile.affinities.values() if w > 0)
        self.shares = {c: w / total for c, w in profile.affinities.items() if w > 0 and total > 0}
        self.top_cats = [c for c, w in profile.top_categories(cfg.n_categories) if w > 0]
        self.global_pop = dict(items.global_top)
        self._cat_pop: dict[str, dict[str, float]] = {}
        self.vectors: dict[str, npt.NDArray[np.float64]] = {}
        self.signals = Signals()

    def category_pop(self, cat: str) -> dict[str, float]:
        pop = self._cat_pop.get(cat)
        if pop is None:
            pop = self._cat_pop[cat] = dict(self.items.category_top.get(cat, ()))
        return pop

    def gather(self, exclude: set[str]) -> list[str]:
        """Candidate ids from every source, first-seen order, no repeats."""
        cfg, items = self.cfg, self.items
        ids: dict[str, None] = {}
        if self.user is not None and cfg.n_candidates > 0 and len(items.retriever) > 0:
            hits = items.retriever.search(self.user, cfg.n_candidates, exclude=exclude)
            ids.update((item_id, None) for item_id, _ in hits)
        (self.signals,) = history_signals(
            items.item_item,
            items.transitions,
            [self.profile.recent],
            [exclude],
            cfg.history_half_life,
            cfg.history_boost,
            cfg.n_item_candidates,
            cfg.n_sequence_candidates,
        )
        ids.update(dict.fromkeys(self.signals.ii_top))
        ids.update(dict.fromkeys(self.signals.seq_top))
        for cat in self.top_cats:
            ids.update(_first(items.category_top.get(cat, ()), cfg.per_category, exclude))
        ids.update(_first(items.global_top, cfg.n_trending, exclude))
        for cat in self.top_cats:
            fresh = [(i, 0.0) for i in items.new_items(cat) if self.freshness(i) > 0]
            ids.update(_first(fresh, cfg.n_new, exclude))
        return list(ids)

    def freshness(self, item_id: str) -> float:
        window = self.cfg.new_item_window_s
        seen = self.items.first_seen(item_id)
        if seen is None or window <= 0:
            return 0.0
        age = max(0.0, self.now_ts - seen)
        return max(0.0, 1.0 - age / window)

    def vector(self, item_id: str) -> npt.NDArray[np.float64] | None:
        vec = self.vectors.get(item_id)
        if vec is None:
            raw = self.items.retriever.vector(item_id)
            vec = None if raw is None else _unit(raw)
            if vec is not None:
                self.vectors[item_id] = vec
        return vec

    def terms(self, item_id: str) -> _Terms:
        items, cfg = self.items, self.cfg
        cats = items.categories(item_id)
        sim = 0.0
        vec = self.vector(item_id)
        if self.user is not None and vec is not None:
            sim = float(self.user @ vec)
            if items.from_content(item_id):
                sim *= cfg.content_discount
        aff = min(1.0, sum(self.shares.get(c, 0.0) for c in dict.fromkeys(cats)))
        pop = self.global_pop.get(item_id, 0.0)
        for cat in cats:
            pop = max(pop, self.category_pop(cat).get(item_id, 0.0))
        ii = 0.0
        if items.item_item is not None:
            col = items.item_item.row.get(item_id, -1)
            ii = float(self.signals.item_item_terms(np.array([col], dtype=np.int64))[0])
        return _Terms(
            ii=ii,
            seq=self.signals.sequence_term(item_id),
            sim=sim,
            qual=_quality_term(items.quality, item_id),
            aff=aff,
            pop=min(1.0, max(0.0, pop)),
            fresh=self.freshness(item_id),
        )

    def score(self, t: _Terms) -> float:
        cfg = self.cfg
        return (
            cfg.w_item * t.ii
            + cfg.w_sequence * t.seq
            + cfg.w_similarity * t.sim
            + cfg.w_quality * t.qual
            + cfg.w_affinity * t.aff
            + cfg.w_popularity * t.pop
            + cfg.w_freshness * t.fresh
        )

    def nearest_history(self, item_id: str) -> str | None:
        """The recent history item whose vector is nearest the item's (ties: most recent)."""
        vec = self.vector(item_id)
        if vec is None:
            return None
        best: tuple[float, str] | None = None
        for hist in self.profile.recent[: self.cfg.history_for_reasons]:
            hvec = self.vector(hist)
            if hvec is None:
                continue
            sim = float(vec @ hvec)
            if best is None or sim > best[0]:
                best = (sim, hist)
        return None if best is None else best[1]

    def contributor(self, item_id: str) -> str | None:
        """The history item contributing most to the item's item-item and sequential
        terms (``models.signals.contributions``), or None."""
        cfg, history = self.cfg, self.profile.recent
        shares = contributions(
            self.items.item_item,
            self.items.transitions,
            history,
            [item_id],
            self.signals,
            cfg.history_half_life,
            cfg.history_boost,
            cfg.w_item,
            cfg.w_sequence,
        )[0]
        best = top_contributor(shares)
        return None if best is None else history[best]

    def reason(self, item_id: str, t: _Terms) -> str:
        cfg = self.cfg
        liked = _liked_category(self.items.categories(item_id), self.shares)
        if t.fresh > 0 and liked is not None:
            return new_reason(liked)
        sim_term = cfg.w_similarity * t.sim
        history_term = cfg.w_item * t.ii + cfg.w_sequence * t.seq + sim_term
        hist = self.contributor(item_id)
        if hist is None and sim_term > 0:
            hist = self.nearest_history(item_id)
        clicked = None if hist is None else clicked_reason(self.items.title(hist) or hist)
        if clicked is not None and history_term >= max(
            cfg.w_affinity * t.aff, cfg.w_popularity * t.pop
        ):
            return clicked
        if liked is not None and t.pop > 0:
            return popular_reason(liked)
        return clicked or (TRENDING if liked is None else popular_reason(liked))


def recommend(
    profile: UserProfile,
    user_vector: npt.NDArray[Any] | None,
    items: ItemView,
    shown: Mapping[str, int],
    now_ts: float,
    cfg: RankConfig,
    ranker: EpsilonGreedyRanker,
    t: float,
    exclude: Collection[str] = (),
) -> list[RecItem]:
    """Up to ``cfg.k`` items for ``profile`` at event time ``now_ts``, best first.

    ``user_vector`` is the user's taste vector in the retriever's space (None for no
    vector), ``shown`` how often each item has been shown to the user, ``t`` the bandit
    round. Purchased, recently interacted, unavailable and ``exclude`` items never
    appear. The same inputs and an equally seeded ranker give the same list.
    """
    if not math.isfinite(now_ts):
        raise ValueError(f"now_ts must be finite, got {now_ts!r}")
    user = _user_unit(user_vector, items.retriever.dim)
    pool = _Pool(profile, user, items, now_ts, cfg)
    purchased, recent = set(profile.purchased), set(profile.recent)
    seen = recent | set(exclude)
    ids = pool.gather(purchased | seen)
    unavailable = {i for i in ids if not items.available(i)}
    kept = filter_candidates((Candidate(i, 0.0) for i in ids), purchased, unavailable, seen=seen)
    terms = {c.item_id: pool.terms(c.item_id) for c in kept}
    scored = [Candidate(i, pool.score(t_i)) for i, t_i in terms.items()]
    decayed = decay_repeats(scored, shown, cfg.repeat_factor)
    scale = max((abs(c.score) for c in decayed), default=0.0)
    relevance = [Candidate(c.item_id, c.score / scale if scale > 0 else 0.0) for c in decayed]
    vectors = {c.item_id: v for c in relevance if (v := pool.vector(c.item_id)) is not None}
    ordered = mmr(relevance, vectors, len(relevance), cfg.diversity)
    slots = ranker.rank(ordered, cfg.k, t, cfg.protected_slots)
    return [
        RecItem(
            item_id=s.item_id,
            score=round(s.score, 6),
            reason=EXPLORING if s.explored else pool.reason(s.item_id, terms[s.item_id]),
            propensity=s.propensity,
        )
        for s in slots
    ]
