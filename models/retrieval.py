"""Candidate retrieval: top-k items by inner product, with online updates.

Item vectors are L2-normalised float32, so inner product is cosine similarity.
``ExactRetriever`` is the numpy reference (brute force, the truth); ``FaissRetriever``
serves large catalogues from a FAISS ``IndexIVFFlat`` that is updated in place, and
falls back to exact search for small catalogues. Both satisfy ``Retriever`` and share
one contract test suite (``tests/unit/test_retrieval_contract.py``).

Semantics shared by every implementation:

* ``upsert`` adds or replaces; within one call the last vector given for an id wins.
  The change is visible to the very next ``search``.
* ``remove`` forgets ids (unknown ids are ignored); removed ids are never returned.
* ``search`` returns up to ``k`` ``(id, score)`` pairs, best first, never an excluded
  id, and still ``min(k, available)`` results when excluded ids would have ranked.
* Persistence is ``to_arrays``/``from_arrays`` (``save_npz``/``load_npz`` for files):
  ids as a unicode array and float32 vectors, no pickle. Indexes are rebuilt on load.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol, Self

import faiss
import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IdArray = npt.NDArray[np.str_]
Hit = tuple[str, float]

_ALL_THREADS = max(1, faiss.omp_get_max_threads())
_BATCH_SCORE_FLOATS = 1 << 24  # cap on a (queries x items) score block: 64 MiB


class Retriever(Protocol):
    """Top-k inner-product search over a mutable set of id-keyed vectors."""

    dim: int

    def __len__(self) -> int: ...

    def upsert(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Add or replace vectors (one row per id; the last row wins for a repeated id)."""
        ...

    def remove(self, ids: Sequence[str]) -> None:
        """Forget ids; unknown ids are ignored."""
        ...

    def search(self, query: np.ndarray, k: int, exclude: Collection[str] = ()) -> list[Hit]:
        """Up to ``k`` best ``(id, score)`` pairs for one query, never an excluded id."""
        ...

    def search_batch(
        self,
        queries: np.ndarray,
        k: int,
        exclude: Sequence[Collection[str]] | None = None,
    ) -> list[list[Hit]]:
        """``search`` for each row of ``queries`` (``exclude[i]`` applies to row ``i``)."""
        ...

    def vector(self, id: str) -> FloatArray | None:
        """A copy of the stored vector, or None if the id is unknown."""
        ...

    def ids(self) -> list[str]:
        """All stored ids (in no particular order)."""
        ...


# --------------------------------------------------------------------------- validation


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0:
        raise ValueError(f"k must be a non-negative integer, got {k!r}")


def _as_rows(vectors: npt.ArrayLike, n: int, dim: int) -> FloatArray:
    """``vectors`` as a contiguous float32 (n, dim) matrix, or a clear ValueError."""
    arr = np.asarray(vectors, dtype=np.float32)
    if n == 0 and arr.size == 0:
        return np.empty((0, dim), dtype=np.float32)
    if arr.ndim == 1 and n == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        raise ValueError(f"vectors must be a 2-D (n, {dim}) array, got shape {arr.shape}")
    if arr.shape[1] != dim:
        raise ValueError(
            f"dimension mismatch: vectors have dimension {arr.shape[1]}, "
            f"this retriever holds dimension {dim}"
        )
    if arr.shape[0] != n:
        raise ValueError(f"got {n} ids but {arr.shape[0]} vectors")
    if not np.isfinite(arr).all():
        raise ValueError("vectors contain NaN or infinite values")
    return np.ascontiguousarray(arr)


