"""Time-decayed popularity: exact scores, order independence, rankings."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.popularity import (
    Entry,
    bump,
    half_life_seconds,
    newest_anchor,
    score_at,
    top,
    top_by_category,
)

T0 = 1_700_000_000.0
HL = 10.0


def test_bump_from_nothing() -> None:
    assert bump(None, 2.0, T0, HL) == (2.0, T0)


def test_bump_newer_event_decays_then_adds() -> None:
    entry = bump((4.0, T0), 1.0, T0 + 10, HL)
    assert entry[1] == T0 + 10
    assert entry[0] == pytest.approx(3.0, rel=1e-12)  # 4 * 0.5 + 1


def test_bump_older_event_adds_decayed_weight_and_keeps_anchor() -> None:
    entry = bump((4.0, T0 + 20), 8.0, T0, HL)
    assert entry[1] == T0 + 20
    assert entry[0] == pytest.approx(6.0, rel=1e-12)  # 4 + 8 * 0.25


def test_bump_same_time_adds() -> None:
    assert bump((4.0, T0), 8.0, T0, HL) == (12.0, T0)


def test_bump_accepts_lists_from_json_tables() -> None:
    entry = bump([4.0, T0], 1.0, T0 + 10, HL)
    assert isinstance(entry, tuple)
    assert entry[0] == pytest.approx(3.0)
    assert entry[1] == T0 + 10


def test_score_at_exact_values() -> None:
    entry: Entry = (8.0, T0)
    assert score_at(entry, T0, HL) == 8.0
    assert score_at(entry, T0 + 10, HL) == pytest.approx(4.0, rel=1e-12)
    assert score_at(entry, T0 + 30, HL) == pytest.approx(1.0, rel=1e-12)
    assert score_at([8.0, T0], T0 + 20, HL) == pytest.approx(2.0, rel=1e-12)
    # No growth when asked about a time before the anchor.
    assert score_at(entry, T0 - 100, HL) == 8.0


EVENTS = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=10.0, allow_nan=False),
        st.floats(min_value=0.0, max_value=100.0, allow_nan=False),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(EVENTS, st.randoms(use_true_random=False))
def test_order_independence(events: list[tuple[float, float]], rnd: random.Random) -> None:
    shuffled = list(events)
    rnd.shuffle(shuffled)
    a: Entry | None = None
    b: Entry | None = None
    for weight, dt in events:
        a = bump(a, weight, T0 + dt, HL)
    for weight, dt in shuffled:
        b = bump(b, weight, T0 + dt, HL)
    assert a is not None
    assert b is not None
    latest = T0 + max(dt for _, dt in events)
    assert a[1] == b[1] == latest
    common = latest + 5.0
    expected = sum(w * 0.5 ** ((common - (T0 + dt)) / HL) for w, dt in events)
    assert score_at(a, common, HL) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert score_at(b, common, HL) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_top_orders_normalises_and_limits() -> None:
    entries = {"a": (4.0, T0), "b": (8.0, T0 + 10), "c": (2.0, T0 + 10), "d": (1.0, T0 + 10)}
    # At T0 + 10: a = 2, b = 8, c = 2 (tie with a, same score), d = 1.
    ranked = top(entries, T0 + 10, HL, k=3, exclude=("c",))
    assert [i for i, _ in ranked] == ["b", "a", "d"]
    assert [s for _, s in ranked] == [1.0, pytest.approx(0.25), pytest.approx(0.125)]
    assert top(entries, T0 + 10, HL, k=1) == [("b", 1.0)]
    assert top(entries, T0 + 10, HL, k=0) == []


def test_top_uses_the_given_time() -> None:
    entries = {"old": (10.0, T0), "new": (6.0, T0 + 10)}
    assert [i for i, _ in top(entries, T0, HL, k=2)] == ["old", "new"]
    # At T0 + 10, old has decayed to 5 and new is 6.
    ranked = top(entries, T0 + 10, HL, k=2)
    assert ranked == [("new", 1.0), ("old", pytest.approx(5 / 6))]


def test_top_empty_zero_and_all_excluded() -> None:
    assert top({}, T0, HL, k=5) == []
    assert top({"a": (0.0, T0)}, T0, HL, k=5) == []
    assert top({"a": (1.0, T0)}, T0, HL, k=5, exclude={"a"}) == []


def test_top_by_category() -> None:
    entries = {
        "a": (8.0, T0),
        "b": (4.0, T0),
        "c": (2.0, T0),
        "d": (6.0, T0),
        "orphan": (100.0, T0),
        "nocat": (50.0, T0),
    }
    cats = {"a": ["X", "Y"], "b": ["X"], "c": ["X"], "d": ["Y"], "nocat": []}
    result = top_by_category(entries, cats, T0, HL, k=2)
    assert result == {
        "X": [("a", 1.0), ("b", 0.5)],
        "Y": [("a", 1.0), ("d", 0.75)],
    }
    assert top_by_category(entries, cats, T0, HL, k=1) == {"X": [("a", 1.0)], "Y": [("a", 1.0)]}
    assert top_by_category({}, cats, T0, HL, k=2) == {}


def test_top_by_category_decays_to_common_time() -> None:
    entries = {"a": (8.0, T0), "b": (5.0, T0 + 10)}
    cats = {"a": ["X"], "b": ["X"]}
    assert top_by_category(entries, cats, T0 + 10, HL, k=5) == {
        "X": [("b", 1.0), ("a", pytest.approx(0.8))]
    }


def test_newest_anchor() -> None:
    assert newest_anchor({}) is None
    assert newest_anchor({"a": (1.0, T0), "b": [2.0, T0 + 5], "c": (3.0, T0 - 5)}) == T0 + 5


def test_half_life_seconds() -> None:
    assert half_life_seconds(1) == 86_400.0
    assert half_life_seconds(0.5) == 43_200.0
    assert half_life_seconds(30) == 2_592_000.0


@pytest.mark.parametrize("days", [0.0, -1.0, math.nan, math.inf, -math.inf])
def test_half_life_seconds_rejects_non_positive(days: float) -> None:
    with pytest.raises(ValueError, match="half-life must be a positive number of days"):
        half_life_seconds(days)
