"""User profiles: decayed category affinities, bounded history, counts."""

from __future__ import annotations

import copy
import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.events import Event, EventType
from models.profile import (
    DEDUP_WINDOW,
    DEFAULT_EVENT_WEIGHTS,
    ProfileConfig,
    UserProfile,
    already_applied,
    apply_event,
    decay_factor,
    mark_applied,
)

T0 = 1_700_000_000.0
HL = 10.0
CFG = ProfileConfig(half_life_s=HL)


def ev(kind: str, item: str, ts: float, quantity: int = 1, user: str = "u1") -> Event:
    return Event(type=EventType(kind), user_id=user, item_id=item, ts=ts, quantity=quantity)


def run(
    events: list[tuple[Event, list[str]]],
    cfg: ProfileConfig = CFG,
    profile: UserProfile | None = None,
) -> UserProfile:
    for event, cats in events:
        profile = apply_event(profile, event, cats, cfg)
    assert profile is not None
    return profile


def test_default_weights() -> None:
    assert dict(DEFAULT_EVENT_WEIGHTS) == {
        EventType.VIEW: 1.0,
        EventType.CLICK: 2.0,
        EventType.ADD_TO_CART: 4.0,
        EventType.PURCHASE: 8.0,
    }
    cfg = ProfileConfig()
    assert cfg.half_life_s == 30 * 86_400.0
    assert (cfg.history_size, cfg.max_categories, cfg.max_purchased) == (2000, 32, 200)


def test_decay_factor_values() -> None:
    assert decay_factor(0.0, HL) == 1.0
    assert decay_factor(-5.0, HL) == 1.0
    assert decay_factor(10.0, HL) == pytest.approx(0.5, rel=1e-12)
    assert decay_factor(20.0, HL) == pytest.approx(0.25, rel=1e-12)
    assert decay_factor(5.0, HL) == pytest.approx(1 / math.sqrt(2), rel=1e-12)


def test_first_event_creates_profile() -> None:
    p = apply_event(None, ev("click", "i1", T0), ["Action"], CFG)
    assert p.user_id == "u1"
    assert p.affinities == {"Action": 2.0}
    assert p.recent == ["i1"]
    assert p.purchased == []
    assert p.counts == {"click": 1}
    assert p.n_events == 1
    assert p.last_ts == T0


def test_decay_hand_computed() -> None:
    # click (2) in A at t=0, purchase (8) in A at t=10: 2 * 0.5 + 8 = 9.
    p = run([(ev("click", "i1", T0), ["A"]), (ev("purchase", "i2", T0 + 10), ["A"])])
    assert p.affinities == {"A": pytest.approx(9.0, rel=1e-12)}
    assert p.last_ts == T0 + 10


def test_decay_hand_computed_two_categories() -> None:
    # click (2) in A at t=0; purchase (8) in A and B at t=10 -> A = 1 + 4, B = 4;
    # view (1) in B at t=20 -> A = 5 * 0.5 = 2.5, B = 4 * 0.5 + 1 = 3.
    p = run(
        [
            (ev("click", "i1", T0), ["A"]),
            (ev("purchase", "i2", T0 + 10), ["A", "B"]),
            (ev("view", "i3", T0 + 20), ["B"]),
        ]
    )
    assert p.affinities == {"A": pytest.approx(2.5, rel=1e-12), "B": pytest.approx(3.0, rel=1e-12)}
    assert [c for c, _ in p.top_categories(2)] == ["B", "A"]
    assert [c for c, _ in p.top_categories(1)] == ["B"]
    assert [w for _, w in p.top_categories(2)] == pytest.approx([3.0, 2.5])


@pytest.mark.parametrize(
    ("kind", "weight"), [("view", 1.0), ("click", 2.0), ("add_to_cart", 4.0), ("purchase", 8.0)]
)
def test_weights_by_type(kind: str, weight: float) -> None:
    assert apply_event(None, ev(kind, "i", T0), ["C"], CFG).affinities == {"C": weight}


def test_custom_weights_and_zero_weight() -> None:
    cfg = ProfileConfig(event_weights={EventType.VIEW: 0.0, EventType.CLICK: 3.0}, half_life_s=HL)
    p = apply_event(None, ev("view", "i1", T0), ["C"], cfg)
    assert p.affinities == {}
    assert p.counts == {"view": 1}
    assert p.recent == ["i1"]
    assert apply_event(p, ev("click", "i2", T0), ["C"], cfg).affinities == {"C": 3.0}
    # A type missing from the weights counts as zero.
    assert apply_event(None, ev("purchase", "i3", T0), ["C"], cfg).affinities == {}


@pytest.mark.parametrize(
    ("quantity", "expected"), [(1, 8.0), (3, 24.0), (10, 80.0), (11, 80.0), (500, 80.0)]
)
def test_quantity_multiplies_weight_capped_at_ten(quantity: int, expected: float) -> None:
    p = apply_event(None, ev("purchase", "i", T0, quantity=quantity), ["C"], CFG)
    assert p.affinities == {"C": expected}
    assert p.counts == {"purchase": 1}


