"""A user's history-based signals: item-item and sequential scores, and their candidates.

Both rankers of ``models.batchrank`` compute these here, with the same arithmetic, so
their lists agree exactly. For each user (history newest first, and the items to leave
out):

* ``item_item``: the row of ``ItemItem.scores`` (every item some history item points to,
  with ``s(j)``); its candidates are the ``n_item_candidates`` best items with a
  positive score, and its scale the best of those scores;
* ``sequence``: ``Transitions.scores`` of the history (already a share of what followed
  each history item, so not rescaled); its candidates the ``n_sequence_candidates`` best.

The blend's terms are ``s(j) / scale`` (clipped to [-1, 1]) and ``t(j)``.
``contributions`` splits both terms of an item over the history items, which is what
"because you clicked X" names (``models.recommender`` module doc).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy import sparse

from models.itemitem import ItemItem, history_weights
from models.transitions import Transitions

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(slots=True)
class Signals:
    """One user's item-item row and sequential scores (see the module doc)."""

    h_cols: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """The history's item-item columns, by position (-1: not in the model)."""
    ii_cols: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """Sorted item-item columns of the user's score row."""
    ii_values: FloatArray = field(default_factory=lambda: np.zeros(0))
    ii_scale: float = 0.0
    ii_top: list[str] = field(default_factory=list)
    seq: Mapping[str, float] = field(default_factory=dict)
    seq_top: list[str] = field(default_factory=list)

    def item_item_terms(self, cols: IntArray) -> FloatArray:
        """``s(j) / scale`` for item-item columns ``cols`` (-1: not in the model), in [-1, 1]."""
        out = np.zeros(len(cols))
        if self.ii_scale <= 0 or not len(self.ii_cols):
            return out
        pos = np.minimum(np.searchsorted(self.ii_cols, cols), len(self.ii_cols) - 1)
        hit = (cols >= 0) & (self.ii_cols[pos] == cols)
        out[hit] = self.ii_values[pos[hit]] / self.ii_scale
        clipped: FloatArray = np.clip(out, -1.0, 1.0)
        return clipped

    def sequence_term(self, item_id: str) -> float:
        return self.seq.get(item_id, 0.0)


def _best(cols: IntArray, values: FloatArray, n: int) -> IntArray:
    """Positions of the ``n`` largest ``values``, ties by the smaller column, in that
    order: ``np.lexsort((cols, -values))[:n]`` without sorting the whole row."""
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    if len(values) > n:
        nth = -np.partition(-values, n - 1)[n - 1]
        within = np.flatnonzero(values >= nth)  # every tie of the n-th value, in order
        order: IntArray = within[np.lexsort((cols[within], -values[within]))][:n]
        return order
    full: IntArray = np.lexsort((cols, -values))
    return full


def _top(ids: Sequence[str], values: Sequence[float], n: int) -> list[str]:
    """The ``n`` ids of largest positive value, ties by id."""
    ranked = sorted((-v, i) for i, v in zip(ids, values, strict=True) if v > 0)
    return [i for _, i in ranked[:n]]


def history_signals(
    item_item: ItemItem | None,
    transitions: Transitions | None,
    histories: Sequence[Sequence[str]],
    excludes: Sequence[Collection[str]],
    half_life: float,
    boost: float,
    n_item_candidates: int,
    n_sequence_candidates: int,
) -> list[Signals]:
    """Signals for a batch of users (one sparse product for the item-item rows)."""
    out = [Signals() for _ in histories]
    if item_item is not None and len(item_item) and any(histories):
        columns = [item_item.columns(h) for h in histories]
        rows = item_item.scores_of(columns, half_life, boost)
        ids = item_item.item_ids
        for i, sig in enumerate(out):
            sig.h_cols = columns[i]
            a, b = rows.indptr[i], rows.indptr[i + 1]
            cols = np.asarray(rows.indices[a:b], dtype=np.int64)
            values = np.asarray(rows.data[a:b], dtype=np.float64)
            sig.ii_cols, sig.ii_values = cols, values
            keep = values > 0
            cand, vals = cols[keep], values[keep]
            exclude = excludes[i]
            order = _best(cand, vals, n_item_candidates + len(exclude))
            for c, v in zip(cand[order].tolist(), vals[order].tolist(), strict=True):
                if len(sig.ii_top) >= n_item_candidates:
                    break
                item_id = ids[c]
                if item_id not in exclude:
                    sig.ii_top.append(item_id)
                    if sig.ii_scale == 0.0:
                        sig.ii_scale = v
    if transitions is not None and transitions.rules:
        for i, sig in enumerate(out):
            scores = transitions.scores(histories[i])
            if not scores:
                continue
            exclude = excludes[i]
            kept = {q: v for q, v in scores.items() if q not in exclude}
            sig.seq = scores
            sig.seq_top = _top(list(kept), list(kept.values()), n_sequence_candidates)
    return out


