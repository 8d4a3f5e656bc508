"""Re-ranking steps between candidate retrieval and the bandit.

A typical order: ``filter_candidates`` (drop what must never be shown), ``decay_repeats``
(items shown often lose score), then ``mmr`` (diversify), then the epsilon-greedy
ranker of ``models.bandit``.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from models.bandit import Candidate

Similarity = Mapping[str, npt.NDArray[Any]] | Callable[[str, str], float]
"""Item vectors (compared by cosine; a missing or zero vector is similar to nothing,
i.e. similarity 0), or a function ``sim(item_a, item_b)``."""


def _similarity_rows(
    pool: Sequence[Candidate], similarity: Similarity
) -> Callable[[int], npt.NDArray[np.float64]]:
    """A function: index in ``pool`` -> similarities of every pool item to that item."""
    if callable(similarity):
        sim = similarity
        return lambda j: np.array([sim(c.item_id, pool[j].item_id) for c in pool], dtype=np.float64)
    rows = [similarity.get(c.item_id) for c in pool]
    dims = {np.shape(r) for r in rows if r is not None}
    if len(dims) > 1:
        raise ValueError(f"item vectors differ in shape: {sorted(dims)}")
    dim = dims.pop() if dims else (1,)
    matrix = np.stack([np.zeros(dim) if r is None else np.asarray(r, np.float64) for r in rows])
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit = np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)
    return lambda j: unit @ unit[j]


def mmr(
    candidates: Iterable[Candidate], similarity: Similarity, k: int, diversity: float
) -> list[Candidate]:
    """Maximal Marginal Relevance: pick ``min(k, n)`` candidates one at a time.

    Each pick maximises ``(1 - diversity) * relevance - diversity * max_sim``, where
    relevance is the candidate's score and ``max_sim`` its greatest similarity to the
    items already picked, floored at 0 (redundancy is penalised, opposition is not
    rewarded). Ties go to the smaller ``item_id``. ``diversity = 0`` sorts by relevance.

    The picks are returned in order with ``score`` set to that marginal value, which
    never increases along the list, so a greedy ranker keeps the MMR order.
    Relevance should be on the same scale as similarity (e.g. both in [0, 1]).
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if not 0.0 <= diversity <= 1.0:
        raise ValueError(f"diversity must be in [0, 1], got {diversity!r}")
    pool = sorted(candidates, key=lambda c: c.item_id)
    if len({c.item_id for c in pool}) != len(pool):
        raise ValueError("candidates must have unique item ids")
    n_picks = min(k, len(pool))
    if n_picks == 0:
        return []
    sims_to = _similarity_rows(pool, similarity)
    relevance = (1.0 - diversity) * np.array([c.score for c in pool], dtype=np.float64)
    max_sim = np.zeros(len(pool))
    taken = np.zeros(len(pool), dtype=bool)
    picks: list[Candidate] = []
    for step in range(n_picks):
        marginal = np.where(taken, -np.inf, relevance - diversity * max_sim)
        j = int(np.argmax(marginal))
        picks.append(dataclasses.replace(pool[j], score=float(marginal[j])))
        taken[j] = True
        if step + 1 < n_picks:
            sims = sims_to(j)
            if not np.all(np.isfinite(sims)):
                raise ValueError(f"non-finite similarity to item {pool[j].item_id!r}")
            max_sim = np.maximum(max_sim, sims)
    return picks


def repeat_decay(score: float, times_shown: int, factor: float) -> float:
    """``score`` lowered by the fraction ``1 - factor ** times_shown`` of its magnitude.

    For non-negative scores this is ``score * factor ** times_shown``; a negative score
    moves further below zero, so showing an item again never raises its score.
    """
    if not 0.0 < factor <= 1.0:
        raise ValueError(f"factor must be in (0, 1], got {factor!r}")
    if times_shown < 0:
        raise ValueError(f"times_shown must be >= 0, got {times_shown}")
    keep = factor**times_shown
    return score * keep if score >= 0 else score * (2.0 - keep)


class ShownCounter(Mapping[str, int]):
    """One user's bounded impression memory: item -> times shown.

    Beyond ``max_items`` the item shown least recently is forgotten.
    """

    def __init__(self, max_items: int = 200, counts: Mapping[str, int] | None = None) -> None:
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        self.max_items = max_items
        self._counts: OrderedDict[str, int] = OrderedDict()
        for item_id, times in (counts or {}).items():
            if times < 0:
                raise ValueError(f"times shown must be >= 0, got {times} for {item_id!r}")
            self._put(str(item_id), int(times))

    def _put(self, item_id: str, times: int) -> None:
        self._counts.pop(item_id, None)
        self._counts[item_id] = times
        while len(self._counts) > self.max_items:
            self._counts.popitem(last=False)

    def record(self, item_ids: Iterable[str]) -> None:
        """One more show of each distinct item in ``item_ids`` (e.g. a published list)."""
        for item_id in dict.fromkeys(item_ids):
            self._put(item_id, self._counts.get(item_id, 0) + 1)

    def __getitem__(self, item_id: str) -> int:
        return self._counts[item_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._counts)

    def __len__(self) -> int:
        return len(self._counts)

    def to_dict(self) -> dict[str, int]:
        """JSON-ready counts, least recently shown first (``ShownCounter(n, d)`` restores)."""
        return dict(self._counts)


def decay_repeats(
    candidates: Iterable[Candidate], shown: Mapping[str, int], factor: float
) -> list[Candidate]:
    """Candidates with scores lowered by ``repeat_decay`` for their times shown."""
    return [
        dataclasses.replace(c, score=repeat_decay(c.score, shown.get(c.item_id, 0), factor))
        for c in candidates
    ]


def filter_candidates(
    candidates: Iterable[Candidate],
    purchased: Collection[str],
    unavailable: Collection[str],
    seen: Collection[str] = (),
) -> list[Candidate]:
    """Drop purchased, unavailable and ``seen`` items, and duplicate ids.

    A duplicated item keeps its highest score, at its first position; order is kept.
    """
    excluded = [purchased, unavailable, seen]
    best: dict[str, Candidate] = {}
    for c in candidates:
        if any(c.item_id in group for group in excluded):
            continue
        kept = best.get(c.item_id)
        if kept is None or c.score > kept.score:
            best[c.item_id] = c
    return list(best.values())
