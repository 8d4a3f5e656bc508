"""Off-policy value of epsilon-greedy list policies, from logged lists and propensities.

Pure numpy, no state. A logged round ``t`` is a list the logging policy ``pi0`` filled
slot by slot (``models.bandit``). For slot ``s`` the log (``SlateLog``) holds the slot's
reward ``y[t, s]`` (its share of the list's value: ``rel / log2(s + 2) / IDCG`` makes the
sum over slots NDCG@k), the logged propensity ``p0[t, s] = pi0(a_s | x, a_<s)``, whether
``a_s`` was the greedy item of that state, and how many candidates remained.

The target policy ``EpsilonPolicy(epsilon, protected)`` takes the greedy item in the
first ``protected`` slots and is epsilon-greedy after them::

    pi(a_s | x, a_<s) = (1 - e_s) [a_s greedy] + e_s / n_s,  e_s = 0 if s < protected else epsilon

A slot's reward depends on the list's prefix only, so with the per-decision weights
``W[t, s] = prod_{j <= s} pi / pi0`` (``W[t, -1] = 1``) every slot is a contextual-bandit
round conditional on its prefix (Precup, Sutton & Singh 2000, per-decision importance
sampling), and:

* ``ips``: ``mean_t sum_s W[t, s] y[t, s]``, unbiased (Horvitz & Thompson 1952; with one
  slot, the contextual-bandit IPS of Dudík, Langford & Li 2011, eq. 2);
* ``snips``: ``sum_s (sum_t W y) / (sum_t W)``, self-normalised per slot (Swaminathan &
  Joachims 2015, "The self-normalized estimator for counterfactual learning"): biased,
  lower variance, within the range of the rewards;
* ``dr``: ``mean_t sum_s [W_s (y_s - q(s, a_s)) + W_{s-1} sum_a pi(a) q(s, a)]``, the
  doubly-robust estimator (Dudík, Langford & Li 2011, eq. 3) applied slot by slot as in
  Jiang & Li 2016 (eq. 5, with an immediate-reward model): unbiased for any reward model
  ``q`` given exact propensities, lower variance the better ``q`` predicts. Here ``q`` is
  the mean slot reward by slot and by "greedy item or not", cross-fitted: each half of
  the groups is scored with the model fitted on the other half.

Confidence intervals: percentile bootstrap over groups (users: one user's lists are
not independent), resampled with replacement from a seeded ``numpy`` generator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]
ESTIMATORS = ("ips", "snips", "dr")
BOOTSTRAP_CHUNK = 100
"""Bootstrap replicates drawn at once (a replicates x groups count matrix)."""


@dataclass(frozen=True)
class EpsilonPolicy:
    """Epsilon-greedy after ``protected`` greedy slots (``models.bandit``)."""

    epsilon: float
    protected: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {self.epsilon!r}")
        if self.protected < 0:
            raise ValueError(f"protected must be >= 0, got {self.protected}")

    def slot_epsilons(self, k: int) -> Floats:
        """The exploration rate of each of ``k`` slots."""
        return np.where(np.arange(k) < self.protected, 0.0, self.epsilon)

    def greedy_share(self, remaining: npt.NDArray[np.int64]) -> Floats:
        """``pi(greedy item)`` per slot, for ``remaining`` candidates (rounds x slots)."""
        eps = self.slot_epsilons(remaining.shape[1])[None, :]
        return np.minimum(1.0, 1.0 - eps + eps / np.maximum(remaining, 1))

    def propensities(
        self, greedy: npt.NDArray[np.bool_], remaining: npt.NDArray[np.int64]
    ) -> Floats:
        """``pi(a_s | x, a_<s)`` of the logged items (1 in padding slots)."""
        eps = self.slot_epsilons(remaining.shape[1])[None, :]
        other = eps / np.maximum(remaining, 1)
        p = np.where(greedy, self.greedy_share(remaining), other)
        return np.where(remaining > 0, p, 1.0)


def decode_slot(propensity: float, epsilon: float) -> tuple[bool, int]:
    """``(greedy, remaining)`` of a slot logged at rate ``epsilon`` in (0, 0.5].

    Inverts ``(1 - epsilon) [greedy] + epsilon / n``: a greedy pick has propensity
    ``>= 1 - epsilon``, any other at most ``epsilon / 2``. A slot that could not explore
    (propensity 1) decodes as one remaining candidate, so log such slots with their
    real counts rather than decoding them."""
    if not 0.0 < epsilon <= 0.5:
        raise ValueError(f"decoding needs a logging epsilon in (0, 0.5], got {epsilon!r}")
    if not 0.0 < propensity <= 1.0:
        raise ValueError(f"propensity must be in (0, 1], got {propensity!r}")
    if propensity >= 1.0 - epsilon:
        return True, max(1, round(epsilon / (propensity - 1.0 + epsilon)))
    return False, max(2, round(epsilon / propensity))


@dataclass(frozen=True)
class SlateLog:
    """Logged lists as (rounds x slots) arrays; a list shorter than ``k`` is padded
    (``remaining`` 0, reward 0)."""

    rewards: Floats
    propensities: Floats
    greedy: npt.NDArray[np.bool_]
    remaining: npt.NDArray[np.int64]
    groups: npt.NDArray[np.int64]
    """Round -> its group (user), for the bootstrap and the cross-fitting."""

    def __post_init__(self) -> None:
        shape = self.rewards.shape
        if len(shape) != 2 or shape[0] == 0:
            raise ValueError(f"need a non-empty (rounds, slots) log, got shape {shape}")
        for name in ("propensities", "greedy", "remaining"):
            if getattr(self, name).shape != shape:
                raise ValueError(f"{name} has shape {getattr(self, name).shape}, not {shape}")
        if self.groups.shape != (shape[0],):
            raise ValueError(f"groups has shape {self.groups.shape}, not ({shape[0]},)")
        valid = self.remaining > 0
        if not np.all(np.isfinite(self.rewards)) or np.any(self.rewards[~valid] != 0):
            raise ValueError("rewards must be finite, and 0 in padding slots")
        p0 = self.propensities[valid]
        if np.any(~((p0 > 0.0) & (p0 <= 1.0))):
            raise ValueError("every logged propensity must be in (0, 1]")

    @property
    def rounds(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def k(self) -> int:
        return int(self.rewards.shape[1])

    def value(self) -> float:
        """The logging policy's own mean list value (on-policy)."""
        return float(self.rewards.sum(axis=1).mean())


