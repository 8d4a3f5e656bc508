"""Evaluation protocols: how events are split and how a ``Recommender`` is scored.

Pure functions over ``Sequence[Event]``. Splits return ``(train, test)`` lists ordered
by ``(ts, user_id, item_id)`` like ``models.datasets.split_by_time``.

* ``evaluate_holdout``: fit on ``train``, recommend to every test user, score the lists
  against the user's test items (``models.metrics``).
* ``evaluate_prequential``: test-then-train over the time-ordered stream, the way the
  online system meets events: each event is first predicted, then learned from.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from typing import Literal

from models.baselines import Recommender
from models.datasets import split_by_time
from models.events import Event
from models.metrics import MetricAccumulator, catalog_coverage, intra_list_diversity, novelty
from models.recall import pool_recall

Split = tuple[list[Event], list[Event]]
Pools = Callable[[str, Collection[str]], Collection[str]]
"""``pools(user_id, exclude)``: the candidate pool a model would rank for the user."""


def time_key(event: Event) -> tuple[float, str, str]:
    return (event.ts, event.user_id, event.item_id)


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, not {value}")


def _n_test(n: int, fraction: float) -> int:
    """``min(n - 1, floor(n * fraction + 0.5))``: rounded half up, one event kept back."""
    return max(0, min(n - 1, math.floor(n * fraction + 0.5)))


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    out = tuple(sorted(set(ks)))
    if not out or out[0] < 1:
        raise ValueError(f"ks must be one or more cut-offs >= 1, got {list(ks)}")
    return out


def holdout_split(
    events: Sequence[Event], *, ratio: float, seed: int, by: Literal["user", "item"] = "user"
) -> Split:
    """Random split, stratified by user (or by item).

    Each user's (or item's) ``n`` events are shuffled by ``random.Random(seed)``
    (groups in sorted id order, events in time order before shuffling, so the result
    does not depend on the input order) and ``min(n - 1, floor(n * ratio + 0.5))`` of
    them go to test: every group keeps at least one training event, so none is cold.
    """
    _check_fraction("ratio", ratio)
    if by not in ("user", "item"):
        raise ValueError(f"by must be 'user' or 'item', not {by!r}")
    groups: dict[str, list[Event]] = defaultdict(list)
    for event in sorted(events, key=time_key):
        groups[event.user_id if by == "user" else event.item_id].append(event)
    rng = random.Random(seed)
    train: list[Event] = []
    test: list[Event] = []
    for key in sorted(groups):
        group = groups[key]
        held = set(rng.sample(range(len(group)), _n_test(len(group), ratio)))
        for i, event in enumerate(group):
            (test if i in held else train).append(event)
    return sorted(train, key=time_key), sorted(test, key=time_key)


def temporal_split(events: Sequence[Event], *, fraction: float, per_user: bool = False) -> Split:
    """The most recent events form the test list.

    Global (``per_user=False``): the last ``round(n * fraction)`` events overall, as
    ``models.datasets.split_by_time``; test users may have no training events. Per user:
    each user's last ``min(n - 1, floor(n * fraction + 0.5))`` events, so every user
    keeps at least one training event.
    """
    _check_fraction("fraction", fraction)
    if not per_user:
        return split_by_time(events, fraction)
    by_user: dict[str, list[Event]] = defaultdict(list)
    for event in sorted(events, key=time_key):
        by_user[event.user_id].append(event)
    train: list[Event] = []
    test: list[Event] = []
    for user_events in by_user.values():
        cut = len(user_events) - _n_test(len(user_events), fraction)
        train += user_events[:cut]
        test += user_events[cut:]
    return sorted(train, key=time_key), sorted(test, key=time_key)


def items_by_user(events: Sequence[Event]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for event in events:
        out[event.user_id].add(event.item_id)
    return dict(out)


def evaluate_holdout(
    model: Recommender,
    train: Sequence[Event],
    test: Sequence[Event],
    ks: Sequence[int] = (10, 20),
    catalog: Collection[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    similarity: Callable[[str, str], float] | None = None,
    pools: Pools | None = None,
) -> dict[str, float]:
    """Fit ``model`` on ``train`` and score its top-``max(ks)`` list for every test user.

    Each test user (sorted by id) gets ``model.recommend(user, max(ks), exclude=<the
    user's train items>)``; every item of the user's test events is relevant (an item
    the user also had in train is relevant but excluded, so it counts as a miss). Users
    without training events are scored too (the model's unknown-user behaviour).

    Returns the ``MetricAccumulator`` means (``"hr@10"``, ``"precision@10"``,
    ``"recall@10"``, ``"ndcg@10"``, ``"map@10"``, ``"mrr@10"``, ... for each k), and for
    each k ``"coverage@k"`` (share of ``catalog`` in any top-k list; the catalogue
    defaults to the items of ``train`` and ``test``) and ``"novelty@k"`` (mean
    self-information in bits, popularity = distinct train users per item), plus
    ``"users"`` (test users scored) and ``"cold_users"`` (of them, without train events).
    With ``similarity`` (of two items, in [0, 1]) it adds ``"diversity@k"``, the mean
    intra-list diversity. ``progress(done, total)`` is called after each test user.
    With ``pools`` (the model's candidate pool for a user and their exclusions) it adds
    ``"pool_recall"``: the share of the test items in their user's pool
    (``models.recall.pool_recall``, micro), what retrieval lets the ranker reach.
    """
    cutoffs = _check_ks(ks)
    model.fit(train)
    seen = items_by_user(train)
    relevant = items_by_user(test)
    accumulator = MetricAccumulator(ks=cutoffs)
    lists: list[list[str]] = []
    found: list[Collection[str]] = []
    targets: list[Collection[str]] = []
    cold = 0
    for n, user in enumerate(sorted(relevant), 1):
        exclude = seen.get(user, set())
        cold += not exclude
        recommended = model.recommend(user, cutoffs[-1], exclude=exclude)
        accumulator.add(recommended, relevant[user])
        lists.append(recommended)
        if pools is not None:
            found.append(set(pools(user, exclude)))
            targets.append(relevant[user])
        if progress is not None:
            progress(n, len(relevant))
    result = accumulator.result()
    items = set(catalog) if catalog is not None else {e.item_id for e in (*train, *test)}
    item_users: dict[str, set[str]] = defaultdict(set)
    for event in train:
        item_users[event.item_id].add(event.user_id)
    popularity = {item: len(users) for item, users in item_users.items()}
    train_users = len(seen)
    for k in cutoffs:
        tops = [[i for i in rec[:k] if i in items] for rec in lists]
        result[f"coverage@{k}"] = catalog_coverage(tops, len(items)) if items else 0.0
        result[f"novelty@{k}"] = (
            novelty([rec[:k] for rec in lists], popularity, train_users) if train_users else 0.0
        )
        if similarity is not None:
            ild = [intra_list_diversity(rec[:k], similarity) for rec in lists if len(rec) > 1]
            result[f"diversity@{k}"] = sum(ild) / len(ild) if ild else 0.0
    result["cold_users"] = cold
    if pools is not None:
        result["pool_recall"] = pool_recall(found, targets)
    return result


def evaluate_prequential(
    model: Recommender,
    events: Sequence[Event],
    ks: Sequence[int] = (10,),
    warmup: int = 0,
    progress: Callable[[int], None] | None = None,
    *,
    exclude_seen: bool = True,
    score_new_users: bool = True,
    pools: Pools | None = None,
) -> dict[str, float]:
    """Test-then-train: predict each event from what came before it, then learn from it.

    Events are taken in ``(ts, user_id, item_id)`` order. ``model.fit`` is called on the
    first ``warmup`` events (on none if ``warmup == 0``, which resets the model); each
    later event is then scored before ``model.observe(event)``: the model's top-
    ``max(ks)`` list for the event's user must contain the event's item, the single
    relevant item, giving HR@k, MRR@k and NDCG@k (= ``1 / log2(rank + 1)`` on a hit).

    With ``exclude_seen`` (the default) the list excludes the items the user already
    had (warmup included), and an event on such an item is not scored (it could only
    miss); it is counted in ``"repeats"`` and still observed. ``progress``, if given,
    is called with the number of events processed so far, after the warmup fit and
    after every later event. Without ``score_new_users`` a user's first event is not
    scored (next-click protocols: nothing to predict it from); it is counted in
    ``"first_events"`` and still observed.

    Returns ``{"hr@k", "mrr@k", "ndcg@k" for each k, "events": scored events,
    "users": distinct users scored, "warmup": warmup, "repeats": ...}``, and with
    ``pools`` ``"pool_recall"``: the share of scored events whose item was in the
    user's candidate pool at that moment (``models.recall.pool_recall``).
    """
    cutoffs = _check_ks(ks)
    if not 0 <= warmup <= len(events):
        raise ValueError(f"warmup must be between 0 and {len(events)} events, got {warmup}")
    ordered = sorted(events, key=time_key)
    model.fit(ordered[:warmup])
    seen: dict[str, set[str]] = defaultdict(set)
    if exclude_seen:
        for event in ordered[:warmup]:
            seen[event.user_id].add(event.item_id)
    if progress is not None:
        progress(warmup)
    accumulator = MetricAccumulator(ks=cutoffs, metrics=("hr", "mrr", "ndcg"))
    users: set[str] = set()
    found: list[Collection[str]] = []
    targets: list[Collection[str]] = []
    repeats = first = 0
    known: set[str] = {e.user_id for e in ordered[:warmup]}
    empty: frozenset[str] = frozenset()
    for n, event in enumerate(ordered[warmup:], start=warmup + 1):
        history = seen.get(event.user_id, empty)
        if exclude_seen and event.item_id in history:
            repeats += 1
        elif not score_new_users and event.user_id not in known:
            first += 1
        else:
            recommended = model.recommend(event.user_id, cutoffs[-1], exclude=history)
            accumulator.add(recommended, (event.item_id,))
            if pools is not None:
                found.append(set(pools(event.user_id, history)))
                targets.append((event.item_id,))
            users.add(event.user_id)
        model.observe(event)
        known.add(event.user_id)
        if exclude_seen:
            seen[event.user_id].add(event.item_id)
        if progress is not None:
            progress(n)
    result = accumulator.result()
    result["events"] = result.pop("users")
    result["users"] = len(users)
    result["warmup"] = warmup
    result["repeats"] = repeats
    result["first_events"] = first
    if pools is not None:
        result["pool_recall"] = pool_recall(found, targets)
    return result
