"""Baseline recommenders behind one ``Recommender`` protocol, for honest comparisons.

* ``RandomRecommender``: uniform over the items seen so far.
* ``PopularityRecommender``: event-weighted counts, optionally time-decayed.
* ``ItemKNNRecommender``: (asymmetric) cosine item-item similarity from the user-item matrix.

More baselines live in their own modules: ``models.ease`` (EASE), ``models.sessionknn``
(V-SKNN) and ``models.sequential_rules`` (SR).

Every model learns from ``fit(events)`` (which replaces all state) and, online, from
``observe(event)``; ``recommend`` returns up to ``k`` distinct *known* items (seen in
``fit`` or ``observe``), none of them in ``exclude``, best first. Ties go to the
smallest ``item_id``. None of them raises for an unknown user.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Collection, Mapping, Sequence
from typing import Final, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
from scipy import sparse

from models.events import Event, EventType
from models.popularity import half_life_seconds
from models.profile import DEFAULT_EVENT_WEIGHTS, event_weight

_RESCALE_AT: Final = 512.0
"""Half-lives past the reference time after which decayed scores are rescaled."""


@runtime_checkable
class Recommender(Protocol):
    """A model that can be fitted, updated online and asked for a top-k list."""

    name: str

    def fit(self, events: Sequence[Event]) -> None:
        """Replace all state with a model of ``events``."""
        ...

    def observe(self, event: Event) -> None:
        """Online update with one more event (prequential); may be a no-op."""
        ...

    def recommend(self, user_id: str, k: int, exclude: Collection[str] = ()) -> list[str]:
        """Up to ``k`` distinct known items for ``user_id``, none in ``exclude``, best first."""
        ...


def _check_k(k: int) -> None:
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")


class RandomRecommender:
    """Uniformly random distinct items among those seen so far, from a seeded RNG.

    The same seed, events and calls give the same lists; ``fit`` re-seeds. The user is
    ignored, so an unknown user is served like any other.
    """

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._rng = random.Random(seed)
        self._items: list[str] = []
        self._known: set[str] = set()

    def fit(self, events: Sequence[Event]) -> None:
        self._rng = random.Random(self.seed)
        self._items = []
        self._known = set()
        for event in events:
            self.observe(event)

    def observe(self, event: Event) -> None:
        if event.item_id not in self._known:
            self._known.add(event.item_id)
            self._items.append(event.item_id)

    def recommend(self, user_id: str, k: int, exclude: Collection[str] = ()) -> list[str]:
        _check_k(k)
        banned = exclude if isinstance(exclude, set | frozenset) else set(exclude)
        n_banned = sum(1 for item in banned if item in self._known)
        available = len(self._items) - n_banned
        want = min(k, available)
        if want <= 0:
            return []
        if 2 * (n_banned + want) > len(self._items):
            # Dense case: sample from the explicit list of allowed items.
            allowed = [item for item in self._items if item not in banned]
            return self._rng.sample(allowed, want)
        # Sparse case: rejection sampling, O(k) expected draws instead of O(items).
        chosen: dict[str, None] = {}
        while len(chosen) < want:
            item = self._items[self._rng.randrange(len(self._items))]
            if item not in banned:
                chosen.setdefault(item)
        return list(chosen)


class PopularityRecommender:
    """The most popular items: sum of event weights, optionally decayed by a half-life.

    An event of type ``t`` and quantity ``q`` weighs ``event_weights[t] * min(q, 10)``.
    With ``half_life_days`` set, an event's weight halves every half-life, and items are
    ranked as ``models.popularity.top`` ranks their ``bump``-ed entries at the newest
    event time: internally each score is kept as ``sum w * 2 ** ((ts - t0) / h)`` for a
    reference time ``t0``, a common positive multiple of the decayed score. The ranking is
    kept sorted: ``observe`` moves one item by binary search, ``recommend`` reads the head.
    The user is ignored: every user, known or not, gets the same list.
    """

    def __init__(
        self,
        half_life_days: float | None = None,
        event_weights: Mapping[EventType, float] = DEFAULT_EVENT_WEIGHTS,
    ) -> None:
        self.half_life_s = None if half_life_days is None else half_life_seconds(half_life_days)
        self.event_weights = dict(event_weights)
        self.name = "popularity" if half_life_days is None else f"popularity-hl{half_life_days:g}d"
        self._scores: dict[str, float] = {}
        self._order: list[str] = []
        self._t0: float | None = None

    def fit(self, events: Sequence[Event]) -> None:
        self._scores = {}
        self._t0 = None
        for event in events:
            weight = self._weight(event)
            self._scores[event.item_id] = self._scores.get(event.item_id, 0.0) + weight
        self._order = sorted(self._scores, key=self._key)

    def observe(self, event: Event) -> None:
        item = event.item_id
        weight = self._weight(event)  # may rescale every score (the order is unchanged)
        old = self._scores.get(item)
        if old is not None:
            del self._order[bisect.bisect_left(self._order, (-old, item), key=self._key)]
        self._scores[item] = (old or 0.0) + weight
        bisect.insort(self._order, item, key=self._key)

    def scores(self) -> dict[str, float]:
        """Each item's score relative to the best (1.0), as ``models.popularity.top``."""
        best = max(self._scores.values(), default=0.0)
        if best <= 0.0:
            return {item: 0.0 for item in self._scores}
        return {item: score / best for item, score in self._scores.items()}

    def recommend(self, user_id: str, k: int, exclude: Collection[str] = ()) -> list[str]:
        _check_k(k)
        out: list[str] = []
        if k == 0:
            return out
        for item in self._order:
            if item not in exclude:
                out.append(item)
                if len(out) == k:
                    break
        return out

    def _weight(self, event: Event) -> float:
        """The event's weight in score units (scaled by ``2 ** ((ts - t0) / h)`` if decayed)."""
        weight = event_weight(event, self.event_weights)
        if self.half_life_s is None:
            return weight
        if self._t0 is None:
            self._t0 = event.ts
        exponent = (event.ts - self._t0) / self.half_life_s
        if exponent > _RESCALE_AT:
            # Move the reference time forward before the multipliers overflow. Scores that
            # underflow to 0 tie and re-sort by item_id: they were negligible anyway.
            shrink = math.exp2(-exponent)
            self._scores = {i: s * shrink for i, s in self._scores.items()}
            self._order = sorted(self._scores, key=self._key)
            self._t0, exponent = event.ts, 0.0
        return weight * math.exp2(max(exponent, -1074.0))

    def _key(self, item: str) -> tuple[float, str]:
        return (-self._scores[item], item)