def test_out_of_order_event_adds_decayed_weight_and_keeps_anchor() -> None:
    p = run([(ev("click", "i1", T0 + 10), ["A"])])
    late = apply_event(p, ev("purchase", "i0", T0), ["A", "B"], CFG)
    # purchase 8 happened 10 s before the anchor: 4 left, split 2 + 2.
    assert late.affinities == {"A": pytest.approx(4.0), "B": pytest.approx(2.0)}
    assert late.last_ts == T0 + 10
    # The late item goes after the newer history, the purchase is still recorded.
    assert late.recent == ["i1", "i0"]
    assert late.purchased == ["i0"]
    assert late.counts == {"click": 1, "purchase": 1}


def test_out_of_order_result_matches_in_order_result() -> None:
    a = (ev("click", "i1", T0), ["A"])
    b = (ev("add_to_cart", "i2", T0 + 7), ["A", "B"])
    c = (ev("view", "i3", T0 + 13), ["B"])
    in_order = run([a, b, c])
    shuffled = run([c, a, b])
    assert in_order.last_ts == shuffled.last_ts == T0 + 13
    assert in_order.affinities.keys() == shuffled.affinities.keys()
    for cat, w in in_order.affinities.items():
        assert shuffled.affinities[cat] == pytest.approx(w, rel=1e-12)


def test_event_at_same_time_as_anchor_moves_to_front() -> None:
    p = run([(ev("view", "i1", T0), ["A"]), (ev("view", "i2", T0), ["A"])])
    assert p.recent == ["i2", "i1"]
    assert p.affinities == {"A": 2.0}


def test_out_of_order_item_already_in_history_stays_put() -> None:
    p = run([(ev("view", "i1", T0), []), (ev("view", "i2", T0 + 5), [])])
    late = apply_event(p, ev("view", "i1", T0 + 1), [], CFG)
    assert late.recent == ["i2", "i1"]


def test_out_of_order_item_is_dropped_when_history_is_full() -> None:
    cfg = ProfileConfig(half_life_s=HL, history_size=2)
    p = run([(ev("view", "i1", T0 + 1), []), (ev("view", "i2", T0 + 2), [])], cfg)
    late = apply_event(p, ev("view", "i0", T0), [], cfg)
    assert late.recent == ["i2", "i1"]


def test_categories_split_weight_equally_and_dedupe() -> None:
    p = apply_event(None, ev("purchase", "i", T0), ["A", "B", "C", "D"], CFG)
    assert p.affinities == {"A": 2.0, "B": 2.0, "C": 2.0, "D": 2.0}
    dup = apply_event(None, ev("purchase", "i", T0), ["A", "B", "A"], CFG)
    assert dup.affinities == {"A": 4.0, "B": 4.0}


def test_no_categories_changes_only_history_and_counts() -> None:
    p = run([(ev("click", "i1", T0), ["A"])])
    q = apply_event(p, ev("view", "i2", T0 + 10), [], CFG)
    assert q.affinities == {"A": pytest.approx(1.0)}  # decayed to the new anchor
    assert q.recent == ["i2", "i1"]
    assert q.counts == {"click": 1, "view": 1}


def test_max_categories_keeps_the_strongest() -> None:
    cfg = ProfileConfig(half_life_s=HL, max_categories=2)
    p = run(
        [
            (ev("purchase", "i1", T0), ["A"]),  # A = 8
            (ev("click", "i2", T0), ["B"]),  # B = 2
            (ev("add_to_cart", "i3", T0), ["C"]),  # C = 4 -> B dropped
        ],
        cfg,
    )
    assert p.affinities == {"A": 8.0, "C": 4.0}
    weak = apply_event(p, ev("view", "i4", T0), ["D"], cfg)  # D = 1 is the weakest
    assert weak.affinities == {"A": 8.0, "C": 4.0}
    tie = apply_event(weak, ev("add_to_cart", "i5", T0), ["B"], cfg)  # B = 4 ties C
    assert tie.affinities == {"A": 8.0, "B": 4.0}  # ties broken by name


def test_history_bounded_most_recent_first_without_repeats() -> None:
    cfg = ProfileConfig(half_life_s=HL, history_size=3)
    items = ["i1", "i2", "i3", "i2", "i4", "i4"]
    p = run([(ev("view", item, T0 + n), []) for n, item in enumerate(items)], cfg)
    assert p.recent == ["i4", "i2", "i3"]
    assert p.counts == {"view": 6}


@given(
    items=st.lists(st.sampled_from([f"i{n}" for n in range(8)]), min_size=1, max_size=30),
    bound=st.integers(1, 10),
)
def test_history_is_the_newest_distinct_items(items: list[str], bound: int) -> None:
    cfg = ProfileConfig(half_life_s=HL, history_size=bound)
    p = run([(ev("view", item, T0 + n), []) for n, item in enumerate(items)], cfg)
    newest_first = list(dict.fromkeys(reversed(items)))
    assert p.recent == newest_first[:bound]


