"""Time-decayed item popularity, global and per category.

Each item's popularity is a pair ``(score, anchor_ts)``: the decayed sum of event weights
as of the event time ``anchor_ts``. Pairs are self-contained, so they can be stored per
item in a table and compared at any common time ``ts``.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Collection, Iterable, Mapping, Sequence

import numpy as np

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


# --- the worker's incremental index ----------------------------------------------------
_LN2 = math.log(2.0)


def log_mass(weight: float, ts: float, half_life_s: float) -> float:
    """An event's popularity in the time-free log domain: ``ln(weight) + ts * ln2 / hl``.

    Every item decays at the same rate, so ``score_at(ts) = exp(L - ts * ln2 / hl)`` for
    an item whose events sum to ``exp(L)`` there: comparing items never needs the clock,
    and events combine by ``numpy.logaddexp`` in any order (on any worker)."""
    if not weight > 0:
        raise ValueError(f"weight must be > 0, got {weight!r}")
    return math.log(weight) + ts * _LN2 / half_life_s


def entry_log_mass(entry: Entry | Sequence[float], half_life_s: float) -> float:
    """An ``Entry`` (score, anchor) in the log domain (``-inf`` for a zero score)."""
    score, anchor = float(entry[0]), float(entry[1])
    return math.log(score) + anchor * _LN2 / half_life_s if score > 0 else -math.inf


class _TopK:
    """The ``k`` largest keys of a set of items whose keys only ever grow.

    An item outside the top can enter only through its own growth, so each update costs
    O(log k), never a scan of all items (``remove`` asks the owner for a rebuild)."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.members: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    def offer(self, item_id: str, key: float) -> bool:
        """Record ``item_id``'s new key; True if the top changed."""
        members, heap = self.members, self._heap
        if item_id in members or len(members) < self.k:
            members[item_id] = key
            heapq.heappush(heap, (key, item_id))
        else:
            self._clean()
            if (key, item_id) <= heap[0] and heap[0][1] != item_id:
                return False
            _, out = heapq.heappop(heap)
            del members[out]
            members[item_id] = key
            heapq.heappush(heap, (key, item_id))
        if len(heap) > 4 * self.k + 16:
            self._heap = [(v, i) for i, v in members.items()]
            heapq.heapify(self._heap)
        return True

    def _clean(self) -> None:
        heap, members = self._heap, self.members
        while heap and members.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)

    def ranked(self) -> list[tuple[str, float]]:
        """Members best first (ties: item id ascending), scores relative to the best."""
        members = self.members
        if not members:
            return []
        # by id, then stably by key, best first (``reverse`` keeps equal keys in order)
        order = sorted(sorted(members), key=members.__getitem__, reverse=True)
        keys = np.fromiter(map(members.__getitem__, order), np.float64, len(order))
        return list(zip(order, map(math.exp, (keys - keys[0]).tolist()), strict=True))


