"""One contract suite over both ``Ranker`` implementations (``models.batchrank``).

``ReferenceRanker`` is ``recommend`` user by user; ``VectorRanker`` ranks a batch at
once. Greedy lists must be identical, and with exploration both must follow the same
epsilon-greedy policy with exact propensities.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter

import numpy as np
import pytest

from models.bandit import EpsilonGreedyRanker, EpsilonSchedule
from models.batchrank import Ranker, RankRequest, ReferenceRanker, VectorRanker
from models.profile import UserProfile
from models.recommender import EXPLORING, RankConfig
from models.rerank import ShownCounter
from tests.unit.test_recommender import CFG, NOW, VECTORS, action_fan, world

RANKERS = {"reference": ReferenceRanker, "vector": VectorRanker}


def request(
    profile: UserProfile, cfg: RankConfig = CFG, shown: dict[str, int] | None = None, seed: int = 7
) -> RankRequest:
    vec = None if profile.vector is None else np.array(profile.vector, dtype=np.float32)
    bandit = EpsilonGreedyRanker(cfg.epsilon, random.Random(seed))
    return RankRequest(profile, vec, ShownCounter(200, shown or {}), cfg, bandit, 0.0)


def users() -> list[UserProfile]:
    fan = action_fan()
    drama = UserProfile(
        user_id="u2",
        affinities={"Drama": 3.0},
        recent=["b1"],
        last_ts=NOW - 10,
        vector=[float(x) for x in VECTORS["b1"]],
    )
    new = UserProfile(user_id="u3")
    no_vector = UserProfile(user_id="u4", affinities={"Action": 1.0}, recent=["a3"])
    return [fan, drama, new, no_vector]


@pytest.fixture(params=list(RANKERS), ids=list(RANKERS))
def ranker(request: pytest.FixtureRequest) -> Ranker:
    made: Ranker = RANKERS[request.param]()
    return made


def test_greedy_lists_equal_the_reference_definition(ranker: Ranker) -> None:
    view = world()
    got = ranker.rank_batch([request(p) for p in users()], view, NOW)
    want = ReferenceRanker().rank_batch([request(p) for p in users()], view, NOW)
    assert [[(i.item_id, i.reason, i.propensity) for i in lst] for lst in got] == [
        [(i.item_id, i.reason, i.propensity) for i in lst] for lst in want
    ]
    for g, w in zip(got, want, strict=True):
        assert [i.score for i in g] == pytest.approx([i.score for i in w], abs=1e-6)


@pytest.mark.parametrize("diversity", [0.0, 0.5, 1.0])
def test_greedy_lists_agree_for_any_diversity_and_shows(ranker: Ranker, diversity: float) -> None:
    view = world()
    cfg = dataclasses.replace(CFG, diversity=diversity, k=6)
    shown = {"a3": 3, "b0": 1}
    got = ranker.rank_batch([request(p, cfg, shown) for p in users()], view, NOW)
    want = ReferenceRanker().rank_batch([request(p, cfg, shown) for p in users()], view, NOW)
    for g, w in zip(got, want, strict=True):
        # diversity 1 makes exact ties, which float rounding may order either way
        assert [i.score for i in g] == pytest.approx([i.score for i in w], abs=1e-6)
        assert {i.item_id for i in g} == {i.item_id for i in w}
        if diversity < 1:
            assert [i.item_id for i in g] == [i.item_id for i in w]


def test_a_batch_ranks_each_user_as_if_alone(ranker: Ranker) -> None:
    view = world()
    together = ranker.rank_batch([request(p) for p in users()], view, NOW)
    alone = [ranker.rank_batch([request(p)], view, NOW)[0] for p in users()]
    assert [[i.item_id for i in lst] for lst in together] == [
        [i.item_id for i in lst] for lst in alone
    ]


def test_purchased_recent_and_unavailable_never_appear(ranker: Ranker) -> None:
    fan = action_fan()
    (got,) = ranker.rank_batch([request(fan)], world(), NOW)
    shown = {i.item_id for i in got}
    assert not shown & ({"a1", "a0", "b5", "a2"})
    assert len(shown) == len(got)


@pytest.mark.parametrize("epsilon", [0.3, 1.0])
def test_exploring_propensities_are_exact(ranker: Ranker, epsilon: float) -> None:
    """Every slot's propensity is (1 - eps)[greedy] + eps / remaining, and the
    frequency of each first-slot item over many draws matches its propensity."""
    view = world()
    cfg = dataclasses.replace(CFG, k=4, epsilon=EpsilonSchedule(epsilon))
    fan = action_fan()
    (greedy,) = ReferenceRanker().rank_batch(
        [request(fan, dataclasses.replace(cfg, epsilon=EpsilonSchedule(0.0)))], view, NOW
    )
    pool = len(
        ReferenceRanker().rank_batch(
            [request(fan, dataclasses.replace(cfg, k=1000, epsilon=EpsilonSchedule(0.0)))],
            view,
            NOW,
        )[0]
    )
    first: Counter[str] = Counter()
    runs = 3000
    for seed in range(runs):
        made = type(ranker)(seed) if isinstance(ranker, VectorRanker) else ranker
        (lst,) = made.rank_batch([request(fan, cfg, seed=seed)], view, NOW)
        for position, item in enumerate(lst):
            explored = item.reason == EXPLORING
            assert item.propensity == pytest.approx(
                (1 - epsilon) * (not explored or item.propensity > epsilon / (pool - position))
                + epsilon / (pool - position)
            ) or item.propensity == pytest.approx(epsilon / (pool - position))
        first[lst[0].item_id] += 1
    top = greedy[0].item_id
    assert first[top] / runs == pytest.approx((1 - epsilon) + epsilon / pool, abs=0.03)
    other = next(i for i in first if i != top)
    assert first[other] / runs == pytest.approx(epsilon / pool, abs=0.03)


@pytest.mark.parametrize("protected", [1, 2])
def test_protected_slots_never_explore(ranker: Ranker, protected: int) -> None:
    """At epsilon 1 the protected slots hold the greedy items with propensity 1 and
    every later slot is uniform over what remains: propensity 1 / remaining."""
    view = world()
    cfg = dataclasses.replace(CFG, k=5, epsilon=EpsilonSchedule(1.0), protected_slots=protected)
    fan = action_fan()
    greedy_cfg = dataclasses.replace(cfg, epsilon=EpsilonSchedule(0.0))
    (greedy,) = ReferenceRanker().rank_batch([request(fan, greedy_cfg)], view, NOW)
    (whole,) = ReferenceRanker().rank_batch(
        [request(fan, dataclasses.replace(greedy_cfg, k=1000))], view, NOW
    )
    pool = len(whole)
    later: Counter[str] = Counter()
    for seed in range(300):
        made = type(ranker)(seed) if isinstance(ranker, VectorRanker) else ranker
        (lst,) = made.rank_batch([request(fan, cfg, seed=seed)], view, NOW)
        assert [i.item_id for i in lst[:protected]] == [i.item_id for i in greedy[:protected]]
        assert all(i.propensity == 1.0 and i.reason != EXPLORING for i in lst[:protected])
        for position, item in enumerate(lst[protected:], protected):
            assert item.reason == EXPLORING
            assert item.propensity == pytest.approx(1 / (pool - position))
        later[lst[protected].item_id] += 1
    assert len(later) > 3  # the first free slot really explores


def test_an_empty_batch_and_an_empty_world(ranker: Ranker) -> None:
    assert ranker.rank_batch([], world(), NOW) == []
    empty = world(global_top=(), category_top={})
    assert ranker.rank_batch([request(UserProfile(user_id="x"))], empty, NOW) == [[]]


def test_a_bad_user_vector_is_a_clear_error(ranker: Ranker) -> None:
    bad = dataclasses.replace(request(action_fan()), vector=np.ones(3, dtype=np.float32))
    with pytest.raises(ValueError, match="dimension"):
        ranker.rank_batch([bad], world(), NOW)


def _full_mmr(
    relevance: np.ndarray, units: np.ndarray, valid: np.ndarray, k: int, div: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MMR over every column (the definition ``VectorRanker._mmr`` prunes)."""
    b, width = relevance.shape
    steps = min(k, width)
    rel = (1.0 - div) * relevance
    max_sim = np.zeros((b, width))
    taken = ~valid
    order = np.full((b, steps), -1)
    values = np.zeros((b, steps))
    rows = np.arange(b)
    for step in range(steps):
        marginal = np.where(taken, -np.inf, rel - div * max_sim)
        col = np.argmax(marginal, axis=1)
        ok = np.isfinite(marginal[rows, col])
        order[ok, step] = col[ok]
        values[ok, step] = marginal[rows, col][ok]
        taken[rows[ok], col[ok]] = True
        if step + 1 < steps:
            sims = units @ units[rows, col][:, :, None]
            max_sim = np.where(ok[:, None], np.maximum(max_sim, sims[:, :, 0]), max_sim)
    return order, values, rel - div * max_sim


