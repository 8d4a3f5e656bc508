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


# --- the committed event schema and the decoder agree on the boundaries --------------------

NOW = 1_700_000_000.0
BASE = '{"type": "view", "user_id": "u1", "item_id": "i1", "ts": 1699999000'
BOUNDARIES = [
    # (field, JSON token): the whole payload is BASE plus that one field
    *[("price", tok) for tok in ["0", "-0.0", "59.9", "1000000000", "1e9", "1000000000.0"]],
    *[("price", tok) for tok in ["1000000001", "1000000000.000001", "-0.01", "1e10"]],
    *[("price", tok) for tok in ["null", '"9.99"', "true"]],
    *[("quantity", tok) for tok in ["1", "10000", "0", "10001", "-1", "2.5", '"2"', "true"]],
    ("quantity", "null"),
    *[("ts", tok) for tok in ["631152000", "631152000.0", "631151999", "631151999.5"]],
    *[("ts", tok) for tok in ["1700000000", '"1700000000"', "true", "null"]],
    *[("user_id", f'"{v}"') for v in ["a", "A" * 128, "A" * 129, "_a", "a:b", "a b", ""]],
    ("session_id", "null"),
    ("colour", '"red"'),
]
INTEGRAL_FLOATS = ["1.0", "2e0", "1E2", "10000.0"]
"""Whole-number quantities written with a fraction or an exponent: the decoder rejects
them, but JSON Schema compares numbers by value (1.0 is the integer 1), so no schema can."""


def event_schema() -> dict[str, object]:
    body: dict[str, object] = json.loads((SCHEMAS_DIR / "event.schema.json").read_text())
    return body


def decoder_accepts(payload: bytes) -> bool:
    from models.events import DecodeError, decode_event

    try:
        decode_event(payload, now=NOW)
    except DecodeError:
        return False
    return True


@pytest.mark.parametrize(("field", "token"), BOUNDARIES)
def test_the_event_schema_and_the_decoder_agree(field: str, token: str) -> None:
    from jsonschema import Draft202012Validator

    payload = f'{BASE}, "{field}": {token}}}'.encode()
    schema_accepts = Draft202012Validator(event_schema()).is_valid(json.loads(payload))
    assert schema_accepts == decoder_accepts(payload), payload


@pytest.mark.parametrize("token", INTEGRAL_FLOATS)
def test_a_quantity_with_a_fraction_or_exponent_is_rejected_and_the_schema_says_so(
    token: str,
) -> None:
    from jsonschema import Draft202012Validator

    payload = f'{BASE}, "quantity": {token}}}'.encode()
    assert not decoder_accepts(payload)
    assert Draft202012Validator(event_schema()).is_valid(json.loads(payload))  # by value
    quantity = event_schema()["properties"]["quantity"]  # type: ignore[index]
    assert "2.0" in quantity["description"], quantity


def test_an_unvalidated_rec_item_is_a_validated_one() -> None:
    """``rec_item`` (the ranker's cheap constructor) builds what validation builds."""
    from models.reclist import RecItem, RecList, rec_item

    fast = rec_item("i1", 0.25, "because you clicked X", 0.9)
    slow = RecItem(item_id="i1", score=0.25, reason="because you clicked X", propensity=0.9)
    assert fast == slow
    assert fast.model_dump_json() == slow.model_dump_json()
    assert fast.model_fields_set == slow.model_fields_set
    doc = RecList(user_id="u", items=[fast], generated_at=1.0, event_ts=None, model_version="m")
    assert RecList.model_validate_json(doc.model_dump_json()).items == [slow]
    with pytest.raises(ValueError, match="frozen"):
        fast.score = 1.0  # type: ignore[misc]
