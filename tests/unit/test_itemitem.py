"""The item-item model (``models.itemitem``), the sequential rules (``models.transitions``)
and how both rankers use them: candidate sources, scores and explanations."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import sparse

from models import itemitem
from models.bandit import EpsilonGreedyRanker
from models.batchrank import Ranker, RankRequest, ReferenceRanker, VectorRanker
from models.ease import ease_weights, gram_weights
from models.events import Event, EventType
from models.itemitem import (
    ItemItem,
    Neighbourhood,
    add_neighbourhood,
    cooccurrence_scale,
    fit_item_item,
    history_weights,
    prune,
    window_cooccurrence,
)
from models.profile import UserProfile
from models.recommender import RankConfig, SimpleItemView, clicked_reason
from models.rerank import ShownCounter
from models.sequential_rules import SequentialRulesRecommender
from models.transitions import Transitions, fit_transitions
from tests.unit.test_recommender import CFG, NOW, VECTORS, world

RANKERS = {"reference": ReferenceRanker, "vector": VectorRanker}


def click(user: str, item: str, t: float) -> Event:
    return Event(
        event_id=f"{user}-{item}-{t}",
        type=EventType.CLICK,
        user_id=user,
        item_id=item,
        ts=1_700_000_000.0 + t,
    )


def test_unpruned_flat_scores_are_ease() -> None:
    rng = np.random.default_rng(3)
    x = (rng.random((30, 12)) < 0.3).astype(np.float64)
    b = ease_weights(sparse.csr_matrix(x), 5.0)
    ids = [f"i{j:02d}" for j in range(12)]
    model = ItemItem(ids, prune(b, 11))
    histories = [[ids[j] for j in np.flatnonzero(row)] for row in x]
    got = model.scores(histories, half_life=0.0).toarray()
    assert got == pytest.approx(x @ b.astype(np.float64), abs=1e-5)


def test_prune_keeps_the_largest_weights_by_magnitude() -> None:
    b = np.array([[0.0, 0.5, -0.9, 0.1], [0.2, 0.0, 0.3, -0.1], [0, 0, 0, 0], [1, 2, 3, 0]])
    kept = prune(b.astype(np.float32), 2).toarray()
    assert kept[0].tolist() == pytest.approx([0.0, 0.5, -0.9, 0.0])
    assert kept[1].tolist() == pytest.approx([0.2, 0.0, 0.3, 0.0])
    assert kept[2].tolist() == [0, 0, 0, 0]
    assert kept[3].tolist() == pytest.approx([0, 2, 3, 0])


def test_prune_with_a_cap_keeps_the_largest_of_the_whole_matrix() -> None:
    b = np.array(
        [[0.0, 0.5, -0.9, 0.1], [0.2, 0.0, 0.3, -0.1], [0, 0, 0, 0], [1, 2, 3, 0]],
        dtype=np.float32,
    )
    # 4 rows x 1 on average = the 4 largest magnitudes (3, 2, 1, -0.9), at most 2 a row:
    # row 3's third (1) loses its place to the next largest elsewhere (0.5)
    kept = prune(b, 1, max_neighbours=2).toarray()
    want = [[0.0, 0.5, -0.9, 0.0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 2, 3, 0]]
    assert kept == pytest.approx(np.array(want))
    assert prune(b, 1, max_neighbours=3).toarray()[3].tolist() == pytest.approx([1, 2, 3, 0])
    # a budget larger than what the cap leaves is the cap per row
    assert prune(b, 3, max_neighbours=2).toarray() == pytest.approx(prune(b, 2).toarray())
    assert prune(b, 0, max_neighbours=2).nnz == 0


def test_history_weights_favour_the_newest_item() -> None:
    assert history_weights(3, 0.0).tolist() == [1.0, 1.0, 1.0]
    assert history_weights(3, 1.0).tolist() == [2.0, 1.5, 1.25]
    assert history_weights(2, 1.0, boost=4.0).tolist() == [5.0, 3.0]
    assert history_weights(2, 1.0, boost=0.0).tolist() == [1.0, 1.0]


def test_fit_and_arrays_round_trip() -> None:
    events = [
        click(u, i, t)
        for t, (u, i) in enumerate(
            [
                ("u1", "a"),
                ("u1", "b"),
                ("u2", "a"),
                ("u2", "b"),
                ("u2", "c"),
                ("u3", "b"),
                ("u3", "c"),
            ]
        )
    ]
    model = fit_item_item(events, neighbours=1, l2=1.0)
    assert model.item_ids == ["a", "b", "c"]
    assert all(n <= 1 for n in np.diff(model.weights.indptr))
    back = ItemItem.from_arrays(model.to_arrays())
    assert back is not None
    assert back.item_ids == model.item_ids
    assert back.l2 == 1.0
    assert (back.weights != model.weights).nnz == 0
    assert ItemItem.from_arrays({}) is None


def test_window_cooccurrence_counts_pairs_within_the_window() -> None:
    got = window_cooccurrence([[0, 1, 2, 3], [2, 0]], 4, window=2).toarray()
    want = np.zeros((4, 4))
    for a, b in [(0, 1), (0, 2), (1, 2), (1, 3), (2, 3), (2, 0)]:
        want[a, b] += 1
        want[b, a] += 1
    assert got.tolist() == want.tolist()
    assert window_cooccurrence([[0, 1, 2, 3]], 4, window=1).toarray()[0, 2] == 0
    assert window_cooccurrence([[1], []], 3, window=3).nnz == 0


def test_cooccurrence_scale_matches_the_mean_row_maxima() -> None:
    x = sparse.csr_matrix(np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]]))
    b = np.array([[0, 2, 0], [1, 0, -4], [0, 0, 0]], dtype=np.float32)
    c = sparse.csr_matrix(np.array([[0, 1.0, 0], [1.0, 0, 1.0], [0, 1.0, 0]]))
    # x B rows: [1, 2, -4] and [1, 0, -4] -> maxima 4, 4; x C rows: [1, 1, 1], [1, 1, 1]
    assert cooccurrence_scale(x, b, c) == pytest.approx(4.0)
    assert cooccurrence_scale(x, b, sparse.csr_matrix((3, 3))) == 0.0


def test_neighbourhood_adds_the_normalised_cooccurrence_and_discounts_popular_items() -> None:
    x = sparse.csr_matrix(np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [0.0, 1.0, 0.0]]))
    b = np.array([[0, 2, 0], [1, 0, -4], [0, 0, 0]], dtype=np.float32)
    pruned = prune(b, 1)  # keeps 2 and -4
    sequences = [[0, 1], [1, 2], [1]]
    users = np.array([1.0, 3.0, 1.0]) + 1.0
    c = window_cooccurrence(sequences, 3, 1).toarray() / np.sqrt(np.outer(users, users))
    factor = 0.5 * cooccurrence_scale(x, b, sparse.csr_matrix(c))  # scaled by the whole b
    want = (pruned.toarray() + factor * c) * users[None, :] ** -0.2
    got = add_neighbourhood(pruned, b, x, sequences, Neighbourhood(1, 0.5, 0.2))
    assert got.dtype == np.float32
    assert got.toarray() == pytest.approx(want, rel=1e-6)
    plain = add_neighbourhood(pruned, b, x, sequences, Neighbourhood())
    assert plain.toarray().tolist() == pruned.toarray().tolist()


def test_neighbourhood_refuses_bad_settings() -> None:
    bad_values: list[dict[str, float]] = [
        {"window": -1},
        {"weight": -0.1},
        {"popularity_exponent": float("nan")},
        {"gram_window": -1},
        {"gram_weight": float("inf")},
    ]
    for bad in bad_values:
        with pytest.raises(ValueError, match=">= 0"):
            Neighbourhood(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="gram_l2_factor"):
        Neighbourhood(gram_l2_factor=0.0)
    assert not Neighbourhood(gram_window=3).in_gram
    assert Neighbourhood(gram_window=3, gram_weight=1.0).in_gram


def ease_by_numpy(gram: np.ndarray, l2: float) -> np.ndarray:
    """EASE's closed form spelled out: ``P = (G + l2 I)^-1``, ``B = -P / diag(P)``."""
    p = np.linalg.inv(gram + l2 * np.eye(len(gram)))
    b = p / -np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b


