"""EASE: an embarrassingly shallow linear item-item autoencoder, in closed form.

Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019. With ``X`` the
binary user x item matrix of the fit events and ``lambda`` the L2 weight,

    P = (X^T X + lambda I)^-1,   B = I - P diag(1 / diag(P))   (so diag(B) = 0),

the minimiser of ``||X - X B||_F^2 + lambda ||B||_F^2`` subject to ``diag(B) = 0``. A
user's scores are ``x_u B`` (``x_u`` the user's row).

``P`` is computed the cheaper of two exact ways: from ``X^T X`` (by Cholesky, or by one
eigendecomposition reused across every ``lambda`` tried) when there are no more items
than users, otherwise through the ``users x users`` Gram matrix ``K = X X^T`` and the
Woodbury identity, ``P = (I - X^T (K + lambda I)^-1 X) / lambda``, with ``K``'s
eigendecomposition reused across every ``lambda``. So the cost is
``O(min(users, items)^3 + users * items^2)``; ``B`` is a dense ``items x items`` float32
matrix (324 MB for the 9k items of a MovieLens latest-small training part). EASE does not
scale to catalogues of hundreds of thousands of items; it is a baseline, not a serving
model.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Collection, Sequence
from typing import Final

import numpy as np
import numpy.typing as npt
from scipy import linalg as scipy_linalg
from scipy import sparse
from scipy.linalg import lapack
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from models.baselines import (
    FloatArray,
    PopularityRecommender,
    _check_k,
    binary_matrix,
    fill_popular,
    top_k_indices,
)
from models.events import Event
from models.metrics import ndcg_at_k

Float32Array = npt.NDArray[np.float32]

DEFAULT_GRID: Final = (10.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 3000.0)
"""The ``lambda`` values tried on the validation split."""
FALLBACK_L2: Final = 500.0
"""``lambda`` when no validation case can be made (every user has a single item)."""
VALID_K: Final = 10
"""The cut-off of the validation NDCG."""
_CHUNK: Final = 2048
"""Validation users scored at once."""


class _Solver:
    """``X B(lambda)`` and ``B(lambda)`` for one binary matrix ``X``, any ``lambda``.

    Dual form when ``users < items``: ``K = X X^T = U diag(s) U^T``, ``Q = U^T X``; then
    ``P = (I - Q^T diag(1 / (s + lambda)) Q) / lambda`` and
    ``diag(P) = (1 - sum_k Q_ki^2 / (s_k + lambda)) / lambda``. Primal form otherwise:
    ``P`` by Cholesky of ``X^T X + lambda I`` or, with ``many`` (several ``lambda`` to
    come), from one eigendecomposition ``X^T X = V diag(s) V^T`` as
    ``V diag(1 / (s + lambda)) V^T``.
    """

    def __init__(self, x: sparse.csr_matrix, many: bool = False) -> None:
        self.x = x
        users, items = x.shape
        self.dual = users < items
        self.spectral = self.dual or many
        if self.dual:
            gram = (x @ x.T).toarray().astype(np.float64)
            s, u = np.linalg.eigh(gram)
            self.s = np.clip(s, 0.0, None)  # K is PSD; clip round-off below 0
            self.q = np.asarray((x.T @ u).T, dtype=np.float64)  # U^T X, users x items
            self.q2 = self.q**2
        else:
            self.gram = (x.T @ x).toarray().astype(np.float64)
            if many:
                # LAPACK's symmetric eigensolver scales badly with BLAS threads and, on a
                # shared 2-core machine, ran 5x slower with two threads than with one.
                with threadpool_limits(limits=1, user_api="blas"):
                    s, v = np.linalg.eigh(self.gram)
                self.s = np.clip(s, 0.0, None)
                self.v = v

    def weights(self, l2: float) -> Float32Array:
        """``B(lambda)``, dense float32, zero diagonal."""
        n = self.x.shape[1]
        if self.dual:
            scaled = (self.q / (self.s + l2)[:, None]).astype(np.float32)
            p = -(scaled.T @ self.q.astype(np.float32))  # -Q^T diag(1/(s+l)) Q
            p[np.diag_indices(n)] += 1.0
            p /= np.float32(l2)
            diag = self._diag(l2)
        elif self.spectral:
            inverse = 1.0 / (self.s + l2)
            v32 = self.v.astype(np.float32)
            p = (v32 * inverse.astype(np.float32)[None, :]) @ v32.T
            diag = self.v**2 @ inverse
        else:
            return gram_weights(self.gram, l2)
        b: Float32Array = p / (-diag.astype(np.float32))[None, :]
        b[np.diag_indices(n)] = 0.0
        return b

    def scorer(self, l2: float) -> Callable[[sparse.csr_matrix], FloatArray]:
        """A function of ``rows`` (binary, over the same items) giving ``rows B(lambda)``."""
        if not self.dual:
            b = self.weights(l2)
            return lambda rows: np.asarray(rows @ b, dtype=np.float64)
        diag = self._diag(l2)
        inverse = 1.0 / (self.s + l2)

        def scores(rows: sparse.csr_matrix) -> FloatArray:
            # rows P = (rows - (rows Q^T) diag(1/(s+l)) Q) / l;  rows B = rows - rows P / diag(P)
            dense = rows.toarray()
            rows_p = (dense - ((rows @ self.q.T) * inverse[None, :]) @ self.q) / l2
            out: FloatArray = dense - rows_p / diag[None, :]
            return out

        return scores

    def _diag(self, l2: float) -> FloatArray:
        diag: FloatArray = (1.0 - (1.0 / (self.s + l2)) @ self.q2) / l2
        return diag


def gram_weights(gram: FloatArray, l2: float) -> Float32Array:
    """EASE's ``B`` from a symmetric ``items x items`` Gram matrix (``X^T X``, or one
    with more in it) and ``lambda``: ``P = (gram + lambda I)^-1`` by Cholesky, or by LU
    when ``gram + lambda I`` is not positive definite; dense float32, zero diagonal.
    Peak memory: about three float64 copies of ``gram`` besides ``gram`` itself."""
    n = gram.shape[0]

    def shifted() -> FloatArray:
        g = gram.astype(np.float64, copy=True)
        g[np.diag_indices(n)] += l2
        return g

    factor, info = lapack.dpotrf(shifted(), lower=1, clean=0, overwrite_a=1)
    if info == 0:
        factor, info = lapack.dpotri(factor, lower=1, overwrite_c=1)
    if info == 0:
        p64: FloatArray = np.tril(factor)  # dpotri fills the lower triangle of P only
        del factor
        p64 += np.tril(p64, -1).T
    else:
        del factor
        p64 = np.asarray(scipy_linalg.inv(shifted(), overwrite_a=True, check_finite=False))
    diag = np.diag(p64).astype(np.float32)
    p = p64.astype(np.float32)
    del p64
    p /= -diag[None, :]
    p[np.diag_indices(n)] = 0.0
    return p


def ease_weights(x: sparse.csr_matrix, l2: float) -> Float32Array:
    """EASE's ``B`` for the binary matrix ``x`` (users x items) and L2 weight ``l2``."""
    if not (l2 > 0.0 and math.isfinite(l2)):
        raise ValueError(f"l2 must be finite and > 0, got {l2}")
    return _Solver(x).weights(l2)


