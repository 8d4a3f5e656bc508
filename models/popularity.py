"""Time-decayed item popularity, global and per category.

Each item's popularity is a pair ``(score, anchor_ts)``: the decayed sum of event weights
as of the event time ``anchor_ts``. Pairs are self-contained, so they can be stored per
item in a table and compared at any common time ``ts``.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Collection, Iterable, Mapping, Sequence

from models.profile import decay_factor

Entry = tuple[float, float]
"""(decayed score as of anchor_ts, anchor_ts)."""

Ranked = Sequence[tuple[str, float]]
"""(item_id, normalised score in (0, 1]) pairs, best first."""


def bump(
    entry: Entry | Sequence[float] | None, weight: float, ts: float, half_life_s: float
) -> Entry:
    """The entry after an event of ``weight`` at event time ``ts`` (order-independent)."""
    if entry is None:
        return (weight, ts)
    score, anchor = float(entry[0]), float(entry[1])
    if ts >= anchor:
        return (score * decay_factor(ts - anchor, half_life_s) + weight, ts)
    return (score + weight * decay_factor(anchor - ts, half_life_s), anchor)


def score_at(entry: Entry | Sequence[float], ts: float, half_life_s: float) -> float:
    """The entry's score decayed to time ``ts`` (no growth for ``ts`` before the anchor)."""
    return float(entry[0]) * decay_factor(ts - float(entry[1]), half_life_s)


def _best_first(pair: tuple[float, str]) -> tuple[float, str]:
    """Sort key: highest score first, ties by ascending item id."""
    return (-pair[0], pair[1])


def _normalise(best: list[tuple[float, str]]) -> list[tuple[str, float]]:
    if not best or best[0][0] <= 0:
        return []
    norm = best[0][0]
    return [(item_id, score / norm) for score, item_id in best]


def top(
    entries: Mapping[str, Entry | Sequence[float]],
    ts: float,
    half_life_s: float,
    k: int,
    exclude: Collection[str] = (),
) -> list[tuple[str, float]]:
    """The ``k`` most popular items at time ``ts``, best first, scores relative to the best."""
    scored: Iterable[tuple[float, str]] = (
        (score_at(e, ts, half_life_s), i) for i, e in entries.items() if i not in exclude
    )
    return _normalise(heapq.nsmallest(k, scored, key=_best_first))


def top_by_category(
    entries: Mapping[str, Entry | Sequence[float]],
    item_categories: Mapping[str, Collection[str]],
    ts: float,
    half_life_s: float,
    k: int,
) -> dict[str, list[tuple[str, float]]]:
    """Top ``k`` items of each category at time ``ts``; items absent from ``item_categories``
    are left out."""
    heaps: dict[str, list[tuple[float, str]]] = {}
    for item_id, entry in entries.items():
        cats = item_categories.get(item_id)
        if not cats:
            continue
        key = (score_at(entry, ts, half_life_s), item_id)
        for cat in cats:
            heap = heaps.setdefault(cat, [])
            if len(heap) < k:
                heapq.heappush(heap, key)
            elif key > heap[0]:
                heapq.heapreplace(heap, key)
    return {cat: _normalise(sorted(heap, key=_best_first)) for cat, heap in heaps.items()}


def merged(
    prior: Mapping[str, Entry | Sequence[float]],
    online: Mapping[str, Entry | Sequence[float]],
    ts: float,
    half_life_s: float,
) -> Mapping[str, Entry | Sequence[float]]:
    """Pre-trained popularity plus what was learned online, both decayed to ``ts``."""
    if not prior:
        return online
    out = {i: score_at(e, ts, half_life_s) for i, e in prior.items()}
    for item_id, entry in online.items():
        out[item_id] = out.get(item_id, 0.0) + score_at(entry, ts, half_life_s)
    return {i: (score, ts) for i, score in out.items()}


def newest_anchor(entries: Mapping[str, Entry | Sequence[float]]) -> float | None:
    """The latest anchor time among entries (the popularity clock), or None if empty."""
    return max((float(e[1]) for e in entries.values()), default=None)


def half_life_seconds(days: float) -> float:
    """Half-life in seconds from days, validated positive."""
    if not (days > 0 and math.isfinite(days)):
        raise ValueError("half-life must be a positive number of days")
    return days * 86_400.0
