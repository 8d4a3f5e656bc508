"""Re-ranking steps (MMR, repeat decay, filters) and online item quality."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.bandit import Candidate, epsilon_greedy_rank, greedy_order
from models.quality import ItemQuality
from models.rerank import ShownCounter, decay_repeats, filter_candidates, mmr, repeat_decay

# Cosines: a.b = 0.8, a.c = 0, a.d = 0.6, b.c = 0.6, b.d = 0.96, c.d = 0.8
VECTORS = {
    "a": np.array([1.0, 0.0]),
    "b": np.array([0.8, 0.6]),
    "c": np.array([0.0, 1.0]),
    "d": np.array([0.6, 0.8]),
}
COSINES = {("a", "b"): 0.8, ("a", "c"): 0.0, ("a", "d"): 0.6}
COSINES |= {("b", "c"): 0.6, ("b", "d"): 0.96, ("c", "d"): 0.8}
POOL = [Candidate("a", 1.0), Candidate("b", 0.9), Candidate("c", 0.6), Candidate("d", 0.7)]


def table_sim(x: str, y: str) -> float:
    return 1.0 if x == y else COSINES[tuple(sorted((x, y)))]  # type: ignore[index]


def ids(cands: list[Candidate]) -> list[str]:
    return [c.item_id for c in cands]


# --- MMR ---------------------------------------------------------------------------


def test_mmr_hand_computed() -> None:
    """diversity 0.3, marginal = 0.7 * rel - 0.3 * max_sim:
    1: a .70 | b .63 | c .42 | d .49                  -> a
    2: b .63-.3*.8=.39 | c .42-0=.42 | d .49-.3*.6=.31  -> c
    3: b .63-.3*.8=.39 | d .49-.3*.8=.25                -> b
    4: d .49-.3*.96=.202                               -> d
    """
    picked = mmr(POOL, VECTORS, k=4, diversity=0.3)
    assert ids(picked) == ["a", "c", "b", "d"]
    assert [c.score for c in picked] == pytest.approx([0.7, 0.42, 0.39, 0.202])
    by_table = mmr(POOL, table_sim, k=4, diversity=0.3)
    assert ids(by_table) == ids(picked)
    assert [c.score for c in by_table] == pytest.approx([c.score for c in picked])
    assert ids(mmr(POOL, table_sim, k=2, diversity=0.3)) == ["a", "c"]


def test_mmr_diversity_zero_sorts_by_relevance() -> None:
    assert mmr(POOL, VECTORS, k=4, diversity=0.0) == [POOL[0], POOL[1], POOL[3], POOL[2]]


def test_mmr_demotes_near_duplicates_and_ignores_missing_vectors() -> None:
    """diversity 0.5; x2 points the same way as x; z has no vector (similarity 0).
    1: x .45 | x2 .425 | y .25 | z .2   -> x
    2: x2 .425-.5=-.075 | y .25 | z .2  -> y
    3: x2 -.075 | z .2                  -> z, then x2
    """
    vectors = {"x": np.array([1.0, 0, 0]), "x2": np.array([2.0, 0, 0]), "y": np.array([0, 1.0, 0])}
    pool = [Candidate("x", 0.9), Candidate("x2", 0.85), Candidate("y", 0.5), Candidate("z", 0.4)]
    picked = mmr(pool, vectors, k=10, diversity=0.5)
    assert ids(picked) == ["x", "y", "z", "x2"]
    assert [c.score for c in picked] == pytest.approx([0.45, 0.25, 0.2, -0.075])


def test_mmr_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="diversity"):
        mmr(POOL, VECTORS, k=2, diversity=1.5)
    with pytest.raises(ValueError, match="k must be"):
        mmr(POOL, VECTORS, k=-1, diversity=0.5)
    with pytest.raises(ValueError, match="unique"):
        mmr([*POOL, POOL[0]], VECTORS, k=2, diversity=0.5)
    with pytest.raises(ValueError, match="shape"):
        mmr(POOL, {**VECTORS, "d": np.ones(3)}, k=2, diversity=0.5)
    with pytest.raises(ValueError, match="non-finite"):
        mmr(POOL, lambda x, y: float("nan"), k=2, diversity=0.5)
    assert mmr([], VECTORS, k=3, diversity=0.5) == []


vec2 = st.tuples(st.floats(-1, 1), st.floats(-1, 1)).map(np.array)
pools = st.dictionaries(
    st.text("abcdef", min_size=1, max_size=2), st.tuples(st.floats(0, 1), vec2), max_size=8
)


@settings(max_examples=60)
@given(pool=pools, k=st.integers(0, 10), diversity=st.floats(0, 1))
def test_mmr_properties(
    pool: dict[str, tuple[float, np.ndarray]], k: int, diversity: float
) -> None:
    cands = [Candidate(i, rel) for i, (rel, _) in pool.items()]
    vectors = {i: v for i, (_, v) in pool.items()}
    picked = mmr(cands, vectors, k, diversity)
    assert len(picked) == min(k, len(cands))
    assert len(set(ids(picked))) == len(picked)
    marginals = [c.score for c in picked]
    assert marginals == sorted(marginals, reverse=True)
    greedy = epsilon_greedy_rank(picked, k, 0.0, random.Random(0))
    assert [s.item_id for s in greedy] == ids(picked)
    assert mmr(cands, vectors, k, 0.0) == greedy_order(cands)[:k]


# --- repeat decay and impression memory ----------------------------------------------


def test_repeat_decay_values() -> None:
    assert repeat_decay(1.0, 0, 0.5) == 1.0
    assert repeat_decay(1.0, 2, 0.5) == 0.25
    assert repeat_decay(0.8, 1, 0.5) == 0.4
    assert repeat_decay(-1.0, 1, 0.5) == -1.5
    assert repeat_decay(3.0, 5, 1.0) == 3.0
    with pytest.raises(ValueError, match="factor"):
        repeat_decay(1.0, 1, 0.0)
    with pytest.raises(ValueError, match="times_shown"):
        repeat_decay(1.0, -1, 0.5)


@given(score=st.floats(-100, 100), times=st.integers(0, 50), factor=st.floats(0.01, 1.0))
def test_repeat_decay_never_raises_a_score(score: float, times: int, factor: float) -> None:
    assert repeat_decay(score, times + 1, factor) <= repeat_decay(score, times, factor) <= score


def test_shown_counter_counts_and_forgets_least_recent() -> None:
    shown = ShownCounter(max_items=3)
    shown.record(["a", "b", "a"])  # "a" counts once per list
    shown.record(["a", "c"])
    assert dict(shown) == {"b": 1, "a": 2, "c": 1}
    shown.record(["d"])
    assert "b" not in shown
    assert shown.get("b", 0) == 0
    assert shown.to_dict() == {"a": 2, "c": 1, "d": 1}
    restored = ShownCounter(3, shown.to_dict())
    restored.record(["e"])
    assert list(restored) == ["c", "d", "e"]
    with pytest.raises(ValueError, match="max_items"):
        ShownCounter(0)


def test_decay_repeats_uses_times_shown() -> None:
    shown = ShownCounter()
    shown.record(["a"])
    shown.record(["a", "b"])
    out = decay_repeats(POOL[:3], shown, factor=0.5)
    assert [(c.item_id, c.score) for c in out] == [("a", 0.25), ("b", 0.45), ("c", 0.6)]


# --- filters -----------------------------------------------------------------------


def test_filter_drops_purchased_unavailable_seen_and_duplicates() -> None:
    cands = [
        Candidate("a", 0.2),
        Candidate("bought", 0.9),
        Candidate("b", 0.5),
        Candidate("gone", 0.8),
        Candidate("a", 0.7, reason="better"),
        Candidate("old", 0.6),
    ]
    out = filter_candidates(cands, purchased={"bought"}, unavailable=["gone"], seen={"old"})
    assert out == [Candidate("a", 0.7, reason="better"), Candidate("b", 0.5)]
    assert filter_candidates(cands[:3], purchased=(), unavailable=()) == cands[:3]


# --- item quality ------------------------------------------------------------------


def test_quality_posterior_mean_by_hand() -> None:
    q = ItemQuality(alpha0=1.0, beta0=1.0)
    assert q.score("new") == 0.5
    q.record_impression("x", n=3)
    q.record_reward("x", 1.0)
    assert q.score("x") == pytest.approx(2 / 5)
    q.record_impression("p")
    q.record_reward("p", 5.0)  # a purchase worth more than its single impression
    assert q.score("p") == pytest.approx(6 / 7)
    q.record_reward("late", 1.0)  # click before its impression arrives
    assert q.score("late") == pytest.approx(2 / 3)
    q.record_impression("late")
    assert q.score("late") == pytest.approx(2 / 3)
    assert q.stats("late") == (1.0, 1.0)


@given(
    events=st.lists(
        st.tuples(st.sampled_from("xyz"), st.booleans(), st.floats(0, 10)), max_size=30
    ),
    seed=st.integers(0, 100),
)
def test_quality_is_order_free_and_in_unit_interval(
    events: list[tuple[str, bool, float]], seed: int
) -> None:
    def build(evs: list[tuple[str, bool, float]]) -> ItemQuality:
        q = ItemQuality(alpha0=1.0, beta0=4.0)
        for item, is_reward, amount in evs:
            if is_reward:
                q.record_reward(item, amount)
            else:
                q.record_impression(item, amount)
        return q

    shuffled = list(events)
    random.Random(seed).shuffle(shuffled)
    q, q2 = build(events), build(shuffled)
    for item in "xyz":
        assert 0.0 < q.score(item) < 1.0
        assert q.score(item) == pytest.approx(q2.score(item))


def test_quality_forgets_least_recently_updated() -> None:
    q = ItemQuality(max_items=2)
    q.record_impression("a")
    q.record_impression("b")
    q.score("a")  # reads do not refresh
    q.record_reward("b", 1.0)
    q.record_impression("c")
    assert "a" not in q
    assert len(q) == 2
    assert q.score("a") == q.prior_mean


def test_quality_npz_round_trip(tmp_path: Path) -> None:
    q = ItemQuality(alpha0=2.0, beta0=30.0, max_items=3)
    q.record_impression("b", 10)
    q.record_reward("b", 2.0)
    q.record_impression("é", 4)
    path = tmp_path / "quality.npz"
    arrays: dict[str, Any] = q.to_arrays()  # numpy's stubs reserve savez(allow_pickle=)
    np.savez(path, **arrays)
    with np.load(path, allow_pickle=False) as data:
        back = ItemQuality.from_arrays(data)
    assert (back.alpha0, back.beta0, back.max_items) == (2.0, 30.0, 3)
    assert list(back.to_arrays()["item_ids"]) == ["b", "é"]
    assert back.score("b") == q.score("b")
    assert back.score("é") == q.score("é")
    empty = ItemQuality.from_arrays(ItemQuality().to_arrays())
    assert len(empty) == 0


def test_quality_rejects_bad_input() -> None:
    q = ItemQuality()
    with pytest.raises(ValueError, match="reward"):
        q.record_reward("a", -1.0)
    with pytest.raises(ValueError, match="n must be"):
        q.record_impression("a", float("nan"))
    with pytest.raises(ValueError, match="alpha0"):
        ItemQuality(alpha0=0.0)
    arrays = q.to_arrays()
    arrays["rewards"] = np.array([1.0])
    with pytest.raises(ValueError, match="disagree"):
        ItemQuality.from_arrays(arrays)
    del arrays["prior"]
    with pytest.raises(ValueError, match="lack"):
        ItemQuality.from_arrays(arrays)