def test_gram_weights_of_x_t_x_are_ease() -> None:
    rng = np.random.default_rng(5)
    x = (rng.random((10, 16)) < 0.4).astype(np.float64)  # fewer users: ease_weights' dual
    got = gram_weights(x.T @ x, 3.0)
    assert got.dtype == np.float32
    assert got == pytest.approx(ease_weights(sparse.csr_matrix(x), 3.0), abs=1e-5)
    assert got == pytest.approx(ease_by_numpy(x.T @ x, 3.0), abs=1e-5)


def test_gram_weights_solve_a_gram_that_is_not_positive_definite() -> None:
    # eigenvalues -2 and 4: gram + 1 I is indefinite, so Cholesky fails and LU solves it
    gram = np.array([[1.0, 3.0, 0.0], [3.0, 1.0, 0.0], [0.0, 0.0, 2.0]])
    got = gram_weights(gram, 1.0)
    assert got == pytest.approx(ease_by_numpy(gram, 1.0), abs=1e-6)
    assert got[0, 1] == pytest.approx(3.0 / 2.0)  # P's 2x2 block: [[2, 3], [3, 2]]^-1


def test_fit_puts_the_window_counts_in_the_gram(monkeypatch: pytest.MonkeyPatch) -> None:
    sequences = {"u1": "abcd", "u2": "bdac", "u3": "cab", "u4": "dcb"}
    events = [
        click(u, i, 10.0 * n + t)
        for n, (u, s) in enumerate(sequences.items())
        for t, i in enumerate(s)
    ]
    hood = Neighbourhood(gram_window=1, gram_weight=0.5, gram_l2_factor=2.0)
    fitted = fit_item_item(events, neighbours=4, l2=1.5, neighbourhood=hood)
    assert fitted.l2 == 3.0
    cols = {i: n for n, i in enumerate("abcd")}
    rows = [[cols[i] for i in s] for s in sequences.values()]
    x = np.zeros((4, 4))
    for r, seq in enumerate(rows):
        x[r, seq] = 1.0
    gram = x.T @ x + 0.5 * window_cooccurrence(rows, 4, 1).toarray()
    assert fitted.weights.toarray() == pytest.approx(ease_by_numpy(gram, 3.0), abs=1e-5)
    # above GRAM_MAX_ITEMS: plain EASE at the tuned lambda
    monkeypatch.setattr(itemitem, "GRAM_MAX_ITEMS", 3)
    big = fit_item_item(events, neighbours=4, l2=1.5, neighbourhood=hood)
    assert big.l2 == 1.5
    assert big.weights.toarray() == pytest.approx(ease_by_numpy(x.T @ x, 1.5), abs=1e-5)