class LogBuilder:
    """Collects logged lists round by round, then ``build()`` a ``SlateLog``."""

    def __init__(self, k: int) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k
        self._rows: list[tuple[list[float], list[float], list[bool], list[int]]] = []
        self._groups: list[int] = []
        self._ids: dict[str, int] = {}

    def add(
        self,
        group: str,
        rewards: Sequence[float],
        propensities: Sequence[float],
        greedy: Sequence[bool],
        remaining: Sequence[int],
    ) -> None:
        """One logged list (at most ``k`` slots), all sequences slot by slot."""
        n = len(rewards)
        if not n == len(propensities) == len(greedy) == len(remaining) or n > self.k:
            raise ValueError(f"a list needs equally long slot sequences of at most {self.k}")
        pad = self.k - n
        self._rows.append(
            (
                [*rewards, *[0.0] * pad],
                [*propensities, *[1.0] * pad],
                [*greedy, *[False] * pad],
                [*remaining, *[0] * pad],
            )
        )
        self._groups.append(self._ids.setdefault(group, len(self._ids)))

    def __len__(self) -> int:
        return len(self._rows)

    def build(self) -> SlateLog:
        shape = (len(self._rows), self.k)

        def column(i: int, dtype: type) -> npt.NDArray[Any]:
            return np.asarray([row[i] for row in self._rows], dtype=dtype).reshape(shape)

        return SlateLog(
            rewards=column(0, np.float64),
            propensities=column(1, np.float64),
            greedy=column(2, np.bool_),
            remaining=column(3, np.int64),
            groups=np.asarray(self._groups, dtype=np.int64),
        )


