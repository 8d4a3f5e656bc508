"""Pre-training: historical events -> a ``ModelArtefact`` for the workers' first day.

``train(dataset, config)`` builds, deterministically for a given ``config.seed``:

1. collaborative item vectors from the users' weighted interactions, by one of
   ``"als"`` (implicit-feedback ALS, the ``implicit`` package) or ``"sppmi"`` (shifted
   positive PMI of item co-occurrence in users' histories, factorised by truncated SVD);
   the choice and its measurements are in ``docs/model-choice.md``;
2. a content model (``models.content``) fitted from item metadata to those vectors,
   which also gives catalogue items with too few interactions their vector;
3. time-decayed popularity at the end of the data (``models.popularity`` entries);
4. the item-item model (``models.itemitem``: EASE, lambda chosen on a validation split of
   the data, pruned to ``item_neighbours`` per item) and the sequential rules
   (``models.transitions``) the worker keeps learning online.

The version is ``cf-`` plus 12 hex digits of a hash of the data and the config, so the
same inputs give the same version and the same arrays.

The evaluation harness behind ``docs/model-choice.md`` is at the end of this module:
``python -m models.training compare movielens`` (or ``yoochoose --data DIR``), and
``python -m models.training train DATASET OUT_DIR`` trains and saves an artefact.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from itertools import pairwise
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
from scipy import sparse
from sklearn.utils.extmath import randomized_svd  # type: ignore[import-untyped]
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from models.artefact import ModelArtefact
from models.content import ContentModel
from models.datasets import Dataset
from models.events import Event, ItemUpsert
from models.itemitem import Neighbourhood, fit_item_item, window_cooccurrence
from models.metrics import hit_rate_at_k, ndcg_at_k, reciprocal_rank_at_k
from models.popularity import Entry, bump, half_life_seconds, newest_anchor, score_at
from models.profile import DEFAULT_EVENT_WEIGHTS, event_weight
from models.transitions import fit_transitions

FloatArray = npt.NDArray[np.float32]
Method = Literal["als", "sppmi"]
Progress = Callable[[str, float], None]

METHODS: Final[tuple[str, ...]] = ("als", "sppmi")
FORMAT: Final = "eddy-train-v5"
"""Bumped when training code changes what the same data and config produce."""
PROFILE_HISTORY: Final = 20
"""Median distinct items per user from which the data is long-lived profiles, not sessions."""
PROFILE_BLEND: Final[Mapping[str, float]] = {
    "w_sequence": 1.0,
    "history_boost": 0.5,
    "w_similarity": 0.3,
}
"""The between-sessions blend for long-lived profiles (``rank_blend``; measured in
docs/model-choice.md)."""


def rank_blend(events: Sequence[Event]) -> dict[str, float]:
    """The blend weights for users between sessions on data like ``events``
    (``ModelArtefact.rank_blend``; ``WorkerStep`` ranks users within a session with
    ``RankConfig``'s own, which lean on the newest items: sequential 25, history boost 3).

    Sessions (the median user has fewer than ``PROFILE_HISTORY`` distinct items): none,
    the session weights for everyone. Long-lived profiles: ``PROFILE_BLEND``; a returning
    user's next items are spread over their whole history, and on MovieLens validation
    the session weights cost lists ranked between sessions a sixth of NDCG@10 on a random
    split for 9% gained on a time-ordered one (docs/model-choice.md)."""
    return dict(PROFILE_BLEND) if long_lived(events) else {}


def long_lived(events: Sequence[Event]) -> bool:
    """Whether ``events`` are long-lived profiles, not sessions: the median user has at
    least ``PROFILE_HISTORY`` distinct items."""
    items: dict[str, set[str]] = {}
    for event in events:
        items.setdefault(event.user_id, set()).add(event.item_id)
    if not items:
        return False
    sizes = sorted(len(s) for s in items.values())
    mid = len(sizes) // 2
    median = sizes[mid] if len(sizes) % 2 else (sizes[mid - 1] + sizes[mid]) / 2
    return median >= PROFILE_HISTORY


@dataclass(frozen=True)
class TrainConfig:
    """How to pre-train. Defaults are the measured choice (docs/model-choice.md)."""

    method: Method = "als"
    dim: int = 64
    seed: int = 0
    half_life_days: float = 30.0
    event_weights: Mapping[str, float] = field(
        default_factory=lambda: {t.value: w for t, w in DEFAULT_EVENT_WEIGHTS.items()}
    )
    min_item_count: int = 2
    """Items with fewer events get no CF vector (catalogue items get a content vector)."""
    regularisation: float = 10.0
    """ALS: L2 penalty on the factors."""
    als_alpha: float = 5.0
    """ALS: confidence per unit of event weight."""
    iterations: int = 15
    """ALS: alternating sweeps."""
    window: int = 0
    """SPPMI: co-occurrence window in a user's time-ordered history; 0 = whole history."""
    sppmi_shift: float = 1.0
    """SPPMI: k of ``max(PMI - log k, 0)``."""
    content_alpha: float = 10.0
    """Ridge penalty of the content model."""
    content_min_df: int = 2
    """Content terms in fewer CF items than this are dropped."""
    content_holdout: float = 0.1
    """Share of CF items held out once to measure the content model (0 = skip)."""
    item_neighbours: int = 100
    """Item-item model: EASE weights kept per item on average, the largest of the whole
    matrix (0 = no item-item model)."""
    item_max_neighbours: int = 400
    """Item-item model: at most this many weights kept for one item."""
    item_window: int = 2
    """Item-item model: co-occurrence window added to EASE, in history positions (0: none;
    ``models.itemitem.Neighbourhood``)."""
    item_window_weight: float = 0.15
    """Item-item model: weight of that co-occurrence term, relative to EASE's scale."""
    item_popularity_exponent: float = 0.1
    """Item-item model: candidate popularity discount ``(1 + users)^-exponent``."""
    item_gram_window: int = 3
    """Item-item model: co-occurrence window whose counts EASE is fitted with (0: plain
    EASE; ``models.itemitem.Neighbourhood``; catalogues up to ``GRAM_MAX_ITEMS``)."""
    item_gram_weight: float = 1.0
    """Item-item model: ``mu`` of EASE's Gram matrix ``X^T X + mu C``."""
    item_gram_l2_factor: float = 1.5
    """Item-item model: that EASE's ``lambda`` over the one tuned for plain EASE."""
    transition_steps: int = 3
    """Sequential rules: how many items back an event completes a rule (0 = none)."""
    transition_backward: float = 0.5
    """Sequential rules: weight of the reverse rule ``q -> p`` an event on ``q`` after ``p``
    adds, relative to ``p -> q`` (0 = forward rules only; chosen on YOOCHOOSE validation,
    ``docs/model-choice.md``)."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        positive_ints = {"dim": self.dim, "min_item_count": self.min_item_count}
        positive_ints |= {"iterations": self.iterations, "content_min_df": self.content_min_df}
        for name, value in positive_ints.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.window < 0:
            raise ValueError(f"window must be >= 0, got {self.window}")
        if self.item_neighbours < 0 or self.transition_steps < 0:
            raise ValueError("item_neighbours and transition_steps must be >= 0")
        if not (self.transition_backward >= 0 and math.isfinite(self.transition_backward)):
            raise ValueError(
                f"transition_backward must be finite and >= 0, got {self.transition_backward!r}"
            )
        if self.item_max_neighbours < 1:
            raise ValueError("item_max_neighbours must be >= 1")
        try:
            self.neighbourhood  # noqa: B018 (validates the item_window settings)
        except ValueError as e:
            raise ValueError(f"item_window settings: {e}") from e
        half_life_seconds(self.half_life_days)
        for name in ("regularisation", "als_alpha", "sppmi_shift", "content_alpha"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be finite and > 0, got {value!r}")
        if not 0.0 <= self.content_holdout < 1.0:
            raise ValueError(f"content_holdout must be in [0, 1), got {self.content_holdout}")
        bad = {k: w for k, w in self.event_weights.items() if not (w >= 0 and math.isfinite(w))}
        if bad:
            raise ValueError(f"event weights must be finite and >= 0: {bad}")

    @property
    def half_life_s(self) -> float:
        return half_life_seconds(self.half_life_days)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (stored in the artefact and hashed into its version)."""
        out = asdict(self)
        out["event_weights"] = dict(sorted(self.event_weights.items()))
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Inverse of ``to_dict``; unknown keys are an error."""
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {sorted(unknown)}")
        return cls(**dict(data))

    @property
    def neighbourhood(self) -> Neighbourhood:
        """The item-item model's co-occurrence window and popularity discount."""
        return Neighbourhood(
            self.item_window,
            self.item_window_weight,
            self.item_popularity_exponent,
            self.item_gram_window,
            self.item_gram_weight,
            self.item_gram_l2_factor,
        )


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Interactions:
    """Weighted user x item matrix over the kept items, and time-ordered histories."""

    user_ids: list[str]
    item_ids: list[str]
    """Kept items, sorted; column ``j`` of ``matrix``."""
    matrix: sparse.csr_matrix
    """Summed event weights (float32), users x items."""
    histories: list[npt.NDArray[np.int64]]
    """Per user, the item columns of their events in time order (repeats kept)."""
    counts: dict[str, int]
    """Events per item id, over all items (kept or not)."""


def interactions(
    events: Sequence[Event], weights: Mapping[str, float], min_item_count: int
) -> Interactions:
    """Build the interaction matrix from ``events`` (weight-0 events are ignored)."""
    counts: dict[str, int] = {}
    for event in events:
        counts[event.item_id] = counts.get(event.item_id, 0) + 1
    item_ids = sorted(i for i, n in counts.items() if n >= min_item_count)
    col = {item_id: j for j, item_id in enumerate(item_ids)}
    user_row: dict[str, int] = {}
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    for event in sorted(events, key=lambda e: (e.ts, e.user_id, e.item_id)):
        j = col.get(event.item_id)
        weight = event_weight(event, weights)
        if j is None or weight <= 0:
            continue
        rows.append(user_row.setdefault(event.user_id, len(user_row)))
        cols.append(j)
        vals.append(weight)
    shape = (len(user_row), len(item_ids))
    matrix = sparse.csr_matrix(
        (np.asarray(vals, dtype=np.float32), (np.asarray(rows), np.asarray(cols))), shape=shape
    )
    matrix.sum_duplicates()
    row_arr, col_arr = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    order = np.argsort(row_arr, kind="stable")  # keeps time order within a user
    bounds = np.searchsorted(row_arr[order], np.arange(len(user_row) + 1))
    histories = [col_arr[order[a:b]] for a, b in pairwise(bounds.tolist())]
    return Interactions(list(user_row), item_ids, matrix, histories, counts)


def _unit_rows(mat: npt.NDArray[np.floating[Any]]) -> FloatArray:
    out = np.asarray(mat, dtype=np.float64)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(out / norms, dtype=np.float32)


# --------------------------------------------------------------------------- CF methods


def als_vectors(
    data: Interactions, config: TrainConfig, progress: Progress | None = None
) -> FloatArray:
    """Item factors of implicit-feedback ALS (Hu, Koren, Volinsky 2008), normalised.

    Confidence ``1 + als_alpha * weight`` on observed pairs, 1 elsewhere.
    """
    from implicit.cpu.als import AlternatingLeastSquares  # type: ignore[import-untyped]

    def report(iteration: int, _elapsed: float, _loss: float | None) -> None:
        if progress is not None:
            progress("als", (iteration + 1) / config.iterations)

    # implicit asks for single-threaded BLAS (it parallelises over users itself).
    with threadpool_limits(limits=1, user_api="blas"):
        model = AlternatingLeastSquares(
            factors=config.dim,
            regularization=config.regularisation,
            alpha=config.als_alpha,
            iterations=config.iterations,
            random_state=config.seed,
            calculate_training_loss=False,
        )
        model.fit(data.matrix, show_progress=False, callback=report)
    return _unit_rows(np.asarray(model.item_factors))


def cooccurrence(data: Interactions, window: int) -> sparse.csr_matrix:
    """Symmetric item x item counts of items seen by one user (within ``window`` steps
    of each other in time order; 0 = anywhere in the history), zero diagonal."""
    n = len(data.item_ids)
    if window == 0:
        binary = data.matrix.copy()
        binary.data[:] = 1.0
        co = (binary.T @ binary).tocsr()
    else:
        co = window_cooccurrence(data.histories, n, window)
    co.setdiag(0.0)
    co.eliminate_zeros()
    return sparse.csr_matrix(co, dtype=np.float64)


def sppmi_vectors(
    data: Interactions, config: TrainConfig, progress: Progress | None = None
) -> FloatArray:
    """Item vectors from the shifted positive PMI of co-occurrence, by truncated SVD.

    ``SPPMI_ij = max(log(#ij * D / (#i * #j)) - log(k), 0)`` (Levy & Goldberg 2014),
    factorised as ``U sqrt(S)`` with scikit-learn's seeded ``randomized_svd``.
    """
    co = cooccurrence(data, config.window)
    if progress is not None:
        progress("sppmi", 0.3)
    totals = np.asarray(co.sum(axis=1)).ravel()
    total = float(totals.sum())
    coo = co.tocoo()
    pmi = np.log(coo.data * total / (totals[coo.row] * totals[coo.col])) - math.log(
        config.sppmi_shift
    )
    keep = pmi > 0
    n = len(data.item_ids)
    sppmi = sparse.csr_matrix((pmi[keep], (coo.row[keep], coo.col[keep])), shape=(n, n))
    dim = min(config.dim, max(1, n - 1))
    u, s, _vt = randomized_svd(sppmi, dim, n_iter=7, random_state=config.seed)
    if progress is not None:
        progress("sppmi", 1.0)
    vectors = np.zeros((n, config.dim))
    vectors[:, :dim] = u * np.sqrt(s)
    return _unit_rows(vectors)


def item_vectors(
    data: Interactions, config: TrainConfig, progress: Progress | None = None
) -> FloatArray:
    """Collaborative vectors of ``data.item_ids`` by ``config.method``."""
    if config.method == "als":
        return als_vectors(data, config, progress)
    return sppmi_vectors(data, config, progress)


# --------------------------------------------------------------------------- content


def content_holdout_metrics(
    items: Sequence[ItemUpsert],
    ids: Sequence[str],
    vectors: FloatArray,
    config: TrainConfig,
    k: int = 10,
) -> dict[str, float | int]:
    """Fit the content model without a seeded ``content_holdout`` share of the items and
    measure it on them: mean cosine between content and CF vector, and the share of the
    content vector's ``k`` nearest CF neighbours (among fitted items) that share a
    category with the item, beside the same share for its true CF vector and for
    random items; and the cosine of the mean fitted vector's direction (the no-content
    baseline)."""
    rng = np.random.default_rng(config.seed)
    n = len(ids)
    n_out = max(1, round(n * config.content_holdout))
    held = np.zeros(n, dtype=bool)
    held[rng.choice(n, n_out, replace=False)] = True
    fit_rows: list[int] = np.flatnonzero(~held).tolist()
    out_rows: list[int] = np.flatnonzero(held).tolist()
    model = ContentModel.fit(
        [items[i] for i in fit_rows],
        [ids[i] for i in fit_rows],
        vectors[fit_rows],
        config.content_alpha,
        min_df=config.content_min_df,
    )
    predicted = model.embed([items[i] for i in out_rows])
    truth = vectors[out_rows]
    mean = vectors[fit_rows].astype(np.float64).mean(axis=0)
    mean /= max(float(np.linalg.norm(mean)), 1e-12)
    cats = [set(items[i].categories) for i in range(n)]
    pool = vectors[fit_rows]

    def share(queries: FloatArray) -> float:
        top: list[list[int]] = np.argsort(-(queries @ pool.T), axis=1, kind="stable")[
            :, :k
        ].tolist()
        hits = [
            len(cats[out_rows[q]] & cats[fit_rows[j]]) > 0
            for q in range(len(out_rows))
            for j in top[q]
        ]
        return float(np.mean(hits))

    random_rows: list[list[int]] = rng.choice(len(fit_rows), (len(out_rows), k)).tolist()
    random_hits = [
        len(cats[out_rows[q]] & cats[fit_rows[j]]) > 0
        for q in range(len(out_rows))
        for j in random_rows[q]
    ]
    return {
        "content_holdout_items": len(out_rows),
        "content_holdout_cosine": float(np.mean(np.sum(predicted * truth, axis=1))),
        "mean_direction_cosine": float(np.mean(truth @ mean)),
        f"content_category_share@{k}": share(predicted),
        f"cf_category_share@{k}": share(truth),
        f"random_category_share@{k}": float(np.mean(random_hits)),
    }


# --------------------------------------------------------------------------- training


def popularity_entries(
    events: Sequence[Event], weights: Mapping[str, float], half_life_s: float
) -> dict[str, Entry]:
    """Time-decayed popularity of every item, as of its newest event."""
    out: dict[str, Entry] = {}
    for event in events:
        weight = event_weight(event, weights)
        if weight > 0:
            out[event.item_id] = bump(out.get(event.item_id), weight, event.ts, half_life_s)
    return dict(sorted(out.items()))


def data_digest(dataset: Dataset) -> str:
    """Hex digest of the events and items that training reads."""
    digest = hashlib.blake2b(digest_size=16)
    for event in dataset.events:
        line = f"{event.type.value}\x1f{event.user_id}\x1f{event.item_id}\x1f{event.ts!r}"
        digest.update(f"{line}\x1f{event.quantity}\n".encode())
    digest.update(b"\x1e")
    for item in dataset.items:
        digest.update(item.model_dump_json().encode() + b"\n")
    return digest.hexdigest()


def model_version(dataset: Dataset, config: TrainConfig) -> str:
    """``cf-<12 hex>``: a hash of the data, the config and the training format."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(FORMAT.encode() + b"\x1e" + data_digest(dataset).encode() + b"\x1e")
    digest.update(json.dumps(config.to_dict(), sort_keys=True).encode())
    return f"cf-{digest.hexdigest()[:12]}"


def _content_stage(
    dataset: Dataset,
    cf_ids: list[str],
    cf: FloatArray,
    config: TrainConfig,
    metrics: dict[str, Any],
    report: Progress,
) -> tuple[ContentModel | None, list[str], FloatArray]:
    """Fit the content model on the catalogue items with CF vectors and append content
    vectors for the other catalogue items. Returns the model (None without metadata),
    all ids and all vectors; records its metrics in ``metrics``."""
    catalogue = {item.item_id: item for item in dataset.items}
    known = [i for i in cf_ids if i in catalogue]
    if len(known) < 2:
        return None, cf_ids, cf
    report("content", 0.0)
    rows = [j for j, i in enumerate(cf_ids) if i in catalogue]
    items = [catalogue[i] for i in known]
    if config.content_holdout > 0 and len(known) >= 10:
        metrics |= content_holdout_metrics(items, known, cf[rows], config)
    content = ContentModel.fit(
        items, known, cf[rows], config.content_alpha, min_df=config.content_min_df
    )
    cold_ids = sorted(set(catalogue) - set(cf_ids))
    cold = content.embed([catalogue[i] for i in cold_ids])
    metrics["content_items"] = len(cold_ids)
    metrics["content_vocabulary"] = len(content.vocabulary)
    report("content", 1.0)
    return content, cf_ids + cold_ids, np.concatenate([cf, cold]).astype(np.float32)


def train(
    dataset: Dataset,
    config: TrainConfig | None = None,
    progress: Progress | None = None,
    *,
    created_at: float | None = None,
) -> ModelArtefact:
    """Pre-train on ``dataset``: CF item vectors, content model, popularity.

    ``progress(stage, fraction)`` is called as stages advance (fraction in [0, 1] of
    that stage). ``created_at`` defaults to now; pass it for byte-identical manifests.
    Raises ``ValueError`` if no item has ``min_item_count`` weighted events.
    """
    config = config or TrainConfig()
    report = progress or (lambda _stage, _fraction: None)
    report("prepare", 0.0)
    data = interactions(dataset.events, config.event_weights, config.min_item_count)
    if len(data.item_ids) < 2 or data.matrix.nnz == 0:
        raise ValueError(
            f"{dataset.name}: fewer than 2 items with {config.min_item_count}+ weighted events; "
            "nothing to learn item vectors from"
        )
    report("prepare", 1.0)
    raw = item_vectors(data, config, progress)
    signal = np.linalg.norm(raw, axis=1) > 0  # e.g. an SPPMI row with no positive PMI
    cf_ids = [i for i, ok in zip(data.item_ids, signal, strict=True) if ok]
    cf = np.ascontiguousarray(raw[signal])
    if len(cf_ids) < 2:
        raise ValueError(f"{dataset.name}: fewer than 2 items got a collaborative vector")
    metrics: dict[str, Any] = {
        "events": len(dataset.events),
        "users": len(data.user_ids),
        "cf_items": len(cf_ids),
        "interactions": int(data.matrix.nnz),
    }
    content, ids, vectors = _content_stage(dataset, cf_ids, cf, config, metrics, report)
    report("popularity", 0.0)
    popularity = popularity_entries(dataset.events, config.event_weights, config.half_life_s)
    metrics["trained_until"] = max((e.ts for e in dataset.events), default=0.0)
    report("popularity", 1.0)
    item_item = None
    blend = rank_blend(dataset.events)
    profiles = bool(blend)  # rank_blend is empty exactly for sessions (``long_lived``)
    if config.item_neighbours > 0:
        report("item-item", 0.0)
        neighbourhood = config.neighbourhood
        if not profiles:  # sessions: a window is most of a session, already in X^T X
            neighbourhood = replace(neighbourhood, gram_weight=0.0)
        item_item = fit_item_item(
            dataset.events,
            config.item_neighbours,
            seed=config.seed,
            max_neighbours=config.item_max_neighbours,
            neighbourhood=neighbourhood,
        )
        metrics["item_item_gram"] = neighbourhood.uses_gram(len(item_item))
        metrics["item_item_l2"] = item_item.l2
        metrics["item_item_weights"] = int(item_item.weights.nnz)
        report("item-item", 1.0)
    rules = None
    if config.transition_steps > 0:
        rules = fit_transitions(
            dataset.events, config.transition_steps, backward=config.transition_backward
        )
        metrics["transition_rules"] = len(rules)
    artefact = ModelArtefact(
        version=model_version(dataset, config),
        created_at=time.time() if created_at is None else float(created_at),
        dataset=dataset.name,
        config=config.to_dict(),
        item_ids=ids,
        item_vectors=np.ascontiguousarray(vectors, dtype=np.float32),
        item_from_content=np.arange(len(ids)) >= len(cf_ids),
        popularity=popularity,
        item_categories={i.item_id: list(i.categories) for i in dataset.items if i.categories},
        content=content,
        metrics=metrics,
        item_item=item_item,
        transitions=rules,
        rank_blend=blend,
    )
    report("done", 1.0)
    return artefact


# --------------------------------------------------------------------------- evaluation
# The harness behind docs/model-choice.md: ``python -m models.training compare ...``.


@dataclass(frozen=True)
class Query:
    """One evaluation case: a history to build the user vector from, items to exclude
    from the list, and the relevant held-out items."""

    history: Sequence[Event]
    exclude: frozenset[str]
    relevant: frozenset[str]


def user_vector(
    history: Sequence[Event],
    rows: Mapping[str, int],
    vectors: FloatArray,
    weights: Mapping[str, float],
    half_life_s: float,
) -> FloatArray | None:
    """Time-decayed weighted mean of the history's item vectors (normalised), or None
    if no history item has a vector. Decay is relative to the newest history event."""
    known = [(rows[e.item_id], e) for e in history if e.item_id in rows]
    if not known:
        return None
    newest = max(e.ts for _row, e in known)
    coef = np.array(
        [event_weight(e, weights) * 0.5 ** ((newest - e.ts) / half_life_s) for _r, e in known]
    )
    mean = coef @ vectors[[r for r, _e in known]].astype(np.float64)
    norm = float(np.linalg.norm(mean))
    return None if norm == 0 else (mean / norm).astype(np.float32)


def user_queries(train_events: Sequence[Event], test_events: Sequence[Event]) -> list[Query]:
    """Temporal-split cases: each user with train history and an unseen test item."""
    history: dict[str, list[Event]] = {}
    for event in train_events:
        history.setdefault(event.user_id, []).append(event)
    future: dict[str, set[str]] = {}
    for event in test_events:
        future.setdefault(event.user_id, set()).add(event.item_id)
    out = []
    for user in sorted(future):
        past = history.get(user, [])
        seen = frozenset(e.item_id for e in past)
        relevant = frozenset(future[user] - seen)
        if past and relevant:
            out.append(Query(past, seen, relevant))
    return out


def session_queries(test_events: Sequence[Event]) -> list[Query]:
    """Next-click cases: for every click after a session's first, the previous clicks
    are the history and that click is the single relevant item (nothing excluded)."""
    sessions: dict[str, list[Event]] = {}
    for event in test_events:
        sessions.setdefault(event.session_id or event.user_id, []).append(event)
    out = []
    for key in sorted(sessions):
        clicks = sorted(sessions[key], key=lambda e: e.ts)
        for i in range(1, len(clicks)):
            out.append(Query(clicks[:i], frozenset(), frozenset({clicks[i].item_id})))
    return out


def _top_k(scores: npt.NDArray[np.float64], k: int) -> npt.NDArray[np.intp]:
    k = min(k, len(scores))
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part], kind="stable")]


def popularity_order(popularity: Mapping[str, Entry], half_life_s: float) -> list[str]:
    """Item ids by popularity at the newest anchor, most popular first."""
    as_of = newest_anchor(popularity) or 0.0
    return sorted(popularity, key=lambda i: (-score_at(popularity[i], as_of, half_life_s), i))


def rank_lists(
    queries: Sequence[Query],
    ids: Sequence[str],
    vectors: FloatArray | None,
    pop_order: Sequence[str],
    weights: Mapping[str, float],
    half_life_s: float,
    k: int,
) -> tuple[list[list[str]], int]:
    """Top-``k`` lists: inner product with the user vector (decayed with ``half_life_s``),
    or ``pop_order`` (``vectors`` None, or a history without known items). Returns the
    lists and the number of popularity fallbacks."""
    rows = {item_id: row for row, item_id in enumerate(ids)}
    lists: list[list[str]] = []
    fallbacks = 0
    for query in queries:
        vec = None
        if vectors is not None:
            vec = user_vector(query.history, rows, vectors, weights, half_life_s)
        if vec is None:
            fallbacks += vectors is not None
            lists.append(
                [i for i in pop_order[: k + len(query.exclude)] if i not in query.exclude][:k]
            )
            continue
        assert vectors is not None
        scores = (vectors @ vec).astype(np.float64)
        dropped = [rows[i] for i in query.exclude if i in rows]
        scores[dropped] = -np.inf
        lists.append([ids[r] for r in _top_k(scores, k) if np.isfinite(scores[r])])
    return lists, fallbacks


def list_metrics(
    queries: Sequence[Query], lists: Sequence[Sequence[str]], k: int
) -> dict[str, float]:
    """HR@k, NDCG@k (binary gains) and MRR@k averaged over ``queries`` (``models.metrics``)."""
    hr = ndcg = mrr = 0.0
    for query, items in zip(queries, lists, strict=True):
        hr += hit_rate_at_k(items, query.relevant, k)
        ndcg += ndcg_at_k(items, query.relevant, k)
        mrr += reciprocal_rank_at_k(items, query.relevant, k)
    n = max(1, len(queries))
    return {
        f"HR@{k}": hr / n,
        f"NDCG@{k}": ndcg / n,
        f"MRR@{k}": mrr / n,
        "cases": float(len(queries)),
    }


def split_per_user(events: Sequence[Event], fraction: float) -> tuple[list[Event], list[Event]]:
    """Per-user temporal split: each user's last ``ceil(n * fraction)`` events (of users
    with 2+ events) form the second list."""
    by_user: dict[str, list[Event]] = {}
    for event in sorted(events, key=lambda e: (e.ts, e.user_id, e.item_id)):
        by_user.setdefault(event.user_id, []).append(event)
    train_part: list[Event] = []
    test_part: list[Event] = []
    for user_events in by_user.values():
        cut = len(user_events) - (
            math.ceil(len(user_events) * fraction) if len(user_events) > 1 else 0
        )
        train_part += user_events[:cut]
        test_part += user_events[cut:]
    key = lambda e: (e.ts, e.user_id, e.item_id)  # noqa: E731
    return sorted(train_part, key=key), sorted(test_part, key=key)


# --------------------------------------------------------------------------- command line

YOOCHOOSE_SAMPLE: Final = "yoochoose-clicks-100k"


def _movielens_cases(
    stage: str, protocol: str, path: str | None
) -> tuple[Dataset, list[Query], int]:
    from models.datasets import BUNDLED_MOVIELENS, load_movielens, split_by_time

    full = load_movielens(BUNDLED_MOVIELENS if path is None else Path(path))
    cut = split_by_time if protocol == "global" else split_per_user
    train_events, test_events = cut(full.events, 0.1)
    if stage == "valid":
        train_events, test_events = cut(train_events, 1 / 9)
    train_set = Dataset(full.name, full.items, train_events, 0, {})
    return train_set, user_queries(train_events, test_events), 10


def _yoochoose_cases(stage: str, path: str | None) -> tuple[Dataset, list[Query], int]:
    from models.datasets import load_yoochoose

    if path is None:
        raise SystemExit("--data DIR is needed for yoochoose (the session-rec sample folder)")
    names = ("train_tr", "train_valid") if stage == "valid" else ("train_full", "test")
    train_set, test_set = (
        load_yoochoose(Path(path) / f"{YOOCHOOSE_SAMPLE}_{name}.txt") for name in names
    )
    return train_set, session_queries(test_set.events), 20


def compare(argv: Sequence[str] | None = None) -> None:
    """Print a markdown table comparing popularity and CF methods (docs/model-choice.md)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m models.training compare")
    parser.add_argument("dataset", choices=["movielens", "yoochoose"])
    parser.add_argument("--data", help="dataset folder (default: the bundled MovieLens)")
    parser.add_argument("--stage", choices=["valid", "test"], default="test")
    parser.add_argument(
        "--protocol",
        choices=["global", "user"],
        default="global",
        help="MovieLens split: last 10%% of all events, or of each user's",
    )
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--config", default="{}", help="TrainConfig overrides as JSON")
    parser.add_argument(
        "--query-half-life-s",
        type=float,
        default=None,
        help="half-life of the user vector's decay (default: the config's)",
    )
    parser.add_argument(
        "--cf-only",
        action="store_true",
        help="recommend only items with a CF vector (leave out content-vector items)",
    )
    args = parser.parse_args(argv)
    if args.dataset == "movielens":
        train_set, queries, k = _movielens_cases(args.stage, args.protocol, args.data)
    else:
        train_set, queries, k = _yoochoose_cases(args.stage, args.data)
    overrides = json.loads(args.config)
    print(f"{train_set.summary()}; {len(queries):,} cases; stage {args.stage}")
    print(f"| method | HR@{k} | NDCG@{k} | MRR@{k} | train s | popularity fallbacks |")
    print("|---|---|---|---|---|---|")
    for method in ["popularity", *args.methods]:
        config = TrainConfig(**{**overrides, "method": "als" if method == "popularity" else method})
        started = time.perf_counter()
        if method == "popularity":
            ids, vectors = [], None
            popularity = popularity_entries(
                train_set.events, config.event_weights, config.half_life_s
            )
        else:
            art = train(train_set, config, created_at=0.0)
            ids, vectors, popularity = art.item_ids, art.item_vectors, art.popularity
            if args.cf_only:
                keep = ~art.item_from_content
                ids, vectors = [i for i, k in zip(ids, keep, strict=True) if k], vectors[keep]
        seconds = time.perf_counter() - started
        pop_order = popularity_order(popularity, config.half_life_s)
        half_life = args.query_half_life_s or config.half_life_s
        lists, fallbacks = rank_lists(
            queries, ids, vectors, pop_order, config.event_weights, half_life, k
        )
        m = list_metrics(queries, lists, k)
        print(
            f"| {method} | {m[f'HR@{k}']:.4f} | {m[f'NDCG@{k}']:.4f} | {m[f'MRR@{k}']:.4f} "
            f"| {seconds:.1f} | {fallbacks} |",
            flush=True,
        )