def test_fit_uses_the_time_order_of_the_events() -> None:
    events = [click("u1", i, t) for t, i in enumerate("abc")] + [click("u2", "c", 10.0)]
    shuffled = [events[2], events[0], events[3], events[1]]
    hood = Neighbourhood(window=1, weight=1.0)
    fitted = fit_item_item(events, neighbours=2, l2=1.0, neighbourhood=hood)
    again = fit_item_item(shuffled, neighbours=2, l2=1.0, neighbourhood=hood)
    assert (fitted.weights != again.weights).nnz == 0
    plain = fit_item_item(events, neighbours=2, l2=1.0)
    # a and b stand next to each other in u1's history: the window lifts their weight
    row = fitted.row
    assert fitted.weights[row["a"], row["b"]] > plain.weights[row["a"], row["b"]]


def test_transitions_are_the_sr_rules() -> None:
    events = [click("u1", i, t) for t, i in enumerate("abcab")] + [
        click("u2", i, 10 + t) for t, i in enumerate("bcd")
    ]
    rules = fit_transitions(events, steps=2)
    want = {
        "a": {"b": 2.0, "c": 0.5},
        "b": {"c": 2.0, "a": 0.5, "d": 0.5},
        "c": {"a": 1.0, "b": 0.5, "d": 1.0},
    }
    assert rules.rules == want
    sr = SequentialRulesRecommender(steps=2)
    sr.fit(events)
    assert {p: dict(sr.rules(p)) for p in want} == want
    assert rules.totals == {"a": 2.5, "b": 3.0, "c": 2.5}
    # t(q): each rule's share of its source's total (+1 smoothing), 1/2 for the second item
    got = rules.scores(["b", "a"])
    assert got == pytest.approx({"c": 0.5 + 0.5 / 7, "a": 0.125, "d": 0.125, "b": 2 / 7})
    back = Transitions.from_arrays(rules.to_arrays())
    assert back is not None
    assert back.rules == rules.rules
    assert back.totals == rules.totals
    assert back.steps == 2


