"""V-SKNN and sequential rules on sessions small enough to score by hand."""

from __future__ import annotations

import random

import pytest

from models.events import Event, EventType
from models.sequential_rules import SequentialRulesRecommender
from models.sessionknn import VSKNNRecommender

T0 = 1_700_000_000.0


def ev(session: str, item: str, ts: float) -> Event:
    return Event(
        type=EventType.CLICK, user_id=session, item_id=item, ts=T0 + ts, session_id=session
    )


def sessions(*clicks: tuple[str, str], start: float = 0.0) -> list[Event]:
    return [ev(s, item, start + n) for n, (s, item) in enumerate(clicks)]


# s1 {a, b} (oldest), s2 {c, f}, s3 {d, e} (newest)
PAST = sessions(("s1", "a"), ("s1", "b"), ("s2", "c"), ("s2", "f"), ("s3", "d"), ("s3", "e"))


def test_vsknn_recommends_the_co_session_item() -> None:
    model = VSKNNRecommender()
    model.fit(PAST)
    model.observe(ev("x", "a", 100))
    # x's only neighbour is s1 (it shares a): sim = 1 / 1; b is s1's other item
    assert model.neighbours("x") == [("s1", 1.0)]
    assert model.recommend("x", 1, exclude={"a"}) == ["b"]


@pytest.mark.parametrize(
    ("clicks", "expected"),
    [
        # c then a: w(c) = 1/2, w(a) = 2/2; sim(s1) = 1 / 2, sim(s2) = (1/2) / 2
        (["c", "a"], [("s1", 0.5), ("s2", 0.25)]),
        (["a", "c"], [("s2", 0.5), ("s1", 0.25)]),
        # a clicked again takes its latest position: a, c, a -> w(c) = 2/3, w(a) = 3/3
        (["a", "c", "a"], [("s1", 0.5), ("s2", 1 / 3)]),
    ],
)
def test_vsknn_linear_position_decay(clicks: list[str], expected: list[tuple[str, float]]) -> None:
    model = VSKNNRecommender()
    model.fit(PAST)
    for n, item in enumerate(clicks):
        model.observe(ev("x", item, 100 + n))
    got = model.neighbours("x")
    assert [s for s, _ in got] == [s for s, _ in expected]
    assert [v for _, v in got] == pytest.approx([v for _, v in expected])
    # score(item) = sum of the similarities of the neighbours holding it
    assert model.recommend("x", 2, exclude={"a", "c"}) == [
        {"s1": "b", "s2": "f"}[s] for s, _ in expected
    ]


def test_vsknn_sums_similarities_over_neighbours() -> None:
    # t1 {a, z}, t2 {a, y}, t3 {a, y}: y is in two neighbours (2 x 1), z in one
    model = VSKNNRecommender()
    model.fit(
        sessions(("t1", "a"), ("t1", "z"), ("t2", "a"), ("t2", "y"), ("t3", "a"), ("t3", "y"))
    )
    model.observe(ev("x", "a", 100))
    assert model.recommend("x", 2, exclude={"a"}) == ["y", "z"]


def test_vsknn_samples_the_most_recent_sessions() -> None:
    events = sessions(("t1", "a"), ("t1", "y"), ("t2", "a"), ("t2", "y"), ("t3", "a"), ("t3", "z"))
    # all three share a; only the most recent one (t3) is sampled
    model = VSKNNRecommender(sample_size=1)
    model.fit(events)
    model.observe(ev("x", "a", 100))
    assert model.neighbours("x") == [("t3", 1.0)]
    assert model.recommend("x", 1, exclude={"a"}) == ["z"]
    # the full sample: equal similarities, ties to the more recent session
    wide = VSKNNRecommender(k_neighbours=2)
    wide.fit(events)
    wide.observe(ev("x", "a", 100))
    assert wide.neighbours("x") == [("t3", 1.0), ("t2", 1.0)]


