"""Synthetic item embeddings and queries for retrieval tests and benchmarks.

Real item embeddings are lumpy: a few large categories, a long tail of small ones, and
items scattered around each category's direction. ``clustered_vectors`` reproduces that
with Zipf-sized Gaussian clusters on the unit sphere; ``queries_near`` draws user-like
queries around catalogue items. Both are deterministic for a given seed.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatMatrix = npt.NDArray[np.float32]


def _normalise(x: npt.NDArray[np.floating]) -> FloatMatrix:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(x / norms, dtype=np.float32)


def clustered_vectors(
    n: int,
    dim: int = 64,
    n_clusters: int = 100,
    seed: int = 0,
    spread: float = 0.8,
) -> FloatMatrix:
    """``n`` L2-normalised float32 vectors in ``n_clusters`` Zipf-sized clusters.

    Each vector is its cluster's unit direction plus Gaussian noise of expected norm
    ``spread``, then normalised: ``spread=0`` puts every item on its centre, ``spread=1``
    gives a cosine of about 0.5 between two items of one cluster, large values approach
    uniform on the sphere. Cluster sizes follow ``1/rank**0.8`` (a few big categories,
    a long tail).
    """
    if n < 0 or dim < 1 or n_clusters < 1 or spread < 0:
        raise ValueError(
            f"need n >= 0, dim >= 1, n_clusters >= 1, spread >= 0; "
            f"got n={n}, dim={dim}, n_clusters={n_clusters}, spread={spread}"
        )
    rng = np.random.default_rng(seed)
    centres = _normalise(rng.standard_normal((n_clusters, dim)))
    weights = 1.0 / np.arange(1, n_clusters + 1) ** 0.8
    labels = rng.choice(n_clusters, size=n, p=weights / weights.sum())
    out = np.empty((n, dim), dtype=np.float32)
    chunk = 1 << 16
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        noise = rng.standard_normal((stop - start, dim), dtype=np.float32)
        noise *= spread / np.sqrt(dim)
        out[start:stop] = _normalise(centres[labels[start:stop]] + noise)
    return out


def queries_near(
    vectors: npt.NDArray[np.floating], n: int, seed: int = 0, noise: float = 0.5
) -> FloatMatrix:
    """``n`` L2-normalised queries, each a random catalogue vector plus Gaussian noise.

    ``noise`` is the expected norm of the perturbation before renormalising, so queries
    land near items (as user profiles built from item vectors do) without being copies.
    """
    if len(vectors) == 0:
        raise ValueError("queries_near needs at least one vector")
    if n < 0 or noise < 0:
        raise ValueError(f"need n >= 0 and noise >= 0; got n={n}, noise={noise}")
    rng = np.random.default_rng(seed)
    base = np.asarray(vectors, dtype=np.float32)[rng.integers(0, len(vectors), size=n)]
    dim = base.shape[1]
    jitter = rng.standard_normal((n, dim), dtype=np.float32) * (noise / np.sqrt(dim))
    return _normalise(base + jitter)
