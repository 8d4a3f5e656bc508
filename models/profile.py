"""User profiles: per-category affinities with exponential time decay, recent items, counts.

A profile is updated by the pure function ``apply_event(profile, event, categories, cfg)``.
Decay is anchored at the newest event time seen, so the result does not depend on the
wall clock, and an out-of-order event adds its weight already decayed to that anchor.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from models.events import Event, EventType

DEFAULT_EVENT_WEIGHTS: Final[Mapping[EventType, float]] = {
    EventType.VIEW: 1.0,
    EventType.CLICK: 2.0,
    EventType.ADD_TO_CART: 4.0,
    EventType.PURCHASE: 8.0,
}

_LN2: Final = math.log(2.0)

MAX_QUANTITY: Final = 10
"""Quantities above this count as this many when weighing an event."""


def event_weight(event: Event, weights: Mapping[EventType, float] | Mapping[str, float]) -> float:
    """``weights[event.type] * min(quantity, MAX_QUANTITY)``: how much an event counts.

    ``weights`` may be keyed by ``EventType`` or by its string value (a ``StrEnum``).
    """
    weight = weights.get(event.type, 0.0)
    return float(weight) * min(event.quantity, MAX_QUANTITY)


@dataclass(frozen=True, slots=True)
class ProfileConfig:
    """How profiles learn: event weights, decay and bounds."""

    event_weights: Mapping[EventType, float] = field(
        default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS)
    )
    half_life_s: float = 30 * 86_400.0
    history_size: int = 2000
    max_categories: int = 32
    max_purchased: int = 200


def decay_factor(dt_s: float, half_life_s: float) -> float:
    """Multiplier for a weight that is ``dt_s`` seconds old (1.0 for dt <= 0)."""
    if dt_s <= 0:
        return 1.0
    return math.exp(-_LN2 * dt_s / half_life_s)


@dataclass(slots=True)
class UserProfile:
    """What Eddy knows of one user; JSON-serialisable through ``to_dict``/``from_dict``."""

    user_id: str
    affinities: dict[str, float] = field(default_factory=dict)
    """Category -> decayed weight, as of ``last_ts``."""
    recent: list[str] = field(default_factory=list)
    """Item ids, most recent first, no repeats, bounded by ``history_size``."""
    purchased: list[str] = field(default_factory=list)
    """Item ids the user bought, most recent first, bounded."""
    counts: dict[str, int] = field(default_factory=dict)
    """Events applied, per event type."""
    last_ts: float = 0.0
    """Newest event time applied (the decay anchor)."""
    vector: list[float] | None = None
    """Taste vector in the item embedding space (None until an event on a known item)."""
    mass: float = 0.0
    """Decayed total event weight behind ``vector`` (see ``models.online``)."""
    applied: dict[str, int] = field(default_factory=dict)
    """Events-topic partition -> offset of the newest event applied (replay detection)."""
    event_ids: list[str] = field(default_factory=list)
    """The ``event_id`` of recent events applied, newest first (duplicate detection)."""

    @property
    def n_events(self) -> int:
        return sum(self.counts.values())

    def top_categories(self, n: int) -> list[tuple[str, float]]:
        """The ``n`` strongest category affinities, strongest first."""
        return sorted(self.affinities.items(), key=lambda kv: (-kv[1], kv[0]))[:n]

    def affinities_at(self, ts: float, half_life_s: float) -> dict[str, float]:
        """Affinities decayed forward to time ``ts``."""
        f = decay_factor(ts - self.last_ts, half_life_s)
        return {c: w * f for c, w in self.affinities.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "affinities": self.affinities,
            "recent": self.recent,
            "purchased": self.purchased,
            "counts": self.counts,
            "last_ts": self.last_ts,
            "vector": self.vector,
            "mass": self.mass,
            "applied": self.applied,
            "event_ids": self.event_ids,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UserProfile:
        return cls(
            user_id=str(data["user_id"]),
            affinities={str(k): float(v) for k, v in data.get("affinities", {}).items()},
            recent=[str(i) for i in data.get("recent", [])],
            purchased=[str(i) for i in data.get("purchased", [])],
            counts={str(k): int(v) for k, v in data.get("counts", {}).items()},
            last_ts=float(data.get("last_ts", 0.0)),
            vector=None if data.get("vector") is None else [float(x) for x in data["vector"]],
            mass=float(data.get("mass", 0.0)),
            applied={str(k): int(v) for k, v in data.get("applied", {}).items()},
            event_ids=[str(i) for i in data.get("event_ids", [])],
        )


def _push_front(items: list[str], item_id: str, bound: int) -> list[str]:
    rest = [i for i in items if i != item_id] if item_id in items else items
    return [item_id, *rest][:bound]


def apply_event(
    profile: UserProfile | None,
    event: Event,
    categories: Iterable[str],
    cfg: ProfileConfig,
) -> UserProfile:
    """Return the profile after ``event``; ``categories`` are the event item's categories.

    The input profile is not modified.
    """
    p = profile or UserProfile(user_id=event.user_id)
    weight = event_weight(event, cfg.event_weights)
    if event.ts >= p.last_ts:
        shrink = decay_factor(event.ts - p.last_ts, cfg.half_life_s)
        affinities = {c: w * shrink for c, w in p.affinities.items()}
        anchor, gain = event.ts, weight
    else:
        affinities = dict(p.affinities)
        anchor, gain = p.last_ts, weight * decay_factor(p.last_ts - event.ts, cfg.half_life_s)
    cats = list(dict.fromkeys(categories))
    if cats and gain > 0:
        share = gain / len(cats)
        for c in cats:
            affinities[c] = affinities.get(c, 0.0) + share
    if len(affinities) > cfg.max_categories:
        keep = sorted(affinities.items(), key=lambda kv: (-kv[1], kv[0]))[: cfg.max_categories]
        affinities = dict(keep)
    counts = dict(p.counts)
    counts[event.type.value] = counts.get(event.type.value, 0) + 1
    newest = event.ts >= p.last_ts
    recent = _push_front(p.recent, event.item_id, cfg.history_size) if newest else p.recent
    if not newest and event.item_id not in p.recent and len(p.recent) < cfg.history_size:
        recent = [*p.recent, event.item_id]
    purchased = p.purchased
    if event.type is EventType.PURCHASE:
        purchased = _push_front(p.purchased, event.item_id, cfg.max_purchased)
    return UserProfile(
        user_id=p.user_id,
        affinities=affinities,
        recent=recent,
        purchased=purchased,
        counts=counts,
        last_ts=anchor,
        vector=p.vector,
        mass=p.mass,
        applied=p.applied,
        event_ids=p.event_ids,
    )


DEDUP_WINDOW = 64
"""Recent ``event_id`` values remembered per user."""

Position = tuple[int, int]
"""(partition, offset) of an event on the events topic."""


def already_applied(profile: UserProfile | None, event: Event, at: Position | None) -> str | None:
    """Why ``event`` is already in ``profile`` (None: it is new).

    A replay after a crash comes back at an offset no newer than the last one applied from
    its partition, with an event time no newer than the profile's; a producer retry
    comes back with an ``event_id`` seen among the last ``DEDUP_WINDOW``. Both together
    make an at-least-once stream count each event once.
    """
    if profile is None:
        return None
    if at is not None:
        partition, offset = at
        last = profile.applied.get(str(partition))
        if last is not None and offset <= last and event.ts <= profile.last_ts:
            return f"offset {offset} of partition {partition} was applied (<= {last})"
    if event.event_id is not None and event.event_id in profile.event_ids:
        return f"event_id {event.event_id!r} was applied"
    return None


def mark_applied(profile: UserProfile, event: Event, at: Position | None) -> UserProfile:
    """``profile`` remembering that ``event`` (at position ``at``) is applied."""
    applied = profile.applied
    if at is not None:
        applied = {**applied, str(at[0]): max(at[1], applied.get(str(at[0]), -1))}
    event_ids = profile.event_ids
    if event.event_id is not None:
        event_ids = [event.event_id, *event_ids][:DEDUP_WINDOW]
    return replace(profile, applied=applied, event_ids=event_ids)
