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
        rows = item_item.scores(histories, half_life, boost)
        ids = item_item.item_ids
        index = item_item.row
        for i, sig in enumerate(out):
            a, b = rows.indptr[i], rows.indptr[i + 1]
            cols = np.asarray(rows.indices[a:b], dtype=np.int64)
            values = np.asarray(rows.data[a:b], dtype=np.float64)
            sig.ii_cols, sig.ii_values = cols, values
            banned = [c for e in excludes[i] if (c := index.get(e)) is not None]
            keep = values > 0
            if banned:
                keep &= ~np.isin(cols, np.asarray(banned, dtype=np.int64))
            cand, vals = cols[keep], values[keep]
            if len(cand):
                order = np.lexsort((cand, -vals))[:n_item_candidates]
                sig.ii_top = [ids[c] for c in cand[order].tolist()]
                sig.ii_scale = float(vals[order[0]])
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
        index = item_item.row
        h_cols = np.fromiter((index.get(h, -1) for h in history), np.int64, len(history))
        j_cols = np.fromiter((index.get(j, -1) for j in items), np.int64, len(items))
        h_ok, j_ok = h_cols >= 0, j_cols >= 0
        if h_ok.any() and j_ok.any():
            block = item_item.weights[h_cols[h_ok]][:, j_cols[j_ok]].toarray().astype(np.float64)
            block *= history_weights(len(history), half_life, boost)[h_ok][:, None]
            part = np.zeros((len(history), len(items)))
            part[np.ix_(h_ok, j_ok)] = block
            out += (w_item / sig.ii_scale) * part.T
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