def _as_queries(queries: npt.ArrayLike, dim: int, *, single: bool) -> FloatArray:
    """Queries as a contiguous float32 (nq, dim) matrix, or a clear ValueError."""
    arr = np.asarray(queries, dtype=np.float32)
    if single and arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]
    if single and arr.ndim != 1:
        raise ValueError(f"query must be a 1-D vector of dimension {dim}, got shape {arr.shape}")
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        raise ValueError(f"queries must be a 2-D (nq, {dim}) array, got shape {arr.shape}")
    if arr.shape[1] != dim:
        raise ValueError(
            f"dimension mismatch: query has dimension {arr.shape[1]}, "
            f"this retriever holds dimension {dim}"
        )
    if not np.isfinite(arr).all():
        raise ValueError("query contains NaN or infinite values")
    return np.ascontiguousarray(arr)


def _last_wins(ids: Sequence[str], rows: FloatArray) -> tuple[list[str], FloatArray]:
    """Drop all but the last occurrence of each id (keeping first-seen order)."""
    last: dict[str, int] = {}
    for i, id_ in enumerate(ids):
        if not isinstance(id_, str):
            raise ValueError(f"ids must be strings, got {type(id_).__name__}: {id_!r}")
        last[id_] = i
    if len(last) == len(ids):
        return list(ids), rows
    return list(last), rows[np.fromiter(last.values(), dtype=np.int64, count=len(last))]


def _exclusion_set(exclude: Collection[str]) -> Collection[str]:
    return exclude if isinstance(exclude, set | frozenset | dict) else set(exclude)


def _top_rows(scores: FloatArray, k: int) -> npt.NDArray[np.intp]:
    """Row indices of the ``k`` largest scores, best first (ties by row, stable)."""
    if k <= 0:
        return np.empty(0, dtype=np.intp)
    if k < len(scores):
        part = np.argpartition(-scores, k - 1)[:k]
        return part[np.argsort(-scores[part], kind="stable")]
    return np.argsort(-scores, kind="stable")


def _str_bytes(ids: Sequence[str]) -> int:
    return sum(sys.getsizeof(s) for s in ids)


# --------------------------------------------------------------------------- exact