def weights(log: SlateLog, policy: EpsilonPolicy) -> Floats:
    """Per-decision importance weights ``W[t, s] = prod_{j <= s} pi / pi0``."""
    ratio = policy.propensities(log.greedy, log.remaining) / log.propensities
    out: Floats = np.cumprod(ratio, axis=1, dtype=np.float64)
    return out


def reward_model(log: SlateLog, rounds: npt.NDArray[np.bool_]) -> Floats:
    """``q[s, g]``: the mean reward of slot ``s`` over ``rounds`` whose pick there was
    greedy (``g = 1``) or not (``g = 0``); a cell without data falls back to the slot's
    mean, then to 0."""
    y, valid = log.rewards[rounds], log.remaining[rounds] > 0
    greedy = log.greedy[rounds]
    q = np.zeros((log.k, 2))
    for s in range(log.k):
        seen = valid[:, s]
        fallback = float(y[seen, s].mean()) if seen.any() else 0.0
        for g in (0, 1):
            cell = seen & (greedy[:, s] == bool(g))
            q[s, g] = float(y[cell, s].mean()) if cell.any() else fallback
    return q


def _dr_terms(
    log: SlateLog, policy: EpsilonPolicy, w: Floats, folds: npt.NDArray[np.int64]
) -> Floats:
    """Per-round DR values, each round's reward model fitted on the other fold."""
    out = np.zeros(log.rounds)
    valid = log.remaining > 0
    share = policy.greedy_share(log.remaining)
    before = np.hstack([np.ones((log.rounds, 1)), w[:, :-1]])
    for fold in (0, 1):
        mine = folds[log.groups] == fold
        q = reward_model(log, ~mine) if (~mine).any() else reward_model(log, mine)
        q_logged = q[np.arange(log.k)[None, :], log.greedy[mine].astype(np.int64)]
        q_policy = share[mine] * q[None, :, 1] + (1.0 - share[mine]) * q[None, :, 0]
        term = w[mine] * (log.rewards[mine] - q_logged) + before[mine] * q_policy
        out[mine] = np.where(valid[mine], term, 0.0).sum(axis=1)
    return out


@dataclass(frozen=True)
class Estimate:
    """A point estimate and its percentile bootstrap interval."""

    value: float
    low: float
    high: float

    def covers(self, truth: float) -> bool:
        return self.low <= truth <= self.high


def _group_sums(values: Floats, groups: npt.NDArray[np.int64], n_groups: int) -> Floats:
    """Row sums of ``values`` (rounds x columns) per group: (groups x columns)."""
    out = np.zeros((n_groups, values.shape[1]))
    np.add.at(out, groups, values)
    return out


def _check_support(log: SlateLog, policy: EpsilonPolicy) -> None:
    explores = policy.propensities(log.greedy, log.remaining) < 1.0
    unsupported = explores & (log.propensities == 1.0) & (log.remaining > 1)
    if unsupported.any():
        raise ValueError("the target explores slots the logging policy never explored")


Statistic = Callable[[Floats], Floats]
"""Group multiplicities (replicates x groups) -> estimates (replicates x estimators)."""


