"""The item-item model: EASE weights pruned to each item's strongest neighbours, plus the
items that stand next to each other in users' histories.

``fit_item_item`` fits EASE (Steck, WWW 2019; ``models.ease``) on the binary user x item
matrix ``X`` of the training events, its ``lambda`` chosen on a validation split of them as
``EASERecommender`` does. With ``Neighbourhood.in_gram`` (and at most ``GRAM_MAX_ITEMS``
items) EASE is fitted on ``X^T X + mu C`` instead, ``C`` the counts of items at most
``gram_window`` positions apart in a user's time-ordered history, with ``lambda`` times
``gram_l2_factor``: pairs taken up in one sitting count more than pairs years apart.
Only the largest weights by magnitude are kept: ``neighbours`` per item on average, the
largest of the whole matrix, at most ``max_neighbours`` for one item (``prune``; without
``max_neighbours``, ``neighbours`` for every item). To that ``fit_item_item``
adds a co-occurrence term (``Neighbourhood``, ``add_neighbourhood``): ``C[i, j]``, how
often ``i`` and ``j`` stand at most ``window`` positions apart in one user's time-ordered
history, divided by ``sqrt((1 + users(i)) (1 + users(j)))``, times ``weight`` and a
factor that puts it on EASE's scale (``cooccurrence_scale``); and it multiplies every
candidate column ``j`` by ``(1 + users(j))^-popularity_exponent``. EASE sees each
history as a set; what a user took up in the same sitting is closer than the rest of
their history, which the window adds back (``docs/model-choice.md``). The result is a
sparse CSR matrix ``W`` (rows: history items, columns: candidates). A user's item-item
score for candidate ``j`` is

    s(j) = sum over the user's history items h of  w_h * W[h, j],

with ``w_h`` the history item's recency weight (``history_weights``: 1, plus a boost
that halves every ``half_life`` positions back from the newest item). With nothing
pruned, no window, no discount and flat weights this is EASE's ``x_u B``. It changes as
soon as an event enters the user's history, without refitting anything.

``ItemItem.scores`` computes it for a batch of histories with one sparse product; a row
does not depend on the other rows of the batch, so ranking one user or many gives the
same floats (both rankers of ``models.batchrank`` rely on it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from scipy import sparse

from models.baselines import binary_matrix
from models.ease import DEFAULT_GRID, EASERecommender, _Solver, gram_weights
from models.events import Event

GRAM_MAX_ITEMS: Final = 15_000
"""Largest catalogue EASE is fitted with the window counts in its Gram matrix: one ``items
x items`` float64 solve, about 7 GB at this size (``models.ease.gram_weights``); above
it, plain EASE."""
PREFIX: Final = "itemitem."
"""Prefix of the model's arrays in an artefact's npz."""


def history_weights(n: int, half_life: float, boost: float = 1.0) -> npt.NDArray[np.float64]:
    """Recency weights of a history of ``n`` items, newest first: ``1 + boost *
    2^(-p / half_life)`` for position ``p`` (``half_life`` or ``boost`` 0: flat, 1)."""
    if half_life <= 0 or boost <= 0:
        return np.ones(n)
    p = np.arange(n, dtype=np.float64)
    out: npt.NDArray[np.float64] = 1.0 + boost * np.exp2(-p / half_life)
    return out


@dataclass(frozen=True, eq=False)
class ItemItem:
    """Pruned item-item weights over ``item_ids`` (see the module doc)."""

    item_ids: list[str]
    weights: sparse.csr_matrix
    """``len(item_ids)`` square, float32; row ``h``: the neighbours of item ``h``."""
    l2: float = math.nan
    """The EASE ``lambda`` it was fitted with."""

    def __post_init__(self) -> None:
        n = len(self.item_ids)
        if self.weights.shape != (n, n):
            raise ValueError(f"{n} item ids but weights of shape {self.weights.shape}")
        object.__setattr__(self, "index", {i: r for r, i in enumerate(self.item_ids)})
        object.__setattr__(self, "by_candidate", self.weights.T.tocsr())
        object.__setattr__(self, "weights64", self.weights.astype(np.float64))

    @property
    def row(self) -> Mapping[str, int]:
        """Item id -> its row and column."""
        index: dict[str, int] = self.__dict__["index"]
        return index

    @property
    def transposed(self) -> sparse.csr_matrix:
        """``W`` transposed (rows: candidates, columns: history items), CSR."""
        out: sparse.csr_matrix = self.__dict__["by_candidate"]
        return out

    def __len__(self) -> int:
        return len(self.item_ids)

    def columns(self, history: Sequence[str]) -> npt.NDArray[np.int64]:
        """Each history item's column (-1: not in the model)."""
        row = self.row
        return np.fromiter((row.get(h, -1) for h in history), np.int64, len(history))

    def history_matrix(
        self, columns: Sequence[npt.NDArray[np.int64]], half_life: float, boost: float = 1.0
    ) -> sparse.csr_matrix:
        """Histories as ``columns`` (newest first) -> rows of recency weights over the
        items (an item listed twice counts once, at its newest position)."""
        indptr = [0]
        parts: list[npt.NDArray[np.int64]] = []
        weights: list[npt.NDArray[np.float64]] = []
        for cols in columns:
            w = history_weights(len(cols), half_life, boost)
            _, first = np.unique(cols, return_index=True)
            keep = np.sort(first)
            keep = keep[cols[keep] >= 0]
            parts.append(cols[keep])
            weights.append(w[keep])
            indptr.append(indptr[-1] + len(keep))
        return sparse.csr_matrix(
            (
                np.concatenate(weights) if weights else np.zeros(0),
                np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64),
                indptr,
            ),
            shape=(len(columns), len(self.item_ids)),
        )

    def scores(
        self, histories: Sequence[Sequence[str]], half_life: float, boost: float = 1.0
    ) -> sparse.csr_matrix:
        """Every candidate's item-item score per history (rows), sparse, float64."""
        return self.scores_of([self.columns(h) for h in histories], half_life, boost)

    def scores_of(
        self, columns: Sequence[npt.NDArray[np.int64]], half_life: float, boost: float = 1.0
    ) -> sparse.csr_matrix:
        """``scores`` for histories given as ``columns``."""
        h = self.history_matrix(columns, half_life, boost)
        weights: sparse.csr_matrix = self.__dict__["weights64"]
        out: sparse.csr_matrix = (h @ weights).tocsr()
        out.sort_indices()
        return out

    def to_arrays(self) -> dict[str, npt.NDArray[np.generic]]:
        w = self.weights
        return {
            PREFIX + "ids": np.asarray(self.item_ids, dtype=np.str_),
            PREFIX + "indptr": np.asarray(w.indptr, dtype=np.int64),
            PREFIX + "indices": np.asarray(w.indices, dtype=np.int32),
            PREFIX + "data": np.asarray(w.data, dtype=np.float32),
            PREFIX + "l2": np.asarray([self.l2], dtype=np.float64),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, npt.NDArray[np.generic]]) -> ItemItem | None:
        """The model stored by ``to_arrays`` in ``arrays``, or None if it holds none."""
        if PREFIX + "ids" not in arrays:
            return None
        ids = [str(i) for i in arrays[PREFIX + "ids"].tolist()]
        n = len(ids)
        weights = sparse.csr_matrix(
            (
                np.asarray(arrays[PREFIX + "data"], dtype=np.float32),
                np.asarray(arrays[PREFIX + "indices"], dtype=np.int32),
                np.asarray(arrays[PREFIX + "indptr"], dtype=np.int64),
            ),
            shape=(n, n),
        )
        l2 = float(np.asarray(arrays.get(PREFIX + "l2", [math.nan]))[0])
        return cls(ids, weights, l2)


