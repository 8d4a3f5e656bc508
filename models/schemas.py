"""JSON Schemas of the wire formats, generated from the pydantic models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from models.events import Event, ItemUpsert
from models.reclist import RecList

SCHEMA_MODELS: dict[str, type[BaseModel]] = {"event": Event, "item": ItemUpsert, "reclist": RecList}


def json_schemas() -> dict[str, dict[str, Any]]:
    """``{name: schema}`` for events, item upserts and Redis lists."""
    return {name: model.model_json_schema() for name, model in SCHEMA_MODELS.items()}
