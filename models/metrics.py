"""Evaluation maths: ranking metrics, catalogue metrics and off-policy estimators.

Plain functions, no state. Notation for the per-user ranking metrics: ``L`` is the
ranked list ``recommended`` (best first), ``R`` the set ``relevant``, ``k >= 1`` the
cut-off, ``L_k`` the first ``k`` entries of ``L``, and ``H`` the 1-based positions
``p <= k`` at which ``L`` holds a relevant item for the first time (a repeated item
earns nothing the second time, so every metric stays in ``[0, 1]``). Relevance is
binary.

Defined edge cases, shared by every ranking metric:

* ``k < 1`` raises ``ValueError``;
* an empty ``recommended`` list, or one shorter than ``k``, is scored as it is (missing
  positions are misses; precision still divides by ``k``);
* an empty ``relevant`` set scores ``0.0`` on every metric: nothing can be hit.
  ``MetricAccumulator`` does not average such users in; it counts them as skipped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, get_args

import numpy as np
import numpy.typing as npt

MetricName = Literal["hr", "precision", "recall", "ndcg", "map", "mrr"]
"""Short names used as keys by ``MetricAccumulator`` (``"ndcg@10"`` etc.)."""

ALL_METRICS: Final[tuple[MetricName, ...]] = get_args(MetricName)


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def hit_positions(recommended: Sequence[str], relevant: Collection[str], k: int) -> list[int]:
    """``H``: the 1-based positions ``p <= k`` holding a relevant item for the first time."""
    _check_k(k)
    seen: set[str] = set()
    hits: list[int] = []
    for position, item in enumerate(recommended[:k], start=1):
        if item in relevant and item not in seen:
            hits.append(position)
        seen.add(item)
    return hits


def _ideal_dcg(n: int) -> float:
    return sum(1.0 / math.log2(p + 1) for p in range(1, n + 1))


def _hit_rate(hits: list[int]) -> float:
    return 1.0 if hits else 0.0


def _precision(hits: list[int], k: int) -> float:
    return len(hits) / k


def _recall(hits: list[int], n_relevant: int) -> float:
    return len(hits) / n_relevant if n_relevant else 0.0


def _ndcg(hits: list[int], n_relevant: int, k: int) -> float:
    if not n_relevant:
        return 0.0
    dcg = sum(1.0 / math.log2(p + 1) for p in hits)
    return dcg / _ideal_dcg(min(k, n_relevant))


def _average_precision(hits: list[int], n_relevant: int, k: int) -> float:
    if not n_relevant:
        return 0.0
    total = sum(rank / p for rank, p in enumerate(hits, start=1))
    return total / min(k, n_relevant)


def _reciprocal_rank(hits: list[int]) -> float:
    return 1.0 / hits[0] if hits else 0.0


def hit_rate_at_k(recommended: Sequence[str], relevant: Collection[str], k: int) -> float:
    """HR@k = 1 if ``|H| > 0`` else 0 (a relevant item anywhere in ``L_k``)."""
    return _hit_rate(hit_positions(recommended, relevant, k))


def precision_at_k(recommended: Sequence[str], relevant: Collection[str], k: int) -> float:
    """P@k = ``|H| / k`` (always divided by ``k``, even when ``L`` is shorter)."""
    return _precision(hit_positions(recommended, relevant, k), k)


def recall_at_k(recommended: Sequence[str], relevant: Collection[str], k: int) -> float:
    """R@k = ``|H| / |R|``."""
    return _recall(hit_positions(recommended, relevant, k), len(relevant))


def ndcg_at_k(recommended: Sequence[str], relevant: Collection[str], k: int) -> float:
    """NDCG@k = DCG / IDCG with binary gains and a log2 discount.

    ``DCG = sum_{p in H} 1 / log2(p + 1)`` and
    ``IDCG = sum_{p = 1}^{min(k, |R|)} 1 / log2(p + 1)``, the DCG of a list whose first
    ``min(k, |R|)`` items are all relevant; so NDCG@k = 1 exactly when they are.
    """
    return _ndcg(hit_positions(recommended, relevant, k), len(relevant), k)


def average_precision_at_k(recommended: Sequence[str], relevant: Collection[str], k: int) -> float:
    """AP@k = ``sum_{p in H} P@p / min(k, |R|)`` (the MAP@k convention).

    ``P@p`` is the precision at the hit's own position: the j-th hit, at position ``p``,
    contributes ``j / p``.
    """
    return _average_precision(hit_positions(recommended, relevant, k), len(relevant), k)


def reciprocal_rank_at_k(recommended: Sequence[str], relevant: Collection[str], k: int) -> float:
    """RR@k = ``1 / min(H)``, or 0 if ``H`` is empty (MRR@k is its mean over users)."""
    return _reciprocal_rank(hit_positions(recommended, relevant, k))


# --- catalogue-level ------------------------------------------------------------------


def catalog_coverage(lists: Iterable[Sequence[str]], catalog_size: int) -> float:
    """Coverage = ``|union of all lists| / catalog_size``.

    The lists must hold catalogue items only (filter them first); raises ``ValueError``
    if ``catalog_size < 1`` or the lists hold more distinct items than the catalogue.
    """
    if catalog_size < 1:
        raise ValueError(f"catalog_size must be >= 1, got {catalog_size}")
    shown: set[str] = set()
    for items in lists:
        shown.update(items)
    if len(shown) > catalog_size:
        raise ValueError(
            f"lists hold {len(shown)} distinct items, more than catalog_size={catalog_size}"
        )
    return len(shown) / catalog_size


def novelty(
    lists: Iterable[Sequence[str]], item_popularity: Mapping[str, int], n_users: int
) -> float:
    """Mean self-information of recommended items, in bits.

    For item ``i``, ``p(i) = max(1, item_popularity[i]) / n_users`` is the fraction of
    users who interacted with it; an item missing from ``item_popularity`` (or at 0)
    counts as seen by one user, the largest finite novelty ``log2(n_users)``. A list's
    novelty is the mean of ``-log2(p(i))`` over its items; the result is the mean over
    non-empty lists (each user weighs the same), 0.0 if there are none. Raises
    ``ValueError`` if ``n_users < 1`` or a popularity exceeds ``n_users``.
    """
    if n_users < 1:
        raise ValueError(f"n_users must be >= 1, got {n_users}")
    total = 0.0
    n_lists = 0
    for items in lists:
        if not items:
            continue
        bits = 0.0
        for item in items:
            count = item_popularity.get(item, 0)
            if count > n_users:
                raise ValueError(f"item {item!r}: popularity {count} exceeds n_users={n_users}")
            bits -= math.log2(max(1, count) / n_users)
        total += bits / len(items)
        n_lists += 1
    return total / n_lists if n_lists else 0.0


def intra_list_diversity(items: Sequence[str], similarity: Callable[[str, str], float]) -> float:
    """ILD = mean over unordered pairs ``{i, j}`` of ``1 - similarity(i, j)``.

    That is ``2 / (n (n - 1)) * sum_{a < b} (1 - sim(L[a], L[b]))``; 0.0 for lists with
    fewer than two items. With a similarity in ``[0, 1]`` the result is in ``[0, 1]``.
    """
    n = len(items)
    if n < 2:
        return 0.0
    total = sum(1.0 - similarity(items[a], items[b]) for a in range(n) for b in range(a + 1, n))
    return total / (n * (n - 1) / 2)


# --- off-policy estimation ------------------------------------------------------------


def _importance_weights(
    rewards: Sequence[float],
    logging_propensities: Sequence[float],
    target_propensities: Sequence[float],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    r = np.asarray(rewards, dtype=np.float64)
    p0 = np.asarray(logging_propensities, dtype=np.float64)
    p1 = np.asarray(target_propensities, dtype=np.float64)
    if not (r.ndim == p0.ndim == p1.ndim == 1):
        raise ValueError("rewards and propensities must be flat sequences")
    if not (len(r) == len(p0) == len(p1)):
        raise ValueError(
            f"lengths differ: {len(r)} rewards, {len(p0)} logging and {len(p1)} target propensities"
        )
    if len(r) == 0:
        raise ValueError("no logged rounds: the estimate is undefined on empty input")
    if not np.all(np.isfinite(r)):
        raise ValueError("rewards must be finite")
    bad = ~((p0 > 0.0) & (p0 <= 1.0))
    if np.any(bad):
        i = int(np.argmax(bad))
        raise ValueError(
            f"logging propensity at round {i} is {float(p0[i])}: every logged action needs a "
            "propensity in (0, 1] (a zero means the logging policy could not have taken it)"
        )
    bad = ~((p1 >= 0.0) & (p1 <= 1.0))
    if np.any(bad):
        i = int(np.argmax(bad))
        raise ValueError(f"target propensity at round {i} is {float(p1[i])}, not in [0, 1]")
    return r, p1 / p0


def ips(
    rewards: Sequence[float],
    logging_propensities: Sequence[float],
    target_propensities: Sequence[float],
) -> float:
    """Inverse propensity scoring: ``(1/n) sum_t r_t * pi(a_t|x_t) / pi0(a_t|x_t)``.

    ``pi0`` (``logging_propensities``) is the probability with which the logging policy
    took the logged action ``a_t``, ``pi`` (``target_propensities``) the probability the
    evaluated policy would take it. Unbiased for the target policy's mean reward when
    ``pi0 > 0`` wherever ``pi > 0``. Raises ``ValueError`` on empty input, unequal
    lengths, non-finite rewards, a logging propensity outside ``(0, 1]`` (zero included)
    or a target propensity outside ``[0, 1]``.
    """
    r, w = _importance_weights(rewards, logging_propensities, target_propensities)
    return float(np.mean(r * w))


def snips(
    rewards: Sequence[float],
    logging_propensities: Sequence[float],
    target_propensities: Sequence[float],
) -> float:
    """Self-normalised IPS: ``sum_t r_t w_t / sum_t w_t`` with ``w_t = pi / pi0``.

    Biased but of lower variance than ``ips``; the estimate is always within the range
    of the rewards. If every weight is 0 (the target policy would take none of the logged
    actions) the logs say nothing about it and the result is 0.0. Input checks as ``ips``.
    """
    r, w = _importance_weights(rewards, logging_propensities, target_propensities)
    total = float(np.sum(w))
    return float(np.sum(r * w)) / total if total > 0.0 else 0.0


# --- averaging over users -------------------------------------------------------------


@dataclass
class MetricAccumulator:
    """Means of per-user ranking metrics over users, for several cut-offs at once.

    ``add(recommended, relevant)`` scores one user; ``result()`` returns
    ``{"hr@10": ..., "ndcg@10": ..., ..., "users": n}`` with one key per metric in
    ``metrics`` and cut-off in ``ks`` (all 0.0 before any user). Users with no relevant
    items are not averaged in; they are counted in ``skipped``.
    """

    ks: Sequence[int] = (10,)
    metrics: Sequence[MetricName] = ALL_METRICS
    users: int = field(default=0, init=False)
    skipped: int = field(default=0, init=False)
    _sums: dict[str, float] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.ks = tuple(sorted(set(self.ks)))
        if not self.ks:
            raise ValueError("give at least one cut-off k")
        for k in self.ks:
            _check_k(k)
        unknown = [m for m in self.metrics if m not in ALL_METRICS]
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; choose from {list(ALL_METRICS)}")
        self.metrics = tuple(dict.fromkeys(self.metrics))
        self._sums = {f"{m}@{k}": 0.0 for m in self.metrics for k in self.ks}

    def add(self, recommended: Sequence[str], relevant: Collection[str]) -> None:
        """Score one user's list against their relevant items."""
        n_relevant = len(relevant)
        if n_relevant == 0:
            self.skipped += 1
            return
        all_hits = hit_positions(recommended, relevant, self.ks[-1])
        for k in self.ks:
            hits = [p for p in all_hits if p <= k]
            for metric in self.metrics:
                if metric == "hr":
                    value = _hit_rate(hits)
                elif metric == "precision":
                    value = _precision(hits, k)
                elif metric == "recall":
                    value = _recall(hits, n_relevant)
                elif metric == "ndcg":
                    value = _ndcg(hits, n_relevant, k)
                elif metric == "map":
                    value = _average_precision(hits, n_relevant, k)
                else:
                    value = _reciprocal_rank(hits)
                self._sums[f"{metric}@{k}"] += value
        self.users += 1

    def result(self) -> dict[str, float]:
        """Mean of each metric over the users added, plus ``"users"``: how many."""
        n = max(1, self.users)
        out: dict[str, float] = {key: total / n for key, total in self._sums.items()}
        out["users"] = self.users
        return out