def test_backward_transitions_add_the_reverse_rules() -> None:
    events = [click("u1", i, t) for t, i in enumerate("abc")]
    rules = fit_transitions(events, steps=2, backward=0.5)
    want = {
        "a": {"b": 1.0, "c": 0.5},
        "b": {"a": 0.5, "c": 1.0},
        "c": {"b": 0.5, "a": 0.25},
    }
    assert rules.rules == want
    assert rules.totals == {"a": 1.5, "b": 1.5, "c": 0.75}
    # the forward rules are the SR rules; the reverse ones only add
    forward = fit_transitions(events, steps=2)
    assert forward.rules == {"a": {"b": 1.0, "c": 0.5}, "b": {"c": 1.0}}
    back = Transitions.from_arrays(rules.to_arrays())
    assert back is not None
    assert back.backward == 0.5
    assert back.rules == rules.rules
    assert rules.copy().backward == 0.5
    # an artefact stored before reverse rules existed was learned without them
    old = {k: v for k, v in rules.to_arrays().items() if not k.endswith("backward")}
    older = Transitions.from_arrays(old)
    assert older is not None
    assert older.backward == 0.0
    with pytest.raises(ValueError, match="backward"):
        Transitions(backward=-1.0)


def test_transition_rows_stay_bounded() -> None:
    rules = Transitions(steps=1, max_per_item=2)
    for n in range(5):
        rules.learn(["p"], f"q{n}")
    assert len(rules.rules["p"]) <= 4


# --- both rankers on a fixture whose answer is known -----------------------------------
# The user clicked a0 (newest) then b5. Item-item weights: a0 -> b3 strongly, b5 -> b3
# weakly, b5 -> b4; one rule a0 -> b2. b3 sits in b5's vector cluster, so the old "nearest
# history item by vector" reason would name b5; the item that contributes most is a0.
IDS = sorted(VECTORS)
WEIGHTS = {
    ("a0", "b3"): 0.9,
    ("b5", "b3"): 0.1,
    ("b5", "b4"): 0.8,
    ("a0", "b4"): 0.05,
    ("a0", "b1"): 0.3,  # b5 wins with flat history weights, a0 with recency (4 vs 2.5)
    ("b5", "b1"): 0.4,
}


def item_item() -> ItemItem:
    row = {i: n for n, i in enumerate(IDS)}
    rows, cols, vals = zip(*((row[h], row[j], w) for (h, j), w in WEIGHTS.items()), strict=True)
    matrix = sparse.csr_matrix((vals, (rows, cols)), shape=(len(IDS), len(IDS)), dtype=np.float32)
    return ItemItem(IDS, matrix)


def rules() -> Transitions:
    out = Transitions(steps=2)
    out.rules = {"a0": {"b2": 1.0}}
    out.totals = {"a0": 3.0}  # b2 followed a0 once in three: t(b2) = 1 / (3 + 1)
    return out


def user() -> UserProfile:
    return UserProfile(user_id="u9", affinities={"Action": 1.0}, recent=["a0", "b5"], last_ts=NOW)


def view() -> SimpleItemView:
    return world(item_item=item_item(), transitions=rules())


ONLY_HISTORY = dataclasses.replace(
    CFG,
    n_candidates=0,
    per_category=0,
    n_trending=0,
    n_new=0,
    w_similarity=0.0,
    w_sequence=1.0,
    history_half_life=0.0,
)


def ask(cfg: RankConfig = ONLY_HISTORY) -> RankRequest:
    bandit = EpsilonGreedyRanker(cfg.epsilon, random.Random(1))
    return RankRequest(user(), None, ShownCounter(200, {}), cfg, bandit, 0.0)


@pytest.fixture(params=list(RANKERS), ids=list(RANKERS))
def ranker(request: pytest.FixtureRequest) -> Ranker:
    made: Ranker = RANKERS[request.param]()
    return made


def test_history_sources_alone_fill_the_pool(ranker: Ranker) -> None:
    (got,) = ranker.rank_batch([ask()], view(), NOW)
    assert {i.item_id for i in got} == {"b3", "b4", "b1", "b2"}
    assert next(i.item_id for i in got) == "b3"  # the strongest item-item score
    assert VectorRanker().pools([ask()], view(), NOW) == [["b3", "b4", "b1", "b2"]]
    capped = dataclasses.replace(ONLY_HISTORY, n_item_candidates=1, n_sequence_candidates=0)
    (few,) = ranker.rank_batch([ask(capped)], view(), NOW)
    assert [i.item_id for i in few] == ["b3"]


def test_no_history_model_no_history_candidates(ranker: Ranker) -> None:
    (got,) = ranker.rank_batch([ask()], world(), NOW)
    assert got == []


