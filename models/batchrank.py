"""Ranking many users at once: the ``Ranker`` protocol, its reference and its fast form.

``ReferenceRanker`` calls ``models.recommender.recommend`` once per user: the exact
definition of a list (module doc there). ``VectorRanker`` computes the same lists for a
whole batch with numpy: one batched retrieval call, the blended score, repeat decay,
MMR and the epsilon-greedy slots vectorised across users. With ``epsilon = 0`` both
give the same lists; with exploration both follow the same policy with exact
propensities (``tests/unit/test_batchrank.py`` runs one contract suite over both),
though they draw their randomness differently.

MMR is computed for the first ``k`` picks only: at slot ``s`` at most ``s`` items are
gone, so the greedy item is always among the first ``s + 1`` of the MMR order, and an
explored slot draws uniformly from whatever remains, whatever its order. An explored
item past that prefix reports its marginal score after ``k`` MMR steps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Protocol

import numpy as np
import numpy.typing as npt

from models.bandit import EpsilonGreedyRanker
from models.profile import UserProfile
from models.reclist import RecItem, rec_item
from models.recommender import (
    EXPLORING,
    TRENDING,
    ItemView,
    RankConfig,
    clicked_reason,
    new_reason,
    popular_reason,
    recommend,
)
from models.rerank import ShownCounter
from models.signals import Signals, history_signals, top_contributors

CHUNK = 64
"""Users ranked in one set of arrays: larger chunks stop fitting the CPU caches."""


@dataclass(frozen=True, slots=True)
class RankRequest:
    """One user to rank: their profile, taste vector, shows, settings and bandit."""

    profile: UserProfile
    vector: npt.NDArray[np.float32] | None
    shown: ShownCounter
    cfg: RankConfig
    bandit: EpsilonGreedyRanker
    t: float
    """The bandit round (epsilon schedule)."""
    variant: str = "default"
    exclude: frozenset[str] = frozenset()
    """Items never to list, besides the purchased and recent ones (evaluation)."""


class Ranker(Protocol):
    """Ranks a batch of users against the same item state."""

    def rank_batch(
        self, requests: Sequence[RankRequest], items: ItemView, now_ts: float
    ) -> list[list[RecItem]]:
        """One list per request, in order."""
        ...


class ReferenceRanker:
    """The exact definition: ``recommend`` for each user in turn."""

    def rank_batch(
        self, requests: Sequence[RankRequest], items: ItemView, now_ts: float
    ) -> list[list[RecItem]]:
        return [
            recommend(r.profile, r.vector, items, r.shown, now_ts, r.cfg, r.bandit, r.t, r.exclude)
            for r in requests
        ]


def _first(ranked: Sequence[tuple[str, float]], n: int, exclude: set[str]) -> list[str]:
    out: list[str] = []
    if n <= 0:
        return out
    for item_id, _ in ranked:
        if item_id not in exclude:
            out.append(item_id)
            if len(out) >= n:
                break
    return out


_Static = tuple[bool, bool, tuple[str, ...], float | None, int]
"""An item's inputs that change only with the catalog: from content, available, its
distinct categories, first seen, item-item column (-1: none)."""


class _StaticCache:
    """``_Static`` per item, kept across batches while the item view says which items
    the catalog changed (``ItemView.catalog_changes``); rebuilt when it cannot say."""

    LIMIT = 500_000
    """Items kept at most (then the cache starts again)."""

    def __init__(self) -> None:
        self._items: ItemView | None = None
        self._version = -1
        self._rows: dict[str, _Static] = {}

    def table(self, items: ItemView) -> dict[str, _Static]:
        """The cache, valid for ``items`` as they are now."""
        if items is not self._items:
            self._items, self._version, self._rows = items, -1, {}
        version, changed = items.catalog_changes(self._version)
        if changed is None or len(self._rows) > self.LIMIT:
            self._rows = {}
        else:
            for item_id in changed:
                self._rows.pop(item_id, None)
        self._version = version
        return self._rows


def _static(items: ItemView, item_id: str, ii_index: Mapping[str, int]) -> _Static:
    return (
        items.from_content(item_id),
        items.available(item_id),
        tuple(dict.fromkeys(items.categories(item_id))),
        items.first_seen(item_id),
        ii_index.get(item_id, -1),
    )


class _Features:
    """Per-item inputs of the blend for the union of a batch's candidates."""

    def __init__(
        self,
        items: ItemView,
        ids: Sequence[str],
        now_ts: float,
        cfg: RankConfig,
        static: dict[str, _Static] | None = None,
    ):
        n, dim = len(ids), items.retriever.dim
        self.row = {item_id: i for i, item_id in enumerate(ids)}
        unit = np.zeros((n + 1, dim), dtype=np.float64)  # row n: "no item" (padding)
        content = np.zeros(n + 1, dtype=bool)
        qual = np.zeros(n + 1)
        fresh = np.zeros(n + 1)
        pop = np.zeros(n + 1)
        available = np.zeros(n + 1, dtype=bool)
        global_pop = dict(items.global_top)
        category_top = items.category_top
        cat_pop: dict[str, dict[str, float]] = {}
        quality = items.quality
        q0 = quality.prior_mean
        window = cfg.new_item_window_s
        cats: list[tuple[str, ...]] = []
        ii_col = np.full(n + 1, -1, dtype=np.int64)
        """Each row's item-item column (-1: not in the item-item model, and padding)."""
        retriever = items.retriever
        ii_index = items.item_item.row if items.item_item is not None else {}
        rows = {} if static is None else static
        for i, item_id in enumerate(ids):
            vec = retriever.vector(item_id)
            if vec is not None:
                unit[i] = vec
            known = rows.get(item_id)
            if known is None:
                known = rows[item_id] = _static(items, item_id, ii_index)
            content[i], available[i], item_cats, seen, ii_col[i] = known
            qual[i] = math.tanh(math.log(quality.score(item_id) / q0))
            if seen is not None and window > 0:
                fresh[i] = max(0.0, 1.0 - max(0.0, now_ts - seen) / window)
            cats.append(item_cats)
            p = global_pop.get(item_id, 0.0)
            for cat in item_cats:
                table = cat_pop.get(cat)
                if table is None:
                    table = cat_pop[cat] = dict(category_top.get(cat, ()))
                p = max(p, table.get(item_id, 0.0))
            pop[i] = min(1.0, max(0.0, p))
        norms = np.linalg.norm(unit, axis=1)
        has = np.isfinite(norms) & (norms > 0)
        unit = np.divide(unit, norms[:, None], out=np.zeros_like(unit), where=has[:, None])
        self.unit, self.has, self.content = unit, has, content
        self.qual, self.fresh, self.pop, self.cats = qual, fresh, pop, cats
        self.available = available
        self.ii_col = ii_col
        self.pad = n
        self.columns: dict[str, int] = {}
        """Category -> its column in ``category_matrix`` and in a user's shares."""
        width = max((len(c) for c in cats), default=0)
        self.category_matrix = np.full((n + 1, max(1, width)), -1, dtype=np.int64)
        for i, item_cats in enumerate(cats):
            for j, cat in enumerate(item_cats):
                self.category_matrix[i, j] = self.columns.setdefault(cat, len(self.columns))

    def shares(self, shares: Sequence[Mapping[str, float]]) -> npt.NDArray[np.float64]:
        """Users' category shares as rows over ``columns`` (plus a zero column, -1)."""
        out = np.zeros((len(shares), len(self.columns) + 1))
        for i, share in enumerate(shares):
            for cat, value in share.items():
                col = self.columns.get(cat)
                if col is not None:
                    out[i, col] = value
        return out


