"""One contract for every baseline ``Recommender``, then each model on a tiny known case."""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.baselines import (
    ItemKNNRecommender,
    PopularityRecommender,
    RandomRecommender,
    Recommender,
)
from models.ease import EASERecommender
from models.events import Event, EventType
from models.popularity import bump, score_at
from models.profile import DEFAULT_EVENT_WEIGHTS, event_weight
from models.sequential_rules import SequentialRulesRecommender
from models.sessionknn import VSKNNRecommender

T0 = 1_700_000_000.0
DAY = 86_400.0


def ev(user: str, item: str, ts: float = 0.0, kind: EventType = EventType.CLICK) -> Event:
    return Event(type=kind, user_id=user, item_id=item, ts=T0 + ts)


# u1 and u2 both had a and b; u3 and u4 had c and d; u4 also e. "a" is the most popular.
FIXTURE = [
    ev("u1", "a", 1),
    ev("u1", "b", 2),
    ev("u2", "a", 3),
    ev("u2", "b", 4),
    ev("u3", "c", 5),
    ev("u3", "d", 6),
    ev("u4", "c", 7),
    ev("u4", "d", 8),
    ev("u4", "e", 9),
    ev("u5", "a", 10),
]
KNOWN = {"a", "b", "c", "d", "e"}

Factory = Callable[[], Recommender]
FACTORIES: dict[str, Factory] = {
    "random": lambda: RandomRecommender(seed=3),
    "popularity": lambda: PopularityRecommender(),
    "popularity-decayed": lambda: PopularityRecommender(half_life_days=1.0),
    "itemknn": lambda: ItemKNNRecommender(k_neighbours=2, shrink=0.0, alpha=0.5),
    "itemknn-asymmetric-recency": lambda: ItemKNNRecommender(
        k_neighbours=2, shrink=1.0, alpha=0.8, history_half_life=1.0
    ),
    "ease": lambda: EASERecommender(),  # lambda tuned in fit
    "ease-fixed": lambda: EASERecommender(l2=1.0),
    "vsknn": lambda: VSKNNRecommender(k_neighbours=2, sample_size=3),
    "vsknn-no-extend": lambda: VSKNNRecommender(extend=False),
    "sr": lambda: SequentialRulesRecommender(steps=2, pruning=2),
    "sr-offline": lambda: SequentialRulesRecommender(online=False),
}


@pytest.fixture(params=list(FACTORIES))
def factory(request: pytest.FixtureRequest) -> Factory:
    return FACTORIES[request.param]


# --- contract ----------------------------------------------------------------------------


def test_is_a_recommender(factory: Factory) -> None:
    model = factory()
    assert isinstance(model, Recommender)
    assert model.name


@pytest.mark.parametrize("user", ["u1", "u3", "u5", "stranger"])
@pytest.mark.parametrize("k", [0, 1, 3, 5, 50])
def test_returns_up_to_k_distinct_known_items(factory: Factory, user: str, k: int) -> None:
    model = factory()
    model.fit(FIXTURE)
    recs = model.recommend(user, k)
    assert len(recs) == len(set(recs)) == min(k, len(KNOWN))  # every model fills the list
    assert set(recs) <= KNOWN


def test_honours_exclude(factory: Factory) -> None:
    model = factory()
    model.fit(FIXTURE)
    for exclude in (["a"], {"a", "b", "zzz"}, ("b", "c", "d", "e"), KNOWN):
        recs = model.recommend("u1", 5, exclude=exclude)
        assert not set(recs) & set(exclude)
        assert set(recs) == KNOWN - set(exclude)  # k covers all known items


def test_deterministic(factory: Factory) -> None:
    runs = []
    for _ in range(2):
        model = factory()
        model.fit(FIXTURE)
        model.observe(ev("u6", "f", 20))
        runs.append([model.recommend(u, 3, exclude={"c"}) for u in ("u1", "u6", "x", "u1")])
    assert runs[0] == runs[1]


