"""Every metric against hand-computed cases, its edge cases and its invariants."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.metrics import (
    ALL_METRICS,
    MetricAccumulator,
    average_precision_at_k,
    catalog_coverage,
    hit_positions,
    hit_rate_at_k,
    intra_list_diversity,
    ips,
    ndcg_at_k,
    novelty,
    precision_at_k,
    recall_at_k,
    reciprocal_rank_at_k,
    snips,
)

RANKING = {
    "hr": hit_rate_at_k,
    "precision": precision_at_k,
    "recall": recall_at_k,
    "ndcg": ndcg_at_k,
    "map": average_precision_at_k,
    "mrr": reciprocal_rank_at_k,
}
Estimator = Callable[[Sequence[float], Sequence[float], Sequence[float]], float]
L3, L4, L5, L6 = (1 / math.log2(n) for n in (3, 4, 5, 6))  # discounts of positions 2..5

# --- hand-computed ranking cases --------------------------------------------------------

# recommended [a, b, c, d], relevant {b, d}: hits H = {2, 4}.
#   HR@4 = 1                     P@4 = 2/4 = 0.5          R@4 = 2/2 = 1
#   NDCG@4 = (1/log2 3 + 1/log2 5) / (1 + 1/log2 3)       (IDCG over min(4, 2) = 2)
#   AP@4 = (1/2 + 2/4) / min(4, 2) = 0.5                  RR@4 = 1/2
# At k = 2: H = {2}.
#   HR@2 = 1   P@2 = 1/2   R@2 = 1/2   NDCG@2 = (1/log2 3) / (1 + 1/log2 3)
#   AP@2 = (1/2) / min(2, 2) = 0.25    RR@2 = 1/2
# At k = 1: H = {} -> every metric 0.
CASE_ABCD = (["a", "b", "c", "d"], {"b", "d"})

# recommended [x, a, y, b, c], relevant {a, b, c, z} (|R| = 4).
# k = 3: H = {2}.
#   P@3 = 1/3   R@3 = 1/4   NDCG@3 = (1/log2 3) / (1 + 1/log2 3 + 1/log2 4)
#   AP@3 = (1/2) / min(3, 4) = 1/6   RR@3 = 1/2
# k = 5: H = {2, 4, 5}.
#   P@5 = 3/5   R@5 = 3/4
#   NDCG@5 = (1/log2 3 + 1/log2 5 + 1/log2 6) / (1 + 1/log2 3 + 1/log2 4 + 1/log2 5)
#   AP@5 = (1/2 + 2/4 + 3/5) / min(5, 4) = 1.6 / 4 = 0.4   RR@5 = 1/2
CASE_XAYBC = (["x", "a", "y", "b", "c"], {"a", "b", "c", "z"})

HAND = [
    (CASE_ABCD, 4, {"hr": 1, "precision": 0.5, "recall": 1, "map": 0.5, "mrr": 0.5}),
    (CASE_ABCD, 4, {"ndcg": (L3 + L5) / (1 + L3)}),
    (CASE_ABCD, 2, {"hr": 1, "precision": 0.5, "recall": 0.5, "map": 0.25, "mrr": 0.5}),
    (CASE_ABCD, 2, {"ndcg": L3 / (1 + L3)}),
    (CASE_ABCD, 1, dict.fromkeys(RANKING, 0.0)),
    (CASE_XAYBC, 3, {"hr": 1, "precision": 1 / 3, "recall": 1 / 4, "map": 1 / 6, "mrr": 0.5}),
    (CASE_XAYBC, 3, {"ndcg": L3 / (1 + L3 + L4)}),
    (CASE_XAYBC, 5, {"hr": 1, "precision": 3 / 5, "recall": 3 / 4, "map": 0.4, "mrr": 0.5}),
    (CASE_XAYBC, 5, {"ndcg": (L3 + L5 + L6) / (1 + L3 + L4 + L5)}),
]


@pytest.mark.parametrize(("case", "k", "expected"), HAND)
def test_hand_computed_cases(
    case: tuple[list[str], set[str]], k: int, expected: dict[str, float]
) -> None:
    recommended, relevant = case
    for name, value in expected.items():
        assert RANKING[name](recommended, relevant, k) == pytest.approx(value), name


def test_ndcg_of_case_abcd_numerically() -> None:
    # (0.630930 + 0.430677) / 1.630930 = 0.650920
    assert ndcg_at_k(*CASE_ABCD, 4) == pytest.approx(0.650920, abs=1e-6)


# --- edge cases ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(RANKING))
def test_empty_list_scores_zero(name: str) -> None:
    assert RANKING[name]([], {"a"}, 5) == 0.0


@pytest.mark.parametrize("name", list(RANKING))
def test_no_relevant_items_scores_zero(name: str) -> None:
    assert RANKING[name](["a", "b"], set(), 2) == 0.0


@pytest.mark.parametrize("name", list(RANKING))
def test_k_below_one_raises(name: str) -> None:
    with pytest.raises(ValueError, match="k must be >= 1"):
        RANKING[name](["a"], {"a"}, 0)


def test_k_larger_than_the_list() -> None:
    # [a], relevant {a}, k = 10: precision still divides by k; the ideal DCG is over
    # min(10, 1) = 1 position, so the single hit is a perfect NDCG and AP.
    expected = {"hr": 1, "precision": 0.1, "recall": 1, "ndcg": 1, "map": 1, "mrr": 1}
    for name, value in expected.items():
        assert RANKING[name](["a"], {"a"}, 10) == pytest.approx(value), name


def test_a_repeated_item_earns_once() -> None:
    # [a, a, b], relevant {a}: H = {1}; the second a is a miss.
    assert hit_positions(["a", "a", "b"], {"a"}, 3) == [1]
    assert precision_at_k(["a", "a", "b"], {"a"}, 3) == pytest.approx(1 / 3)
    assert average_precision_at_k(["a", "a"], {"a", "b"}, 2) == pytest.approx(0.5)


# --- properties -----------------------------------------------------------------------------

ITEMS = st.sampled_from("abcdefghij")
LISTS = st.lists(ITEMS, max_size=12)
UNIQUE_LISTS = st.lists(ITEMS, max_size=10, unique=True)
RELEVANT = st.sets(ITEMS, min_size=1, max_size=6)
KS = st.integers(min_value=1, max_value=12)


@settings(max_examples=150, deadline=None)
@given(LISTS, st.sets(ITEMS, max_size=6), KS)
def test_every_metric_is_in_unit_interval(rec: list[str], rel: set[str], k: int) -> None:
    for name, metric in RANKING.items():
        assert 0.0 <= metric(rec, rel, k) <= 1.0 + 1e-12, name


@settings(max_examples=150, deadline=None)
@given(LISTS, RELEVANT, KS)
def test_orderings_between_metrics(rec: list[str], rel: set[str], k: int) -> None:
    hr = hit_rate_at_k(rec, rel, k)
    assert hr >= precision_at_k(rec, rel, k)
    assert hr >= recall_at_k(rec, rel, k)
    assert hr >= reciprocal_rank_at_k(rec, rel, k)
    assert hr >= ndcg_at_k(rec, rel, k) - 1e-12
    assert (hr == 0) == (ndcg_at_k(rec, rel, k) == 0)


@settings(max_examples=150, deadline=None)
@given(LISTS, RELEVANT, KS)
def test_recall_and_hit_rate_do_not_fall_with_k(rec: list[str], rel: set[str], k: int) -> None:
    assert recall_at_k(rec, rel, k + 1) >= recall_at_k(rec, rel, k)
    assert hit_rate_at_k(rec, rel, k + 1) >= hit_rate_at_k(rec, rel, k)
    assert reciprocal_rank_at_k(rec, rel, k + 1) >= reciprocal_rank_at_k(rec, rel, k)


@settings(max_examples=200, deadline=None)
@given(UNIQUE_LISTS, RELEVANT, KS)
def test_ndcg_is_one_iff_relevant_items_fill_the_top(rec: list[str], rel: set[str], k: int) -> None:
    n = min(k, len(rel))
    fills_top = len(rec) >= n and all(item in rel for item in rec[:n])
    assert (ndcg_at_k(rec, rel, k) == pytest.approx(1.0)) == fills_top
    assert (average_precision_at_k(rec, rel, k) == pytest.approx(1.0)) == fills_top


@settings(max_examples=100, deadline=None)
@given(st.permutations(list("abcdefgh")), st.sets(st.sampled_from("abcdefgh"), min_size=1), KS)
def test_ideal_ordering_is_perfect(perm: list[str], rel: set[str], k: int) -> None:
    # every relevant item is in the list, so putting them first is perfect
    ideal = sorted(perm, key=lambda item: item not in rel)  # relevant items first
    assert ndcg_at_k(ideal, rel, k) == pytest.approx(1.0)
    assert ndcg_at_k(perm, rel, k) <= 1.0 + 1e-12


# --- catalogue-level ----------------------------------------------------------------------------


def test_catalog_coverage_hand_computed() -> None:
    # union {a, b, c} of a 10-item catalogue
    assert catalog_coverage([["a", "b"], ["b", "c"], []], 10) == pytest.approx(0.3)
    assert catalog_coverage([], 10) == 0.0


def test_catalog_coverage_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="catalog_size"):
        catalog_coverage([["a"]], 0)
    with pytest.raises(ValueError, match="more than catalog_size"):
        catalog_coverage([["a", "b"]], 1)


def test_novelty_hand_computed() -> None:
    # 8 users; a seen by 4 -> -log2(4/8) = 1 bit, b by 2 -> 2 bits, c by 1 -> 3 bits.
    # lists [a, b] -> (1 + 2) / 2 = 1.5, [c] -> 3; empty lists are skipped; mean 2.25.
    popularity = {"a": 4, "b": 2, "c": 1}
    assert novelty([["a", "b"], ["c"], []], popularity, 8) == pytest.approx(2.25)
    # an item nobody had counts as seen by one user: log2(8) = 3 bits
    assert novelty([["z"]], popularity, 8) == pytest.approx(3.0)
    assert novelty([], popularity, 8) == 0.0


def test_novelty_rejects_impossible_popularity() -> None:
    with pytest.raises(ValueError, match="n_users"):
        novelty([["a"]], {"a": 1}, 0)
    with pytest.raises(ValueError, match="exceeds"):
        novelty([["a"]], {"a": 9}, 8)


def test_intra_list_diversity_hand_computed() -> None:
    # pairs: (a,b) sim 0.5, (a,c) sim 0, (b,c) sim 1 -> (0.5 + 1 + 0) / 3 = 0.5
    sims = {frozenset("ab"): 0.5, frozenset("ac"): 0.0, frozenset("bc"): 1.0}
    assert intra_list_diversity(
        ["a", "b", "c"], lambda x, y: sims[frozenset((x, y))]
    ) == pytest.approx(0.5)
    assert intra_list_diversity(["a"], lambda x, y: 0.0) == 0.0
    assert intra_list_diversity([], lambda x, y: 0.0) == 0.0


# --- off-policy estimators ------------------------------------------------------------------------


def test_ips_and_snips_hand_computed() -> None:
    # weights pi/pi0 = [1/0.5, 0.5/0.25, 0.1/0.2] = [2, 2, 0.5]
    # IPS = (1*2 + 0*2 + 1*0.5) / 3 = 2.5/3;  SNIPS = 2.5 / (2 + 2 + 0.5) = 2.5/4.5
    rewards, logging, target = [1.0, 0.0, 1.0], [0.5, 0.25, 0.2], [1.0, 0.5, 0.1]
    assert ips(rewards, logging, target) == pytest.approx(2.5 / 3)
    assert snips(rewards, logging, target) == pytest.approx(2.5 / 4.5)


def test_ips_is_exact_on_logs_in_logging_proportions() -> None:
    # One context, actions with rewards r = [1, 0, 0.5], logged with pi0 = [0.5, 0.3, 0.2]:
    # 10 rounds in exactly those proportions. The target policy pi = [0.2, 0.2, 0.6] earns
    # sum pi * r = 0.2 + 0 + 0.3 = 0.5, and IPS = (5*1*0.4 + 3*0*(2/3) + 2*0.5*3) / 10 = 0.5.
    rewards = [1.0] * 5 + [0.0] * 3 + [0.5] * 2
    logging = [0.5] * 5 + [0.3] * 3 + [0.2] * 2
    target = [0.2] * 5 + [0.2] * 3 + [0.6] * 2
    assert ips(rewards, logging, target) == pytest.approx(0.5)


def test_snips_without_support_is_zero() -> None:
    assert snips([1.0, 1.0], [0.5, 0.5], [0.0, 0.0]) == 0.0
    assert ips([1.0, 1.0], [0.5, 0.5], [0.0, 0.0]) == 0.0


@pytest.mark.parametrize("estimator", [ips, snips])
def test_estimators_reject_bad_input(estimator: Estimator) -> None:
    with pytest.raises(ValueError, match="no logged rounds"):
        estimator([], [], [])
    with pytest.raises(ValueError, match=r"logging propensity at round 1 is 0\.0"):
        estimator([1.0, 1.0], [0.5, 0.0], [0.5, 0.5])
    with pytest.raises(ValueError, match="logging propensity"):
        estimator([1.0], [1.5], [0.5])
    with pytest.raises(ValueError, match="target propensity"):
        estimator([1.0], [0.5], [-0.1])
    with pytest.raises(ValueError, match="lengths differ"):
        estimator([1.0, 0.0], [0.5], [0.5])
    with pytest.raises(ValueError, match="finite"):
        estimator([math.nan], [0.5], [0.5])


PROPENSITIES = st.floats(min_value=1e-3, max_value=1.0)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(min_value=-10, max_value=10), PROPENSITIES), min_size=1, max_size=30
    )
)
def test_on_policy_ips_is_the_mean_reward(rounds: list[tuple[float, float]]) -> None:
    rewards = [r for r, _ in rounds]
    propensities = [p for _, p in rounds]
    mean = sum(rewards) / len(rewards)
    assert ips(rewards, propensities, propensities) == pytest.approx(mean, abs=1e-9)
    assert snips(rewards, propensities, propensities) == pytest.approx(mean, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(min_value=0, max_value=1), PROPENSITIES, st.floats(0, 1)),
        min_size=1,
        max_size=30,
    )
)
def test_snips_stays_within_the_reward_range(rounds: list[tuple[float, float, float]]) -> None:
    value = snips([r for r, _, _ in rounds], [p for _, p, _ in rounds], [q for _, _, q in rounds])
    assert 0.0 <= value <= 1.0 + 1e-12


# --- accumulator ----------------------------------------------------------------------------------


def test_accumulator_averages_over_users() -> None:
    acc = MetricAccumulator(ks=(4, 2))
    acc.add(*CASE_ABCD)  # hr@2 = 1, precision@2 = 0.5, map@4 = 0.5
    acc.add(["x", "y"], {"a"})  # a miss: every metric 0
    acc.add(["a"], set())  # no relevant items: skipped, not averaged in
    result = acc.result()
    assert result["users"] == 2
    assert acc.skipped == 1
    assert set(result) == {f"{m}@{k}" for m in ALL_METRICS for k in (2, 4)} | {"users"}
    assert result["hr@2"] == pytest.approx(0.5)
    assert result["precision@2"] == pytest.approx(0.25)
    assert result["map@4"] == pytest.approx(0.25)
    assert result["ndcg@4"] == pytest.approx((L3 + L5) / (1 + L3) / 2)


def test_accumulator_empty_and_subset() -> None:
    acc = MetricAccumulator(ks=(10,), metrics=("hr", "ndcg"))
    assert acc.result() == {"hr@10": 0.0, "ndcg@10": 0.0, "users": 0}
    with pytest.raises(ValueError, match="unknown metrics"):
        MetricAccumulator(metrics=("auc",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="k must be >= 1"):
        MetricAccumulator(ks=(0,))
    with pytest.raises(ValueError, match="at least one"):
        MetricAccumulator(ks=())


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(LISTS, RELEVANT), min_size=1, max_size=5), st.sets(KS, min_size=1))
def test_accumulator_matches_the_functions(
    users: list[tuple[list[str], set[str]]], ks: set[int]
) -> None:
    acc = MetricAccumulator(ks=tuple(ks))
    for rec, rel in users:
        acc.add(rec, rel)
    result = acc.result()
    for name, metric in RANKING.items():
        for k in ks:
            mean = sum(metric(rec, rel, k) for rec, rel in users) / len(users)
            assert result[f"{name}@{k}"] == pytest.approx(mean), f"{name}@{k}"