def train_command(argv: Sequence[str] | None = None) -> None:
    """Train on a dataset (any ``load_dataset`` path) and save the artefact."""
    import argparse

    from models.artefact import save
    from models.datasets import load_dataset

    parser = argparse.ArgumentParser(prog="python -m models.training train")
    parser.add_argument("dataset", help="MovieLens folder or YOOCHOOSE clicks file")
    parser.add_argument("out", help="artefact directory")
    parser.add_argument("--config", default="{}", help="TrainConfig overrides as JSON")
    args = parser.parse_args(argv)
    config = TrainConfig(**json.loads(args.config))
    dataset = load_dataset(Path(args.dataset))
    print(dataset.summary(), flush=True)
    started = time.perf_counter()
    artefact = train(dataset, config, lambda s, f: print(f"  {s}: {f:.0%}", flush=True))
    path = save(artefact, args.out)
    took = time.perf_counter() - started
    print(f"{artefact.version}: {len(artefact):,} items in {took:.1f}s -> {path}")
    print(json.dumps(artefact.metrics, indent=1))


if __name__ == "__main__":
    import sys

    commands = {"compare": compare, "train": train_command}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        raise SystemExit("usage: python -m models.training {compare,train} ...")
    commands[sys.argv[1]](sys.argv[2:])
