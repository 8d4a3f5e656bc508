"""The event contract: what is accepted, and why everything else is rejected."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from models.events import (
    DEFAULT_MAX_FUTURE_SKEW_S,
    ID_PATTERN,
    MAX_PAYLOAD_BYTES,
    MIN_TS,
    DecodeError,
    Event,
    EventType,
    ForgetUser,
    ItemUpsert,
    check_ts,
    decode_control,
    decode_event,
    decode_item,
    decode_message,
    encode,
    is_valid_id,
)

NOW = 1_700_000_000.0
ID_MSG = f"String should match pattern '{ID_PATTERN}'"


def raw(**fields: Any) -> bytes:
    body: dict[str, Any] = {"type": "view", "user_id": "u1", "item_id": "i1", "ts": NOW - 60}
    body.update(fields)
    return json.dumps(body).encode()


def reason_of(payload: bytes | None, **kw: Any) -> str:
    with pytest.raises(DecodeError) as info:
        decode_event(payload, now=NOW, **kw)
    assert str(info.value) == info.value.reason
    return info.value.reason


def item_reason(payload: bytes | None) -> str:
    with pytest.raises(DecodeError) as info:
        decode_item(payload)
    return info.value.reason


# --- valid events --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["view", "click", "add_to_cart", "purchase"])
def test_each_event_type_decodes_with_defaults(kind: str) -> None:
    event = decode_event(raw(type=kind), now=NOW)
    assert event == Event(type=EventType(kind), user_id="u1", item_id="i1", ts=NOW - 60)
    assert event.type is EventType(kind)
    assert event.quantity == 1
    assert event.session_id is None
    assert event.price is None
    assert event.rec_id is None
    assert event.event_id is None


def test_all_optional_fields_are_kept() -> None:
    event = decode_event(
        raw(
            type="purchase",
            session_id="s-9",
            quantity=3,
            price=19.99,
            rec_id="rec.42",
            event_id="e@1",
        ),
        now=NOW,
    )
    assert event.session_id == "s-9"
    assert event.quantity == 3
    assert event.price == 19.99
    assert event.rec_id == "rec.42"
    assert event.event_id == "e@1"


def test_integer_ts_is_accepted_as_seconds() -> None:
    assert decode_event(raw(ts=1_699_999_000), now=NOW).ts == 1_699_999_000.0


def test_quantity_and_price_bounds() -> None:
    assert decode_event(raw(quantity=10_000), now=NOW).quantity == 10_000
    assert decode_event(raw(price=0), now=NOW).price == 0.0
    assert reason_of(raw(quantity=0)) == "quantity: Input should be greater than or equal to 1"
    assert reason_of(raw(quantity=10_001)) == (
        "quantity: Input should be less than or equal to 10000"
    )
    assert reason_of(raw(price=-0.01)) == "price: Input should be greater than or equal to 0"


# --- payload-level rejections ---------------------------------------------------------


@pytest.mark.parametrize("payload", [None, b""])
def test_empty_payload(payload: bytes | None) -> None:
    assert reason_of(payload) == "empty payload"
    assert item_reason(payload) == "empty payload"


def test_not_json() -> None:
    reason = reason_of(b"not json")
    assert reason.startswith("payload: Invalid JSON")


@pytest.mark.parametrize("payload", [b'"a string"', b"[]", b"42", b"null"])
def test_json_that_is_not_an_object(payload: bytes) -> None:
    assert reason_of(payload) == "payload: Input should be an object"


@pytest.mark.parametrize(
    "payload",
    [b"[" * 5_000 + b"]" * 5_000, b'{"a":' * 5_000 + b"1" + b"}" * 5_000],
    ids=["arrays", "objects"],
)
def test_deeply_nested_json_is_rejected_not_crashing(payload: bytes) -> None:
    reason = reason_of(payload)
    assert reason.startswith("payload: Invalid JSON")
    assert "recursion limit" in reason


def test_payload_size_limit_is_exactly_64_kib() -> None:
    body = raw()
    at_limit = body + b" " * (MAX_PAYLOAD_BYTES - len(body))
    assert len(at_limit) == MAX_PAYLOAD_BYTES == 65_536
    assert decode_event(at_limit, now=NOW).user_id == "u1"
    over = at_limit + b" "
    assert reason_of(over) == "payload is 65537 bytes, over the 65536 limit"
    assert item_reason(b'{"item_id":"i1"}' + b" " * MAX_PAYLOAD_BYTES) == (
        f"payload is {MAX_PAYLOAD_BYTES + 16} bytes, over the 65536 limit"
    )


# --- field-level rejections -----------------------------------------------------------


def test_missing_fields_are_all_named() -> None:
    assert reason_of(b'{"type": "view"}') == (
        "user_id: Field required; item_id: Field required; ts: Field required"
    )


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"quantity": "2"}, "quantity: Input should be a valid integer"),
        ({"quantity": 2.0}, "quantity: Input should be a valid integer"),
        ({"quantity": True}, "quantity: Input should be a valid integer"),
        ({"ts": "1700000000"}, "ts: Input should be a valid number"),
        ({"user_id": 1}, "user_id: Input should be a valid string"),
        ({"item_id": None}, "item_id: Input should be a valid string"),
        ({"price": "9.99"}, "price: Input should be a valid number"),
        ({"session_id": ["s"]}, "session_id: Input should be a valid string"),
    ],
)
def test_wrong_types_are_rejected_strictly(fields: dict[str, Any], expected: str) -> None:
    assert reason_of(raw(**fields)) == expected


def test_unknown_type() -> None:
    assert reason_of(raw(type="like")) == (
        "type: Input should be 'view', 'click', 'add_to_cart' or 'purchase'"
    )


def test_extra_field() -> None:
    assert reason_of(raw(colour="red")) == "colour: Extra inputs are not permitted"


@pytest.mark.parametrize(
    ("literal", "field"),
    [("NaN", "ts"), ("Infinity", "ts"), ("-Infinity", "ts"), ("NaN", "price")],
)
def test_nan_and_infinity(literal: str, field: str) -> None:
    fields = {"ts": NOW - 60, "price": 1.0}
    body = json.dumps({"type": "view", "user_id": "u1", "item_id": "i1", **fields})
    body = body.replace(json.dumps(fields[field]), literal, 1)
    assert literal in body
    assert reason_of(body.encode()) == f"{field}: Input should be a finite number"


# --- event time -------------------------------------------------------------------------


def test_ts_in_milliseconds_gets_a_hint() -> None:
    reason = reason_of(raw(ts=NOW * 1000))
    assert reason == (
        "ts: Value error, ts 1700000000000 is more than 86400s in the future"
        " (milliseconds? send unix seconds)"
    )


def test_ts_before_1990() -> None:
    assert reason_of(raw(ts=MIN_TS - 1)) == "ts: Value error, ts 631151999 is before 1990-01-01"
    assert decode_event(raw(ts=MIN_TS), now=NOW).ts == MIN_TS


def test_ts_future_skew_is_relative_to_injected_now() -> None:
    limit = NOW + DEFAULT_MAX_FUTURE_SKEW_S
    assert decode_event(raw(ts=limit), now=NOW).ts == limit
    assert reason_of(raw(ts=limit + 1)) == (
        "ts: Value error, ts 1700086401 is more than 86400s in the future"
    )
    # The same event is fine for a worker whose clock is a day later.
    assert decode_event(raw(ts=limit + 1), now=NOW + 86_400).ts == limit + 1


def test_custom_future_skew() -> None:
    assert reason_of(raw(ts=NOW + 11), max_future_skew_s=10) == (
        "ts: Value error, ts 1700000011 is more than 10s in the future"
    )
    assert decode_event(raw(ts=NOW + 10), now=NOW, max_future_skew_s=10).ts == NOW + 10


def test_check_ts_directly() -> None:
    assert check_ts(NOW, now=NOW, max_future_skew_s=0) == NOW
    with pytest.raises(ValueError, match="finite"):
        check_ts(float("nan"), now=NOW, max_future_skew_s=1)
    with pytest.raises(ValueError, match="milliseconds"):
        check_ts(NOW * 1000, now=NOW, max_future_skew_s=1)
    with pytest.raises(ValueError, match="before 1990"):
        check_ts(0.0, now=NOW, max_future_skew_s=1)


# --- ids -------------------------------------------------------------------------------

BAD_IDS = [
    "a:b",
    "a*",
    "a?",
    "a[1]",
    "a{b}",
    "{a}",
    "a b",
    " a",
    "a\tb",
    "a\x00",
    "a\x7f",
    "a\n",
    "_popular",
    "_a",
    ".a",
    "-a",
    "@a",
    "a" * 129,
    "",
    "é",
    "caf\u00e9",
    "u\u0661",  # Arabic-Indic digit one
    "\uff41",  # fullwidth a
]


@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
@pytest.mark.parametrize("field", ["user_id", "item_id", "session_id", "rec_id", "event_id"])
def test_unsafe_ids_are_rejected(field: str, bad: str) -> None:
    assert reason_of(raw(**{field: bad})) == f"{field}: {ID_MSG}"


@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
def test_unsafe_item_ids_are_rejected_on_upserts(bad: str) -> None:
    assert item_reason(json.dumps({"item_id": bad}).encode()) == f"item_id: {ID_MSG}"


@pytest.mark.parametrize("good", ["a", "A" * 128, "0", "user.1", "a@b.com", "x-y_z", "9_"])
def test_safe_ids_are_accepted(good: str) -> None:
    assert decode_event(raw(user_id=good), now=NOW).user_id == good
    assert is_valid_id(good)


@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
def test_is_valid_id_rejects_unsafe_ids(bad: str) -> None:
    assert not is_valid_id(bad)


def test_is_valid_id_rejects_trailing_newline() -> None:
    # Regression: re.match with "$" also matched before a trailing newline.
    assert not is_valid_id("a\n")
    assert not is_valid_id("abc\n")


@given(st.from_regex(ID_PATTERN, fullmatch=True))
def test_any_id_matching_the_pattern_round_trips(ident: str) -> None:
    event = Event(type=EventType.CLICK, user_id=ident, item_id=ident, ts=NOW, session_id=ident)
    back = decode_event(encode(event), now=NOW)
    assert back == event
    assert back.user_id == ident
    item = ItemUpsert(item_id=ident)
    assert decode_item(encode(item)) == item


FORBIDDEN = set(":*?[]{}")


@given(st.text(max_size=12) | st.from_regex(ID_PATTERN, fullmatch=True))
@example("a\n")
@example("a b")
@example("a:b")
def test_any_accepted_id_has_no_key_unsafe_characters(candidate: str) -> None:
    try:
        event = decode_event(raw(user_id=candidate), now=NOW)
    except DecodeError:
        return
    assert event.user_id == candidate
    assert not FORBIDDEN & set(candidate)
    assert not any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in candidate)
    assert not candidate.startswith("_")
    assert 1 <= len(candidate) <= 128


@given(st.text(max_size=12) | st.from_regex(ID_PATTERN, fullmatch=True))
@example("a\n")
def test_is_valid_id_agrees_with_the_decoder(candidate: str) -> None:
    try:
        decode_event(raw(user_id=candidate), now=NOW)
        accepted = True
    except DecodeError:
        accepted = False
    assert is_valid_id(candidate) is accepted


# --- item upserts ----------------------------------------------------------------------


def test_item_defaults() -> None:
    item = decode_item(b'{"item_id": "i1"}')
    assert item == ItemUpsert(item_id="i1", title="", categories=(), tags=(), price=None)
    assert item.available is True


def test_item_with_all_fields() -> None:
    body = {
        "item_id": "i1",
        "title": "Star Wars: Episode IV — A New Hope é",
        "categories": ["Sci-Fi", "Film Noir"],
        "tags": ["space"],
        "price": 9.5,
        "available": False,
    }
    item = decode_item(json.dumps(body).encode())
    assert item.title == body["title"]
    assert item.categories == ("Sci-Fi", "Film Noir")
    assert item.tags == ("space",)
    assert item.price == 9.5
    assert item.available is False


def test_item_category_and_tag_limits() -> None:
    assert (
        len(decode_item(json.dumps({"item_id": "i", "categories": ["c"] * 32}).encode()).categories)
        == 32
    )
    assert item_reason(json.dumps({"item_id": "i", "categories": ["c"] * 33}).encode()) == (
        "categories: Tuple should have at most 32 items after validation, not 33"
    )
    assert len(decode_item(json.dumps({"item_id": "i", "tags": ["t"] * 64}).encode()).tags) == 64
    assert item_reason(json.dumps({"item_id": "i", "tags": ["t"] * 65}).encode()) == (
        "tags: Tuple should have at most 64 items after validation, not 65"
    )


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("", "String should have at least 1 character"),
        ("x" * 65, "String should have at most 64 characters"),
        ("a\tb", "String should match pattern '^[^\\x00-\\x1f\\x7f]+$'"),
        ("a\x7f", "String should match pattern '^[^\\x00-\\x1f\\x7f]+$'"),
    ],
)
@pytest.mark.parametrize("field", ["categories", "tags"])
def test_item_bad_labels(field: str, label: str, expected: str) -> None:
    payload = json.dumps({"item_id": "i", field: ["ok", label]}).encode()
    assert item_reason(payload) == f"{field}.1: {expected}"


@pytest.mark.parametrize("title", ["Star\nWars", "tab\there", "bell\x07", "del\x7f"])
def test_item_title_with_control_characters(title: str) -> None:
    payload = json.dumps({"item_id": "i", "title": title}).encode()
    assert item_reason(payload) == "title: Value error, title contains control characters"


def test_item_title_too_long_and_wrong_types() -> None:
    assert decode_item(json.dumps({"item_id": "i", "title": "x" * 512}).encode()).title == "x" * 512
    assert item_reason(json.dumps({"item_id": "i", "title": "x" * 513}).encode()) == (
        "title: String should have at most 512 characters"
    )
    assert item_reason(b'{"item_id": "i", "available": "false"}') == (
        "available: Input should be a valid boolean"
    )
    assert item_reason(b'{"item_id": "i", "available": 1}') == (
        "available: Input should be a valid boolean"
    )
    assert item_reason(b'{"item_id": "i", "categories": "Drama"}') == (
        "categories: Input should be a valid array"
    )
    assert item_reason(b'{"item_id": "i", "owner": "x"}') == (
        "owner: Extra inputs are not permitted"
    )
    assert item_reason(b'{"title": "x"}') == "item_id: Field required"


# --- encode ----------------------------------------------------------------------------


def test_encode_omits_none_fields() -> None:
    event = Event(type=EventType.VIEW, user_id="u", item_id="i", ts=NOW)
    assert json.loads(encode(event)) == {
        "type": "view",
        "user_id": "u",
        "item_id": "i",
        "ts": NOW,
        "quantity": 1,
    }
    assert json.loads(encode(ItemUpsert(item_id="i"))) == {
        "item_id": "i",
        "title": "",
        "categories": [],
        "tags": [],
        "available": True,
    }


def test_encode_is_compact_and_round_trips_all_fields() -> None:
    event = Event(
        type=EventType.PURCHASE,
        user_id="u",
        item_id="i",
        ts=NOW,
        session_id="s",
        quantity=2,
        price=3.5,
        rec_id="r",
        event_id="e",
    )
    wire = encode(event)
    assert b" " not in wire
    assert decode_event(wire, now=NOW) == event


def test_a_reason_never_carries_control_characters_from_the_payload() -> None:
    raw = b'{"type": "click", "user_id": "u", "item_id": "i", "ts": 1700000000, "a\\nFAKE LOG": 1}'
    with pytest.raises(DecodeError) as caught:
        decode_event(raw)
    assert "\n" not in caught.value.reason
    assert caught.value.reason.startswith(r"a\nFAKE LOG: ")


# --- control messages ------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b'{"type": "forget", "user_id": "c172"}',
        b'{"type":"\\u0066orget","user_id":"c172"}',
        b'{"user_id": "c172", "type": "f\\u006frget"}',
        b'{"type": "click", "type": "forget", "user_id": "c172"}',  # the last key wins
    ],
    ids=["plain", "escaped-type", "escaped-later", "duplicate-type"],
)
def test_a_forget_is_recognised_by_its_parsed_type(payload: bytes) -> None:
    assert decode_control(payload) == ForgetUser(type="forget", user_id="c172")


@pytest.mark.parametrize(
    "payload",
    [
        b'{"type": "click", "user_id": "forget", "item_id": "forget", "ts": 1699999000}',
        b'{"type": "forget", "type": "click", "user_id": "u1", "item_id": "i1", "ts": 1699999000}',
        b'{"type": "view", "user_id": "u1", "item_id": "i1", "ts": 1699999000, "rec_id": "forget"}',
    ],
)
def test_an_event_mentioning_forget_is_an_event(payload: bytes) -> None:
    assert decode_control(payload) is None
    assert isinstance(decode_event(payload, now=NOW), Event)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (
            b'{"type": "forget", "user_id": "u1", "extra": 1}',
            "forget control message: extra: Extra inputs are not permitted",
        ),
        (
            b'{"type": "\\u0066orget", "user_id": "u1", "reason": "gdpr"}',
            "forget control message: reason: Extra inputs are not permitted",
        ),
        (b'{"type": "forget"}', "forget control message: user_id: Field required"),
        (
            b'{"type": "forget", "user_id": "bad id"}',
            f"forget control message: user_id: {ID_MSG}",
        ),
    ],
)
def test_an_invalid_forget_gets_a_forget_reason(payload: bytes, expected: str) -> None:
    """What ``eddy.events`` consumers do: not a control message, so decode it as an event."""
    assert decode_control(payload) is None
    assert reason_of(payload) == expected


def test_decode_message_parses_once_and_returns_what_the_type_says() -> None:
    assert decode_message(b'{"type":"\\u0066orget","user_id":"c172"}') == ForgetUser(
        type="forget", user_id="c172"
    )
    event = decode_message(raw(type="click"), now=NOW)
    assert event == decode_event(raw(type="click"), now=NOW)
    with pytest.raises(DecodeError) as info:
        decode_message(b'{"type": "forget", "user_id": "u1", "extra": 1}')
    assert info.value.reason == "forget control message: extra: Extra inputs are not permitted"
    with pytest.raises(DecodeError) as info:
        decode_message(raw(ts=NOW * 1000), now=NOW)
    assert info.value.reason.startswith("ts: Value error, ts 1700000000000 is more than")
    with pytest.raises(DecodeError) as info:
        decode_message(None)
    assert info.value.reason == "empty payload"


def test_a_valid_forget_is_not_an_event() -> None:
    assert reason_of(b'{"type": "forget", "user_id": "u1"}') == (
        "forget control message: a control message, not an event"
    )
