"""Retrieval benchmark: FAISS vs exact search on clustered synthetic item vectors.

Pure timing code (no I/O); ``eddy bench`` serialises the returned dict as JSON. The
data set is ``clustered_vectors(n_items, dim, n_clusters=max(10, isqrt(n_items)),
spread=1.0)`` (cosine between two items of one cluster about 0.5) and the queries are
``queries_near(..., noise=0.5)``; see docs/retrieval.md for measured numbers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from models.retrieval import ExactRetriever, FaissConfig, FaissRetriever, Hit
from models.synthetic import clustered_vectors, queries_near

SPREAD = 1.0
QUERY_NOISE = 0.5
EXACT_TIMED_QUERIES = 200
WARMUP_QUERIES = 50
UPDATE_NOISE = 0.2


def _percentiles_ms(ns: list[int]) -> dict[str, float]:
    ms = np.asarray(ns, dtype=np.float64) / 1e6
    return {
        "p50": round(float(np.percentile(ms, 50)), 4),
        "p99": round(float(np.percentile(ms, 99)), 4),
        "mean": round(float(ms.mean()), 4),
    }


def _recall(got: list[list[Hit]], truth: list[list[Hit]]) -> float:
    found = sum(len({i for i, _ in g} & {i for i, _ in t}) for g, t in zip(got, truth, strict=True))
    wanted = sum(len(t) for t in truth)
    return round(found / wanted, 4) if wanted else 1.0


def _drifted(vectors: npt.NDArray[np.float32], seed: int) -> npt.NDArray[np.float32]:
    """The same items after online learning: a small random step, renormalised."""
    rng = np.random.default_rng(seed)
    step = rng.standard_normal(vectors.shape, dtype=np.float32)
    moved = vectors + step * (UPDATE_NOISE / math.sqrt(vectors.shape[1]))
    out: npt.NDArray[np.float32] = moved / np.linalg.norm(moved, axis=1, keepdims=True)
    return out.astype(np.float32, copy=False)


def _dataset(
    n_items: int, dim: int, n_queries: int, seed: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], list[str], dict[str, Any]]:
    n_clusters = max(10, math.isqrt(n_items))
    vectors = clustered_vectors(n_items, dim, n_clusters, seed, SPREAD)
    queries = queries_near(vectors, n_queries, seed + 1, QUERY_NOISE)
    ids = [f"item-{i}" for i in range(n_items)]
    info = {"n_clusters": n_clusters, "spread": SPREAD, "query_noise": QUERY_NOISE}
    return vectors, queries, ids, info


def _timed_searches(
    search: Callable[[npt.NDArray[np.float32]], list[Hit]], queries: npt.NDArray[np.float32]
) -> tuple[list[int], list[list[Hit]]]:
    for q in queries[:WARMUP_QUERIES]:
        search(q)
    elapsed: list[int] = []
    results: list[list[Hit]] = []
    for q in queries:
        t0 = time.perf_counter_ns()
        hits = search(q)
        elapsed.append(time.perf_counter_ns() - t0)
        results.append(hits)
    return elapsed, results


def benchmark(
    n_items: int,
    dim: int = 64,
    n_queries: int = 1000,
    k: int = 100,
    seed: int = 0,
    config: FaissConfig | None = None,
    *,
    nprobe_sweep: Sequence[int] = (),
) -> dict[str, Any]:
    """Measure FAISS retrieval against exact numpy search; JSON-ready results.

    Keys: ``faiss_single_ms`` / ``exact_single_ms`` (p50, p99, mean per query, one
    query at a time; exact on at most 200 queries), ``recall_at_k`` (mean over queries
    vs exact), ``batch_queries_per_s``, ``build_s`` (train + add), ``updates_per_s``
    (changed vectors, one upsert call per item, and in calls of 1,000),
    ``recall_after_updates``, ``memory_mb`` (estimates) and the settings used.
    ``nprobe_sweep`` adds recall and latency at other ``nprobe`` values on the same index.
    """
    if n_items < 1 or n_queries < 1 or k < 1:
        raise ValueError("n_items, n_queries and k must be positive")
    cfg = config or FaissConfig()
    vectors, queries, ids, data = _dataset(n_items, dim, n_queries, seed)

    started = time.perf_counter()
    fast = FaissRetriever.from_arrays(ids, vectors, cfg)
    build_s = time.perf_counter() - started
    exact = ExactRetriever.from_arrays(ids, vectors)

    started = time.perf_counter()
    truth = exact.search_batch(queries, k)
    exact_batch_s = time.perf_counter() - started

    fast_ns, got = _timed_searches(lambda q: fast.search(q, k), queries)
    sweep = []
    for nprobe in nprobe_sweep:
        fast.nprobe = nprobe
        ns, hits = _timed_searches(lambda q: fast.search(q, k), queries)
        sweep.append({"nprobe": nprobe, "recall_at_k": _recall(hits, truth), **_percentiles_ms(ns)})
    fast.nprobe = cfg.nprobe

    exact_ns: list[int] = []
    for q in queries[:EXACT_TIMED_QUERIES]:
        t0 = time.perf_counter_ns()
        exact.search(q, k)
        exact_ns.append(time.perf_counter_ns() - t0)

    started = time.perf_counter()
    fast.search_batch(queries, k)
    batch_s = time.perf_counter() - started

    # Online updates: existing items get a slightly moved vector (catalogue size fixed).
    rng = np.random.default_rng(seed + 2)
    n_updates = min(n_items, 5_000)
    chosen = rng.choice(n_items, size=2 * n_updates, replace=n_items < 2 * n_updates)
    single, batched = chosen[:n_updates], chosen[n_updates:]
    new_single = _drifted(vectors[single], seed + 3)
    new_batched = _drifted(vectors[batched], seed + 4)
    started = time.perf_counter()
    for row, vec in zip(single.tolist(), new_single, strict=True):
        fast.upsert([ids[row]], vec[None, :])
    single_s = time.perf_counter() - started
    batch_ids = [ids[row] for row in batched.tolist()]
    started = time.perf_counter()
    for start in range(0, n_updates, 1_000):
        fast.upsert(batch_ids[start : start + 1_000], new_batched[start : start + 1_000])
    batched_s = time.perf_counter() - started
    exact.upsert([ids[row] for row in single.tolist()], new_single)
    exact.upsert(batch_ids, new_batched)
    probe = queries[:EXACT_TIMED_QUERIES]
    recall_after = _recall([fast.search(q, k) for q in probe], exact.search_batch(probe, k))

    return {
        "n_items": n_items,
        "dim": dim,
        "k": k,
        "n_queries": n_queries,
        "seed": seed,
        "data": data,
        "config": asdict(cfg),
        "index": "ivf_flat" if fast.approximate else "exact",
        "nlist": fast.nlist,
        "faiss_single_ms": _percentiles_ms(fast_ns),
        "exact_single_ms": _percentiles_ms(exact_ns),
        "recall_at_k": _recall(got, truth),
        "nprobe_sweep": sweep,
        "batch_queries_per_s": round(n_queries / batch_s, 1),
        "exact_batch_queries_per_s": round(n_queries / exact_batch_s, 1),
        "build_s": round(build_s, 3),
        "updates_per_s": {
            "single": round(n_updates / single_s, 1),
            "batch_1000": round(n_updates / batched_s, 1),
        },
        "recall_after_updates": recall_after,
        "memory_mb": {
            "faiss_retriever": round(fast.memory_bytes() / 2**20, 1),
            "exact_retriever": round(exact.memory_bytes() / 2**20, 1),
        },
    }


def hnsw_benchmark(
    n_items: int,
    dim: int = 64,
    n_queries: int = 1000,
    k: int = 100,
    seed: int = 0,
    *,
    m: int = 32,
    ef_construction: int = 64,
    ef_search: Sequence[int] = (128, 256, 384, 512),
    threads: int = 0,
) -> dict[str, Any]:
    """The rejected alternative, measured on the same data: a static ``IndexHNSWFlat``.

    Build time (``threads`` OpenMP threads, 0 = all) and single-query recall/latency per
    ``efSearch`` (one thread). HNSW cannot delete or move a vector in place, so an
    online deployment would add tombstones, a delta buffer and periodic rebuilds on top.
    """
    vectors, queries, _, data = _dataset(n_items, dim, n_queries, seed)
    truth_idx = ExactRetriever.from_arrays([str(i) for i in range(n_items)], vectors)
    truth = truth_idx.search_batch(queries, k)
    del truth_idx
    previous = faiss.omp_get_max_threads()
    index = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    try:
        faiss.omp_set_num_threads(threads or previous)
        started = time.perf_counter()
        index.add(vectors)
        build_s = time.perf_counter() - started
        faiss.omp_set_num_threads(1)
        rows = []
        for ef in ef_search:
            index.hnsw.efSearch = ef

            def search(q: npt.NDArray[np.float32]) -> list[Hit]:
                dists, labels = index.search(q[None, :], k)
                return [(str(i), float(d)) for d, i in zip(dists[0], labels[0], strict=True)]

            ns, hits = _timed_searches(search, queries)
            rows.append(
                {"ef_search": ef, "recall_at_k": _recall(hits, truth), **_percentiles_ms(ns)}
            )
    finally:
        faiss.omp_set_num_threads(previous)
    return {
        "n_items": n_items,
        "dim": dim,
        "k": k,
        "n_queries": n_queries,
        "seed": seed,
        "data": data,
        "m": m,
        "ef_construction": ef_construction,
        "build_s": round(build_s, 3),
        "single_ms_by_ef_search": rows,
    }
