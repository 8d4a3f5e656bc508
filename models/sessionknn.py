"""V-SKNN: session-based nearest neighbours with a position-decayed session vector.

Ludewig & Jannach, "Evaluation of session-based recommendation algorithms", User Modeling
and User-Adapted Interaction 28 (2018), section 3.2 (first proposed in Jannach & Ludewig,
"When recurrent neural networks meet the neighborhood for session-based recommendation",
RecSys 2017). For the current session ``s`` with ``n`` clicks, the item clicked at
position ``p`` (1-based; an item clicked again takes its latest position) weighs
``w_s(i) = p / n`` (linear decay, the newest click weighs 1). A past session ``t`` is a
binary vector, and

    sim(s, t) = sum over i in s and t of w_s(i) / |distinct items of s|.

The candidates are the past sessions sharing an item with ``s``; of them only the
``sample_size`` most recent (by their latest event) are considered, and of those the
``k_neighbours`` most similar form the neighbourhood ``N(s)``. An item's score is the sum
of similarities of the neighbours that contain it:

    score(i) = sum over t in N(s) of sim(s, t) * 1[i in t].

This is the session-rec library's ``VMContextKNN`` with ``weighting="div"``,
``weighting_score="same"``, ``similarity="vec"`` and ``sampling="recent"``.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Sequence

from models.baselines import PopularityRecommender, _check_k, fill_popular
from models.events import Event


class VSKNNRecommender:
    """V-SKNN (see the module docstring) behind the ``Recommender`` protocol.

    A session is a ``user_id``'s time-ordered events (session data uses the session as
    the user; on MovieLens a session is a user's whole history). ``fit`` makes every
    user's events one past session. ``observe`` appends the event to its user's current
    session and, with ``extend`` (the default), adds it to that user's past session too,
    so sessions seen online become neighbours of later ones (test-then-train). A session
    is never its own neighbour. Users with no known session, and slots the neighbours do
    not fill, get the most popular items (undecayed ``PopularityRecommender``). Ties go
    to the more recent session, then the session seen first; items tie by ``item_id``.

    The defaults were chosen on YOOCHOOSE ``train_tr`` / ``train_valid`` (``models.tuning``,
    ``docs/baselines.md``).
    """

    def __init__(
        self,
        k_neighbours: int = 100,
        sample_size: int = 1000,
        extend: bool = True,
    ) -> None:
        if k_neighbours < 1:
            raise ValueError(f"k_neighbours must be >= 1, got {k_neighbours}")
        if sample_size < 1:
            raise ValueError(f"sample_size must be >= 1, got {sample_size}")
        self.name = "vsknn"
        self.k_neighbours = k_neighbours
        self.sample_size = sample_size
        self.extend = extend
        self._popular = PopularityRecommender()
        self._clicks: dict[str, list[str]] = {}
        self._session_of: dict[str, int] = {}
        self._items: list[set[str]] = []
        self._time: list[float] = []
        self._sessions_of_item: dict[str, set[int]] = {}

    def fit(self, events: Sequence[Event]) -> None:
        self._popular.fit(events)
        self._clicks = {}
        self._session_of = {}
        self._items = []
        self._time = []
        self._sessions_of_item = {}
        for event in events:
            self._clicks.setdefault(event.user_id, []).append(event.item_id)
            self._add_to_past(event)

    def observe(self, event: Event) -> None:
        self._popular.observe(event)
        self._clicks.setdefault(event.user_id, []).append(event.item_id)
        if self.extend:
            self._add_to_past(event)

    def neighbours(self, user_id: str) -> list[tuple[str, float]]:
        """The neighbourhood of ``user_id``'s current session: ``(user_id, sim)``, best first."""
        users = {sid: user for user, sid in self._session_of.items()}
        return [(users[sid], sim) for sid, sim in self._neighbours(user_id)]

    def recommend(self, user_id: str, k: int, exclude: Collection[str] = ()) -> list[str]:
        _check_k(k)
        out: list[str] = []
        if k > 0:
            scores: dict[str, float] = {}
            for sid, sim in self._neighbours(user_id):
                for item in self._items[sid]:
                    scores[item] = scores.get(item, 0.0) + sim
            ranked = [(-s, item) for item, s in scores.items() if item not in exclude]
            out = [item for _, item in heapq.nsmallest(k, ranked)]
        if len(out) < k:
            out += fill_popular(self._popular, user_id, k - len(out), out, exclude)
        return out

    def _add_to_past(self, event: Event) -> None:
        sid = self._session_of.get(event.user_id)
        if sid is None:
            sid = self._session_of[event.user_id] = len(self._items)
            self._items.append(set())
            self._time.append(event.ts)
        self._items[sid].add(event.item_id)
        self._time[sid] = max(self._time[sid], event.ts)
        self._sessions_of_item.setdefault(event.item_id, set()).add(sid)

    def _neighbours(self, user_id: str) -> list[tuple[int, float]]:
        clicks = self._clicks.get(user_id)
        if not clicks:
            return []
        n = len(clicks)
        weight = {item: p / n for p, item in enumerate(clicks, 1)}  # latest position wins
        own = self._session_of.get(user_id)
        candidates: set[int] = set()
        for item in weight:
            candidates |= self._sessions_of_item.get(item, set())
        candidates.discard(own if own is not None else -1)
        if len(candidates) > self.sample_size:
            candidates = set(
                heapq.nsmallest(self.sample_size, candidates, key=lambda t: (-self._time[t], t))
            )
        sims: dict[int, float] = {}
        for item, w in weight.items():
            for sid in self._sessions_of_item.get(item, ()):
                if sid in candidates:
                    sims[sid] = sims.get(sid, 0.0) + w
        distinct = len(weight)
        best = heapq.nsmallest(
            self.k_neighbours, sims.items(), key=lambda p: (-p[1], -self._time[p[0]], p[0])
        )
        return [(sid, sim / distinct) for sid, sim in best]