class EASERecommender:
    """EASE (Steck, WWW 2019; see the module docstring) behind the ``Recommender`` protocol.

    ``fit`` builds the binary user x item matrix ``X`` over the items of the fit events.
    With ``l2=None`` (the default) ``lambda`` is chosen on a validation split of those
    events: ``valid_share`` of each user's distinct items (``min(n - 1,
    floor(n * share + 0.5))`` of ``n``, drawn by ``random.Random(seed)``) are held out,
    ``B`` is fitted on the rest for every value in ``grid``, and the value with the best
    mean NDCG@10 of the held-out items (the user's remaining items excluded) wins; ties go
    to the first in ``grid``. ``B`` is then refitted on all the fit events with it. The
    choice and the validation NDCG of every value are in ``tuned`` and ``validation``.

    A user's score for item ``j`` is ``sum over i in history(u) of B[i, j]`` (``x_u B``);
    every item known at ``fit`` is ranked, negative scores included. ``observe`` adds the
    event's item to the user's history (the weights are not refitted); items first seen
    after ``fit`` and users without a known item get the most popular items (undecayed
    ``PopularityRecommender``), which also fill any remaining slots.
    """

    name = "ease"

    def __init__(
        self,
        l2: float | None = None,
        grid: Sequence[float] = DEFAULT_GRID,
        valid_share: float = 0.2,
        seed: int = 0,
    ) -> None:
        if l2 is not None and not (l2 > 0.0 and math.isfinite(l2)):
            raise ValueError(f"l2 must be finite and > 0, got {l2}")
        if not grid or any(not (g > 0.0 and math.isfinite(g)) for g in grid):
            raise ValueError(f"grid must hold finite values > 0, got {list(grid)}")
        if not 0.0 < valid_share < 1.0:
            raise ValueError(f"valid_share must be in (0, 1), got {valid_share}")
        self.l2 = l2
        self.grid = tuple(float(g) for g in grid)
        self.valid_share = valid_share
        self.seed = seed
        self.tuned: dict[str, float] = {}
        self.validation: dict[float, float] = {}
        self._popular = PopularityRecommender()
        self._item_ids: list[str] = []
        self._index: dict[str, int] = {}
        self._weights: Float32Array = np.zeros((0, 0), dtype=np.float32)
        self._history: dict[str, dict[int, None]] = {}
        self._scores: dict[str, FloatArray] = {}

    def fit(self, events: Sequence[Event]) -> None:
        self._popular.fit(events)
        self._item_ids = sorted({e.item_id for e in events})
        self._index = {item: i for i, item in enumerate(self._item_ids)}
        self._history = {}
        self._scores = {}
        for event in events:
            self._history.setdefault(event.user_id, {})[self._index[event.item_id]] = None
        n_items = len(self._item_ids)
        self.validation = {}
        if n_items == 0:
            self._weights = np.zeros((0, 0), dtype=np.float32)
            self.tuned = {}
            return
        histories = [list(h) for h in self._history.values()]
        l2 = self.l2 if self.l2 is not None else self._tune(histories, n_items)
        self.tuned = {"l2": l2}
        self._weights = _Solver(binary_matrix(histories, n_items)).weights(l2)

    def observe(self, event: Event) -> None:
        self._popular.observe(event)
        row = self._index.get(event.item_id)
        if row is None:
            return
        history = self._history.setdefault(event.user_id, {})
        if row not in history:
            history[row] = None
            cached = self._scores.get(event.user_id)
            if cached is not None:
                cached += self._weights[row]

    def recommend(self, user_id: str, k: int, exclude: Collection[str] = ()) -> list[str]:
        _check_k(k)
        out: list[str] = []
        history = self._history.get(user_id)
        if k > 0 and history:
            scores = self._user_scores(user_id, history).copy()
            for item in exclude:
                col = self._index.get(item)
                if col is not None:
                    scores[col] = -np.inf
            candidates = np.flatnonzero(np.isfinite(scores))
            out = [self._item_ids[c] for c in top_k_indices(scores, k, candidates)]
        if len(out) < k:
            out += fill_popular(self._popular, user_id, k - len(out), out, exclude)
        return out

    def _user_scores(self, user_id: str, history: dict[int, None]) -> FloatArray:
        cached = self._scores.get(user_id)
        if cached is None:
            rows = np.fromiter(history, dtype=np.int64, count=len(history))
            cached = self._weights[rows].sum(axis=0, dtype=np.float64)
            self._scores[user_id] = cached
        return cached

    def _tune(self, histories: list[list[int]], n_items: int) -> float:
        """The ``grid`` value with the best validation NDCG@10 (see the class docstring)."""
        rng = random.Random(self.seed)
        kept: list[list[int]] = []
        held: list[list[int]] = []
        for items in histories:
            n_held = max(0, min(len(items) - 1, math.floor(len(items) * self.valid_share + 0.5)))
            chosen = set(rng.sample(range(len(items)), n_held))
            kept.append([c for i, c in enumerate(items) if i not in chosen])
            held.append([c for i, c in enumerate(items) if i in chosen])
        cases = [u for u, h in enumerate(held) if h]
        if not cases:
            return FALLBACK_L2
        solver = _Solver(binary_matrix(kept, n_items), many=True)
        best, best_ndcg = self.grid[0], -1.0
        for l2 in self.grid:
            score = solver.scorer(l2)
            total = 0.0
            for start in range(0, len(cases), _CHUNK):
                chunk = cases[start : start + _CHUNK]
                queries = binary_matrix([kept[u] for u in chunk], n_items)
                scores = score(queries)
                scores[queries.nonzero()] = -np.inf  # the user's own items are excluded
                for row, u in zip(_top_rows(scores, VALID_K), chunk, strict=True):
                    ranked = [self._item_ids[c] for c in row]
                    total += ndcg_at_k(ranked, {self._item_ids[c] for c in held[u]}, VALID_K)
            ndcg = total / len(cases)
            self.validation[l2] = ndcg
            if ndcg > best_ndcg:
                best, best_ndcg = l2, ndcg
        return best


def _top_rows(scores: FloatArray, k: int) -> list[list[int]]:
    """Each row's ``k`` best columns, best first, ties to the smaller column."""
    k = min(k, scores.shape[1])
    if k == 0:
        return [[] for _ in range(scores.shape[0])]
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    values = np.take_along_axis(scores, top, axis=1)
    order = np.lexsort((top, -values), axis=1)
    ranked = np.take_along_axis(top, order, axis=1)
    return [[int(c) for c in row] for row in ranked]