class ExactRetriever:
    """Brute-force numpy reference: a contiguous float32 matrix plus an id<->row map.

    Deletion swaps the last row into the hole, so rows stay contiguous; search is one
    matrix-vector product and an ``argpartition``. O(n * dim) per query.
    """

    def __init__(self, dim: int) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self.dim = dim
        self._mat: FloatArray = np.empty((0, dim), dtype=np.float32)
        self._ids: list[str] = []
        self._rows: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def matrix(self) -> FloatArray:
        """Read-only view of the live rows (row ``i`` belongs to ``ids()[i]``)."""
        view = self._mat[: len(self._ids)]
        view.flags.writeable = False
        return view

    def _reserve(self, n: int) -> None:
        if n <= len(self._mat):
            return
        grown = np.empty((max(n, 16, len(self._mat) * 3 // 2), self.dim), dtype=np.float32)
        grown[: len(self._ids)] = self._mat[: len(self._ids)]
        self._mat = grown

    def upsert(self, ids: Sequence[str], vectors: npt.ArrayLike) -> None:
        """Add or replace vectors; the last row wins for an id repeated in one call."""
        rows_in = _as_rows(vectors, len(ids), self.dim)
        uniq, rows_in = _last_wins(ids, rows_in)
        n = len(self._ids)
        new = [id_ for id_ in uniq if id_ not in self._rows]
        self._reserve(n + len(new))
        for offset, id_ in enumerate(new):
            self._rows[id_] = n + offset
        self._ids.extend(new)
        target = np.fromiter((self._rows[id_] for id_ in uniq), dtype=np.int64, count=len(uniq))
        self._mat[target] = rows_in

    def remove(self, ids: Sequence[str]) -> None:
        """Forget ids (unknown ids are ignored); the last row moves into each hole."""
        for id_ in ids:
            row = self._rows.pop(id_, None)
            if row is None:
                continue
            last = len(self._ids) - 1
            moved = self._ids.pop()
            if row != last:
                self._mat[row] = self._mat[last]
                self._ids[row] = moved
                self._rows[moved] = row
        if len(self._mat) > 64 and len(self._ids) < len(self._mat) // 4:
            self._mat = self._mat[: max(16, len(self._ids) * 2)].copy()

    def _excluded_rows(self, exclude: Collection[str]) -> list[int]:
        rows = self._rows
        return [rows[e] for e in _exclusion_set(exclude) if e in rows]

    def search(self, query: npt.ArrayLike, k: int, exclude: Collection[str] = ()) -> list[Hit]:
        """Exact top-``k`` by inner product, best first, never an excluded id."""
        _check_k(k)
        q = _as_queries(query, self.dim, single=True)[0]
        if k == 0 or not self._ids:
            return []
        scores = self.matrix @ q
        dropped = self._excluded_rows(exclude)
        if dropped:
            scores[dropped] = -np.inf
        top = _top_rows(scores, min(k, len(scores) - len(dropped)))
        ids = self._ids
        return [(ids[r], float(scores[r])) for r in top]

    def search_batch(
        self,
        queries: npt.ArrayLike,
        k: int,
        exclude: Sequence[Collection[str]] | None = None,
    ) -> list[list[Hit]]:
        """Exact ``search`` for each query row, as chunked matrix products."""
        _check_k(k)
        qs = _as_queries(queries, self.dim, single=False)
        if exclude is not None and len(exclude) != len(qs):
            raise ValueError(f"exclude has {len(exclude)} entries for {len(qs)} queries")
        n = len(self._ids)
        if k == 0 or n == 0:
            return [[] for _ in range(len(qs))]
        out: list[list[Hit]] = []
        step = max(1, _BATCH_SCORE_FLOATS // n)
        mat, ids = self.matrix, self._ids
        for start in range(0, len(qs), step):
            block = qs[start : start + step] @ mat.T
            kept = np.full(len(block), n)
            for j in range(len(block)):
                dropped = self._excluded_rows(exclude[start + j]) if exclude else []
                if dropped:
                    block[j, dropped] = -np.inf
                    kept[j] = n - len(dropped)
            width = min(k, n)
            if width < n:  # the best ``width`` per row, then sorted (ties by row, stable)
                part = np.argpartition(-block, width - 1, axis=1)[:, :width]
                part.sort(axis=1)
            else:
                part = np.broadcast_to(np.arange(n), (len(block), n))
            scores = np.take_along_axis(block, part, axis=1)
            order = np.argsort(-scores, axis=1, kind="stable")
            tops = np.take_along_axis(part, order, axis=1)
            best = np.take_along_axis(scores, order, axis=1)
            for j in range(len(block)):
                m = min(k, int(kept[j]))
                out.append(
                    list(
                        zip(
                            [ids[r] for r in tops[j, :m].tolist()],
                            best[j, :m].tolist(),
                            strict=True,
                        )
                    )
                )
        return out

    def vector(self, id: str) -> FloatArray | None:
        """A copy of the stored vector, or None if the id is unknown."""
        row = self._rows.get(id)
        return None if row is None else self._mat[row].copy()

    def ids(self) -> list[str]:
        """All stored ids, in row order."""
        return list(self._ids)

    def to_arrays(self) -> tuple[IdArray, FloatArray]:
        """``(ids, vectors)``: a unicode array and a float32 (n, dim) copy."""
        return np.array(self._ids, dtype=np.str_), self.matrix.copy()

    @classmethod
    def from_arrays(cls, ids: Sequence[str] | npt.ArrayLike, vectors: npt.ArrayLike) -> Self:
        """A retriever holding ``vectors`` (2-D, its width is the dimension) under ``ids``."""
        id_list, mat = _arrays_in(ids, vectors)
        out = cls(mat.shape[1])
        out.upsert(id_list, mat)
        return out

    def memory_bytes(self) -> int:
        """Estimated resident bytes: the matrix plus the id list, map and strings."""
        return int(
            self._mat.nbytes
            + sys.getsizeof(self._ids)
            + sys.getsizeof(self._rows)
            + _str_bytes(self._ids)
        )


def _arrays_in(
    ids: Sequence[str] | npt.ArrayLike, vectors: npt.ArrayLike
) -> tuple[list[str], FloatArray]:
    mat = np.asarray(vectors, dtype=np.float32)
    if mat.ndim != 2 or mat.shape[1] < 1:
        raise ValueError(f"vectors must be a 2-D (n, dim) array, got shape {mat.shape}")
    id_arr = np.asarray(ids)
    if id_arr.ndim != 1 or (id_arr.size and id_arr.dtype.kind != "U"):
        raise ValueError(f"ids must be a 1-D array of strings, got dtype {id_arr.dtype}")
    id_list: list[str] = id_arr.tolist()
    return id_list, mat


# --------------------------------------------------------------------------- faiss


@dataclass(frozen=True, slots=True)
class FaissConfig:
    """How ``FaissRetriever`` indexes and searches.

    ``exact_below``: below this many items, search is exact (numpy), no index is built.
    ``nlist``: IVF lists; 0 picks ``4 * sqrt(n)`` (capped at ``n / 39``) at each (re)train.
    ``nprobe``: lists scanned per query (the recall/latency knob).
    ``train_per_list``/``train_iterations``: k-means sample size per list and iterations.
    ``retrain_growth``: retrain when the catalogue has grown this many times since the
    last training (0 disables; ``FaissRetriever.rebuild`` retrains on demand).
    ``threads``: OpenMP threads for batches, training and bulk adds (0 = all cores);
    single queries and small upserts always run on one thread, which is faster.
    ``blas_threshold``: ``faiss.cvar.distance_compute_blas_threshold`` applied around
    batched work (None leaves the process-wide value alone).
    ``max_overfetch``: up to this many excluded ids are handled by fetching ``k + m``
    and filtering; more use a FAISS ID selector inside the scan.
    ``seed``: k-means seed and training-sample seed; equal seeds give equal results.
    """

    exact_below: int = 20_000
    nlist: int = 0
    nprobe: int = 64
    train_per_list: int = 32
    train_iterations: int = 10
    retrain_growth: float = 4.0
    threads: int = 0
    blas_threshold: int | None = None
    max_overfetch: int = 1_000
    seed: int = 0

    def __post_init__(self) -> None:
        problems = [
            name
            for name, ok in (
                ("exact_below >= 0", self.exact_below >= 0),
                ("nlist >= 0", self.nlist >= 0),
                ("nprobe >= 1", self.nprobe >= 1),
                ("train_per_list >= 1", self.train_per_list >= 1),
                ("train_iterations >= 1", self.train_iterations >= 1),
                ("retrain_growth == 0 or > 1", self.retrain_growth == 0 or self.retrain_growth > 1),
                ("threads >= 0", self.threads >= 0),
                ("blas_threshold >= 0", self.blas_threshold is None or self.blas_threshold >= 0),
                ("max_overfetch >= 0", self.max_overfetch >= 0),
            )
            if not ok
        ]
        if problems:
            raise ValueError(f"invalid FaissConfig, need: {', '.join(problems)}")

    def lists_for(self, n: int) -> int:
        """IVF list count used when training on ``n`` items."""
        nlist = self.nlist or round(4 * math.sqrt(n))
        return max(1, min(nlist, n // 39 or 1))


class _FaissEnv:
    """Sets FAISS's process-wide OpenMP threads and BLAS threshold for one operation."""

    def __init__(self, threads: int, blas_threshold: int | None) -> None:
        self._threads = threads
        self._blas = blas_threshold
        self._saved: tuple[int, int] = (0, 0)

    def __enter__(self) -> None:
        self._saved = (faiss.omp_get_max_threads(), faiss.cvar.distance_compute_blas_threshold)
        faiss.omp_set_num_threads(self._threads)
        if self._blas is not None:
            faiss.cvar.distance_compute_blas_threshold = self._blas

    def __exit__(self, *exc: object) -> None:
        faiss.omp_set_num_threads(self._saved[0])
        faiss.cvar.distance_compute_blas_threshold = self._saved[1]


class FaissRetriever:
    """FAISS ``IndexIVFFlat`` (inner product) updated in place; exact below a size.

    Vectors live twice: in an ``ExactRetriever`` (the store: exact small-catalogue
    search, ``vector``, persistence, retraining, fallback) and in the IVF index, whose
    int64 labels map to ids. The index keeps a hash-table direct map, so an upsert is
    ``remove_ids`` + ``add_with_ids`` of just the touched labels and is visible to the
    next query. The index is trained on a seeded sample once the catalogue reaches
    ``exact_below`` items, and retrained synchronously when it has grown
    ``retrain_growth`` times since (see ``FaissConfig``). A query that the probed lists
    cannot fill (too many exclusions) is answered exactly.
    """

    def __init__(self, dim: int, config: FaissConfig | None = None) -> None:
        self.config = config or FaissConfig()
        self._store = ExactRetriever(dim)
        self.dim = dim
        self._label_of: dict[str, int] = {}
        self._id_of: list[str | None] = []  # label -> id (None: free label)
        self._free: list[int] = []
        self._ivf: faiss.IndexIVFFlat | None = None
        self._trained_on = 0
        self._nprobe = self.config.nprobe

    def __len__(self) -> int:
        return len(self._store)

    @property
    def approximate(self) -> bool:
        """True when queries go to the IVF index rather than exact search."""
        return self._ivf is not None and len(self._store) >= self.config.exact_below

    @property
    def nlist(self) -> int:
        """IVF lists of the current index (0 when no index is built)."""
        return 0 if self._ivf is None else int(self._ivf.nlist)

    @property
    def nprobe(self) -> int:
        """IVF lists scanned per query; settable at run time (no rebuild needed)."""
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"nprobe must be a positive integer, got {value!r}")
        self._nprobe = value
        if self._ivf is not None:
            self._ivf.nprobe = min(value, self.nlist)

    def _threads(self) -> int:
        return self.config.threads or _ALL_THREADS

    def _labels_for(self, ids: list[str]) -> tuple[npt.NDArray[np.int64], list[int]]:
        """Labels for ``ids`` (new ids get free or fresh labels) and the pre-existing ones."""
        labels = np.empty(len(ids), dtype=np.int64)
        existing: list[int] = []
        for i, id_ in enumerate(ids):
            label = self._label_of.get(id_)
            if label is None:
                if self._free:
                    label = self._free.pop()
                    self._id_of[label] = id_
                else:
                    label = len(self._id_of)
                    self._id_of.append(id_)
                self._label_of[id_] = label
            else:
                existing.append(label)
            labels[i] = label
        return labels, existing

    def _ivf_remove(self, labels: list[int]) -> None:
        assert self._ivf is not None
        arr = np.asarray(labels, dtype=np.int64)
        self._ivf.remove_ids(faiss.IDSelectorArray(len(arr), faiss.swig_ptr(arr)))

    def upsert(self, ids: Sequence[str], vectors: npt.ArrayLike) -> None:
        """Add or replace vectors; visible to the next query. May (re)train the index."""
        rows = _as_rows(vectors, len(ids), self.dim)
        uniq, rows = _last_wins(ids, rows)
        if not uniq:
            return
        self._store.upsert(uniq, rows)
        labels, existing = self._labels_for(uniq)
        n = len(self._store)
        growth = self.config.retrain_growth
        if n >= max(1, self.config.exact_below) and (
            self._ivf is None or (growth and n >= growth * self._trained_on)
        ):
            self.rebuild()
            return
        if self._ivf is not None:
            # Small upserts: one thread, no BLAS (sgemm for one row is 3-4x slower).
            small = len(uniq) < 256
            env = (
                _FaissEnv(1, None)
                if small
                else _FaissEnv(self._threads(), self.config.blas_threshold)
            )
            with env:
                if existing:
                    self._ivf_remove(existing)
                self._ivf.add_with_ids(rows, labels)

    def remove(self, ids: Sequence[str]) -> None:
        """Forget ids (unknown ids are ignored); never returned again."""
        labels = [lab for lab in (self._label_of.pop(i, None) for i in ids) if lab is not None]
        if not labels:
            return
        self._store.remove(ids)
        for label in labels:
            self._id_of[label] = None
        if self._ivf is not None:
            with _FaissEnv(1, None):
                self._ivf_remove(labels)
        self._free.extend(labels)

    def rebuild(self) -> None:
        """Retrain the IVF index on a seeded sample of the current vectors and refill it.

        Synchronous; at 1M items it takes tens of seconds (see docs/retrieval.md).
        """
        n = len(self._store)
        if n == 0:
            self._ivf, self._trained_on = None, 0
            return
        cfg = self.config
        nlist = cfg.lists_for(n)
        mat = self._store.matrix
        sample_size = min(n, nlist * cfg.train_per_list)
        rng = np.random.default_rng(cfg.seed)
        sample = mat if sample_size == n else mat[np.sort(rng.choice(n, sample_size, False))]
        quantizer = faiss.IndexFlatIP(self.dim)
        ivf = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.seed = cfg.seed
        ivf.cp.niter = cfg.train_iterations
        ivf.cp.max_points_per_centroid = cfg.train_per_list
        ivf.cp.min_points_per_centroid = 1
        ivf.cp.verbose = False
        ivf.nprobe = min(self._nprobe, nlist)
        with _FaissEnv(self._threads(), cfg.blas_threshold):
            ivf.train(np.ascontiguousarray(sample))
            ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]
            labels = np.fromiter(
                (self._label_of[id_] for id_ in self._store.ids()), dtype=np.int64, count=n
            )
            ivf.add_with_ids(np.ascontiguousarray(mat), labels)
        self._ivf, self._trained_on = ivf, n

    def _hits(
        self, dists: FloatArray, labels: npt.NDArray[np.int64], excluded: Collection[str], k: int
    ) -> list[Hit]:
        id_of = self._id_of
        out: list[Hit] = []
        for dist, label in zip(dists.tolist(), labels.tolist(), strict=True):
            if label < 0:
                break
            id_ = id_of[label]
            if id_ is not None and id_ not in excluded:
                out.append((id_, dist))
                if len(out) == k:
                    break
        return out

    def _excluded_count(self, excluded: Collection[str]) -> int:
        label_of = self._label_of
        return sum(1 for e in excluded if e in label_of)

    def _search_one(self, q: FloatArray, k: int, excluded: Collection[str], m: int) -> list[Hit]:
        """IVF search of one (1, dim) query with ``m`` excluded ids present."""
        assert self._ivf is not None
        need = min(k, len(self._store) - m)
        if need <= 0:
            return []
        if m <= self.config.max_overfetch:
            dists, labels = self._ivf.search(q, k + m)
        else:
            arr = np.fromiter(
                (self._label_of[e] for e in excluded if e in self._label_of),
                dtype=np.int64,
                count=m,
            )
            batch = faiss.IDSelectorBatch(len(arr), faiss.swig_ptr(arr))
            params = faiss.SearchParametersIVF()
            params.sel = faiss.IDSelectorNot(batch)
            params.nprobe = self._ivf.nprobe
            dists, labels = self._ivf.search(q, k, params=params)
        hits = self._hits(dists[0], labels[0], excluded, k)
        if len(hits) < need:  # the probed lists ran dry: answer exactly
            return self._store.search(q[0], k, excluded)
        return hits

    def search(self, query: npt.ArrayLike, k: int, exclude: Collection[str] = ()) -> list[Hit]:
        """Top-``k`` by inner product (approximate on the IVF path), never an excluded id."""
        _check_k(k)
        q = _as_queries(query, self.dim, single=True)
        if k == 0 or not self._store:
            return []
        if not self.approximate:
            return self._store.search(q[0], k, exclude)
        excluded = _exclusion_set(exclude)
        with _FaissEnv(1, None):
            return self._search_one(q, k, excluded, self._excluded_count(excluded))

    def search_batch(
        self,
        queries: npt.ArrayLike,
        k: int,
        exclude: Sequence[Collection[str]] | None = None,
    ) -> list[list[Hit]]:
        """``search`` for each query row, as one multi-threaded FAISS call."""
        _check_k(k)
        qs = _as_queries(queries, self.dim, single=False)
        if exclude is not None and len(exclude) != len(qs):
            raise ValueError(f"exclude has {len(exclude)} entries for {len(qs)} queries")
        if not self.approximate or k == 0 or not self._store:
            return self._store.search_batch(qs, k, exclude)
        assert self._ivf is not None
        sets = [_exclusion_set(e) for e in exclude] if exclude else [frozenset()] * len(qs)
        counts = [self._excluded_count(s) for s in sets]
        fetch = k + max((m for m in counts if m <= self.config.max_overfetch), default=0)
        with _FaissEnv(self._threads(), self.config.blas_threshold):
            dists, labels = self._ivf.search(qs, fetch)
        n = len(self._store)
        out: list[list[Hit]] = []
        with _FaissEnv(1, None):
            for i, (excluded, m) in enumerate(zip(sets, counts, strict=True)):
                hits = (
                    []
                    if m > self.config.max_overfetch
                    else self._hits(dists[i], labels[i], excluded, k)
                )
                if len(hits) < min(k, n - m):
                    hits = self._search_one(qs[i : i + 1], k, excluded, m)
                out.append(hits)
        return out

    def vector(self, id: str) -> FloatArray | None:
        """A copy of the stored vector, or None if the id is unknown."""
        return self._store.vector(id)

    def ids(self) -> list[str]:
        """All stored ids (in no particular order)."""
        return self._store.ids()

    def to_arrays(self) -> tuple[IdArray, FloatArray]:
        """``(ids, vectors)``: a unicode array and a float32 (n, dim) copy."""
        return self._store.to_arrays()

    @classmethod
    def from_arrays(
        cls,
        ids: Sequence[str] | npt.ArrayLike,
        vectors: npt.ArrayLike,
        config: FaissConfig | None = None,
    ) -> Self:
        """A retriever holding ``vectors`` under ``ids``, its index built once."""
        id_list, mat = _arrays_in(ids, vectors)
        out = cls(mat.shape[1], config)
        out.upsert(id_list, mat)
        return out

    def memory_bytes(self) -> int:
        """Estimated resident bytes: the store, the IVF lists, direct map and label maps."""
        n = len(self._store)
        index = 0
        if self._ivf is not None:
            # codes + int64 ids per vector, ~56 B per hash-table entry, the centroids
            index = n * (self.dim * 4 + 8 + 56) + self.nlist * self.dim * 4
        labels = sys.getsizeof(self._label_of) + sys.getsizeof(self._id_of) + 8 * len(self._free)
        return int(self._store.memory_bytes() + index + labels)


# --------------------------------------------------------------------------- persistence


def save_npz(path: str | os.PathLike[str], retriever: ExactRetriever | FaissRetriever) -> None:
    """Write ``ids`` (unicode) and ``vectors`` (float32) to an ``.npz`` file."""
    ids, vectors = retriever.to_arrays()
    np.savez(path, ids=ids, vectors=vectors)


def load_npz(path: str | os.PathLike[str]) -> tuple[IdArray, FloatArray]:
    """Read ``(ids, vectors)`` written by ``save_npz`` (no pickle), for ``from_arrays``."""
    with np.load(path, allow_pickle=False) as data:
        ids, vectors = data["ids"], data["vectors"]
    if ids.ndim != 1 or vectors.ndim != 2 or len(ids) != len(vectors):
        raise ValueError(
            f"{os.fspath(path)}: expected ids (n,) and vectors (n, dim), "
            f"got {ids.shape} and {vectors.shape}"
        )
    return ids, vectors.astype(np.float32, copy=False)
