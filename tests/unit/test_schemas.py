"""The committed JSON Schemas in ``schemas/`` match the pydantic models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.schemas import SCHEMA_MODELS, json_schemas

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"
REFRESH = "run `eddy schema` to refresh them (it writes schemas/*.schema.json)"


def rendered(body: object) -> str:
    """Exactly what ``eddy schema`` writes."""
    return json.dumps(body, indent=2, sort_keys=True) + "\n"


def test_every_model_has_a_committed_schema_and_nothing_else() -> None:
    committed = {p.name for p in SCHEMAS_DIR.glob("*.schema.json")}
    expected = {f"{name}.schema.json" for name in json_schemas()}
    assert committed == expected, (
        f"schemas/ holds {sorted(committed)} but the models give {sorted(expected)}; {REFRESH}"
    )


@pytest.mark.parametrize("name", sorted(SCHEMA_MODELS))
def test_committed_schema_is_up_to_date(name: str) -> None:
    path = SCHEMAS_DIR / f"{name}.schema.json"
    assert path.exists(), f"{path} is missing; {REFRESH}"
    assert path.read_text() == rendered(json_schemas()[name]), (
        f"{path} is out of date with models/ ({SCHEMA_MODELS[name].__name__}); {REFRESH}"
    )


def test_schemas_describe_the_wire_contract() -> None:
    schemas = json_schemas()
    event = schemas["event"]
    assert event["additionalProperties"] is False
    assert set(event["required"]) == {"type", "user_id", "item_id", "ts"}
    assert event["properties"]["user_id"]["pattern"] == "^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$"
    item = schemas["item"]
    assert item["additionalProperties"] is False
    assert item["required"] == ["item_id"]
    reclist = schemas["reclist"]
    assert set(reclist["required"]) == {
        "user_id",
        "items",
        "generated_at",
        "event_ts",
        "model_version",
    }