def test_unknown_user_is_served(factory: Factory) -> None:
    model = factory()
    model.fit(FIXTURE)
    recs = model.recommend("never-seen", 2)
    assert len(recs) == 2
    if isinstance(model, PopularityRecommender):
        assert recs == model.recommend("u1", 2)  # the user is ignored
    if isinstance(model, ItemKNNRecommender):
        # served by undecayed popularity: a (3 events), then b, c, d (2 each) by item_id
        assert recs == ["a", "b"]


def test_observe_makes_new_items_known(factory: Factory) -> None:
    model = factory()
    model.fit(FIXTURE)
    model.observe(ev("u1", "new", 30))
    assert set(model.recommend("u1", 10)) == KNOWN | {"new"}


def test_fit_replaces_state(factory: Factory) -> None:
    model = factory()
    model.fit(FIXTURE)
    model.fit([ev("z1", "x", 1), ev("z2", "y", 2)])
    assert set(model.recommend("u1", 10)) == {"x", "y"}
    model.fit([])
    assert model.recommend("u1", 10) == []


def test_negative_k_raises(factory: Factory) -> None:
    model = factory()
    model.fit(FIXTURE)
    with pytest.raises(ValueError, match="k must be"):
        model.recommend("u1", -1)


STREAMS = st.lists(
    st.tuples(
        st.sampled_from(["u1", "u2", "u3", "u4"]),
        st.sampled_from(list("abcdefgh")),
        st.integers(min_value=0, max_value=30 * 86_400),
    ),
    min_size=1,
    max_size=25,
)


@pytest.mark.parametrize("name", list(FACTORIES))
@settings(max_examples=25, deadline=None)
@given(
    STREAMS,
    st.sets(st.sampled_from(list("abcdefghz")), max_size=4),
    st.integers(0, 9),
    st.integers(0, 25),
)
def test_contract_on_random_streams(
    name: str, stream: list[tuple[str, str, int]], exclude: set[str], k: int, split: int
) -> None:
    events = [ev(u, i, ts) for u, i, ts in stream]
    model = FACTORIES[name]()
    model.fit(events[:split])
    for event in events[split:]:
        model.observe(event)
    known = {e.item_id for e in events}
    for user in ("u1", "u4", "other"):
        recs = model.recommend(user, k, exclude=exclude)
        assert len(recs) == len(set(recs)) == min(k, len(known - exclude))
        assert set(recs) <= known - exclude


# --- random ------------------------------------------------------------------------------


def test_random_depends_on_the_seed_only() -> None:
    events = [ev("u", f"i{n}", n) for n in range(50)]
    lists = {}
    for seed in (1, 2):
        model = RandomRecommender(seed=seed)
        model.fit(events)
        lists[seed] = model.recommend("u", 10)
        model.fit(events)  # fit re-seeds
        assert model.recommend("u", 10) == lists[seed]
    assert lists[1] != lists[2]


@pytest.mark.parametrize("n_excluded", [0, 15])  # rejection and explicit sampling paths
def test_random_is_uniform(n_excluded: int) -> None:
    model = RandomRecommender(seed=0)
    model.fit([ev("u", f"i{n:02d}", n) for n in range(20)])
    exclude = {f"i{n:02d}" for n in range(n_excluded)}
    counts = Counter(item for _ in range(2_000) for item in model.recommend("u", 1, exclude))
    allowed = 20 - n_excluded
    assert set(counts) == {f"i{n:02d}" for n in range(n_excluded, 20)}
    expected = 2_000 / allowed
    # each count is Binomial(2000, 1/allowed): 5 standard deviations either side
    sd = math.sqrt(2_000 * (1 / allowed) * (1 - 1 / allowed))
    assert all(abs(c - expected) < 5 * sd for c in counts.values())


# --- popularity --------------------------------------------------------------------------


