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
            order = np.lexsort((cand, -vals))[: n_item_candidates + len(exclude)]
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
        position = np.full(len(item_item), -1, dtype=np.int64)
        ok = np.flatnonzero(h_cols >= 0)
        position[h_cols[ok][::-1]] = ok[::-1]  # an item listed twice: its newest position
        weights = history_weights(len(history), half_life, boost) * (w_item / sig.ii_scale)
        by_candidate = item_item.transposed
        for n, j in enumerate(item_item.columns(items).tolist()):
            if j < 0:
                continue
            a, b = by_candidate.indptr[j], by_candidate.indptr[j + 1]
            at = position[by_candidate.indices[a:b]]
            hit = at >= 0
            out[n, at[hit]] += by_candidate.data[a:b][hit].astype(np.float64) * weights[at[hit]]
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