class PopularityIndex:
    """Global and per-category popularity of every item, kept up to date incrementally.

    Each item's mass is the log-sum-exp of the pre-trained prior and the online mass
    learned from events (``log_mass``); ``global_top`` and ``category_top`` are the
    ``k`` most popular available items overall and per category, relative to the best
    one. Refreshing costs time in proportion to the items that changed, not to the
    catalogue: masses only grow, so an item enters a top list only by its own growth.
    """

    def __init__(self, half_life_s: float, k: int) -> None:
        self.half_life_s = half_life_s
        self.k = k
        self._prior: dict[str, float] = {}
        self._online: dict[str, float] = {}
        self._local: dict[str, float] = {}
        """Item -> this worker's own events not yet in its owner's total (provisional)."""
        self._mass: dict[str, float] = {}
        self._categories: dict[str, tuple[str, ...]] = {}
        self._unavailable: set[str] = set()
        self._global = _TopK(k)
        self._by_category: dict[str, _TopK] = {}
        self._dirty: set[str | None] = set()
        """Top lists to re-sort (None: the global one)."""
        self._stale: set[str | None] = set()
        """Top lists to rebuild from every item (an item in them became unavailable)."""
        self._global_ranked: list[tuple[str, float]] = []
        self._category_ranked: dict[str, list[tuple[str, float]]] = {}

    # --- inputs ------------------------------------------------------------------------
    def set_prior(self, prior: Mapping[str, Entry | Sequence[float]]) -> None:
        """The pre-trained popularity (``ModelArtefact.popularity``)."""
        for item_id, entry in prior.items():
            self._prior[item_id] = entry_log_mass(entry, self.half_life_s)
            self._update(item_id)

    def set_categories(self, item_id: str, categories: Sequence[str], available: bool) -> None:
        """An item's categories and availability (catalog or artefact)."""
        cats = tuple(dict.fromkeys(categories))
        old = self._categories.get(item_id, ())
        was_available = item_id not in self._unavailable
        self._categories[item_id] = cats
        if available:
            self._unavailable.discard(item_id)
        else:
            self._unavailable.add(item_id)
        if was_available and (not available or set(old) - set(cats)):
            self._stale.add(None)
            self._stale.update(old)
        if item_id in self._mass:
            self._update(item_id, force=True)

    def set_online(self, item_id: str, mass: float) -> None:
        """The online log mass of ``item_id`` (absolute: its owner's running total, which
        supersedes this worker's provisional ``add_local`` mass)."""
        if mass <= self._online.get(item_id, -math.inf):
            return
        self._online[item_id] = mass
        if mass >= self._local.get(item_id, math.inf):
            del self._local[item_id]
        self._update(item_id)

    def add_local(self, item_id: str, mass: float) -> None:
        """Count this worker's own new events at once, until the owner's total for the
        item catches up (so a user's own click moves the lists it is ranked against).

        The provisional total is the online total plus ``mass``; an item's online mass is
        the larger of the two, so nothing is counted twice and no mass ever shrinks."""
        base = max(self._online.get(item_id, -math.inf), self._local.get(item_id, -math.inf))
        self._local[item_id] = float(np.logaddexp(base, mass))
        self._update(item_id)

    def online(self, item_id: str) -> float | None:
        """The owner's online log mass of ``item_id`` (None: no event yet)."""
        return self._online.get(item_id)

    def add_event(self, item_id: str, weight: float, ts: float) -> float:
        """Add an event to the online mass of ``item_id`` (on its owner); the new mass."""
        old = self._online.get(item_id, -math.inf)
        mass = float(np.logaddexp(old, log_mass(weight, ts, self.half_life_s)))
        self.set_online(item_id, mass)
        return mass

    def _update(self, item_id: str, force: bool = False) -> None:
        online = max(self._online.get(item_id, -math.inf), self._local.get(item_id, -math.inf))
        mass = float(np.logaddexp(self._prior.get(item_id, -math.inf), online))
        if self._mass.get(item_id) == mass and not force:
            return
        self._mass[item_id] = mass
        if item_id in self._unavailable:
            return
        if self._global.offer(item_id, mass):
            self._dirty.add(None)
        for cat in self._categories.get(item_id, ()):
            top = self._by_category.get(cat)
            if top is None:
                top = self._by_category[cat] = _TopK(self.k)
            if top.offer(item_id, mass):
                self._dirty.add(cat)

    # --- outputs -----------------------------------------------------------------------
    def refresh(self) -> set[str | None]:
        """Re-sort the top lists that changed; return them (None: the global list)."""
        if self._stale:
            self._rebuild(self._stale)
        changed, self._dirty = self._dirty, set()
        for name in changed:
            if name is None:
                self._global_ranked = self._global.ranked()
            else:
                self._category_ranked[name] = self._by_category[name].ranked()
        return changed

    def _rebuild(self, names: set[str | None]) -> None:
        stale, self._stale = names, set()
        for name in stale:
            fresh = _TopK(self.k)
            if name is None:
                self._global = fresh
            else:
                self._by_category[name] = fresh
            self._dirty.add(name)
        for item_id, mass in self._mass.items():
            if item_id in self._unavailable:
                continue
            if None in stale:
                self._global.offer(item_id, mass)
            for cat in self._categories.get(item_id, ()):
                if cat in stale:
                    self._by_category[cat].offer(item_id, mass)

    @property
    def global_top(self) -> Ranked:
        """The most popular available items, as of the last ``refresh``."""
        return self._global_ranked

    @property
    def category_top(self) -> Mapping[str, Ranked]:
        """Category -> its most popular available items, as of the last ``refresh``."""
        return self._category_ranked

    def __len__(self) -> int:
        return len(self._mass)
