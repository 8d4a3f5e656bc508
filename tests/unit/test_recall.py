"""Retrieval recall of candidate pools."""

from __future__ import annotations

import pytest

from models.recall import pool_recall


def test_share_of_test_items_in_their_pool() -> None:
    pools = [["a", "b", "c"], {"d"}, ("e", "f")]
    targets = [["a", "z"], ["d"], ["x", "y", "f"]]
    # hits: a (of a, z), d (of d), f (of x, y, f): 3 of 6 test items
    assert pool_recall(pools, targets) == pytest.approx(3 / 6)
    # per case: 1/2, 1, 1/3
    assert pool_recall(pools, targets, average="macro") == pytest.approx((1 / 2 + 1 + 1 / 3) / 3)


def test_one_test_item_per_case_is_the_hit_rate() -> None:
    pools = [["a", "b"], ["c"], ["a"], []]
    assert pool_recall(pools, [["a"], ["a"], ["a"], ["a"]]) == pytest.approx(0.5)


def test_pool_must_be_for_the_same_case() -> None:
    # "b" is in some pool, but not in its own case's pool
    assert pool_recall([["a"], ["b"]], [["b"], ["a"]]) == 0.0


def test_edge_cases() -> None:
    assert pool_recall([], []) == 0.0
    assert pool_recall([["a"]], [[]]) == 0.0  # no test item: nothing to find
    # a case without test items does not count; repeated test items count once
    assert pool_recall([["a"], ["b"]], [[], ["b", "b"]]) == 1.0
    assert pool_recall([["a"], ["b"]], [[], ["b", "b"]], average="macro") == 1.0
    with pytest.raises(ValueError, match="pools"):
        pool_recall([["a"]], [])
    with pytest.raises(ValueError, match="average"):
        pool_recall([["a"]], [["a"]], average="mean")  # type: ignore[arg-type]
