"""Off-policy estimates (``models.offpolicy``) on logs whose true values are known.

The simulated world: a fixed pool of items with fixed exploit scores (so the greedy
order is known) and a click probability per item; lists are logged by the real
``models.bandit.epsilon_greedy_rank``, and a slot's reward is its click times the NDCG
discount. The true value of any epsilon-greedy policy is computed exactly by
enumerating every list it can produce.
"""

from __future__ import annotations

import functools
import math
import random

import numpy as np
import pytest

from models.bandit import (
    Candidate,
    epsilon_greedy_rank,
    greedy_order,
    slot_epsilon,
    slot_propensity,
)
from models.offpolicy import (
    EpsilonPolicy,
    LogBuilder,
    SlateLog,
    decode_slot,
    estimate,
    mean_interval,
    weights,
)

POOL = [Candidate(f"i{j}", s) for j, s in enumerate([0.9, 0.7, 0.5, 0.4, 0.2, 0.1])]
CLICK = {"i0": 0.30, "i1": 0.05, "i2": 0.25, "i3": 0.02, "i4": 0.40, "i5": 0.10}
"""Deliberately not ordered like the scores: exploring can pay in some slots."""
K = 3


def discount(slot: int) -> float:
    return 1.0 / math.log2(slot + 2)


def true_value(policy: EpsilonPolicy, pool: list[Candidate] = POOL, k: int = K) -> float:
    """Expected sum over slots of click * discount, by enumerating every list."""

    def walk(remaining: list[Candidate], slot: int) -> float:
        if slot == k or not remaining:
            return 0.0
        eps = slot_epsilon(slot, policy.epsilon, policy.protected)
        total = 0.0
        for c in remaining:
            p = slot_propensity(c.item_id, remaining, eps)
            if p > 0:
                rest = [r for r in remaining if r.item_id != c.item_id]
                total += p * (CLICK[c.item_id] * discount(slot) + walk(rest, slot + 1))
        return total

    return walk(list(pool), 0)


@functools.cache
def simulate(
    rounds: int, epsilon: float, seed: int, protected: int = 0, users: int | None = None
) -> SlateLog:
    """A log of ``rounds`` lists at ``epsilon``, rewards drawn from ``CLICK``."""
    rng = random.Random(seed)
    clicks = np.random.default_rng(seed)
    log = LogBuilder(K)
    for t in range(rounds):
        slots = epsilon_greedy_rank(POOL, K, epsilon, rng, protected)
        taken = [s.item_id for s in slots]
        greedy = [
            greedy_order([c for c in POOL if c.item_id not in taken[:n]])[0].item_id == item
            for n, item in enumerate(taken)
        ]
        log.add(
            f"u{t % users if users else t}",
            [float(clicks.random() < CLICK[s.item_id]) * discount(s.position) for s in slots],
            [s.propensity for s in slots],
            greedy,
            [len(POOL) - s.position for s in slots],
        )
    return log.build()


# --- the policy and the decoding ---------------------------------------------------------


@pytest.mark.parametrize("epsilon", [0.05, 0.2, 0.5])
def test_decode_slot_recovers_greedy_and_remaining_from_the_bandit(epsilon: float) -> None:
    rng = random.Random(3)
    pool = [Candidate(f"c{j}", rng.random()) for j in range(300)]
    for _ in range(50):
        slots = epsilon_greedy_rank(pool, 20, epsilon, rng)
        for s in slots:
            rest = [c for c in pool if c.item_id not in {x.item_id for x in slots[: s.position]}]
            greedy = greedy_order(rest)[0].item_id == s.item_id
            assert decode_slot(s.propensity, epsilon) == (greedy, len(rest))


def test_decode_slot_rejects_what_it_cannot_invert() -> None:
    with pytest.raises(ValueError, match="epsilon"):
        decode_slot(0.5, 0.7)
    with pytest.raises(ValueError, match="propensity"):
        decode_slot(0.0, 0.1)


def test_policy_propensities_match_the_bandit_and_protect_slots() -> None:
    greedy = np.array([[True, False, True]])
    remaining = np.array([[6, 5, 4]])
    got = EpsilonPolicy(0.3, protected=1).propensities(greedy, remaining)
    assert got[0].tolist() == pytest.approx([1.0, 0.3 / 5, 0.7 + 0.3 / 4])
    assert EpsilonPolicy(0.0).propensities(greedy, remaining)[0].tolist() == [1.0, 0.0, 1.0]


# --- known answers ------------------------------------------------------------------------