def test_popularity_most_frequent_first() -> None:
    # clicks: b x3, a x2, c x1; d and e once each (tie broken by item_id)
    events = [ev("u1", i, n) for n, i in enumerate(["b", "a", "b", "c", "a", "b", "e", "d"])]
    model = PopularityRecommender()
    model.fit(events)
    assert model.recommend("anyone", 5) == ["b", "a", "c", "d", "e"]
    assert model.recommend("anyone", 2, exclude={"b"}) == ["a", "c"]


def test_popularity_weighs_event_types() -> None:
    # one purchase (weight 8) beats three clicks (3 x 2 = 6); quantity multiplies, capped at 10
    events = [ev("u1", "b", 1), ev("u2", "b", 2), ev("u3", "b", 3)]
    model = PopularityRecommender()
    model.fit([*events, ev("u4", "c", 4, EventType.PURCHASE)])
    assert model.recommend("u", 2) == ["c", "b"]
    big = Event(type=EventType.VIEW, user_id="u", item_id="x", ts=T0, quantity=500)
    assert event_weight(big, DEFAULT_EVENT_WEIGHTS) == 10.0


def test_decay_makes_recent_popularity_win() -> None:
    # "old": 4 clicks on day 0; "new": 1 click on day 60. Half-life 10 days:
    # old = 4 * 2 * 2**-6 = 0.125 < new = 2, so new wins; undecayed, old (8) beats new (2).
    events = [ev(f"u{n}", "old", n) for n in range(4)] + [ev("u9", "new", 60 * DAY)]
    decayed = PopularityRecommender(half_life_days=10)
    decayed.fit(events)
    plain = PopularityRecommender()
    plain.fit(events)
    assert decayed.recommend("u", 2) == ["new", "old"]
    assert plain.recommend("u", 2) == ["old", "new"]
    assert decayed.scores()["old"] == pytest.approx(4 * 2 * 2**-6 / 2, rel=1e-4)


@settings(max_examples=40, deadline=None)
@given(STREAMS, st.integers(0, 25), st.sampled_from([None, 0.5, 3.0]))
def test_popularity_observe_equals_fit(
    stream: list[tuple[str, str, int]], split: int, half_life: float | None
) -> None:
    events = [ev(u, i, ts) for u, i, ts in stream]  # not in time order: out-of-order events
    online = PopularityRecommender(half_life_days=half_life)
    online.fit(events[:split])
    for event in events[split:]:
        online.observe(event)
    batch = PopularityRecommender(half_life_days=half_life)
    batch.fit(events)
    assert online.scores() == pytest.approx(batch.scores())
    # sorted by score, ties by item_id
    recs = online.recommend("u", 10)
    scores = online.scores()
    keys = [(-scores[i], i) for i in recs]
    assert all(
        a <= b or math.isclose(a[0], b[0], rel_tol=1e-9) for a, b in itertools.pairwise(keys)
    )


@settings(max_examples=40, deadline=None)
@given(STREAMS, st.sampled_from([0.5, 3.0, 30.0]))
def test_decayed_scores_match_models_popularity(
    stream: list[tuple[str, str, int]], half_life_days: float
) -> None:
    events = [ev(u, i, ts) for u, i, ts in stream]
    model = PopularityRecommender(half_life_days=half_life_days)
    for event in events:
        model.observe(event)
    h = half_life_days * DAY
    entries: dict[str, tuple[float, float]] = {}
    for e in events:
        entries[e.item_id] = bump(
            entries.get(e.item_id), event_weight(e, DEFAULT_EVENT_WEIGHTS), e.ts, h
        )
    now = max(e.ts for e in events)
    reference = {i: score_at(entry, now, h) for i, entry in entries.items()}
    best = max(reference.values())
    assert model.scores() == pytest.approx({i: s / best for i, s in reference.items()})


