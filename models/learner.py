"""One event's online learning, shared by the worker and the offline evaluator.

``learn_profile`` moves the user (categories, history, taste vector); ``item_context``
names the items the event's item is moved toward (``ItemState.step``, on the worker
that owns the item). Keeping both here means ``eddy evaluate`` measures exactly what
``eddy worker`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from models.events import Event
from models.online import decayed_mass, update_user_vector
from models.profile import ProfileConfig, UserProfile, apply_event, event_weight

CONTEXT_SIZE = 8
"""Recent history items sent with an item update."""


def learn_profile(
    before: UserProfile | None,
    event: Event,
    categories: Sequence[str],
    cfg: ProfileConfig,
    item_vector: npt.ArrayLike | None,
) -> UserProfile:
    """``before`` after ``event``: affinities and history, and the taste vector moved
    toward ``item_vector`` (weighted by event type, decayed by time) when there is one."""
    profile = apply_event(before, event, categories, cfg)
    weight = event_weight(event, cfg.event_weights)
    if item_vector is None or weight <= 0:
        return profile
    dt = event.ts - before.last_ts if before is not None else 0.0
    hl = cfg.half_life_s
    vector = update_user_vector(
        profile.vector, np.asarray(item_vector), weight, dt, hl, mass=profile.mass
    )
    mass = decayed_mass(profile.mass, weight, dt, hl)
    rounded: list[float] = np.round(np.asarray(vector, dtype=np.float64), 6).tolist()
    return replace(profile, vector=rounded, mass=mass)


def item_context(profile: UserProfile) -> list[str]:
    """The items the newest event's item moves toward: the user's other recent items."""
    return list(profile.recent[1 : 1 + CONTEXT_SIZE])