def test_because_you_clicked_names_the_top_contributor(ranker: Ranker) -> None:
    (got,) = ranker.rank_batch([ask()], view(), NOW)
    reasons = {i.item_id: i.reason for i in got}
    assert reasons["b3"] == clicked_reason("Alpha 0")  # 0.9 from a0 beats 0.1 from b5
    assert reasons["b4"] == clicked_reason("Beta 5")  # 0.8 from b5 beats 0.05 from a0
    assert reasons["b2"] == clicked_reason("Alpha 0")  # the rule a0 -> b2
    assert reasons["b1"] == clicked_reason("Beta 5")  # 0.4 > 0.3, flat history weights
    recency = dataclasses.replace(ONLY_HISTORY, history_half_life=1.0, history_boost=3.0)
    (got,) = ranker.rank_batch([ask(recency)], view(), NOW)
    reasons = {i.item_id: i.reason for i in got}
    assert reasons["b1"] == clicked_reason("Alpha 0")  # 4 * 0.3 > 2.5 * 0.4
    assert reasons["b4"] == clicked_reason("Beta 5")


def test_rankers_agree_with_every_source_on() -> None:
    cfg = dataclasses.replace(CFG, k=8)
    profiles = [user(), dataclasses.replace(user(), user_id="u8", recent=["b5"])]
    requests = [
        RankRequest(
            p,
            np.asarray(VECTORS["a0"]),
            ShownCounter(200, {}),
            cfg,
            EpsilonGreedyRanker(cfg.epsilon, random.Random(1)),
            0.0,
        )
        for p in profiles
    ]
    got = VectorRanker().rank_batch(requests, view(), NOW)
    want = ReferenceRanker().rank_batch(requests, view(), NOW)
    assert [[(i.item_id, i.reason) for i in lst] for lst in got] == [
        [(i.item_id, i.reason) for i in lst] for lst in want
    ]


@pytest.mark.parametrize("history_len", [1, 3, 40])
@pytest.mark.parametrize("density", [0.05, 0.6])
def test_batched_top_contributors_match_the_per_user_definition(
    history_len: int, density: float
) -> None:
    """``top_contributors`` (one pass for a batch, gathering W by rows or by columns,
    whichever is fewer) names what ``contributions`` + ``top_contributor`` name per user."""
    from models.signals import contributions, history_signals, top_contributor, top_contributors

    rng = np.random.default_rng(history_len * 100 + int(density * 10))
    n = 60
    ids = [f"i{j:02d}" for j in range(n)]
    b = rng.normal(size=(n, n)).astype(np.float32) * (rng.random((n, n)) < density)
    np.fill_diagonal(b, 0.0)
    model = ItemItem(ids, prune(b, 30))
    rules = Transitions(steps=3)
    for _ in range(300):
        seq = list(rng.choice(ids, size=4, replace=False))
        for k in range(1, 4):
            rules.learn(seq[:k][::-1], seq[k])
    histories = [list(rng.choice([*ids, "unknown"], size=history_len)) for _ in range(25)]
    histories.append([])
    excludes: list[set[str]] = [set() for _ in histories]
    sigs = history_signals(model, rules, histories, excludes, 1.0, 3.0, 20, 10)
    items = [list(rng.choice([*ids, "other"], size=12, replace=False)) for _ in histories]
    got = top_contributors(model, rules, histories, items, sigs, 1.0, 3.0, 1.0, 10.0)
    want = [
        [top_contributor(row) for row in contributions(model, rules, h, i, s, 1.0, 3.0, 1.0, 10.0)]
        for h, i, s in zip(histories, items, sigs, strict=True)
    ]
    assert got == want
    assert any(x is not None for row in want for x in row)


def test_batched_top_contributors_without_any_contribution() -> None:
    from models.signals import history_signals, top_contributors

    model = ItemItem(["a", "b"], sparse.csr_matrix(np.array([[0, 1], [1, 0]], np.float32)))
    histories = [["unknown"], []]
    sigs = history_signals(model, Transitions(), histories, [set(), set()], 1.0, 3.0, 5, 5)
    got = top_contributors(model, Transitions(), histories, [["a", "b"], ["b"]], sigs, 1, 3, 1, 1)
    assert got == [[None, None], [None]]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(min_value=1, max_value=6), min_size=0, max_size=40),
    st.integers(min_value=0, max_value=45),
)
def test_best_is_the_head_of_the_full_sort(values: list[int], n: int) -> None:
    """The item-item candidates: the ``n`` best of a score row, ties by column, found
    without sorting the row equals the head of the full sort (few distinct values: ties)."""
    from models.signals import _best

    rng = np.random.default_rng(len(values) * 100 + n)
    cols = rng.permutation(1000)[: len(values)].astype(np.int64)
    vals = np.array(values, dtype=np.float64) / 7.0
    want = np.lexsort((cols, -vals))[:n]
    assert _best(cols, vals, n).tolist() == want.tolist()
