"""The recommendation document Eddy writes to Redis (``{prefix}:rec:{user_id}``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

POPULAR_USER = "_popular"
"""Pseudo user id of the global fallback list (``{prefix}:rec:_popular``)."""


class RecItem(BaseModel):
    """One recommended item with a score and a reason the product can display."""

    model_config = ConfigDict(frozen=True)

    item_id: str
    score: float
    reason: str
    propensity: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="Probability that the policy put this item in this slot (for IPS).",
    )


_ITEM_FIELDS = frozenset(RecItem.model_fields)


def rec_item(item_id: str, score: float, reason: str, propensity: float) -> RecItem:
    """A ``RecItem`` of values the ranker has already checked, unvalidated.

    What ``RecItem.model_construct`` builds, at a third of its cost (the ranker builds
    one per slot of every list); ``tests/unit/test_schemas.py`` holds it to a validated
    ``RecItem``."""
    item = RecItem.__new__(RecItem)
    fields = {"item_id": item_id, "score": score, "reason": reason, "propensity": propensity}
    object.__setattr__(item, "__dict__", fields)
    object.__setattr__(item, "__pydantic_fields_set__", _ITEM_FIELDS)
    object.__setattr__(item, "__pydantic_extra__", None)
    object.__setattr__(item, "__pydantic_private__", None)
    return item


class RecList(BaseModel):
    """A user's current list, as stored in Redis (JSON)."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    items: list[RecItem]
    rec_id: str | None = Field(
        default=None,
        description="Id of this list; send it back as the event's rec_id for attribution.",
    )
    generated_at: float = Field(description="When the list was computed, unix seconds.")
    event_ts: float | None = Field(
        description="Event time of the newest event the list reflects (None for fallbacks)."
    )
    model_version: str
    variant: str | None = Field(
        default=None, description="A/B variant the user is in (None: no experiment running)."
    )


def category_slug(category: str) -> str:
    """Key-safe form of a category name: ``"Film Noir" -> "film-noir"``, ``"Драма" ->
    "драма"``: letters and digits (any script) kept, lower-cased, anything else a dash."""
    out = []
    dash = False
    for ch in category.lower():
        if ch.isalnum():
            out.append(ch)
            dash = False
        elif not dash:
            out.append("-")
            dash = True
    slug = "".join(out).strip("-")
    return slug or "_"
