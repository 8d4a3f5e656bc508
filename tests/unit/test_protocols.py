"""Splits and evaluation protocols on tiny fixtures whose results are worked out by hand."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Collection, Sequence

import pytest

from models.baselines import PopularityRecommender, Recommender
from models.datasets import split_by_time
from models.events import Event
from models.protocols import (
    evaluate_holdout,
    evaluate_prequential,
    holdout_split,
    temporal_split,
)

T0 = 1_700_000_000.0
LOG3 = math.log2(3)


def ev(user: str, item: str, ts: float) -> Event:
    return Event(type="click", user_id=user, item_id=item, ts=T0 + ts)


def key(e: Event) -> tuple[float, str, str]:
    return (e.ts, e.user_id, e.item_id)


# u1: 10 events, u2: 5, u3: 2, u4: 1
EVENTS = (
    [ev("u1", f"i{n}", n) for n in range(10)]
    + [ev("u2", f"i{n}", 20 + n) for n in range(5)]
    + [ev("u3", f"i{n}", 40 + n) for n in range(2)]
    + [ev("u4", "i0", 50)]
)


class Spy:
    """A recommender that records the calls made to it and serves a fixed ranking."""

    name = "spy"

    def __init__(self, ranking: Sequence[str]) -> None:
        self.ranking = list(ranking)
        self.calls: list[tuple[str, object]] = []

    def fit(self, events: Sequence[Event]) -> None:
        self.calls.append(("fit", len(events)))

    def observe(self, event: Event) -> None:
        self.calls.append(("observe", event.item_id))

    def recommend(self, user_id: str, k: int, exclude: Collection[str] = ()) -> list[str]:
        self.calls.append(("recommend", (user_id, sorted(exclude))))
        return [i for i in self.ranking if i not in exclude][:k]


def test_spy_is_a_recommender() -> None:
    assert isinstance(Spy([]), Recommender)


# --- splits ---------------------------------------------------------------------------------


def test_holdout_split_by_user() -> None:
    train, test = holdout_split(EVENTS, ratio=0.2, seed=1, by="user")
    held = Counter(e.user_id for e in test)
    # min(n - 1, floor(n * 0.2 + 0.5)): u1 10 -> 2, u2 5 -> 1, u3 2 -> 0, u4 1 -> 0
    assert held == {"u1": 2, "u2": 1}
    assert sorted(train + test, key=key) == sorted(EVENTS, key=key)
    assert train == sorted(train, key=key)
    assert test == sorted(test, key=key)


def test_holdout_split_keeps_a_training_event_per_group() -> None:
    train, test = holdout_split(EVENTS, ratio=1.0, seed=1, by="user")
    assert Counter(e.user_id for e in train) == {"u1": 1, "u2": 1, "u3": 1, "u4": 1}
    assert len(test) == len(EVENTS) - 4


def test_holdout_split_by_item() -> None:
    # i0 has 4 events (u1..u4) -> floor(4 * 0.5 + 0.5) = 2 held; i1: 3 -> 2; i2..i4: 2 -> 1;
    # i5..i9: 1 -> 0
    train, test = holdout_split(EVENTS, ratio=0.5, seed=7, by="item")
    held = Counter(e.item_id for e in test)
    assert held == {"i0": 2, "i1": 2, "i2": 1, "i3": 1, "i4": 1}
    assert {e.item_id for e in train} == {f"i{n}" for n in range(10)}


def test_holdout_split_is_seeded_and_order_independent() -> None:
    shuffled = list(EVENTS)
    random.Random(0).shuffle(shuffled)
    first = holdout_split(EVENTS, ratio=0.3, seed=5)
    assert holdout_split(shuffled, ratio=0.3, seed=5) == first
    assert any(holdout_split(EVENTS, ratio=0.3, seed=s) != first for s in range(6, 10))


def test_split_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="ratio"):
        holdout_split(EVENTS, ratio=1.5, seed=0)
    with pytest.raises(ValueError, match="by must be"):
        holdout_split(EVENTS, ratio=0.5, seed=0, by="session")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fraction"):
        temporal_split(EVENTS, fraction=-0.1)


def test_temporal_split_global_is_split_by_time() -> None:
    train, test = temporal_split(EVENTS, fraction=0.25)
    assert (train, test) == split_by_time(EVENTS, 0.25)
    # round(18 * 0.25) = 4 (banker's 4.5 -> 4): the newest events, u3's two, u4's, u2's last
    assert [(e.user_id, e.item_id) for e in test] == [
        ("u2", "i4"),
        ("u3", "i0"),
        ("u3", "i1"),
        ("u4", "i0"),
    ]


def test_temporal_split_per_user() -> None:
    train, test = temporal_split(EVENTS, fraction=0.5, per_user=True)
    # u1: floor(10 * 0.5 + 0.5) = 5 -> i5..i9; u2: floor(3.0) = 3 -> i2..i4;
    # u3: min(1, floor(1.5)) = 1 -> i1; u4: min(0, 1) = 0
    held = {(e.user_id, e.item_id) for e in test}
    assert held == {("u1", f"i{n}") for n in range(5, 10)} | {
        ("u2", "i2"),
        ("u2", "i3"),
        ("u2", "i4"),
        ("u3", "i1"),
    }
    assert {e.user_id for e in train} == {"u1", "u2", "u3", "u4"}
    assert all(
        max(t.ts for t in train if t.user_id == e.user_id) <= e.ts for e in test
    )  # each user's test events come after their train events


# --- holdout evaluation -----------------------------------------------------------------------

# train: u1 a, b; u2 a, c; u3 a.  Popularity: a (3) > b (1) = c (1), tie by id -> [a, b, c].
HOLDOUT_TRAIN = [
    ev("u1", "a", 1),
    ev("u1", "b", 2),
    ev("u2", "a", 3),
    ev("u2", "c", 4),
    ev("u3", "a", 5),
]
# test: u1 c; u2 b, d; u4 (no training events) d.
HOLDOUT_TEST = [ev("u1", "c", 10), ev("u2", "b", 11), ev("u2", "d", 12), ev("u4", "d", 13)]


def test_evaluate_holdout_by_hand() -> None:
    # ks = (1, 2); each user's list excludes their train items:
    #   u1: [a, b, c] - {a, b} = [c]     relevant {c}     hit at 1
    #   u2: [a, b, c] - {a, c} = [b]     relevant {b, d}  hit at 1
    #   u4: [a, b]                       relevant {d}     miss
    # hr@k = 2/3; precision@1 = 2/3, precision@2 = (1/2 + 1/2 + 0) / 3 = 1/3
    # recall@k = (1 + 1/2 + 0) / 3 = 1/2; mrr@k = 2/3
    # ndcg@1 = 2/3; ndcg@2 = (1 + 1 / (1 + 1/log2 3) + 0) / 3   (u2: IDCG over 2 positions)
    # map@1 = (1 + 1/min(1, 2)) / 3 = 2/3; map@2 = (1 + 1/min(2, 2) + 0) / 3 = 1/2
    # coverage (catalogue {a, b, c, d}): top-1 {c, b, a}, top-2 {c, b, a} -> 3/4
    # novelty: 3 train users; a seen by 3 -> 0 bits, b and c by 1 -> log2 3 bits
    #   @1: [c], [b], [a] -> (log2 3 + log2 3 + 0) / 3
    #   @2: [c], [b], [a, b] -> (log2 3 + log2 3 + log2(3) / 2) / 3
    result = evaluate_holdout(PopularityRecommender(), HOLDOUT_TRAIN, HOLDOUT_TEST, ks=(1, 2))
    expected = {
        "hr@1": 2 / 3,
        "hr@2": 2 / 3,
        "precision@1": 2 / 3,
        "precision@2": 1 / 3,
        "recall@1": 1 / 2,
        "recall@2": 1 / 2,
        "ndcg@1": 2 / 3,
        "ndcg@2": (1 + 1 / (1 + 1 / LOG3)) / 3,
        "map@1": 2 / 3,
        "map@2": 1 / 2,
        "mrr@1": 2 / 3,
        "mrr@2": 2 / 3,
        "coverage@1": 3 / 4,
        "coverage@2": 3 / 4,
        "novelty@1": 2 * LOG3 / 3,
        "novelty@2": 2.5 * LOG3 / 3,
        "users": 3,
        "cold_users": 1,
    }
    assert result == pytest.approx(expected)


def test_evaluate_holdout_catalogue_and_calls() -> None:
    spy = Spy(["d", "a", "x"])
    catalog = {"a", "b", "c", "d", "e", "f", "g", "h"}
    result = evaluate_holdout(spy, HOLDOUT_TRAIN, HOLDOUT_TEST, ks=(2,), catalog=catalog)
    # fitted once on the training events, then one top-2 request per test user, sorted,
    # excluding that user's training items
    assert spy.calls == [
        ("fit", 5),
        ("recommend", ("u1", ["a", "b"])),
        ("recommend", ("u2", ["a", "c"])),
        ("recommend", ("u4", [])),
    ]
    # lists: u1 [d, x], u2 [d, x], u4 [d, a]; x is outside the catalogue: {a, d} / 8
    assert result["coverage@2"] == pytest.approx(2 / 8)
    # u1: miss; u2: d at 1 of {b, d}; u4: d at 1 -> hr@2 = 2/3
    assert result["hr@2"] == pytest.approx(2 / 3)


def test_evaluate_holdout_checks_ks() -> None:
    with pytest.raises(ValueError, match="ks"):
        evaluate_holdout(Spy([]), HOLDOUT_TRAIN, HOLDOUT_TEST, ks=(0,))


# --- prequential evaluation -----------------------------------------------------------------

STREAM = [
    ev("u1", "a", 1),
    ev("u2", "a", 2),
    ev("u2", "b", 3),
    ev("u1", "b", 4),
    ev("u3", "b", 5),
    ev("u3", "c", 6),
]


def test_evaluate_prequential_by_hand() -> None:
    # Popularity learns online; each user's seen items are excluded.
    #   e1 u1 a: nothing known yet -> []                        miss
    #   e2 u2 a: [a]                                            hit at 1
    #   e3 u2 b: [a] - {a} = []                                 miss
    #   e4 u1 b: a 2, b 1 -> [a, b] - {a} = [b]                 hit at 1
    #   e5 u3 b: a 2, b 2 -> [a, b] (tie by id)                 hit at 2
    #   e6 u3 c: a 2, b 3 -> [b, a] - {b} = [a]                 miss (c unseen)
    # HR@1 = 2/6, HR@2 = 3/6, MRR@2 = (1 + 1 + 1/2) / 6, NDCG@2 = (1 + 1 + 1/log2 3) / 6
    result = evaluate_prequential(PopularityRecommender(), STREAM, ks=(1, 2))
    assert result == pytest.approx(
        {
            "hr@1": 2 / 6,
            "hr@2": 3 / 6,
            "mrr@1": 2 / 6,
            "mrr@2": 2.5 / 6,
            "ndcg@1": 2 / 6,
            "ndcg@2": (2 + 1 / LOG3) / 6,
            "events": 6,
            "users": 3,
            "warmup": 0,
            "repeats": 0,
            "first_events": 0,
        }
    )


def test_evaluate_prequential_order_warmup_and_progress() -> None:
    shuffled = list(reversed(STREAM))
    spy = Spy(["b", "a"])
    ticks: list[int] = []
    result = evaluate_prequential(spy, shuffled, ks=(1,), warmup=2, progress=ticks.append)
    # time order restored; the first two events fit the model, then each later event is
    # predicted (excluding the user's earlier items) before it is observed.
    assert spy.calls == [
        ("fit", 2),
        ("recommend", ("u2", ["a"])),
        ("observe", "b"),
        ("recommend", ("u1", ["a"])),
        ("observe", "b"),
        ("recommend", ("u3", [])),
        ("observe", "b"),
        ("recommend", ("u3", ["b"])),
        ("observe", "c"),
    ]
    assert ticks == [2, 3, 4, 5, 6]
    # e3 u2 b: [b] hit; e4 u1 b: [b] hit; e5 u3 b: [b] hit; e6 u3 c: [a] miss
    assert result["hr@1"] == pytest.approx(3 / 4)
    assert result["events"] == 4
    assert result["warmup"] == 2


def test_evaluate_prequential_repeats() -> None:
    stream = [*STREAM, ev("u1", "a", 7)]  # u1 had a before
    excluded = evaluate_prequential(Spy(["a", "b", "c"]), stream, ks=(1,))
    assert excluded["repeats"] == 1
    assert excluded["events"] == 6
    kept = evaluate_prequential(Spy(["a", "b", "c"]), stream, ks=(1,), exclude_seen=False)
    # nothing excluded: the list is always [a]; a-events e1, e2 and the repeat hit -> 3/7
    assert kept["repeats"] == 0
    assert kept["events"] == 7
    assert kept["hr@1"] == pytest.approx(3 / 7)


def test_evaluate_prequential_checks_warmup() -> None:
    with pytest.raises(ValueError, match="warmup"):
        evaluate_prequential(Spy([]), STREAM, warmup=7)


def test_evaluate_prequential_can_skip_each_users_first_event() -> None:
    # Next-click: u1, u2 and u3 each start with an event nothing could predict.
    spy = Spy(["b", "a", "c"])
    result = evaluate_prequential(spy, STREAM, ks=(1,), score_new_users=False)
    assert result["first_events"] == 3
    assert result["events"] == 3
    assert [c for c in spy.calls if c[0] == "recommend"] == [
        ("recommend", ("u2", ["a"])),
        ("recommend", ("u1", ["a"])),
        ("recommend", ("u3", ["b"])),
    ]
    # e3 u2 b: [b] hit; e4 u1 b: [b] hit; e6 u3 c: [a] miss
    assert result["hr@1"] == pytest.approx(2 / 3)


def test_evaluate_holdout_reports_diversity_and_progress() -> None:
    train = [ev("u1", "a", 0), ev("u2", "a", 1)]
    test = [ev("u1", "b", 2), ev("u2", "c", 3)]
    same = {frozenset({"b", "c"}): 1.0}  # b and c are identical, d differs from both

    def similarity(x: str, y: str) -> float:
        return same.get(frozenset({x, y}), 0.0)

    ticks: list[tuple[int, int]] = []
    result = evaluate_holdout(
        Spy(["b", "c", "d"]),
        train,
        test,
        ks=(2, 3),
        progress=lambda done, total: ticks.append((done, total)),
        similarity=similarity,
    )
    assert ticks == [(1, 2), (2, 2)]
    # top-2 [b, c]: one pair, similarity 1 -> ILD 0; top-3 [b, c, d]: (0 + 1 + 1) / 3
    assert result["diversity@2"] == pytest.approx(0.0)
    assert result["diversity@3"] == pytest.approx(2 / 3)