@pytest.mark.parametrize("diversity", [0.0, 0.05, 0.3, 1.0])
def test_pruned_mmr_picks_what_full_mmr_picks(diversity: float) -> None:
    rng = np.random.default_rng(int(diversity * 100))
    b, width, dim, k = 12, 80, 8, 10
    units = rng.normal(size=(b, width, dim))
    units /= np.linalg.norm(units, axis=2, keepdims=True)
    relevance = rng.random((b, width)) ** 3
    relevance[:, ::7] = relevance[:, 1::7][:, : relevance[:, ::7].shape[1]]  # ties
    valid = rng.random((b, width)) < 0.9
    valid[0, 5:] = False  # a row shorter than k
    valid[1] = False  # an empty row
    cfg = dataclasses.replace(RankConfig(), k=k, diversity=diversity)
    has = np.ones((b, width), dtype=bool)
    order, values, after = VectorRanker._mmr(relevance, units, valid, cfg, has)
    want_order, want_values, want_after = _full_mmr(relevance, units, valid, k, diversity)
    assert order.tolist() == want_order.tolist()
    assert values == pytest.approx(want_values, abs=1e-12)
    for col in range(width):
        cols = np.full(b, col)
        assert after.at(cols) == pytest.approx(want_after[:, col], abs=1e-12)