def contributions(
    item_item: ItemItem | None,
    transitions: Transitions | None,
    history: Sequence[str],
    items: Sequence[str],
    sig: Signals,
    half_life: float,
    boost: float,
    w_item: float,
    w_sequence: float,
) -> FloatArray:
    """``(len(items), len(history))``: each history item's share of each item's weighted
    item-item and sequential terms, ``w_item * w_h * W[h, j] / scale_ii +
    w_sequence * w(h, j) * Transitions.scale(h, p)`` (p: the history position)."""
    out = np.zeros((len(items), len(history)))
    if not len(items) or not len(history):
        return out
    if item_item is not None and sig.ii_scale > 0 and w_item > 0:
        h_cols = sig.h_cols
        ok = np.flatnonzero(h_cols >= 0)
        # each history column once, at its newest position (the first in ``h_cols``)
        known, first = np.unique(h_cols[ok], return_index=True)
        newest = ok[first]
        weights = history_weights(len(history), half_life, boost) * (w_item / sig.ii_scale)
        cand = item_item.columns(items)
        picks = np.flatnonzero(cand >= 0)
        # the CSR rows of the picked candidates in W transposed, one gather
        owner, cols, data = _gather_rows(item_item.transposed, cand[picks])
        if len(cols) and len(known):
            at = np.minimum(np.searchsorted(known, cols), len(known) - 1)
            hit = known[at] == cols
            pos = newest[at[hit]]
            values = data[hit].astype(np.float64) * weights[pos]
            np.add.at(out, (picks[owner[hit]], pos), values)
    if transitions is not None and sig.seq and w_sequence > 0:
        for p, h in enumerate(history[: transitions.steps]):
            row = transitions.rules.get(h)
            if not row:
                continue
            scale = w_sequence * transitions.scale(h, p)
            for n, j in enumerate(items):
                w = row.get(j)
                if w:
                    out[n, p] += w * scale
    return out


def top_contributor(weights: FloatArray) -> int | None:
    """The history position with the largest positive contribution (ties: the newest)."""
    if not len(weights):
        return None
    best = int(np.argmax(weights))
    return best if weights[best] > 0 else None


def top_contributors(
    item_item: ItemItem | None,
    transitions: Transitions | None,
    histories: Sequence[Sequence[str]],
    items: Sequence[Sequence[str]],
    sigs: Sequence[Signals],
    half_life: float,
    boost: float,
    w_item: float,
    w_sequence: float,
) -> list[list[int | None]]:
    """``top_contributor(contributions(...)[n])`` for every item ``n`` of every user of a
    batch, with the same floats, in one set of array operations for the whole batch."""
    n_users = len(histories)
    offsets = np.zeros(n_users + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(i) for i in items])
    pair_ids: list[npt.NDArray[np.int64]] = []
    positions: list[npt.NDArray[np.int64]] = []
    values: list[FloatArray] = []
    users = [
        u
        for u in range(n_users)
        if item_item is not None and sigs[u].ii_scale > 0 and w_item > 0 and len(items[u])
    ]
    if item_item is not None and users:
        found = _item_item_entries(
            item_item, histories, items, sigs, users, offsets, half_life, boost, w_item
        )
        pair_ids.append(found[0])
        positions.append(found[1])
        values.append(found[2])
    if transitions is not None and w_sequence > 0:
        seq_pairs: list[int] = []
        seq_pos: list[int] = []
        seq_values: list[float] = []
        for u in range(n_users):
            if not sigs[u].seq or not len(items[u]):
                continue
            for p, h in enumerate(histories[u][: transitions.steps]):
                row = transitions.rules.get(h)
                if not row:
                    continue
                scale = w_sequence * transitions.scale(h, p)
                for n, j in enumerate(items[u]):
                    w = row.get(j)
                    if w:
                        seq_pairs.append(int(offsets[u]) + n)
                        seq_pos.append(p)
                        seq_values.append(w * scale)
        if seq_pairs:
            pair_ids.append(np.asarray(seq_pairs, dtype=np.int64))
            positions.append(np.asarray(seq_pos, dtype=np.int64))
            values.append(np.asarray(seq_values, dtype=np.float64))
    out: list[list[int | None]] = [[None] * len(i) for i in items]
    pairs, pos, vals = (
        np.concatenate([np.zeros(0, np.int64), *pair_ids]),
        np.concatenate([np.zeros(0, np.int64), *positions]),
        np.concatenate([np.zeros(0), *values]),
    )
    if not len(pairs):
        return out
    width = int(pos.max()) + 1
    cell, inverse = np.unique(pairs * width + pos, return_inverse=True)
    sums = np.bincount(inverse, weights=vals, minlength=len(cell))  # item-item, then sequence
    pairs, pos = cell // width, cell % width
    keep = sums > 0
    pairs, pos, sums = pairs[keep], pos[keep], sums[keep]
    order = np.lexsort((pos, -sums, pairs))  # per pair: the largest, ties: the newest
    pairs, pos = pairs[order], pos[order]
    first = np.ones(len(pairs), dtype=bool)
    first[1:] = pairs[1:] != pairs[:-1]
    user_of = np.searchsorted(offsets, pairs[first], side="right") - 1
    for u, p, at in zip(user_of.tolist(), pairs[first].tolist(), pos[first].tolist(), strict=True):
        out[u][p - int(offsets[u])] = at
    return out