def test_the_logging_policy_as_target_gives_the_on_policy_mean() -> None:
    log = simulate(500, 0.3, seed=1)
    assert np.all(weights(log, EpsilonPolicy(0.3)) == pytest.approx(1.0))
    got = estimate(log, EpsilonPolicy(0.3), n_boot=50)
    assert got["ips"].value == pytest.approx(log.value())
    assert got["snips"].value == pytest.approx(log.value())


def test_a_target_the_log_cannot_support_is_refused() -> None:
    log = simulate(50, 0.3, seed=2, protected=1)
    with pytest.raises(ValueError, match="never explored"):
        estimate(log, EpsilonPolicy(0.1, protected=0))
    estimate(log, EpsilonPolicy(0.1, protected=2), n_boot=10)  # fewer explored slots: fine


@pytest.mark.parametrize(
    "target",
    [EpsilonPolicy(0.0), EpsilonPolicy(0.1), EpsilonPolicy(0.5, 1), EpsilonPolicy(0.3, 2)],
    ids=str,
)
def test_estimates_agree_with_the_exact_value_on_a_large_log(target: EpsilonPolicy) -> None:
    truth = true_value(target)
    log = simulate(20_000, 0.3, seed=4)
    got = estimate(log, target, n_boot=200, seed=5)
    for name, e in got.items():
        assert e.low < e.value < e.high
        assert e.covers(truth), (name, e, truth)
        assert abs(e.value - truth) < 0.01, (name, e, truth)
    assert abs(log.value() - true_value(EpsilonPolicy(0.3))) < 0.01


def test_exploring_has_a_price_in_this_world_and_the_estimates_see_it() -> None:
    greedy, explore = EpsilonPolicy(0.0), EpsilonPolicy(0.5)
    price = true_value(greedy) - true_value(explore)
    assert price > 0.02
    log = simulate(20_000, 0.3, seed=4)
    got = estimate(log, explore, n_boot=200, seed=1, baseline=greedy)
    for name, e in got.items():
        assert e.low > 0, name
        assert e.covers(price), (name, e, price)


def test_intervals_cover_the_truth_about_as_often_as_they_claim() -> None:
    """95% intervals over 120 seeded logs of 400 lists: coverage within a few sds."""
    target = EpsilonPolicy(0.0)
    truth = true_value(target)
    covered = {"ips": 0, "snips": 0, "dr": 0}
    runs = 120
    for seed in range(runs):
        got = estimate(simulate(400, 0.3, seed=100 + seed), target, n_boot=200, seed=seed)
        for name, e in got.items():
            covered[name] += e.covers(truth)
    for name, n in covered.items():  # sd of the count ~ 2.4; 0.87 is > 3 sd below 0.95
        assert n / runs >= 0.87, (name, n)


def test_the_reward_model_makes_dr_tighter_than_ips() -> None:
    log = simulate(5_000, 0.3, seed=8)
    got = estimate(log, EpsilonPolicy(0.0), n_boot=300, seed=2)
    assert got["dr"].high - got["dr"].low < got["ips"].high - got["ips"].low


def test_the_bootstrap_resamples_users_not_rounds() -> None:
    """Lists of one user move together: per-user intervals are wider when users differ."""
    rounds, users = 2_000, 20
    values = [float(t % users < users // 2) for t in range(rounds)]  # half the users always 1
    groups = [f"u{t % users}" for t in range(rounds)]
    by_user = mean_interval(values, groups, n_boot=400)
    by_round = mean_interval(values, [str(t) for t in range(rounds)], n_boot=400)
    assert by_user.value == by_round.value == 0.5
    assert by_user.high - by_user.low > 3 * (by_round.high - by_round.low)


def test_a_short_list_counts_as_zero_reward_in_its_missing_slots() -> None:
    log = LogBuilder(3)
    log.add("a", [1.0], [1.0], [True], [1])
    log.add("b", [0.0, 0.5, 0.0], [1.0, 1.0, 1.0], [True, True, True], [3, 2, 1])
    built = log.build()
    got = estimate(built, EpsilonPolicy(0.0), n_boot=20)
    assert got["ips"].value == got["snips"].value == pytest.approx(0.75)
    with pytest.raises(ValueError, match="padding"):
        SlateLog(
            rewards=np.array([[1.0, 1.0]]),
            propensities=np.ones((1, 2)),
            greedy=np.ones((1, 2), dtype=bool),
            remaining=np.array([[1, 0]]),
            groups=np.zeros(1, dtype=np.int64),
        )