def _statistic(log: SlateLog, policy: EpsilonPolicy, folds: npt.NDArray[np.int64]) -> Statistic:
    _check_support(log, policy)
    n_groups = len(folds)
    w = weights(log, policy)  # padding slots carry the prefix's weight, reward 0
    ones = np.ones((log.rounds, 1))
    ips_sums = _group_sums(
        np.hstack([(w * log.rewards).sum(axis=1, keepdims=True), ones]), log.groups, n_groups
    )
    dr_sums = _group_sums(
        np.hstack([_dr_terms(log, policy, w, folds)[:, None], ones]), log.groups, n_groups
    )
    num = _group_sums(w * log.rewards, log.groups, n_groups)
    den = _group_sums(w, log.groups, n_groups)

    def stats(counts: Floats) -> Floats:
        ips_v = counts @ ips_sums
        dr_v = counts @ dr_sums
        n_s, d_s = counts @ num, counts @ den
        sn = np.divide(n_s, d_s, out=np.zeros_like(n_s), where=d_s > 0).sum(axis=1)
        return np.column_stack([ips_v[:, 0] / ips_v[:, 1], sn, dr_v[:, 0] / dr_v[:, 1]])

    return stats


def estimate(
    log: SlateLog,
    policy: EpsilonPolicy,
    n_boot: int = 500,
    level: float = 0.95,
    seed: int = 0,
    baseline: EpsilonPolicy | None = None,
) -> dict[str, Estimate]:
    """IPS, SNIPS and DR estimates of ``policy``'s mean list value, with intervals;
    with ``baseline``, of ``value(baseline) - value(policy)`` (paired: the same
    bootstrap samples for both).

    Raises ``ValueError`` if a policy would take an action the logging policy could
    not (it explores a slot the log never explored)."""
    if n_boot < 1 or not 0.0 < level < 1.0:
        raise ValueError("need n_boot >= 1 and a level in (0, 1)")
    rng = np.random.default_rng(seed)
    n_groups = int(log.groups.max()) + 1
    folds = rng.permutation(n_groups) % 2
    stats = _statistic(log, policy, folds)
    if baseline is not None:
        base, target = _statistic(log, baseline, folds), stats

        def stats(counts: Floats) -> Floats:
            return base(counts) - target(counts)

    point = stats(np.ones((1, n_groups)))[0]
    reps: list[Floats] = []
    for start in range(0, n_boot, BOOTSTRAP_CHUNK):
        size = min(BOOTSTRAP_CHUNK, n_boot - start)
        counts = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=size)
        reps.append(stats(counts.astype(np.float64)))
    boot = np.vstack(reps)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(boot, [tail, 1.0 - tail], axis=0)
    return {
        name: Estimate(float(point[i]), float(low[i]), float(high[i]))
        for i, name in enumerate(ESTIMATORS)
    }


def mean_interval(
    values: Iterable[float],
    groups: Sequence[str],
    n_boot: int = 500,
    level: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """The mean of per-round ``values`` with a bootstrap interval over ``groups``."""
    v = np.asarray(list(values), dtype=np.float64)
    ids: dict[str, int] = {}
    g = np.asarray([ids.setdefault(x, len(ids)) for x in groups], dtype=np.int64)
    if v.size == 0 or v.shape != g.shape:
        raise ValueError("need one group per value, and at least one value")
    sums = _group_sums(np.column_stack([v, np.ones_like(v)]), g, len(ids))
    rng = np.random.default_rng(seed)
    reps: list[Floats] = []
    for start in range(0, n_boot, BOOTSTRAP_CHUNK):
        size = min(BOOTSTRAP_CHUNK, n_boot - start)
        counts = rng.multinomial(len(ids), np.full(len(ids), 1.0 / len(ids)), size=size)
        got = counts.astype(np.float64) @ sums
        reps.append(got[:, 0] / got[:, 1])
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(np.concatenate(reps), [tail, 1.0 - tail])
    return Estimate(float(v.mean()), float(low), float(high))


def as_row(estimates: Mapping[str, Estimate]) -> dict[str, float]:
    """Flat ``{"ips": v, "ips_low": l, "ips_high": h, ...}`` for JSON and tables."""
    out: dict[str, float] = {}
    for name, e in estimates.items():
        out |= {name: e.value, f"{name}_low": e.low, f"{name}_high": e.high}
    return out
