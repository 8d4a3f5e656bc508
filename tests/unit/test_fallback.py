"""Lists without a trained model (``models.fallback``) and list documents (``models.reclist``)."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from models.fallback import (
    TRENDING_WEIGHT,
    category_reason,
    popular_items,
    popular_list,
)
from models.profile import UserProfile
from models.reclist import POPULAR_USER, RecItem, RecList, category_slug

CATEGORY_TOP = {
    "Action": [("a1", 1.0), ("a2", 0.5), ("a3", 0.25)],
    "Drama": [("d9", 1.0), ("d1", 0.8), ("a2", 0.6)],
    "Comedy": [("c1", 1.0)],
}
GLOBAL_TOP = [("g1", 1.0), ("a2", 0.9), ("d1", 0.5), ("a1", 0.4), ("g2", 0.05)]


def profile(**affinities: float) -> UserProfile:
    return UserProfile(user_id="u1", affinities=affinities, recent=["a1"], purchased=["d9"])


def as_tuples(items: list[RecItem]) -> list[tuple[str, float, str]]:
    return [(r.item_id, r.score, r.reason) for r in items]


def test_recommend_hand_built_case() -> None:
    # Action 3/4 of the affinity, Drama 1/4. a1 was seen, d9 was bought.
    recs = popular_list(profile(Action=3.0, Drama=1.0), CATEGORY_TOP, GLOBAL_TOP, k=10)
    assert TRENDING_WEIGHT == 0.1
    assert as_tuples(recs) == [
        ("a2", 0.375, "popular in Action"),  # max(0.75 * 0.5, 0.25 * 0.6)
        ("d1", 0.2, "popular in Drama"),  # 0.25 * 0.8
        ("a3", 0.1875, "popular in Action"),  # 0.75 * 0.25: the weakest category item
        ("g1", 0.01875, "trending"),  # TRENDING_WEIGHT * 1.0 * 0.1875
        ("g2", 0.000938, "trending"),  # TRENDING_WEIGHT * 0.05 * 0.1875, rounded
    ]


def test_recommend_excludes_recent_and_purchased_everywhere() -> None:
    recs = popular_list(profile(Action=3.0, Drama=1.0), CATEGORY_TOP, GLOBAL_TOP, k=10)
    ids = {r.item_id for r in recs}
    assert "a1" not in ids  # recent, also in Action and trending
    assert "d9" not in ids  # purchased, top of Drama


def test_recommend_trending_fills_in_below_category_items() -> None:
    p = UserProfile(user_id="u", affinities={"X": 1.0})
    recs = popular_list(p, {"X": [("x1", 1.0), ("x2", 0.11)]}, [("g1", 1.0), ("x1", 0.5)], k=5)
    assert as_tuples(recs) == [
        ("x1", 1.0, "popular in X"),  # a category item keeps its category reason
        ("x2", 0.11, "popular in X"),
        ("g1", 0.011, "trending"),  # TRENDING_WEIGHT * 1.0 * weakest category score 0.11
    ]


def test_recommend_trending_never_outranks_a_liked_category_item() -> None:
    # Regression: trending used a fixed 0.1, above a category item scoring 0.05.
    p = UserProfile(user_id="u", affinities={"X": 1.0})
    recs = popular_list(p, {"X": [("x1", 1.0), ("x2", 0.05)]}, [("g1", 1.0)], k=5)
    assert as_tuples(recs) == [
        ("x1", 1.0, "popular in X"),
        ("x2", 0.05, "popular in X"),
        ("g1", 0.005, "trending"),
    ]


CATS = ["A", "B", "C", "D"]
ITEMS = [f"i{n}" for n in range(8)]
RANKED = st.lists(
    st.tuples(st.sampled_from(ITEMS), st.floats(min_value=1e-9, max_value=1.0)),
    max_size=6,
    unique_by=lambda t: t[0],
)


@settings(max_examples=200, deadline=None)
@given(
    affinities=st.dictionaries(st.sampled_from(CATS), st.floats(min_value=0.0, max_value=100.0)),
    category_top=st.dictionaries(st.sampled_from(CATS), RANKED),
    global_top=RANKED,
    seen=st.lists(st.sampled_from(ITEMS), max_size=3),
    k=st.integers(min_value=0, max_value=10),
)
@example(
    affinities={"A": 1.0, "B": 10.0},
    category_top={"A": [("i0", 1.0)]},
    global_top=[("i1", 1.0)],
    seen=[],
    k=2,
)
def test_recommend_contract(
    affinities: dict[str, float],
    category_top: dict[str, list[tuple[str, float]]],
    global_top: list[tuple[str, float]],
    seen: list[str],
    k: int,
) -> None:
    p = UserProfile(user_id="u", affinities=affinities, recent=seen[:1], purchased=seen[1:])
    recs = popular_list(p, category_top, global_top, k=k)
    ids = [r.item_id for r in recs]
    assert len(ids) <= k
    assert len(set(ids)) == len(ids)
    assert not set(ids) & set(seen)
    reasons = [r.reason for r in recs]
    # Every category item ranks above every trending item.
    n_category = sum(r != "trending" for r in reasons)
    assert all(r != "trending" for r in reasons[:n_category])
    assert all(r == "trending" for r in reasons[n_category:])
    assert [r.score for r in recs] == sorted((r.score for r in recs), reverse=True)


def test_recommend_respects_k() -> None:
    p = profile(Action=3.0, Drama=1.0)
    assert [r.item_id for r in popular_list(p, CATEGORY_TOP, GLOBAL_TOP, k=2)] == ["a2", "d1"]
    assert [r.item_id for r in popular_list(p, CATEGORY_TOP, GLOBAL_TOP, k=1)] == ["a2"]
    assert popular_list(p, CATEGORY_TOP, GLOBAL_TOP, k=0) == []


def test_recommend_empty_profile_gets_trending() -> None:
    recs = popular_list(UserProfile(user_id="new"), CATEGORY_TOP, GLOBAL_TOP, k=3)
    assert as_tuples(recs) == [
        ("g1", 0.1, "trending"),
        ("a2", 0.09, "trending"),
        ("d1", 0.05, "trending"),
    ]


def test_recommend_nothing_known() -> None:
    assert popular_list(UserProfile(user_id="u"), {}, [], k=5) == []


def test_recommend_uses_only_the_strongest_categories() -> None:
    p = UserProfile(user_id="u", affinities={"Action": 4.0, "Drama": 3.0, "Comedy": 1.0})
    recs = popular_list(p, CATEGORY_TOP, [], k=10, n_categories=2)
    assert "c1" not in {r.item_id for r in recs}
    assert as_tuples(recs) == [
        ("a1", 0.571429, "popular in Action"),  # 4/7 * 1.0
        ("d9", 0.428571, "popular in Drama"),  # 3/7 * 1.0
        ("d1", 0.342857, "popular in Drama"),  # 3/7 * 0.8
        ("a2", 0.285714, "popular in Action"),  # max(4/7 * 0.5, 3/7 * 0.6)
        ("a3", 0.142857, "popular in Action"),  # 4/7 * 0.25
    ]
    with_three = popular_list(p, CATEGORY_TOP, [], k=10, n_categories=3)
    assert ("c1", 0.125, "popular in Comedy") in as_tuples(with_three)


def test_recommend_ignores_zero_affinities_and_missing_categories() -> None:
    p = UserProfile(user_id="u", affinities={"Unknown": 5.0, "Comedy": 0.0})
    recs = popular_list(p, CATEGORY_TOP, [("g1", 1.0)], k=5)
    assert as_tuples(recs) == [("g1", 0.1, "trending")]


def test_recommend_ties_are_broken_by_item_id() -> None:
    p = UserProfile(user_id="u", affinities={"X": 1.0})
    recs = popular_list(p, {"X": [("zz", 0.5), ("aa", 0.5), ("mm", 1.0)]}, [], k=3)
    assert [r.item_id for r in recs] == ["mm", "aa", "zz"]


def test_recommend_scores_are_rounded() -> None:
    p = UserProfile(user_id="u", affinities={"X": 1.0, "Y": 2.0})
    recs = popular_list(p, {"X": [("x", 1.0)]}, [], k=1)
    assert recs == [RecItem(item_id="x", score=0.333333, reason="popular in X")]


def test_popular_items() -> None:
    ranked = [("a", 1.0), ("b", 2 / 3), ("c", 0.5)]
    assert popular_items(ranked, 2) == [
        RecItem(item_id="a", score=1.0, reason="trending"),
        RecItem(item_id="b", score=0.666667, reason="trending"),
    ]
    assert popular_items(ranked, 10, reason=category_reason("Drama"))[2] == RecItem(
        item_id="c", score=0.5, reason="popular in Drama"
    )
    assert popular_items([], 5) == []


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Sci-Fi", "sci-fi"),
        ("(no genres listed)", "no-genres-listed"),
        ("Film Noir", "film-noir"),
        ("", "_"),
        ("Action", "action"),
        ("  Rock & Roll!! ", "rock-roll"),
        ("a:b*c{d}", "a-b-c-d"),
        ("Café", "café"),
        ("日本", "日本"),
        ("Комедия", "комедия"),
        ("---", "_"),
        ("R2-D2", "r2-d2"),
    ],
)
def test_category_slug(name: str, slug: str) -> None:
    assert category_slug(name) == slug


def test_reclist_json_round_trip() -> None:
    doc = RecList(
        user_id=POPULAR_USER,
        items=[RecItem(item_id="a", score=1.0, reason="trending")],
        generated_at=1.5,
        event_ts=None,
        model_version="v",
    )
    assert POPULAR_USER == "_popular"
    assert RecList.model_validate_json(doc.model_dump_json()) == doc
    with pytest.raises(ValidationError):
        RecList.model_validate({"user_id": "u", "items": [], "generated_at": 1.0})