def test_decay_survives_many_half_lives() -> None:
    # 100 days at a 0.1-day half-life is 1000 half-lives: multipliers 2**1000 would
    # overflow without rescaling.
    events = [ev("u", f"i{n % 7}", n * DAY) for n in range(101)]
    model = PopularityRecommender(half_life_days=0.1)
    for event in events:
        model.observe(event)
    scores = model.scores()
    assert all(math.isfinite(s) for s in scores.values())
    assert model.recommend("u", 1) == ["i2"]  # day 100: 100 % 7 == 2
    batch = PopularityRecommender(half_life_days=0.1)
    batch.fit(events)
    assert batch.recommend("u", 3) == model.recommend("u", 3)


def test_popularity_rejects_bad_half_life() -> None:
    with pytest.raises(ValueError, match="half-life"):
        PopularityRecommender(half_life_days=0)


# --- item-kNN --------------------------------------------------------------------------------


def assert_neighbours(
    model: ItemKNNRecommender, item: str, expected: list[tuple[str, float]]
) -> None:
    got = model.neighbours(item)
    assert [j for j, _ in got] == [j for j, _ in expected]
    assert [s for _, s in got] == pytest.approx([s for _, s in expected])


def test_itemknn_recommends_the_co_consumed_item() -> None:
    model = ItemKNNRecommender(shrink=0.0, alpha=0.5)
    model.fit(FIXTURE)
    # u5 had only "a"; "b" was consumed with "a" by u1 and u2.
    assert model.recommend("u5", 1, exclude={"a"}) == ["b"]
    # a's users {u1, u2, u5}, b's {u1, u2}: cos = 2 / (sqrt(3) * sqrt(2)); no link to c, d, e
    assert_neighbours(model, "a", [("b", 2 / math.sqrt(6))])
    # c's users {u3, u4}, d's {u3, u4}, e's {u4}: cos(c, d) = 1, cos(c, e) = 1/sqrt(2)
    assert_neighbours(model, "c", [("d", 1.0), ("e", 0.5**0.5)])


def test_itemknn_shrink_and_pruning() -> None:
    model = ItemKNNRecommender(shrink=1.0, alpha=0.5, k_neighbours=1)
    model.fit(FIXTURE)
    assert_neighbours(model, "a", [("b", 2 / (math.sqrt(6) + 1))])
    assert [j for j, _ in model.neighbours("c")] == ["d"]  # only the best neighbour kept


def test_itemknn_scores_sum_over_history() -> None:
    model = ItemKNNRecommender(shrink=0.0, alpha=0.5)
    model.fit(FIXTURE)
    # u4 had c, d and e, all excluded; a and b have no similarity to them, so they come
    # from the popularity fill.
    assert model.recommend("u4", 5, exclude={"c", "d", "e"}) == ["a", "b"]
    # u3 had c and d: score(e) = sim(c,e) + sim(d,e) = 2/sqrt2 > score(d) = sim(c,d) = 1
    assert model.recommend("u3", 3, exclude={"c"}) == ["e", "d", "a"]


def test_itemknn_observe_extends_history_without_refitting() -> None:
    model = ItemKNNRecommender(shrink=0.0, alpha=0.5)
    model.fit(FIXTURE)
    before = model.neighbours("c")
    assert model.recommend("u6", 1) == ["a"]  # unknown user: most popular item
    model.observe(ev("u6", "c", 20))
    assert model.recommend("u6", 2, exclude={"c"}) == ["d", "e"]
    model.observe(ev("u6", "zz", 21))  # new item: no similarities, but known for the fill
    assert model.neighbours("zz") == []
    assert model.neighbours("c") == before
    assert "zz" in model.recommend("u6", 10)


def test_itemknn_without_fill() -> None:
    model = ItemKNNRecommender(shrink=0.0, alpha=0.5, fill_with_popular=False)
    model.fit(FIXTURE)
    assert model.recommend("stranger", 3) == []
    assert model.recommend("u5", 5) == ["b"]  # only a's neighbour; a itself has no self-link


