"""SR: sequential rules between items clicked one after another in a session.

Ludewig & Jannach, "Evaluation of session-based recommendation algorithms", User Modeling
and User-Adapted Interaction 28 (2018), section 3.1 (after Kamehkhosh, Jannach & Ludewig,
"A comparison of frequent pattern techniques and a deep learning method for session-based
recommendation", TempRec workshop at RecSys 2017). Every time item ``q`` is clicked ``g``
clicks after item ``p`` in a session (``1 <= g <= steps``), the rule ``p -> q`` gains
``1 / g``:

    w(p, q) = sum over sessions s, positions x of q, y of p with 0 < x - y <= steps
              of 1 / (x - y).

The next click of a session whose latest click is ``p`` is predicted by the rules
``p -> q``, strongest first; only the ``pruning`` strongest rules of each ``p`` are kept.
This is the session-rec library's ``SequentialRules`` with ``weighting="div"``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from models.baselines import PopularityRecommender, _check_k, fill_popular
from models.events import Event


class SequentialRulesRecommender:
    """SR (see the module docstring) behind the ``Recommender`` protocol.

    A session is a ``user_id``'s time-ordered events. ``fit`` learns the rules of every
    user's events; ``observe`` appends the event to its user's session and, with
    ``online`` (the default), learns the rules it completes. Pruning is applied when
    recommending (the ``pruning`` strongest rules of the latest click, ties by
    ``item_id``; ``pruning=0`` keeps all), so learning online and in batch agree. Users
    without a session, and slots the rules do not fill, get the most popular items
    (undecayed ``PopularityRecommender``).

    The defaults were chosen on YOOCHOOSE ``train_tr`` / ``train_valid`` (``models.tuning``,
    ``docs/baselines.md``).
    """

    def __init__(self, steps: int = 3, pruning: int = 0, online: bool = True) -> None:
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if pruning < 0:
            raise ValueError(f"pruning must be >= 0, got {pruning}")
        self.name = "sr"
        self.steps = steps
        self.pruning = pruning
        self.online = online
        self._popular = PopularityRecommender()
        self._rules: dict[str, dict[str, float]] = {}
        self._recent: dict[str, list[str]] = {}

    def fit(self, events: Sequence[Event]) -> None:
        self._popular.fit(events)
        self._rules = {}
        self._recent = {}
        for event in events:
            self._learn(event, True)

    def observe(self, event: Event) -> None:
        self._popular.observe(event)
        self._learn(event, self.online)

    def rules(self, item_id: str) -> list[tuple[str, float]]:
        """The kept rules ``item_id -> q`` with their weights, strongest first."""
        ranked = sorted(self._rules.get(item_id, {}).items(), key=lambda r: (-r[1], r[0]))
        return ranked[: self.pruning] if self.pruning else ranked

    def recommend(self, user_id: str, k: int, exclude: Collection[str] = ()) -> list[str]:
        _check_k(k)
        out: list[str] = []
        recent = self._recent.get(user_id)
        if k > 0 and recent:
            out = [q for q, _ in self.rules(recent[-1]) if q not in exclude][:k]
        if len(out) < k:
            out += fill_popular(self._popular, user_id, k - len(out), out, exclude)
        return out

    def _learn(self, event: Event, learn: bool) -> None:
        recent = self._recent.setdefault(event.user_id, [])
        if learn:
            for gap, previous in enumerate(reversed(recent), 1):
                targets = self._rules.setdefault(previous, {})
                targets[event.item_id] = targets.get(event.item_id, 0.0) + 1.0 / gap
        recent.append(event.item_id)
        if len(recent) > self.steps:
            del recent[0]