def test_purchased_list_most_recent_first_bounded() -> None:
    cfg = ProfileConfig(half_life_s=HL, max_purchased=2)
    p = run(
        [
            (ev("purchase", "i1", T0), []),
            (ev("view", "i9", T0 + 1), []),
            (ev("purchase", "i2", T0 + 2), []),
            (ev("purchase", "i1", T0 + 3), []),
            (ev("purchase", "i3", T0 + 4), []),
        ],
        cfg,
    )
    assert p.purchased == ["i3", "i1"]
    assert p.counts == {"purchase": 4, "view": 1}
    assert p.n_events == 5


def test_counts_per_type() -> None:
    kinds = ["view", "view", "click", "add_to_cart", "purchase", "view"]
    p = run([(ev(k, f"i{n}", T0 + n), ["A"]) for n, k in enumerate(kinds)])
    assert p.counts == {"view": 3, "click": 1, "add_to_cart": 1, "purchase": 1}
    assert p.n_events == 6


def test_input_profile_is_not_mutated() -> None:
    p = run([(ev("click", "i1", T0), ["A"]), (ev("purchase", "i2", T0 + 1), ["B"])])
    snapshot = copy.deepcopy(p.to_dict())
    apply_event(p, ev("purchase", "i3", T0 + 50), ["A", "C"], CFG)
    apply_event(p, ev("view", "i4", T0 - 50), ["D"], CFG)
    assert p.to_dict() == snapshot


def test_affinities_at_decays_forward_only() -> None:
    p = run([(ev("purchase", "i", T0), ["A", "B"])])
    assert p.affinities_at(T0 + 10, HL) == {"A": pytest.approx(2.0), "B": pytest.approx(2.0)}
    assert p.affinities_at(T0 - 10, HL) == {"A": 4.0, "B": 4.0}


def test_to_dict_from_dict_round_trip() -> None:
    p = run(
        [
            (ev("click", "i1", T0), ["A"]),
            (ev("purchase", "i2", T0 + 3), ["A", "B"]),
            (ev("view", "i3", T0 + 4.5), []),
        ]
    )
    d = p.to_dict()
    assert set(d) == {
        "user_id",
        "affinities",
        "recent",
        "purchased",
        "counts",
        "last_ts",
        "vector",
        "mass",
        "applied",
        "event_ids",
    }
    assert UserProfile.from_dict(d) == p
    wire = json.loads(json.dumps(d))
    back = UserProfile.from_dict(wire)
    assert back == p
    assert back.last_ts == T0 + 4.5
    assert back.counts == {"click": 1, "purchase": 1, "view": 1}


def test_from_dict_defaults_and_coercion() -> None:
    p = UserProfile.from_dict({"user_id": "u1"})
    assert p == UserProfile(user_id="u1")
    assert (p.affinities, p.recent, p.purchased, p.counts, p.last_ts) == ({}, [], [], {}, 0.0)
    q = UserProfile.from_dict({"user_id": "u1", "affinities": {"A": 1}, "counts": {"view": 2.0}})
    assert q.affinities == {"A": 1.0}
    assert isinstance(q.affinities["A"], float)
    assert q.counts == {"view": 2}
    assert isinstance(q.counts["view"], int)


def test_replays_and_repeated_event_ids_are_recognised() -> None:
    cfg = ProfileConfig()
    first = Event(type="click", user_id="u1", item_id="i1", ts=T0, event_id="e1")
    p = mark_applied(apply_event(None, first, [], cfg), first, (2, 40))
    assert p.applied == {"2": 40}
    assert p.event_ids == ["e1"]
    assert already_applied(None, first, (2, 40)) is None
    # the same message again after a crash: same partition, same offset
    assert "offset 40" in (already_applied(p, first, (2, 40)) or "")
    # a producer retry of the same event at a later offset
    assert "e1" in (already_applied(p, first, (2, 41)) or "")
    later = Event(type="click", user_id="u1", item_id="i2", ts=T0 + 1)
    assert already_applied(p, later, (2, 41)) is None
    # an older offset with a newer event time (e.g. the topic was recreated) is new
    assert already_applied(p, later, (2, 3)) is None
    assert already_applied(p, later, (5, 3)) is None  # another partition
    q = mark_applied(p, later, (2, 41))
    assert q.applied == {"2": 41}
    assert q.event_ids == ["e1"]  # no event_id, nothing remembered
    many = q
    for n in range(DEDUP_WINDOW + 5):
        e = Event(type="view", user_id="u1", item_id="i3", ts=T0 + 2 + n, event_id=f"x{n}")
        many = mark_applied(many, e, None)
    assert len(many.event_ids) == DEDUP_WINDOW
    assert many.event_ids[0] == f"x{DEDUP_WINDOW + 4}"
