"""EASE on matrices small enough to invert by hand, and its validation tuning."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from scipy import sparse

from models.baselines import binary_matrix
from models.ease import DEFAULT_GRID, EASERecommender, _Solver, ease_weights
from models.events import Event, EventType
from models.metrics import ndcg_at_k

T0 = 1_700_000_000.0


def ev(user: str, item: str, ts: float = 0.0) -> Event:
    return Event(type=EventType.CLICK, user_id=user, item_id=item, ts=T0 + ts)


def dense_ease(x: np.ndarray, l2: float) -> np.ndarray:
    p = np.linalg.inv(x.T @ x + l2 * np.eye(x.shape[1]))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b


# u1 {a, b}, u2 {a, b}, u3 {b, c}: X^T X + I = [[3, 2, 0], [2, 4, 1], [0, 1, 2]], det 13,
# P = [[7, -4, 2], [-4, 6, -3], [2, -3, 8]] / 13, B_ij = -P_ij / P_jj.
PRIMAL = [ev("u1", "a", 1), ev("u1", "b", 2), ev("u2", "a", 3), ev("u2", "b", 4)]
PRIMAL += [ev("u3", "b", 5), ev("u3", "c", 6)]
PRIMAL_B = [[0.0, 4 / 6, -2 / 8], [4 / 7, 0.0, 3 / 8], [-2 / 7, 3 / 6, 0.0]]


def test_weights_by_hand_more_users_than_items() -> None:
    x = binary_matrix([[0, 1], [0, 1], [1, 2]], 3)  # the Cholesky (primal) path
    assert not _Solver(x).dual
    assert ease_weights(x, 1.0) == pytest.approx(np.array(PRIMAL_B), abs=1e-6)


def test_weights_by_hand_fewer_users_than_items() -> None:
    # u1 {a, b}, u2 {b, c}: X^T X + I = [[2, 1, 0], [1, 3, 1], [0, 1, 2]], det 8,
    # P = [[5, -2, 1], [-2, 4, -2], [1, -2, 5]] / 8: the Woodbury (dual) path
    x = binary_matrix([[0, 1], [1, 2]], 3)
    assert _Solver(x).dual
    expected = [[0.0, 2 / 4, -1 / 5], [2 / 5, 0.0, 2 / 5], [-1 / 5, 2 / 4, 0.0]]
    assert ease_weights(x, 1.0) == pytest.approx(np.array(expected), abs=1e-6)


@pytest.mark.parametrize(("users", "items"), [(6, 15), (15, 6), (20, 20)])
@pytest.mark.parametrize("l2", [0.3, 7.0])
def test_both_paths_match_the_dense_inverse(users: int, items: int, l2: float) -> None:
    rng = np.random.default_rng(users * items)
    dense = (rng.random((users, items)) < 0.4).astype(np.float64)
    dense[0] = 1.0  # every item has a user
    x = sparse.csr_matrix(dense)
    expected = dense_ease(dense, l2)
    assert ease_weights(x, l2) == pytest.approx(expected, abs=1e-5)
    for many in (False, True):  # primal: Cholesky or one eigendecomposition
        solver = _Solver(x, many=many)
        assert solver.weights(l2) == pytest.approx(expected, abs=1e-5)
        assert solver.scorer(l2)(x) == pytest.approx(dense @ expected, abs=1e-5)


def test_recommend_scores_are_x_times_b() -> None:
    model = EASERecommender(l2=1.0)
    model.fit(PRIMAL)
    assert model.tuned == {"l2": 1.0}
    assert model.validation == {}
    # u1 had a and b: score(c) = B_ac + B_bc = -1/4 + 3/8 > 0
    assert model.recommend("u1", 3, exclude={"a", "b"}) == ["c"]
    # a new user who clicks c: score(b) = B_cb = 1/2 > score(a) = B_ca = -2/7 (ranked too)
    model.observe(ev("u4", "c", 7))
    assert model.recommend("u4", 2, exclude={"c"}) == ["b", "a"]
    # u3 had b and c: score(a) = 4/7 - 2/7; the own items score B_bb + B_cb = 1/2, B_bc = 3/8
    assert model.recommend("u3", 3) == ["b", "c", "a"]


def test_observe_updates_cached_scores() -> None:
    online = EASERecommender(l2=1.0)
    online.fit(PRIMAL)
    assert online.recommend("u3", 3) == ["b", "c", "a"]  # caches u3's scores
    online.observe(ev("u3", "a", 8))
    online.observe(ev("u3", "new", 9))  # unknown at fit: known for the popularity fill only
    batch = EASERecommender(l2=1.0)
    batch.fit(PRIMAL)
    batch.observe(ev("u3", "a", 8))
    batch.observe(ev("u3", "new", 9))
    assert online.recommend("u3", 4) == batch.recommend("u3", 4)
    # x = (1, 1, 1): score(a) = 4/7 - 2/7, score(b) = 2/3 + 1/2, score(c) = -1/4 + 3/8
    assert online.recommend("u3", 4) == ["b", "a", "c", "new"]


def validation_by_hand(
    histories: list[list[int]], n_items: int, grid: tuple[float, ...]
) -> dict[float, float]:
    """The documented tuning procedure, with dense numpy EASE."""
    rng = random.Random(0)
    kept, held = [], []
    for items in histories:
        n_held = max(0, min(len(items) - 1, math.floor(len(items) * 0.2 + 0.5)))
        chosen = set(rng.sample(range(len(items)), n_held))
        kept.append([c for i, c in enumerate(items) if i not in chosen])
        held.append([c for i, c in enumerate(items) if i in chosen])
    x = np.zeros((len(histories), n_items))
    for u, items in enumerate(kept):
        x[u, items] = 1.0
    out = {}
    for l2 in grid:
        scores = x @ dense_ease(x, l2)
        ndcgs = []
        for u in range(len(histories)):
            if not held[u]:
                continue
            order = [c for c in np.argsort(-scores[u], kind="stable") if c not in kept[u]]
            head = scores[u, order[:11]]
            assert -np.diff(head).min() > 1e-9  # no near-ties: float noise cannot reorder
            names = [f"i{c:02d}" for c in order]
            ndcgs.append(ndcg_at_k(names, {f"i{c:02d}" for c in held[u]}, 10))
        out[l2] = sum(ndcgs) / len(ndcgs)
    return out


@pytest.mark.parametrize(("n_users", "n_items"), [(30, 60), (80, 20)])
def test_tuning_follows_the_documented_split(n_users: int, n_items: int) -> None:
    rng = random.Random(n_users)
    events = []
    histories: dict[str, dict[int, None]] = {}
    for n in range(n_users * 12):
        user, item = f"u{rng.randrange(n_users):02d}", rng.randrange(n_items)
        if rng.random() < 0.7:  # two overlapping taste groups: something to find, no ties
            item = item % (n_items // 2) + (n_items // 2 if int(user[1:]) % 2 else 0)
        events.append(ev(user, f"i{item:02d}", n))
        histories.setdefault(user, {})[item] = None
    grid = (0.5, 5.0, 50.0)
    model = EASERecommender(grid=grid)
    model.fit(events)
    items = sorted({e.item_id for e in events})
    remap = {int(i[1:]): c for c, i in enumerate(items)}
    # histories in the model's order (first event per user), columns in item_id order
    order = list(dict.fromkeys(e.user_id for e in events))
    expected = validation_by_hand(
        [[remap[c] for c in histories[u]] for u in order], len(items), grid
    )
    assert set(model.validation) == set(grid)
    for l2 in grid:
        assert model.validation[l2] == pytest.approx(expected[l2], abs=1e-9)
    best = max(grid, key=lambda g: (model.validation[g], -grid.index(g)))
    assert model.tuned == {"l2": best}


def test_tuning_defaults_and_fallback() -> None:
    model = EASERecommender()
    assert model.grid == DEFAULT_GRID
    model.fit([ev("u1", "a"), ev("u2", "b")])  # nobody has two items: nothing to validate
    assert model.tuned == {"l2": 500.0}
    model.fit([])
    assert model.recommend("u1", 3) == []


def test_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="l2"):
        EASERecommender(l2=0.0)
    with pytest.raises(ValueError, match="grid"):
        EASERecommender(grid=())
    with pytest.raises(ValueError, match="valid_share"):
        EASERecommender(valid_share=1.0)
    with pytest.raises(ValueError, match="l2"):
        ease_weights(binary_matrix([[0]], 1), -1.0)