def _gather_rows(
    matrix: sparse.csr_matrix, rows: IntArray
) -> tuple[IntArray, IntArray, npt.NDArray[np.float32]]:
    """The entries of CSR ``rows`` concatenated: (which of ``rows``, column, value)."""
    starts = matrix.indptr[rows]
    lengths = matrix.indptr[rows + 1] - starts
    total = int(lengths.sum())
    flat = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(total)
    owner = np.repeat(np.arange(len(rows)), lengths)
    return owner, np.asarray(matrix.indices[flat], dtype=np.int64), matrix.data[flat]


def _item_item_entries(
    item_item: ItemItem,
    histories: Sequence[Sequence[str]],
    items: Sequence[Sequence[str]],
    sigs: Sequence[Signals],
    users: Sequence[int],
    offsets: IntArray,
    half_life: float,
    boost: float,
    w_item: float,
) -> tuple[IntArray, IntArray, FloatArray]:
    """(pair, history position, ``w_item * w_h * W[h, j] / scale``) for every item j of
    ``users`` (pairs numbered by ``offsets``) and history item h with ``W[h, j] != 0``.

    Each user's entries come from whichever side has fewer: the rows of its history items
    (``W``) or the columns of its items (``W`` transposed)."""
    n_cols = len(item_item)
    weights = item_item.weights
    by_candidate = item_item.transposed
    # per user: history columns once each (newest position), the items' columns
    hist_user, hist_col, hist_pos, hist_weight = [], [], [], []
    pair_user, pair_col, pair_id = [], [], []
    for u in users:
        h_cols = sigs[u].h_cols
        ok = np.flatnonzero(h_cols >= 0)
        known, first = np.unique(h_cols[ok], return_index=True)
        w = history_weights(len(histories[u]), half_life, boost) * (w_item / sigs[u].ii_scale)
        hist_user.append(np.full(len(known), u))
        hist_col.append(known)
        hist_pos.append(ok[first])
        hist_weight.append(w[ok[first]])
        cols = item_item.columns(items[u])
        keep = np.flatnonzero(cols >= 0)
        pair_user.append(np.full(len(keep), u))
        pair_col.append(cols[keep])
        pair_id.append(keep + offsets[u])
    h_user, h_col = np.concatenate(hist_user), np.concatenate(hist_col)
    h_pos, h_weight = np.concatenate(hist_pos), np.concatenate(hist_weight)
    p_user, p_col, p_id = (
        np.concatenate(pair_user),
        np.concatenate(pair_col),
        np.concatenate(pair_id),
    )
    # the cost of each side per user, in CSR entries to read
    by_hist = np.bincount(h_user, weights=np.diff(weights.indptr)[h_col], minlength=len(sigs))
    by_item = np.bincount(p_user, weights=np.diff(by_candidate.indptr)[p_col], minlength=len(sigs))
    from_hist = by_hist <= by_item
    out_pair, out_pos, out_value = [], [], []
    # history side: W rows of the history items, matched against the user's items
    rows = np.flatnonzero(from_hist[h_user])
    if len(rows) and len(p_col):
        owner, col, data = _gather_rows(weights, h_col[rows])
        src = rows[owner]
        key = p_user * n_cols + p_col  # users ascending, items in list order: sort
        order = np.argsort(key, kind="stable")
        key = key[order]
        probe = h_user[src] * n_cols + col
        at = np.minimum(np.searchsorted(key, probe), len(key) - 1)
        hit = key[at] == probe
        out_pair.append(p_id[order[at[hit]]])
        out_pos.append(h_pos[src[hit]])
        out_value.append(data[hit].astype(np.float64) * h_weight[src[hit]])
    # item side: W columns of the user's items, matched against its history
    picks = np.flatnonzero(~from_hist[p_user])
    if len(picks) and len(h_col):
        owner, col, data = _gather_rows(by_candidate, p_col[picks])
        src = picks[owner]
        key = h_user * n_cols + h_col  # users ascending, columns sorted within a user
        probe = p_user[src] * n_cols + col
        at = np.minimum(np.searchsorted(key, probe), len(key) - 1)
        hit = key[at] == probe
        out_pair.append(p_id[src[hit]])
        out_pos.append(h_pos[at[hit]])
        out_value.append(data[hit].astype(np.float64) * h_weight[at[hit]])
    if not out_pair:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return np.concatenate(out_pair), np.concatenate(out_pos), np.concatenate(out_value)