FloatArray = npt.NDArray[np.float64]


class ItemKNNRecommender:
    """Item-based collaborative filtering (Sarwar et al., WWW 2001) with the usual knobs.

    ``fit`` builds the binary user-item matrix ``X`` (1 where the user had any event with
    the item); ``c_i`` is the number of users of item ``i`` and ``c_ij`` of both ``i`` and
    ``j``. The similarity of a candidate ``j`` to a history item ``i`` is the shrunk
    asymmetric cosine (Aiolli, "Efficient top-N recommendation for very large scale binary
    rated datasets", RecSys 2013):

        sim(i, j) = c_ij / (c_i ** alpha * c_j ** (1 - alpha) + shrink)

    ``alpha = 0.5`` is the cosine ``X_i . X_j / (||X_i|| ||X_j|| + shrink)``; ``alpha = 1``
    is the conditional probability ``P(j | i)`` (shrunk). For each item ``i`` only its
    ``k_neighbours`` most similar items ``j != i`` with ``sim > 0`` are kept. A user's score
    for item ``j`` is ``sum over i in history(u) of w(i) * sim(i, j)``; ``w = 1`` unless
    ``history_half_life`` is set, when the ``p``-th most recent distinct history item
    (``p = 0`` the newest, in the order of each item's latest event) weighs
    ``2 ** (-p / history_half_life)`` (recency weighting for sessions).

    ``observe`` appends the event's item to the user's history and counts it for the
    popularity fallback; it does not recompute similarities, so an item first seen after
    ``fit`` is never scored by similarity. Slots that similarity cannot fill (unknown
    user, no similar items left) are filled with the most popular items (undecayed
    ``PopularityRecommender``) unless ``fill_with_popular=False``.

    The defaults (``k_neighbours``, ``shrink``, ``alpha``) were chosen on a MovieLens
    validation split carved from a training part (``models.tuning``, ``docs/baselines.md``).
    """

    def __init__(
        self,
        k_neighbours: int = 200,
        shrink: float = 200.0,
        alpha: float = 0.3,
        history_half_life: float | None = None,
        fill_with_popular: bool = True,
        block_bytes: int = 32 << 20,
    ) -> None:
        if k_neighbours < 1:
            raise ValueError(f"k_neighbours must be >= 1, got {k_neighbours}")
        if not (shrink >= 0.0 and math.isfinite(shrink)):
            raise ValueError(f"shrink must be finite and >= 0, got {shrink}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if history_half_life is not None and not (
            history_half_life > 0.0 and math.isfinite(history_half_life)
        ):
            raise ValueError(f"history_half_life must be > 0, got {history_half_life}")
        self.name = f"itemknn-k{k_neighbours}"
        self.k_neighbours = k_neighbours
        self.shrink = float(shrink)
        self.alpha = float(alpha)
        self.history_half_life = history_half_life
        self.fill_with_popular = fill_with_popular
        self.block_bytes = block_bytes
        self._popular = PopularityRecommender()
        self._item_ids: list[str] = []
        self._index: dict[str, int] = {}
        self._similarity: sparse.csr_matrix = sparse.csr_matrix((0, 0))
        self._history: dict[str, dict[int, None]] = {}

    def fit(self, events: Sequence[Event]) -> None:
        self._popular.fit(events)
        self._item_ids = sorted({e.item_id for e in events})
        self._index = {item: i for i, item in enumerate(self._item_ids)}
        self._history = {}
        for event in events:
            self._remember(event.user_id, self._index[event.item_id])
        self._similarity = self._fit_similarity()

    def observe(self, event: Event) -> None:
        self._popular.observe(event)
        row = self._index.get(event.item_id)
        if row is not None:
            self._remember(event.user_id, row)

    def _remember(self, user_id: str, row: int) -> None:
        history = self._history.setdefault(user_id, {})
        if self.history_half_life is not None:
            history.pop(row, None)  # keep the history in the order of each item's latest event
        history[row] = None

    def neighbours(self, item_id: str) -> list[tuple[str, float]]:
        """``item_id``'s kept neighbours with their similarity, most similar first."""
        row = self._index.get(item_id)
        if row is None:
            return []
        start, end = self._similarity.indptr[row], self._similarity.indptr[row + 1]
        cols = self._similarity.indices[start:end]
        sims = self._similarity.data[start:end]
        pairs = [(self._item_ids[c], float(s)) for c, s in zip(cols, sims, strict=True)]
        return sorted(pairs, key=lambda p: (-p[1], p[0]))

    def recommend(self, user_id: str, k: int, exclude: Collection[str] = ()) -> list[str]:
        _check_k(k)
        out: list[str] = []
        history = self._history.get(user_id)
        if k > 0 and history:
            out = self._by_similarity(list(history), k, exclude)
        if self.fill_with_popular and len(out) < k:
            out += fill_popular(self._popular, user_id, k - len(out), out, exclude)
        return out

    def _by_similarity(self, rows: list[int], k: int, exclude: Collection[str]) -> list[str]:
        sub = self._similarity[rows]
        weights = sub.data
        if self.history_half_life is not None:
            # rows are oldest first: the newest weighs 1, the p-th newest 2 ** (-p / h)
            age = np.arange(len(rows) - 1, -1, -1, dtype=np.float64)
            per_row = np.exp2(-age / self.history_half_life)
            weights = weights * np.repeat(per_row, np.diff(sub.indptr))
        scores: FloatArray = np.bincount(
            sub.indices, weights=weights, minlength=len(self._item_ids)
        ).astype(np.float64)
        for item in exclude:
            col = self._index.get(item)
            if col is not None:
                scores[col] = 0.0
        order = top_k_indices(scores, k, np.flatnonzero(scores > 0.0))
        return [self._item_ids[c] for c in order]

    def _fit_similarity(self) -> sparse.csr_matrix:
        n_items = len(self._item_ids)
        users = list(self._history)
        if n_items == 0 or not users:
            return sparse.csr_matrix((n_items, n_items), dtype=np.float64)
        x = binary_matrix([list(self._history[user]) for user in users], n_items)
        xt = x.T.tocsr()
        counts_per_item = np.asarray(x.sum(axis=0), dtype=np.float64).ravel()  # c_i
        row_norm = counts_per_item**self.alpha
        col_norm = counts_per_item ** (1.0 - self.alpha)
        keep = min(self.k_neighbours, n_items - 1)  # < n_items: argpartition needs kth < n
        if keep <= 0:
            return sparse.csr_matrix((n_items, n_items), dtype=np.float64)
        block = max(1, self.block_bytes // (8 * n_items))
        data: list[FloatArray] = []
        indices: list[npt.NDArray[np.int64]] = []
        counts = np.zeros(n_items, dtype=np.int64)
        for start in range(0, n_items, block):
            stop = min(n_items, start + block)
            sims = (xt[start:stop] @ x).toarray()
            sims /= np.outer(row_norm[start:stop], col_norm) + (self.shrink + 1e-12)
            sims[np.arange(stop - start), np.arange(start, stop)] = 0.0
            top = np.argpartition(-sims, keep - 1, axis=1)[:, :keep]
            for r in range(stop - start):
                vals = sims[r, top[r]]
                positive = vals > 0.0
                counts[start + r] = int(positive.sum())
                indices.append(top[r][positive].astype(np.int64))
                data.append(vals[positive])
        indptr = np.concatenate(([0], np.cumsum(counts)))
        matrix = sparse.csr_matrix(
            (np.concatenate(data), np.concatenate(indices), indptr), shape=(n_items, n_items)
        )
        matrix.sort_indices()
        return matrix


def binary_matrix(rows: Sequence[Sequence[int]], n_cols: int) -> sparse.csr_matrix:
    """A CSR matrix with a 1.0 at ``(r, c)`` for every column ``c`` listed in ``rows[r]``.

    Each row's columns must be distinct.
    """
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    row_ids = np.repeat(np.arange(len(rows), dtype=np.int64), lengths)
    col_ids = np.fromiter((c for r in rows for c in r), dtype=np.int64, count=int(lengths.sum()))
    return sparse.csr_matrix(
        (np.ones(len(col_ids), dtype=np.float64), (row_ids, col_ids)), shape=(len(rows), n_cols)
    )


def top_k_indices(scores: FloatArray, k: int, candidates: npt.NDArray[np.intp]) -> list[int]:
    """The ``k`` best ``candidates`` (indices into ``scores``), best first.

    Ties go to the smaller index (models keep items in ``item_id`` order, so that is the
    smaller ``item_id``).
    """
    if k <= 0 or len(candidates) == 0:
        return []
    candidates = np.sort(candidates)
    if len(candidates) > k:
        # Keep every candidate tied with the k-th best, then order exactly.
        kth = np.partition(scores[candidates], len(candidates) - k)[len(candidates) - k]
        candidates = candidates[scores[candidates] >= kth]
    order = candidates[np.argsort(-scores[candidates], kind="stable")][:k]
    return [int(c) for c in order]


def fill_popular(
    popular: PopularityRecommender,
    user_id: str,
    k: int,
    taken: Collection[str],
    exclude: Collection[str],
) -> list[str]:
    """Up to ``k`` popular items that are neither ``taken`` nor in ``exclude``."""
    if k <= 0:
        return []
    if not taken:
        return popular.recommend(user_id, k, exclude)
    banned = set(taken).union(exclude)
    return popular.recommend(user_id, k, banned)
