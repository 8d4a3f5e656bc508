"""A/B variants: a stable split of users, each variant with its own ranking settings.

``assign`` hashes ``salt:user_id`` (BLAKE2b) to a point in [0, 1) and walks the
variants' cumulative shares, so a user stays in one variant across events, workers and
restarts, and a new salt reshuffles everyone. Shares are normalised to sum to one.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

from models.events import is_valid_id


@dataclass(frozen=True, slots=True)
class Variant:
    """One arm of an experiment: its name, share of users and ranking overrides."""

    name: str
    share: float
    epsilon: float | None = None
    """Exploration rate for this variant (None: the worker's setting)."""
    diversity: float | None = None
    """MMR diversity weight for this variant (None: the worker's setting)."""

    def __post_init__(self) -> None:
        if not is_valid_id(self.name):
            raise ValueError(f"variant name {self.name!r} is not a valid id")
        if not (self.share > 0 and math.isfinite(self.share)):
            raise ValueError(f"variant {self.name!r}: share must be > 0, got {self.share}")
        for field, value in (("epsilon", self.epsilon), ("diversity", self.diversity)):
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"variant {self.name!r}: {field} must be in [0, 1], got {value}")


def bucket(user_id: str, salt: str) -> float:
    """A stable point in [0, 1) for ``user_id`` under ``salt``."""
    digest = hashlib.blake2b(f"{salt}:{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def assign(user_id: str, variants: Sequence[Variant], salt: str) -> Variant:
    """The variant ``user_id`` belongs to (``variants`` non-empty, names unique)."""
    if not variants:
        raise ValueError("assign needs at least one variant")
    point = bucket(user_id, salt) * sum(v.share for v in variants)
    edge = 0.0
    for variant in variants:
        edge += variant.share
        if point < edge:
            return variant
    return variants[-1]  # rounding at the top edge