@dataclass(frozen=True, slots=True)
class _Marginal:
    """Each column's MMR marginal after the picks (``VectorRanker._mmr``), on demand."""

    rel: npt.NDArray[np.float64]
    units: npt.NDArray[np.float64]
    picked: npt.NDArray[np.float64]
    """(rows, steps, dim): the unit vector of each step's pick."""
    picked_ok: npt.NDArray[np.bool_]
    """(rows, steps): the step picked something whose similarity counts."""
    diversity: float

    def at(self, cols: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """The marginal of column ``cols[i]`` of each row ``i``."""
        rows = np.arange(len(cols))
        sims = np.matmul(self.picked, self.units[rows, cols][:, :, None])[:, :, 0]
        max_sim = np.maximum(0.0, np.where(self.picked_ok, sims, -np.inf).max(axis=1, initial=0.0))
        out: npt.NDArray[np.float64] = self.rel[rows, cols] - self.diversity * max_sim
        return out


class VectorRanker:
    """``ReferenceRanker``'s lists for a whole batch at once, vectorised with numpy."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self._static = _StaticCache()

    def rank_batch(
        self, requests: Sequence[RankRequest], items: ItemView, now_ts: float
    ) -> list[list[RecItem]]:
        if not requests:
            return []
        if not math.isfinite(now_ts):
            raise ValueError(f"now_ts must be finite, got {now_ts!r}")
        out: list[list[RecItem]] = [[] for _ in requests]
        groups: dict[RankConfig, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(r.cfg, []).append(i)
        for cfg, members in groups.items():
            lists = self._rank_group([requests[i] for i in members], items, now_ts, cfg)
            for i, items_i in zip(members, lists, strict=True):
                out[i] = items_i
        return out

    def pools(
        self, requests: Sequence[RankRequest], items: ItemView, now_ts: float
    ) -> list[list[str]]:
        """Each request's candidate pool (every source, available items only), unranked:
        what retrieval hands the ranker (``models.recall``)."""
        out: list[list[str]] = []
        for r in requests:
            _, _, _, (gathered,) = self._gather([r], items, now_ts, r.cfg)
            out.append([i for i in gathered if items.available(i)])
        return out

    def _gather(
        self, requests: Sequence[RankRequest], items: ItemView, now_ts: float, cfg: RankConfig
    ) -> tuple[
        npt.NDArray[np.float64], list[Signals], list[dict[str, float]], list[dict[str, None]]
    ]:
        """User vectors, history signals, category shares and candidates."""
        dim = items.retriever.dim
        b = len(requests)
        users = np.zeros((b, dim), dtype=np.float64)
        has_user = np.zeros(b, dtype=bool)
        excludes: list[set[str]] = []
        for i, r in enumerate(requests):
            excludes.append(set(r.profile.purchased) | set(r.profile.recent) | r.exclude)
            if r.vector is None:
                continue
            vec = np.asarray(r.vector, dtype=np.float64)
            if vec.ndim != 1 or vec.shape[0] != dim:
                raise ValueError(
                    f"user vector must be 1-D of dimension {dim} (the retriever's), "
                    f"got shape {vec.shape}"
                )
            if not np.isfinite(vec).all():
                raise ValueError("user vector contains NaN or infinite values")
            norm = float(np.linalg.norm(vec))
            if math.isfinite(norm) and norm > 0:
                users[i] = vec / norm
                has_user[i] = True
        hits: list[list[str]] = [[] for _ in requests]
        searching = [i for i in range(b) if has_user[i]]
        if searching and cfg.n_candidates > 0 and len(items.retriever) > 0:
            found = items.retriever.search_batch(
                users[searching].astype(np.float32),
                cfg.n_candidates,
                exclude=[excludes[i] for i in searching],
            )
            for i, row in zip(searching, found, strict=True):
                hits[i] = [item_id for item_id, _ in row]
        signals = history_signals(
            items.item_item,
            items.transitions,
            [r.profile.recent for r in requests],
            excludes,
            cfg.history_half_life,
            cfg.history_boost,
            cfg.n_item_candidates,
            cfg.n_sequence_candidates,
        )
        shares: list[dict[str, float]] = []
        gathered: list[dict[str, None]] = []
        for i, r in enumerate(requests):
            profile, exclude = r.profile, excludes[i]
            total = sum(w for w in profile.affinities.values() if w > 0)
            share = {c: w / total for c, w in profile.affinities.items() if w > 0 and total > 0}
            shares.append(share)
            top_cats = [c for c, w in profile.top_categories(cfg.n_categories) if w > 0]
            ids: dict[str, None] = dict.fromkeys(hits[i])
            ids.update(dict.fromkeys(signals[i].ii_top))
            ids.update(dict.fromkeys(signals[i].seq_top))
            for cat in top_cats:
                ids.update(
                    dict.fromkeys(
                        _first(items.category_top.get(cat, ()), cfg.per_category, exclude)
                    )
                )
            ids.update(dict.fromkeys(_first(items.global_top, cfg.n_trending, exclude)))
            if cfg.n_new > 0 and cfg.new_item_window_s > 0:
                for cat in top_cats:
                    fresh_ids = [
                        (item_id, 0.0)
                        for item_id in items.new_items(cat)
                        if (seen := items.first_seen(item_id)) is not None
                        and max(0.0, now_ts - seen) < cfg.new_item_window_s
                    ]
                    ids.update(dict.fromkeys(_first(fresh_ids, cfg.n_new, exclude)))
            gathered.append(ids)  # every source already left ``exclude`` out
        return users, signals, shares, gathered

    def _rank_group(
        self, requests: Sequence[RankRequest], items: ItemView, now_ts: float, cfg: RankConfig
    ) -> list[list[RecItem]]:
        b = len(requests)
        users, signals, shares, gathered = self._gather(requests, items, now_ts, cfg)
        history = {h for r in requests for h in r.profile.recent[: cfg.history_for_reasons]}
        union = sorted(set().union(*gathered) | history)
        feats = _Features(items, union, now_ts, cfg, self._static.table(items))
        # rows in id order (``union`` is sorted), each once, available items only
        row_lists: list[npt.NDArray[np.int64]] = []
        for ids in gathered:
            got = np.unique(np.fromiter(map(feats.row.__getitem__, ids), np.int64, len(ids)))
            row_lists.append(got[feats.available[got]])
        pools = [[union[j] for j in rows_i.tolist()] for rows_i in row_lists]
        lists: list[list[RecItem]] = []
        for start in range(0, b, CHUNK):
            part = slice(start, start + CHUNK)
            lists.extend(
                self._score(
                    requests[part],
                    users[part],
                    pools[part],
                    row_lists[part],
                    shares[part],
                    signals[part],
                    feats,
                    cfg,
                    items,
                )
            )
        return lists

    def _score(
        self,
        requests: Sequence[RankRequest],
        users: npt.NDArray[np.float64],
        pools: Sequence[list[str]],
        row_lists: Sequence[npt.NDArray[np.int64]],
        shares: Sequence[dict[str, float]],
        signals: Sequence[Signals],
        feats: _Features,
        cfg: RankConfig,
        items: ItemView,
    ) -> list[list[RecItem]]:
        """Score, diversify and fill the slots of one chunk of users (arrays in cache)."""
        b = len(requests)
        width = max((len(p) for p in pools), default=0)
        if width == 0:
            return [[] for _ in requests]
        rows = np.full((b, width), feats.pad, dtype=np.int64)
        for i, rows_i in enumerate(row_lists):
            rows[i, : len(rows_i)] = rows_i
        valid = rows != feats.pad
        item_units = feats.unit[rows]  # (b, width, dim)
        sim = np.matmul(item_units, users[:, :, None])[:, :, 0]
        sim = np.where(feats.content[rows], sim * cfg.content_discount, sim)
        user_shares = feats.shares(shares)  # (b, columns + 1); column -1 is zero
        item_cats = feats.category_matrix[rows]  # (b, width, cats per item)
        aff = np.minimum(1.0, user_shares[np.arange(b)[:, None, None], item_cats].sum(axis=2))
        ii = np.zeros((b, width))
        seq = np.zeros((b, width))
        for i, sig in enumerate(signals):
            n_i = len(pools[i])
            if sig.ii_scale > 0:
                ii[i, :n_i] = sig.item_item_terms(feats.ii_col[row_lists[i]])
            if sig.seq:
                seq[i, :n_i] = np.fromiter(map(sig.seq.get, pools[i], repeat(0.0)), float, n_i)
        score = (
            cfg.w_item * ii
            + cfg.w_sequence * seq
            + cfg.w_similarity * sim
            + cfg.w_quality * feats.qual[rows]
            + cfg.w_affinity * aff
            + cfg.w_popularity * feats.pop[rows]
            + cfg.w_freshness * feats.fresh[rows]
        )
        times = np.zeros((b, width))
        for i, r in enumerate(requests):
            shown = r.shown
            if len(shown):
                times[i, : len(pools[i])] = [shown.get(item_id, 0) for item_id in pools[i]]
        keep = cfg.repeat_factor**times
        score = np.where(score >= 0, score * keep, score * (2.0 - keep))
        score = np.where(valid, score, 0.0)
        scale = np.abs(score).max(axis=1, keepdims=True)
        relevance = np.divide(score, scale, out=np.zeros_like(score), where=scale > 0)
        order, marginal_at, after = self._mmr(relevance, item_units, valid, cfg, feats.has[rows])
        lists: list[list[RecItem]] = []
        slots = self._slots(requests, order, marginal_at, after, valid, cfg)
        best = top_contributors(
            items.item_item,
            items.transitions,
            [r.profile.recent for r in requests],
            [[pools[i][c] for c, *_ in slots[i]] for i in range(b)],
            signals,
            cfg.history_half_life,
            cfg.history_boost,
            cfg.w_item,
            cfg.w_sequence,
        )
        for i, r in enumerate(requests):
            pool = pools[i]
            picks = slots[i]
            if not picks:
                lists.append([])
                continue
            terms = (sim[i], aff[i], ii[i], seq[i])
            reasons = self._reasons(
                r.profile, pool, picks, feats, shares[i], terms, best[i], cfg, items
            )
            lists.append(
                [
                    rec_item(pool[col], round(value, 6), reason, prop)
                    for (col, value, prop, _), reason in zip(picks, reasons, strict=True)
                ]
            )
        return lists

    @staticmethod
    def _mmr(
        relevance: npt.NDArray[np.float64],
        units: npt.NDArray[np.float64],
        valid: npt.NDArray[np.bool_],
        cfg: RankConfig,
        has_vector: npt.NDArray[np.bool_],
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], _Marginal]:
        """The first ``k`` MMR picks per row (columns, -1 past the pool), their marginal
        values, and each column's marginal after those picks (``_Marginal``).

        Only columns that can be among the first ``k`` picks take part: a column's
        marginal is at most its ``rel`` (the similarity term is >= 0) and at least
        ``rel - diversity`` (unit vectors), and at every step one of the ``k`` best
        columns by ``rel`` is still there, so a column whose ``rel`` is below the
        ``k``-th best's minus ``diversity`` is never picked."""
        b, width = relevance.shape
        steps = min(cfg.k, width)
        div = cfg.diversity
        rel = (1.0 - div) * relevance
        units = np.where(has_vector[..., None], units, 0.0)
        arange = np.arange(b)
        live_rel = np.where(valid, rel, -np.inf)
        kth = -np.partition(-live_rel, steps - 1, axis=1)[:, steps - 1]
        floor = kth - div * (1.0 + 1e-6) - 1e-12
        eligible = valid & (live_rel >= floor[:, None])
        # the eligible columns of each row first, in column order (so ties go the same way)
        counts = eligible.sum(axis=1)
        cols = np.argsort(~eligible, axis=1, kind="stable")[:, : max(1, int(counts.max()))]
        c_units = units[arange[:, None], cols]
        c_rel = np.take_along_axis(rel, cols, axis=1)
        taken = np.arange(cols.shape[1])[None, :] >= counts[:, None]
        max_sim = np.zeros(cols.shape)
        order = np.full((b, steps), -1, dtype=np.int64)
        values = np.zeros((b, steps))
        picked_units = np.zeros((b, steps, units.shape[2]))
        picked_ok = np.zeros((b, steps), dtype=bool)
        for step in range(steps):
            marginal = np.where(taken, -np.inf, c_rel - div * max_sim)
            col = np.argmax(marginal, axis=1)
            best = marginal[arange, col]
            ok = np.isfinite(best)
            order[ok, step] = cols[arange, col][ok]
            values[ok, step] = best[ok]
            taken[arange[ok], col[ok]] = True
            if div > 0 and step + 1 < steps:
                picked = c_units[arange, col]  # (b, dim)
                picked_units[:, step] = picked
                picked_ok[:, step] = ok
                sims = np.matmul(c_units, picked[:, :, None])[:, :, 0]
                max_sim = np.where(ok[:, None], np.maximum(max_sim, sims), max_sim)
        return order, values, _Marginal(rel, units, picked_units, picked_ok, div)

    def _slots(
        self,
        requests: Sequence[RankRequest],
        order: npt.NDArray[np.int64],
        values: npt.NDArray[np.float64],
        after: _Marginal,
        valid: npt.NDArray[np.bool_],
        cfg: RankConfig,
    ) -> list[list[tuple[int, float, float, bool]]]:
        """Epsilon-greedy slots per row: (column, score, propensity, explored); the first
        ``cfg.protected_slots`` never explore."""
        b, width = valid.shape
        sizes = valid.sum(axis=1)
        eps = np.array([r.cfg.epsilon.epsilon_at(r.t) for r in requests])
        remaining = valid.copy()
        arange = np.arange(b)
        listed = order >= 0
        safe_order = np.where(listed, order, 0)
        n_slots = min(cfg.k, width)
        coins = self.rng.random((n_slots, b))
        draws = self.rng.random((n_slots, b))
        cols = np.full((n_slots, b), -1, dtype=np.int64)
        scores = np.zeros((n_slots, b))
        props = np.zeros((n_slots, b))
        explored = np.zeros((n_slots, b), dtype=bool)
        for s in range(n_slots):
            n_rem = sizes - s
            live = n_rem > 0
            if not live.any():
                break
            # the greedy column: the first MMR pick still remaining (past the MMR prefix,
            # the first remaining column)
            left = listed & remaining[arange[:, None], safe_order]
            in_prefix = left.any(axis=1)
            greedy = np.where(
                in_prefix,
                safe_order[arange, np.argmax(left, axis=1)],
                np.argmax(remaining, axis=1),
            )
            explore = coins[s] < eps if s >= cfg.protected_slots else np.zeros(b, dtype=bool)
            explore &= live
            pick = greedy.copy()
            idx = np.flatnonzero(explore)
            if idx.size:
                r_index = np.minimum((draws[s, idx] * n_rem[idx]).astype(np.int64), n_rem[idx] - 1)
                cums = np.cumsum(remaining[idx], axis=1)
                pick[idx] = np.argmax(cums > r_index[:, None], axis=1)
            at = arange[live]
            remaining[at, pick[live]] = False
            e = eps if s >= cfg.protected_slots else np.zeros(b)
            exploit = np.where(pick == greedy, 1.0 - e, 0.0)
            prop = np.minimum(1.0, exploit + e / np.maximum(n_rem, 1))
            # the marginal value at the pick: its MMR step's if it was picked by MMR
            match = listed & (order == pick[:, None])
            value = np.where(
                match.any(axis=1),
                values[arange, np.argmax(match, axis=1)],
                after.at(pick),
            )
            cols[s, live] = pick[live]
            scores[s, live] = value[live]
            props[s, live] = prop[live]
            explored[s, live] = explore[live]
        out: list[list[tuple[int, float, float, bool]]] = []
        for i, size in enumerate(np.minimum(sizes, n_slots).tolist()):
            out.append(
                list(
                    zip(
                        cols[:size, i].tolist(),
                        scores[:size, i].tolist(),
                        props[:size, i].tolist(),
                        explored[:size, i].tolist(),
                        strict=True,
                    )
                )
            )
        return out

    @staticmethod
    def _reasons(
        profile: UserProfile,
        pool: Sequence[str],
        picks: Sequence[tuple[int, float, float, bool]],
        feats: _Features,
        shares: Mapping[str, float],
        terms: tuple[npt.NDArray[np.float64], ...],
        best: Sequence[int | None],
        cfg: RankConfig,
        items: ItemView,
    ) -> list[str]:
        """Each pick's reason; ``best``: each pick's top history contributor
        (``models.signals.top_contributors``)."""
        sim, aff, ii, seq = terms
        full = profile.recent
        cols = [c for c, *_ in picks]
        history = full[: cfg.history_for_reasons]
        hist_rows = np.fromiter(map(feats.row.__getitem__, history), np.int64, len(history))
        hist_ok = feats.has[hist_rows]
        pick_rows = np.fromiter((feats.row[pool[c]] for c, *_ in picks), np.int64, len(picks))
        nearest: list[int] = []
        if hist_ok.any():  # the history item nearest each pick (ties: the most recent)
            sims = feats.unit[pick_rows] @ feats.unit[hist_rows].T
            nearest = np.argmax(np.where(hist_ok[None, :], sims, -np.inf), axis=1).tolist()
        sim_terms = (cfg.w_similarity * sim[cols]).tolist()
        history_terms = (cfg.w_item * ii[cols] + cfg.w_sequence * seq[cols]).tolist()
        reasons: list[str] = []
        for n, (col, _, _, explored) in enumerate(picks):
            if explored:
                reasons.append(EXPLORING)
                continue
            row = int(pick_rows[n])
            liked = None
            for cat in feats.cats[row]:
                if shares.get(cat, 0.0) > 0 and (liked is None or shares[cat] > shares[liked]):
                    liked = cat
            if feats.fresh[row] > 0 and liked is not None:
                reasons.append(new_reason(liked))
                continue
            sim_term = sim_terms[n]
            clicked = None
            top = best[n]
            if top is not None:
                hist = full[top]
                clicked = clicked_reason(items.title(hist) or hist)
            elif sim_term > 0 and feats.has[row] and nearest:
                hist = history[nearest[n]]
                clicked = clicked_reason(items.title(hist) or hist)
            pop = float(feats.pop[row])
            if clicked is not None and history_terms[n] + sim_term >= max(
                cfg.w_affinity * float(aff[col]), cfg.w_popularity * pop
            ):
                reasons.append(clicked)
            elif liked is not None and pop > 0:
                reasons.append(popular_reason(liked))
            else:
                reasons.append(clicked or (TRENDING if liked is None else popular_reason(liked)))
        return reasons