@pytest.mark.parametrize("alpha", [0.5, 0.3, 0.9])
def test_itemknn_matches_dense_cosine(alpha: float) -> None:
    rng = random.Random(5)
    events = [ev(f"u{rng.randrange(30)}", f"i{rng.randrange(25):02d}", n) for n in range(200)]
    blocked = ItemKNNRecommender(k_neighbours=5, shrink=2.0, alpha=alpha, block_bytes=1)
    blocked.fit(events)  # one row per block
    whole = ItemKNNRecommender(k_neighbours=5, shrink=2.0, alpha=alpha)
    whole.fit(events)
    items = sorted({e.item_id for e in events})
    users = sorted({e.user_id for e in events})
    x = np.zeros((len(users), len(items)))
    for e in events:
        x[users.index(e.user_id), items.index(e.item_id)] = 1.0
    counts = x.sum(axis=0)  # c_i; with alpha 0.5 the denominator is ||X_i|| ||X_j||
    sims = (x.T @ x) / (np.outer(counts**alpha, counts ** (1 - alpha)) + 2.0)
    np.fill_diagonal(sims, 0.0)
    for row, item in enumerate(items):
        got = blocked.neighbours(item)
        assert got == whole.neighbours(item)
        assert len(got) == min(5, int((sims[row] > 0).sum()))
        fifth = sorted(sims[row], reverse=True)[len(got) - 1] if got else 0.0
        for other, value in got:
            assert value == pytest.approx(sims[row, items.index(other)])
            assert value >= fifth - 1e-12  # kept neighbours are the most similar


def test_itemknn_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="k_neighbours"):
        ItemKNNRecommender(k_neighbours=0)
    with pytest.raises(ValueError, match="shrink"):
        ItemKNNRecommender(shrink=-1.0)


def test_itemknn_asymmetric_cosine() -> None:
    # a's users {u1, u2, u5} (c_a = 3), b's {u1, u2} (c_b = 2), c_ab = 2.
    # alpha = 1: sim(i, j) = c_ij / c_i, the conditional probability P(j | i).
    model = ItemKNNRecommender(shrink=0.0, alpha=1.0)
    model.fit(FIXTURE)
    assert_neighbours(model, "a", [("b", 2 / 3)])
    assert_neighbours(model, "b", [("a", 1.0)])
    # alpha = 0: sim(i, j) = c_ij / c_j; shrink adds to the denominator
    model = ItemKNNRecommender(shrink=1.0, alpha=0.0)
    model.fit(FIXTURE)
    assert_neighbours(model, "a", [("b", 2 / (2 + 1))])
    assert_neighbours(model, "b", [("a", 2 / (3 + 1))])


def test_itemknn_history_half_life_favours_the_latest_item() -> None:
    # sim(a, b) = 2 / sqrt(6) ~ 0.82 and sim(c, d) = 1: without recency d wins whatever
    # the order; with a short half-life the neighbours of the newest item win.
    plain = ItemKNNRecommender(shrink=0.0, alpha=0.5)
    recent = ItemKNNRecommender(shrink=0.0, alpha=0.5, history_half_life=0.1)
    for model in (plain, recent):
        model.fit(FIXTURE)
        model.observe(ev("x", "c", 20))
        model.observe(ev("x", "a", 21))
        model.observe(ev("y", "a", 22))
        model.observe(ev("y", "c", 23))
    assert plain.recommend("x", 1, exclude={"a", "c"}) == ["d"]
    assert plain.recommend("y", 1, exclude={"a", "c"}) == ["d"]
    assert recent.recommend("x", 1, exclude={"a", "c"}) == ["b"]
    assert recent.recommend("y", 1, exclude={"a", "c"}) == ["d"]
    recent.observe(ev("y", "a", 24))  # clicking a again makes it the newest
    assert recent.recommend("y", 1, exclude={"a", "c"}) == ["b"]


def test_itemknn_rejects_bad_knobs() -> None:
    with pytest.raises(ValueError, match="alpha"):
        ItemKNNRecommender(alpha=1.5)
    with pytest.raises(ValueError, match="history_half_life"):
        ItemKNNRecommender(history_half_life=0.0)