def prune(
    b: npt.NDArray[np.float32], neighbours: int, max_neighbours: int | None = None
) -> sparse.csr_matrix:
    """The entries of ``b`` largest in magnitude (negative ones too: they keep items the
    history argues against down), as CSR float32: each row's ``neighbours`` largest, or
    with ``max_neighbours`` the ``rows * neighbours`` largest of the whole matrix, at most
    ``max_neighbours`` per row (a strong item keeps more weights than a weak one, for
    the same total)."""
    n = b.shape[0]
    k = min(neighbours if max_neighbours is None else max_neighbours, max(0, b.shape[1] - 1))
    if n == 0 or k == 0 or neighbours == 0:
        return sparse.csr_matrix(b.shape, dtype=np.float32)
    top = np.argpartition(-np.abs(b), k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(b, top, axis=1)
    keep = vals != 0
    budget = n * neighbours
    if max_neighbours is not None and budget < int(keep.sum()):
        size = np.abs(vals).ravel()
        threshold = np.partition(size, size.size - budget)[size.size - budget]
        keep &= np.abs(vals) >= threshold  # ties at the threshold may keep a few more
    rows = np.repeat(np.arange(n), k)[keep.ravel()]
    out = sparse.csr_matrix(
        (vals[keep].astype(np.float32), (rows, top[keep])), shape=b.shape, dtype=np.float32
    )
    out.sort_indices()
    return out


@dataclass(frozen=True)
class Neighbourhood:
    """What ``fit_item_item`` adds to EASE's pruned weights (module doc)."""

    window: int = 0
    """Co-occurrence window in the users' time-ordered histories, in positions (0: none)."""
    weight: float = 0.0
    """Weight of the co-occurrence term, relative to EASE's scale (``cooccurrence_scale``)."""
    popularity_exponent: float = 0.0
    """``beta`` of the candidate-popularity discount ``(1 + users(j))^-beta``."""
    gram_window: int = 0
    """Co-occurrence window whose counts EASE is fitted with, in positions (0: plain EASE)."""
    gram_weight: float = 0.0
    """``mu`` of EASE's Gram matrix ``X^T X + mu C`` (``C``: the ``gram_window`` counts)."""
    gram_l2_factor: float = 1.0
    """That EASE's ``lambda``: the one tuned for plain EASE, times this."""

    def __post_init__(self) -> None:
        if self.window < 0 or self.gram_window < 0:
            raise ValueError(f"windows must be >= 0, got {self.window}, {self.gram_window}")
        for name in ("weight", "popularity_exponent", "gram_weight"):
            value = getattr(self, name)
            if not (value >= 0.0 and math.isfinite(value)):
                raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
        if not (self.gram_l2_factor > 0.0 and math.isfinite(self.gram_l2_factor)):
            raise ValueError(f"gram_l2_factor must be finite and > 0, got {self.gram_l2_factor!r}")

    @property
    def in_gram(self) -> bool:
        """Whether EASE is fitted with the window counts in its Gram matrix."""
        return self.gram_window > 0 and self.gram_weight > 0

    def uses_gram(self, n_items: int) -> bool:
        """Whether ``fit_item_item`` fits that EASE for ``n_items`` items (``in_gram`` and
        at most ``GRAM_MAX_ITEMS``; otherwise plain EASE)."""
        return self.in_gram and n_items <= GRAM_MAX_ITEMS


def window_cooccurrence(
    sequences: Sequence[Sequence[int] | npt.NDArray[np.int64]], n: int, window: int
) -> sparse.csr_matrix:
    """Symmetric counts over ``n`` items: ``C[i, j]`` is how many times ``i`` and ``j``
    stand at most ``window`` positions apart in one of ``sequences`` (zero diagonal)."""
    heads: list[npt.NDArray[np.int64]] = []
    tails: list[npt.NDArray[np.int64]] = []
    for seq in sequences:
        cols = np.asarray(seq, dtype=np.int64)
        for gap in range(1, min(window, len(cols) - 1) + 1):
            heads.append(cols[:-gap])
            tails.append(cols[gap:])
    if not heads:
        return sparse.csr_matrix((n, n), dtype=np.float64)
    a, b = np.concatenate(heads), np.concatenate(tails)
    keep = a != b
    a, b = a[keep], b[keep]
    counts = sparse.coo_matrix(
        (np.ones(2 * len(a)), (np.concatenate([a, b]), np.concatenate([b, a]))), shape=(n, n)
    )
    out: sparse.csr_matrix = counts.tocsr()  # duplicates summed
    return out


def cooccurrence_scale(
    x: sparse.csr_matrix, b: npt.NDArray[np.float32], c: sparse.csr_matrix, sample: int = 1000
) -> float:
    """The factor that puts ``x C`` on the scale of ``x B``: the mean over users (the first
    ``sample`` rows of ``x``) of the largest ``|x_u B|`` over that of the largest ``|x_u C|``."""
    rows = x[:sample]
    ease = np.abs(np.asarray(rows @ b)).max(axis=1).mean()
    co = abs(rows @ c).max(axis=1).toarray().mean() if c.nnz else 0.0  # stays sparse
    return float(ease / co) if co > 0 else 0.0


def add_neighbourhood(
    pruned: sparse.csr_matrix,
    b: npt.NDArray[np.float32],
    x: sparse.csr_matrix,
    sequences: Sequence[Sequence[int]],
    config: Neighbourhood,
) -> sparse.csr_matrix:
    """``pruned`` (EASE's ``b`` after ``prune``) plus the co-occurrence term, every
    column times the popularity discount (module doc); CSR float32."""
    users = np.asarray(x.sum(axis=0)).ravel() + 1.0
    out = pruned.astype(np.float32)
    if config.window > 0 and config.weight > 0:
        c = window_cooccurrence(sequences, b.shape[0], config.window)
        root = sparse.diags(1.0 / np.sqrt(users))
        normalised: sparse.csr_matrix = (root @ c @ root).tocsr()
        factor = config.weight * cooccurrence_scale(x, b, normalised)
        if factor > 0:
            out = out + (factor * normalised).astype(np.float32)
    if config.popularity_exponent > 0:
        out = out @ sparse.diags((users**-config.popularity_exponent).astype(np.float32))
    result = sparse.csr_matrix(out, dtype=np.float32)
    result.sort_indices()
    return result


def fit_item_item(
    events: Sequence[Event],
    neighbours: int = 200,
    l2: float | None = None,
    grid: Sequence[float] = DEFAULT_GRID,
    seed: int = 0,
    max_neighbours: int | None = None,
    neighbourhood: Neighbourhood = Neighbourhood(),
) -> ItemItem:
    """EASE on ``events`` (``lambda`` tuned on a validation split unless given), pruned
    to ``neighbours`` per item, or to ``neighbours`` per item on average and at most
    ``max_neighbours`` (``prune``), plus ``neighbourhood``'s co-occurrence term, times
    its popularity discount (``add_neighbourhood``; module doc)."""
    item_ids = sorted({e.item_id for e in events})
    index = {item: i for i, item in enumerate(item_ids)}
    history: dict[str, dict[int, None]] = {}
    for event in sorted(events, key=lambda e: e.ts):
        history.setdefault(event.user_id, {})[index[event.item_id]] = None
    rows = [list(h) for h in history.values()]
    if len(item_ids) < 2:
        return ItemItem(item_ids, sparse.csr_matrix((len(item_ids),) * 2, dtype=np.float32))
    if l2 is None:
        tuner = EASERecommender(grid=grid, seed=seed)
        tuner._item_ids = item_ids
        l2 = tuner._tune(rows, len(item_ids))
    x = binary_matrix(rows, len(item_ids))
    if neighbourhood.uses_gram(len(item_ids)):
        l2 *= neighbourhood.gram_l2_factor
        counts = window_cooccurrence(rows, len(item_ids), neighbourhood.gram_window)
        gram = (x.T @ x + neighbourhood.gram_weight * counts).toarray()  # one dense copy
        b = gram_weights(gram, l2)
        del gram
    else:
        b = _Solver(x).weights(l2)
    weights = add_neighbourhood(prune(b, neighbours, max_neighbours), b, x, rows, neighbourhood)
    return ItemItem(item_ids, weights, float(l2))
