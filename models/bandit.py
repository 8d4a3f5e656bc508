"""Epsilon-greedy slate ranking with exact, loggable propensities.

A list of ``k`` slots is filled one slot at a time. For each slot, with probability
``epsilon`` the policy explores (picks uniformly among the remaining candidates),
otherwise it exploits (picks the remaining candidate with the best score; ties go to the
smallest ``item_id``). The probability that the policy puts item ``i`` in a slot, given
the candidate pool and the previous slots, is therefore exactly::

    (1 - epsilon) * [i is the greedy choice] + epsilon / n_remaining

which each ``Slot`` records as its ``propensity``, for inverse-propensity (IPS)
off-policy evaluation. The first ``protected`` slots never explore: they take the greedy
item with propensity 1 (a list whose first slot is a random pick is a poor first
impression; ``docs/benchmarks.md``, "The price of exploring"). The probability of a
whole list is the product over its slots (``list_propensity``). All randomness comes
from an injected ``random.Random``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EpsilonSchedule:
    """Exploration rate over time: ``max(min_epsilon, epsilon0 / (1 + decay * t))``.

    Hyperbolic decay: with ``decay = 1e-3`` epsilon halves after 1,000 rounds and keeps
    falling slowly, never below ``min_epsilon``. ``decay = 0`` is a constant rate.
    """

    epsilon0: float = 0.1
    decay: float = 0.0
    min_epsilon: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.epsilon0 <= 1.0:
            raise ValueError(f"epsilon0 must be in [0, 1], got {self.epsilon0!r}")
        if not 0.0 <= self.min_epsilon <= self.epsilon0:
            raise ValueError(
                f"min_epsilon must be in [0, epsilon0={self.epsilon0!r}], got {self.min_epsilon!r}"
            )
        if not (self.decay >= 0.0 and math.isfinite(self.decay)):
            raise ValueError(f"decay must be finite and >= 0, got {self.decay!r}")

    def epsilon_at(self, t: float) -> float:
        """Exploration rate at round ``t >= 0``; non-increasing in ``t``."""
        if not (t >= 0 and math.isfinite(t)):
            raise ValueError(f"t must be finite and >= 0, got {t!r}")
        return max(self.min_epsilon, self.epsilon0 / (1.0 + self.decay * t))


@dataclass(frozen=True, slots=True)
class Candidate:
    """An item the ranker may show, with its exploit score (blended by the caller)."""

    item_id: str
    score: float
    reason: str = ""
    category: str | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.score):
            raise ValueError(f"candidate {self.item_id!r}: score must be finite, got {self.score}")


@dataclass(frozen=True, slots=True)
class Slot:
    """One filled slot of a ranked list."""

    item_id: str
    score: float
    """The candidate's exploit score."""
    reason: str
    propensity: float
    """Exact probability that the policy put this item here, given the pool and the
    previous slots."""
    explored: bool
    """The exploration coin came up (the pick may still be the greedy item)."""
    position: int
    """0-based slot index."""


def _greedy_key(c: Candidate) -> tuple[float, str]:
    return (-c.score, c.item_id)


def greedy_order(candidates: Iterable[Candidate]) -> list[Candidate]:
    """Candidates best first: score descending, ties by ``item_id`` ascending."""
    return sorted(candidates, key=_greedy_key)


def slot_propensity(item_id: str, remaining: Sequence[Candidate], epsilon: float) -> float:
    """Probability that one slot picks ``item_id`` from ``remaining`` (0 if absent)."""
    if not remaining or all(c.item_id != item_id for c in remaining):
        return 0.0
    greedy = min(remaining, key=_greedy_key).item_id
    exploit = 1.0 - epsilon if item_id == greedy else 0.0
    return min(1.0, exploit + epsilon / len(remaining))


def list_propensity(slots: Iterable[Slot]) -> float:
    """Probability of the whole list: the product of its slot propensities."""
    return math.prod(s.propensity for s in slots)


def slot_epsilon(position: int, epsilon: float, protected: int) -> float:
    """The exploration rate of slot ``position``: 0 for the first ``protected`` slots."""
    return 0.0 if position < protected else epsilon


def epsilon_greedy_rank(
    candidates: Iterable[Candidate],
    k: int,
    epsilon: float,
    rng: random.Random,
    protected: int = 0,
) -> list[Slot]:
    """Fill ``min(k, n)`` slots epsilon-greedily from ``candidates`` (unique item ids),
    the first ``protected`` of them greedily.

    The result does not depend on the order of ``candidates``; it consumes one
    ``rng.random()`` per slot (protected ones too) and one ``rng.randrange`` per
    explored slot.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if protected < 0:
        raise ValueError(f"protected must be >= 0, got {protected}")
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon!r}")
    remaining = greedy_order(candidates)
    ids = {c.item_id for c in remaining}
    if len(ids) != len(remaining):
        raise ValueError("candidates must have unique item ids")
    slots: list[Slot] = []
    for position in range(min(k, len(remaining))):
        n = len(remaining)
        eps = slot_epsilon(position, epsilon, protected)
        explored = rng.random() < eps
        index = rng.randrange(n) if explored else 0
        pick = remaining.pop(index)
        exploit = 1.0 - eps if index == 0 else 0.0
        slots.append(
            Slot(
                item_id=pick.item_id,
                score=pick.score,
                reason=pick.reason,
                propensity=min(1.0, exploit + eps / n),
                explored=explored,
                position=position,
            )
        )
    return slots


class EpsilonGreedyRanker:
    """Epsilon-greedy re-ranker whose exploration rate follows ``schedule``."""

    def __init__(self, schedule: EpsilonSchedule, rng: random.Random) -> None:
        self.schedule = schedule
        self.rng = rng

    def rank(
        self, candidates: Iterable[Candidate], k: int, t: float, protected: int = 0
    ) -> list[Slot]:
        """Rank ``candidates`` into ``min(k, n)`` slots at round ``t``, the first
        ``protected`` greedily."""
        return epsilon_greedy_rank(candidates, k, self.schedule.epsilon_at(t), self.rng, protected)