def test_vsknn_never_its_own_neighbour_and_extend() -> None:
    model = VSKNNRecommender()
    model.fit(PAST)
    assert [s for s, _ in model.neighbours("s1")] == []  # s1 shares no item with another
    model.observe(ev("x", "a", 100))
    model.observe(ev("x", "g", 101))  # x is now a past session holding a and g
    model.observe(ev("w", "a", 102))
    assert {s for s, _ in model.neighbours("w")} == {"s1", "x"}
    assert set(model.recommend("w", 2, exclude={"a"})) == {"b", "g"}
    frozen = VSKNNRecommender(extend=False)
    frozen.fit(PAST)
    for event in (ev("x", "a", 100), ev("x", "g", 101), ev("w", "a", 102)):
        frozen.observe(event)
    assert frozen.neighbours("w") == [("s1", 1.0)]
    assert frozen.recommend("w", 1, exclude={"a"}) == ["b"]


def test_vsknn_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="k_neighbours"):
        VSKNNRecommender(k_neighbours=0)
    with pytest.raises(ValueError, match="sample_size"):
        VSKNNRecommender(sample_size=0)


# --- sequential rules ----------------------------------------------------------------------

# s1: a, b, c  -> a->b 1, a->c 1/2, b->c 1;  s2: a, c -> a->c 1
RULES = sessions(("s1", "a"), ("s1", "b"), ("s1", "c"), ("s2", "a"), ("s2", "c"))


def test_sr_rule_weights_by_hand() -> None:
    model = SequentialRulesRecommender()
    model.fit(RULES)
    assert model.rules("a") == [("c", 1.5), ("b", 1.0)]
    assert model.rules("b") == [("c", 1.0)]
    assert model.rules("c") == []
    model.observe(ev("x", "a", 100))
    assert model.recommend("x", 2) == ["c", "b"]
    model.observe(ev("x", "b", 101))  # only the latest click's rules count
    assert model.recommend("x", 1, exclude={"a", "b"}) == ["c"]


def test_sr_steps_and_pruning() -> None:
    short = SequentialRulesRecommender(steps=1)  # only adjacent clicks: a->c 1 from s2
    short.fit(RULES)
    assert short.rules("a") == [("b", 1.0), ("c", 1.0)]
    pruned = SequentialRulesRecommender(pruning=1)
    pruned.fit(RULES)
    assert pruned.rules("a") == [("c", 1.5)]
    pruned.observe(ev("x", "a", 100))
    # b is pruned away: the second slot comes from popularity (a, c twice; b once)
    assert pruned.recommend("x", 2, exclude={"a"}) == ["c", "b"]
    assert pruned.recommend("x", 1, exclude={"a", "c"}) == ["b"]


def test_sr_online_equals_batch() -> None:
    rng = random.Random(3)
    events = [ev(f"s{rng.randrange(6)}", f"i{rng.randrange(8)}", n) for n in range(80)]
    batch = SequentialRulesRecommender(steps=3)
    batch.fit(events)
    online = SequentialRulesRecommender(steps=3)
    online.fit(events[:30])
    for event in events[30:]:
        online.observe(event)
    for item in {e.item_id for e in events}:
        assert online.rules(item) == batch.rules(item)  # same additions in the same order
    offline = SequentialRulesRecommender(steps=3, online=False)
    offline.fit(events[:30])
    reference = SequentialRulesRecommender(steps=3)
    reference.fit(events[:30])
    for event in events[30:]:
        offline.observe(event)
    assert all(offline.rules(i) == reference.rules(i) for i in {e.item_id for e in events})
    # offline still follows the session: the latest click picks the rules
    last = events[-1]
    expected = [q for q, _ in reference.rules(last.item_id)[:3]]
    assert expected
    assert offline.recommend(last.user_id, 3)[: len(expected)] == expected


def test_sr_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="steps"):
        SequentialRulesRecommender(steps=0)
    with pytest.raises(ValueError, match="pruning"):
        SequentialRulesRecommender(pruning=-1)
