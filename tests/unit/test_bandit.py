"""Epsilon-greedy ranking: exact propensities, exploration, determinism, schedules."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.bandit import (
    Candidate,
    EpsilonGreedyRanker,
    EpsilonSchedule,
    Slot,
    epsilon_greedy_rank,
    greedy_order,
    list_propensity,
    slot_propensity,
)
from models.recommender import DEFAULT_PROTECTED_SLOTS, RankConfig

POOL = [
    Candidate("a", 0.9, reason="r-a"),
    Candidate("b", 0.5),
    Candidate("c", 0.5),
    Candidate("d", 0.1),
]

scores = st.sampled_from([0.0, 0.25, 0.5, 1.0]) | st.floats(-10, 10)
pools = st.dictionaries(st.text("abcdef", min_size=1, max_size=3), scores, max_size=12).map(
    lambda d: [Candidate(i, s) for i, s in d.items()]
)
epsilons = st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.0)


def remaining_before(pool: list[Candidate], slots: list[Slot], position: int) -> list[Candidate]:
    taken = {s.item_id for s in slots[:position]}
    return [c for c in pool if c.item_id not in taken]


# --- schedules ---------------------------------------------------------------------


def test_schedule_hyperbolic_decay_values() -> None:
    s = EpsilonSchedule(epsilon0=0.2, decay=0.01, min_epsilon=0.05)
    assert s.epsilon_at(0) == 0.2
    assert s.epsilon_at(100) == pytest.approx(0.1)
    assert s.epsilon_at(10_000) == 0.05


@pytest.mark.parametrize(
    "kwargs",
    [
        {"epsilon0": 1.5},
        {"epsilon0": -0.1},
        {"epsilon0": 0.1, "min_epsilon": 0.2},
        {"decay": -1.0},
        {"decay": float("inf")},
        {"epsilon0": float("nan")},
    ],
)
def test_schedule_rejects_bad_parameters(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        EpsilonSchedule(**kwargs)


@pytest.mark.parametrize("t", [-1.0, float("nan"), float("inf")])
def test_schedule_rejects_bad_time(t: float) -> None:
    with pytest.raises(ValueError, match="t must be"):
        EpsilonSchedule().epsilon_at(t)


@given(
    eps0=st.floats(0.0, 1.0),
    floor_share=st.floats(0.0, 1.0),
    decay=st.floats(0.0, 1e6),
    t1=st.floats(0.0, 1e12),
    t2=st.floats(0.0, 1e12),
)
def test_decay_never_increases_epsilon(
    eps0: float, floor_share: float, decay: float, t1: float, t2: float
) -> None:
    s = EpsilonSchedule(epsilon0=eps0, decay=decay, min_epsilon=eps0 * floor_share)
    lo, hi = sorted((t1, t2))
    assert s.epsilon_at(lo) >= s.epsilon_at(hi)
    assert s.min_epsilon <= s.epsilon_at(hi) <= s.epsilon_at(0) == eps0


# --- exact propensities --------------------------------------------------------------


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.5, 1.0])
def test_slot_propensity_exact_values(eps: float) -> None:
    n = len(POOL)
    assert slot_propensity("a", POOL, eps) == (1 - eps) + eps / n
    for other in "bcd":
        assert slot_propensity(other, POOL, eps) == eps / n
    assert slot_propensity("zzz", POOL, eps) == 0.0
    assert sum(slot_propensity(c.item_id, POOL, eps) for c in POOL) == pytest.approx(1.0)


def test_ties_go_to_smallest_item_id() -> None:
    pool = [Candidate("c", 0.5), Candidate("b", 0.5)]
    assert slot_propensity("b", pool, 0.0) == 1.0
    assert slot_propensity("c", pool, 0.0) == 0.0
    assert [s.item_id for s in epsilon_greedy_rank(pool, 2, 0.0, random.Random(0))] == ["b", "c"]


def test_recorded_propensities_match_monte_carlo_frequencies() -> None:
    """Every ordered pair (slot 0, slot 1) appears as often as its list propensity says."""
    eps, draws = 0.3, 20_000
    rng = random.Random(1234)
    seen: Counter[tuple[str, ...]] = Counter()
    recorded: dict[tuple[str, ...], float] = {}
    for _ in range(draws):
        slots = epsilon_greedy_rank(POOL, 2, eps, rng)
        key = tuple(s.item_id for s in slots)
        seen[key] += 1
        recorded.setdefault(key, list_propensity(slots))
        assert recorded[key] == list_propensity(slots)
    assert len(seen) == 12  # every ordered pair of 4 items is reachable
    assert sum(recorded.values()) == pytest.approx(1.0)
    for key, count in seen.items():
        # sd of a frequency <= 0.0035 here; 0.015 is > 4 sd, and the seed is fixed
        assert count / draws == pytest.approx(recorded[key], abs=0.015)


def test_epsilon_one_explores_uniformly() -> None:
    pool = [Candidate(f"i{j}", float(j)) for j in range(5)]
    rng = random.Random(99)
    first: Counter[str] = Counter()
    draws = 10_000
    for _ in range(draws):
        slots = epsilon_greedy_rank(pool, 3, 1.0, rng)
        assert all(s.explored for s in slots)
        assert [s.propensity for s in slots] == [1 / 5, 1 / 4, 1 / 3]
        for s in slots:
            rest = remaining_before(pool, slots, s.position)
            assert {slot_propensity(c.item_id, rest, 1.0) for c in rest} == {1 / len(rest)}
        first[slots[0].item_id] += 1
    assert set(first) == {c.item_id for c in pool}
    for count in first.values():  # expected 2000, sd 40
        assert abs(count - draws / 5) < 200


# --- properties ---------------------------------------------------------------------


@given(pool=pools, k=st.integers(0, 15))
def test_epsilon_zero_is_exactly_greedy(pool: list[Candidate], k: int) -> None:
    slots = epsilon_greedy_rank(pool, k, 0.0, random.Random(0))
    assert [s.item_id for s in slots] == [c.item_id for c in greedy_order(pool)[:k]]
    assert all(s.propensity == 1.0 and not s.explored for s in slots)


@settings(max_examples=200)
@given(pool=pools, k=st.integers(0, 15), eps=epsilons, seed=st.integers(0, 2**32))
def test_rank_invariants(pool: list[Candidate], k: int, eps: float, seed: int) -> None:
    slots = epsilon_greedy_rank(pool, k, eps, random.Random(seed))
    ids = [s.item_id for s in slots]
    assert len(slots) == min(k, len(pool))
    assert len(set(ids)) == len(ids)
    assert [s.position for s in slots] == list(range(len(slots)))
    by_id = {c.item_id: c for c in pool}
    for s in slots:
        rest = remaining_before(pool, slots, s.position)
        assert 0.0 < s.propensity <= 1.0
        assert s.propensity == slot_propensity(s.item_id, rest, eps)
        assert s.score == by_id[s.item_id].score
        if not s.explored:
            assert s.item_id == greedy_order(rest)[0].item_id


@given(pool=pools, k=st.integers(0, 15), eps=epsilons, seed=st.integers(0, 2**32))
def test_same_seed_same_result(pool: list[Candidate], k: int, eps: float, seed: int) -> None:
    rng = random.Random(seed)
    clone = random.Random()
    clone.setstate(rng.getstate())
    first = epsilon_greedy_rank(pool, k, eps, rng)
    assert epsilon_greedy_rank(list(reversed(pool)), k, eps, clone) == first
    assert epsilon_greedy_rank(pool, k, eps, random.Random(seed)) == first


def test_ranker_uses_schedule_and_injected_rng() -> None:
    schedule = EpsilonSchedule(epsilon0=1.0, decay=1.0, min_epsilon=0.0)
    ranker = EpsilonGreedyRanker(schedule, random.Random(7))
    again = EpsilonGreedyRanker(schedule, random.Random(7))
    late = ranker.rank(POOL, 4, t=1.0)  # epsilon 0.5
    assert late == again.rank(POOL, 4, t=1.0)
    assert late[0].propensity == slot_propensity(late[0].item_id, POOL, 0.5)
    greedy = EpsilonGreedyRanker(EpsilonSchedule(epsilon0=0.0), random.Random(7))
    assert [s.item_id for s in greedy.rank(POOL, 3, t=0)] == ["a", "b", "c"]
    assert greedy.rank(POOL, 1, t=0)[0].reason == "r-a"


def test_bad_input_is_rejected() -> None:
    rng = random.Random(0)
    with pytest.raises(ValueError, match="unique"):
        epsilon_greedy_rank([Candidate("a", 1.0), Candidate("a", 0.5)], 2, 0.1, rng)
    with pytest.raises(ValueError, match="k must be"):
        epsilon_greedy_rank(POOL, -1, 0.1, rng)
    with pytest.raises(ValueError, match="epsilon must be"):
        epsilon_greedy_rank(POOL, 1, 1.5, rng)
    with pytest.raises(ValueError, match="finite"):
        Candidate("a", float("nan"))


# --- protected slots ------------------------------------------------------------------


@settings(max_examples=200)
@given(
    pool=pools,
    k=st.integers(0, 15),
    eps=epsilons,
    protected=st.integers(0, 16),
    seed=st.integers(0, 2**32),
)
def test_protected_slots_are_greedy_and_certain(
    pool: list[Candidate], k: int, eps: float, protected: int, seed: int
) -> None:
    slots = epsilon_greedy_rank(pool, k, eps, random.Random(seed), protected)
    assert len(slots) == min(k, len(pool))
    greedy = [c.item_id for c in greedy_order(pool)]
    assert [s.item_id for s in slots[:protected]] == greedy[: min(protected, len(slots))]
    for s in slots:
        rest = remaining_before(pool, slots, s.position)
        if s.position < protected:
            assert not s.explored
            assert s.propensity == 1.0
        else:
            assert s.propensity == slot_propensity(s.item_id, rest, eps)
            if not s.explored:
                assert s.item_id == greedy_order(rest)[0].item_id


def test_after_the_protected_slots_exploration_follows_its_propensities() -> None:
    """epsilon 1, two protected slots: slots 0-1 always greedy, slot 2 uniform."""
    rng = random.Random(5)
    third: Counter[str] = Counter()
    draws = 8_000
    for _ in range(draws):
        slots = epsilon_greedy_rank(POOL, 3, 1.0, rng, protected=2)
        assert [s.item_id for s in slots[:2]] == ["a", "b"]
        assert [s.propensity for s in slots] == [1.0, 1.0, 1 / 2]
        third[slots[2].item_id] += 1
    assert set(third) == {"c", "d"}
    assert third["c"] / draws == pytest.approx(0.5, abs=0.03)


def test_protected_slots_still_draw_one_coin_each() -> None:
    """The stream of random numbers does not depend on ``protected``."""
    a, b = random.Random(9), random.Random(9)
    epsilon_greedy_rank(POOL, 3, 0.0, a, protected=0)
    epsilon_greedy_rank(POOL, 3, 0.0, b, protected=3)
    assert a.random() == b.random()
    with pytest.raises(ValueError, match="protected"):
        epsilon_greedy_rank(POOL, 3, 0.1, a, protected=-1)


def test_rank_config_protects_the_default_slots_and_rejects_negative_ones() -> None:
    assert RankConfig().protected_slots == DEFAULT_PROTECTED_SLOTS == 2
    with pytest.raises(ValueError, match="protected_slots >= 0"):
        RankConfig(protected_slots=-1)
