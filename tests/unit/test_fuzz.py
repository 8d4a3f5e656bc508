"""Hostile input (issue 6): property-based fuzzing of the decoders and of the event path.

Every payload is judged twice: by the product (``decode_event``, ``decode_item``,
``streams.worker.Worker``) and by an independent oracle written from the documented contract
(README "Events", ``schemas/``), which parses with the standard library's ``json``. The
properties:

* nothing raises but ``DecodeError``, and its reason is a non-empty, encodable string;
* the product accepts exactly the payloads the oracle accepts, with the oracle's values;
* accepted ids make Redis keys that cannot escape their segment or collide;
* an accepted event or item re-encodes and decodes to itself;
* through ``Worker`` (``MemorySink``, micro-batches): no exception, ``Rejected``
  exactly when the decoder rejects or the message key is wrong, a reason about as small
  as the payload, counters equal to the accepted, duplicate and rejected counts, a list
  and profile in the sink for exactly the accepted users, and every key well-formed.

Runs are reproducible (``derandomize=True``, no example database). ``EXAMPLES`` counts
the examples each property actually ran and ``JUDGED`` the payloads judged, by outcome;
the last test prints both (``pytest tests/unit/test_fuzz.py -s``).
"""

from __future__ import annotations

import asyncio
import json
import math
import operator
import re
import string
import time
from collections import Counter
from collections.abc import Callable
from functools import cache, partial
from pathlib import Path
from typing import Any, Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.artefact import ModelArtefact
from models.datasets import Dataset
from models.events import (
    DEFAULT_MAX_FUTURE_SKEW_S,
    ID_PATTERN,
    MAX_PAYLOAD_BYTES,
    MIN_TS,
    DecodeError,
    Event,
    EventType,
    ItemUpsert,
    decode_event,
    decode_item,
    encode,
)
from models.itemlearn import decode as decode_records
from models.itemlearn import decode_deltas, learn
from models.itemlearn import encode as encode_records
from models.reclist import POPULAR_USER
from models.step import Inbound
from models.training import TrainConfig, train
from streams.settings import Settings
from streams.sink import MemorySink
from streams.worker import Rejected, Worker

NOW: Final = 1_700_000_000.0
"""The decoder's clock in the decoder properties (2023-11-14)."""
SKEW: Final = DEFAULT_MAX_FUTURE_SKEW_S
FAR_FUTURE: Final = 4_102_444_800.0
"""2100-01-01: rejected by any worker clock of this century."""

EXAMPLES: Counter[str] = Counter()
"""Examples Hypothesis actually ran, per property (printed by ``test_zz_cases_tried``)."""
JUDGED: Counter[str] = Counter()
"""Payloads judged against the oracle, by outcome."""
REASONS: Counter[str] = Counter()
"""Decoder rejections by the field their reason names first (``payload``: JSON or size)."""


def fuzz(max_examples: int) -> Callable[[Any], Any]:
    """Reproducible Hypothesis settings for one property.

    ``deadline=None``: a single 64 KiB payload or a processor batch with a flush can
    take tens of milliseconds on a loaded 2-core CI machine; a per-example deadline would
    make the suite flaky without finding anything the properties do not."""
    return settings(max_examples=max_examples, derandomize=True, database=None, deadline=None)


# --- the oracle: the documented contract, written independently of models.events ----------

ID_RULE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}", re.ASCII)
"""README: 1-128 chars of ``A-Z a-z 0-9 . _ @ -``, starting alphanumeric."""
EVENT_TYPES: Final = ("view", "click", "add_to_cart", "purchase")
EVENT_REQUIRED: Final = frozenset({"type", "user_id", "item_id", "ts"})
EVENT_FIELDS: Final = EVENT_REQUIRED | {"session_id", "quantity", "price", "rec_id", "event_id"}
ITEM_FIELDS: Final = frozenset({"item_id", "title", "categories", "tags", "price", "available"})
MAX_REASON_OVERHEAD: Final = 1024
"""A dead letter's reason is at most this much longer than the payload it rejects, so the
dead letter stays about as big as the original message (it carries key and value too)."""
KEY_UNSAFE: Final = frozenset(":*?[]{}\\\"' \t\r\n\x00")
"""Characters that could split, glob, hash-tag or quote a Redis key segment."""


class InvalidError(Exception):
    """The oracle's verdict on a payload that breaks the contract."""


def _constant(token: str) -> float:
    """``NaN``/``Infinity`` tokens parse (as pydantic's parser does) and then fail every
    number field, which must be finite; a duplicate key may shadow them (last one wins)."""
    return float(token)


def _parser_depth_limit() -> int:
    """The deepest nesting the product's JSON parser accepts, measured once.

    RFC 8259 section 9 leaves the nesting limit to the parser, so the oracle takes the
    product's; a valid payload needs two levels, so it only decides nested values that a
    duplicate key later shadows (the last occurrence of a key wins)."""
    depth = 1
    while depth < 100_000:
        try:
            decode_item(b"[" * (depth + 1) + b"]" * (depth + 1))
        except DecodeError as exc:
            if "recursion limit" in exc.reason:
                return depth
        depth += 1
    raise AssertionError("no nesting limit")  # pragma: no cover


PARSER_MAX_DEPTH: Final = _parser_depth_limit()


class _Object(dict[str, Any]):
    """A parsed JSON object that remembers values shadowed by a later duplicate key."""

    every_value: list[Any]


def _object_pairs(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object(pairs)  # the last occurrence of a key wins, as in the product's parser
    obj.every_value = [v for _, v in pairs]
    return obj


def parse(raw: bytes | None) -> Any:
    """The JSON document in ``raw``: strict UTF-8, no lone surrogate escapes, nested at
    most ``PARSER_MAX_DEPTH`` levels (counting values a duplicate key shadows)."""
    if not raw:
        raise InvalidError("empty payload")
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise InvalidError("over 64 KiB")
    try:
        text = raw.decode("utf-8")
        doc = json.loads(text, parse_constant=_constant, object_pairs_hook=_object_pairs)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise InvalidError(f"not JSON: {exc}") from None
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:  # iterative: documents may be nested deeply
        node, depth = stack.pop()
        if isinstance(node, dict | list) and depth > PARSER_MAX_DEPTH:
            raise InvalidError("nested too deeply")
        if isinstance(node, _Object):
            stack.extend((v, depth + 1) for v in node.every_value)
            stack.extend((k, depth) for k in node)
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
        elif isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidError("lone surrogate escape") from None
    return doc


def _id(value: Any, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if isinstance(value, str) and ID_RULE.fullmatch(value):
        return value
    raise InvalidError(f"bad id {value!r:.40}")


def _number(value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidError("not a number")
    try:
        number = float(value)
    except OverflowError:
        raise InvalidError("not finite") from None
    if not (math.isfinite(number) and low <= number <= high):
        raise InvalidError(f"{number} out of [{low}, {high}]")
    return number


def _printable(value: Any, low: int, high: int) -> str:
    if not isinstance(value, str) or not low <= len(value) <= high:
        raise InvalidError("bad text")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise InvalidError("control character")
    return value


def _object(doc: Any, fields: frozenset[str], required: frozenset[str]) -> dict[str, Any]:
    if not isinstance(doc, dict) or not doc.keys() <= fields or not required <= doc.keys():
        raise InvalidError("not an object with the right fields")
    return doc


def expected_event(raw: bytes | None, *, now: float, skew: float = SKEW) -> dict[str, Any]:
    """The event ``raw`` must decode to, as ``Event.model_dump()``; else ``InvalidError``."""
    doc = _object(parse(raw), EVENT_FIELDS, EVENT_REQUIRED)
    if not isinstance(doc["type"], str) or doc["type"] not in EVENT_TYPES:
        raise InvalidError("bad type")
    quantity = doc.get("quantity", 1)
    if isinstance(quantity, bool) or not isinstance(quantity, int) or not 1 <= quantity <= 10_000:
        raise InvalidError("bad quantity")
    price = doc.get("price")
    return {
        "type": EventType(doc["type"]),
        "user_id": _id(doc["user_id"]),
        "item_id": _id(doc["item_id"]),
        "ts": _number(doc["ts"], MIN_TS, now + skew),
        "session_id": _id(doc.get("session_id"), optional=True),
        "quantity": quantity,
        "price": None if price is None else _number(price, 0.0, 1e9),
        "rec_id": _id(doc.get("rec_id"), optional=True),
        "event_id": _id(doc.get("event_id"), optional=True),
    }


def expected_item(raw: bytes | None) -> dict[str, Any]:
    """The upsert ``raw`` must decode to, as ``ItemUpsert.model_dump()``; else ``InvalidError``."""
    doc = _object(parse(raw), ITEM_FIELDS, frozenset({"item_id"}))
    labels: dict[str, tuple[str, ...]] = {}
    for name, most in (("categories", 32), ("tags", 64)):
        values = doc.get(name, [])
        if not isinstance(values, list) or len(values) > most:
            raise InvalidError(f"bad {name}")
        labels[name] = tuple(_printable(v, 1, 64) for v in values)
    available = doc.get("available", True)
    if not isinstance(available, bool):
        raise InvalidError("bad available")
    price = doc.get("price")
    return {
        "item_id": _id(doc["item_id"]),
        "title": _printable(doc.get("title", ""), 0, 512),
        "categories": labels["categories"],
        "tags": labels["tags"],
        "price": None if price is None else _number(price, 0.0, 1e9),
        "available": available,
    }


def verdict(judge: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
    try:
        return judge()
    except InvalidError:
        return None


# --- checks shared by the properties ---------------------------------------------------------


def assert_reason(reason: object) -> None:
    """A DLQ reason: a non-empty string that fits in a UTF-8 Kafka header."""
    assert isinstance(reason, str)
    assert reason.strip(), "empty reason"
    reason.encode("utf-8")  # strict: a lone surrogate here would crash the DLQ send


def assert_key_safe(s: Settings, kind: str, ident: str) -> str:
    """``ident`` stays one segment of its Redis key and is no reserved name."""
    assert re.fullmatch(ID_PATTERN, ident), ident
    key = s.key(kind, ident)
    assert key.split(":") == [*s.key_prefix.split(":"), kind, ident]
    assert key.count(":") == s.key_prefix.count(":") + 2
    assert not KEY_UNSAFE & set(ident)
    assert ident.isascii()
    assert ident.isprintable()
    assert not ident.startswith("_")  # _popular and future reserved names
    return key


def assert_written_keys_safe(s: Settings, keys: list[str]) -> None:
    """Every key the worker wrote is ``prefix:kind:id`` or ``prefix:rec:_popular[:slug]``."""
    prefix = s.key_prefix + ":"
    for key in keys:
        assert key.startswith(prefix), key
        parts = key[len(prefix) :].split(":")
        if parts[:2] == ["rec", POPULAR_USER]:  # a category slug: letters, digits, - or _
            assert len(parts) <= 3, key
            for slug in parts[2:]:
                assert slug, key
                assert all(ch.isalnum() or ch in "-_" for ch in slug), key
                assert slug == slug.lower(), key
        else:
            assert len(parts) == 2, key
            assert parts[0] in {"rec", "profile", "item"}, key
            assert_key_safe(s, parts[0], parts[1])


# --- building blocks of hostile payloads (also used by the integration fuzz) ----------------

UNSAFE_CHARS: Final = [
    ":", "*", "?", "[", "]", "{", "}", " ", "\t", "\n", "\r", "\x00", "\x1b", "\x7f",
    "\x85", "\xa0", "\u2028", "\u200b", "\u200e", "\u200f", "\u202e", "\ufeff", "\uff1a",
    "\ud800", "\udfff", "é", "😀", "_", ".", "@", "-", "/", "\\", '"', "'", "%", "$", "#",
]  # fmt: skip
"""Single characters to splice into otherwise valid ids."""

HOSTILE_IDS: Final = [
    "", "a:b", "u1:rec:u2", "eddy:rec:alice", ":", "*", "u*", "?", "u[12]", "{u1}", "u{1}",
    "{", "}", "a b", " a", "a ", "a\n", "a\r\n", "\n", "a\tb", "a\x00", "\x00", "a\x7f",
    "_popular", "_popular:action", "_", "_a", ".a", "-a", "@a", "a" * 128, "a" * 129,
    "a" * 4096, "é", "café", "ｕ1", "u\u0661", "u\u200b1", "u1\u202e", "\u202eu1",
    "\u200fu1", "\ud800", "u\udfff", "😀", "u1\ufeff", "null", "u1\\", '"', "a/../b", "%2A",
]  # fmt: skip
"""Ids crafted to escape, glob, hash-tag, collide with reserved keys, or look alike."""

HOSTILE_TEXT: Final = [
    "", " ", "\x00", "a\x00b", "\n", "Star\nWars", "tab\there", "bell\x07", "del\x7f",
    "nel\x85", "\u2028", "\u202egnp.exe", "\u200f\u200e", "\ufeff", "\ud800", "a\udfffb",
    "😀", "🏳️‍🌈", "e\u0301", "Ω≈ç√", "ｆｕｌｌ", "<script>alert(1)</script>", "${jndi:x}",
    "%s%n", "x" * 64, "x" * 65, "x" * 512, "x" * 513, "é" * 300,
]  # fmt: skip
"""Titles and labels: control chars, bidi marks, surrogates, lengths at the limits."""

NUMBER_TOKENS: Final = [
    "NaN", "-NaN", "Infinity", "-Infinity", "infinity", "nan", '"NaN"', '"Infinity"',
    '"-inf"', "1e400", "-1e400", "1E+400", "1e-400", "1" + "0" * 400, "-1" + "0" * 400,
    "1" + "0" * 5000, "0", "-0", "-0.0", "0.0", "1", "1.0", "1e0", "-1", "4.9e-324",
    "1.7976931348623157e308", "9007199254740993", "10000", "10001", "1000000000",
    "1000000000.0000001", "1000000001", "01", "+1", ".5", "1.", "0x10", "true", "false",
    "null", '"1"', "[1]", "{}",
]  # fmt: skip
"""JSON number tokens (and near misses) for ts, quantity and price."""

TS_TOKENS: Final = [
    repr(MIN_TS), repr(math.nextafter(MIN_TS, 0)), repr(MIN_TS - 1), "631152000", "631151999",
    "0", "-0", "-1", "-1e300", "1e300", repr(NOW), repr(NOW * 1000), repr(NOW + SKEW),
    repr(math.nextafter(NOW + SKEW, math.inf)), repr(NOW + SKEW + 1), repr(FAR_FUTURE),
    str(2**31), str(2**53 + 1), str(2**63), str(2**64), "true", "false", "null",
    '"1700000000"', '"2023-11-14T22:13:20Z"', "[1700000000]", '{"$date":1}',
]  # fmt: skip
"""Event times far in the past or future, at the limits, and of the wrong type."""

TYPE_TOKENS: Final = [
    '"VIEW"', '"View"', '" view"', '"view "', '"like"', '""', '"purchase\\u0000"',
    '"add-to-cart"', '"click\\u200b"', "0", "null", '["view"]',
]  # fmt: skip

EXTRA_KEYS: Final = [
    "colour", "", " ", "user_id ", "USER_ID", "userId", "__proto__", "constructor",
    "type\x00", "a\nb", "\ud800", "user\u200bid", "$where", "eddy.dlq.reason",
]  # fmt: skip
"""Unknown keys, including look-alikes of real ones."""


def nested(depth: int, kind: int) -> str:
    """A JSON value ``depth`` levels deep: arrays, objects, or both interleaved."""
    if kind == 0:
        return "[" * depth + "]" * depth
    if kind == 1:
        return '{"a":' * depth + "1" + "}" * depth
    return '[{"a":' * depth + "0" + "}]" * depth


def dumps(value: Any, ascii_only: bool) -> str:
    """JSON text; NaN/Infinity become bare tokens, surrogates stay lone escapes or chars."""
    return json.dumps(value, ensure_ascii=ascii_only)


def escaped(name: str) -> str:
    """A JSON key written with ``\\uXXXX`` escapes only (same key once parsed)."""
    return '"' + "".join(f"\\u{ord(ch):04x}" for ch in name) + '"'


def render(pairs: list[tuple[str, str]], ws: str) -> str:
    """An object from (key token, value token) pairs, spaced with JSON whitespace."""
    body = f"{ws},{ws}".join(f"{k}{ws}:{ws}{v}" for k, v in pairs)
    return f"{ws}{{{ws}{body}{ws}}}{ws}"


def to_bytes(text: str) -> bytes:
    """UTF-8, except that lone surrogates become (invalid) CESU-8 bytes."""
    return text.encode("utf-8", "surrogatepass")


def pad_to(text: str, size: int, ws: str = " ") -> bytes:
    """``text`` padded with JSON whitespace after its first ``{`` to ``size`` bytes if shorter."""
    raw = to_bytes(text)
    missing = size - len(raw)
    if missing <= 0 or not ws:
        return raw
    at = raw.find(b"{") + 1
    return raw[:at] + (ws.encode() * missing)[:missing] + raw[at:]


# --- Hypothesis strategies (built once: constructing strategies per draw is slow) ------------

ALNUM: Final = string.ascii_letters + string.digits
safe_ids = st.builds(
    operator.add, st.sampled_from(ALNUM), st.text(st.sampled_from(ALNUM + "._@-"), max_size=127)
)
"""Ids of the documented form (drawn directly: ``st.from_regex`` is several times slower)."""
pool_ids = st.sampled_from(["u1", "u2", "alice", "bob.smith@example.com", "A" * 128, "i-1"])
ids = st.one_of(pool_ids, safe_ids)


def _splice(base: str, at: int, ch: str) -> str:
    at %= len(base) + 1
    return base[:at] + ch + base[at:]


spliced_ids = st.builds(_splice, safe_ids, st.integers(0, 200), st.sampled_from(UNSAFE_CHARS))
long_strings = st.builds(
    operator.mul,
    st.sampled_from(["a", "é", "😀", "\x00", " ", "\u202e", "{"]),
    st.sampled_from([127, 128, 129, 512, 513, 4096, 32_768, 65_536, 70_000]),
)
unicode_text = st.one_of(
    st.text(st.characters(codec=None), max_size=24),
    st.text(st.sampled_from(UNSAFE_CHARS), max_size=8),
    st.sampled_from(HOSTILE_TEXT),
)
hostile_strings = st.one_of(st.sampled_from(HOSTILE_IDS), spliced_ids, unicode_text, long_strings)
json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | unicode_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(unicode_text, inner, max_size=4),
    max_leaves=12,
)
nested_tokens = st.builds(
    nested,
    st.one_of(st.integers(1, 8), st.integers(250, 260), st.integers(1, 5000)),
    st.integers(0, 2),
)
valid_ts = st.one_of(
    st.floats(MIN_TS, NOW),
    st.integers(int(MIN_TS), int(NOW)),
    st.sampled_from([MIN_TS, NOW + SKEW]),
)
valid_prices = st.one_of(st.floats(0, 1e9), st.integers(0, 10**9), st.sampled_from([0, -0.0, 1e9]))
JSON_CONSTANTS: Final = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
float_tokens = st.floats().map(repr).map(lambda r: JSON_CONSTANTS.get(r, r))
"""Any float as a JSON number token, NaN and the infinities as bare tokens."""
labels = st.lists(st.one_of(unicode_text, st.sampled_from(["ok", "Sci-Fi"])), max_size=70)
CONTROL_CHARS: Final = "".join(map(chr, [*range(0x20), *range(0x7F, 0xA0)]))
clean_chars = st.characters(codec="utf-8", exclude_characters=CONTROL_CHARS)
clean_labels = st.text(clean_chars, min_size=1, max_size=64)


def _as_json(values: st.SearchStrategy[Any], ascii_only: bool) -> st.SearchStrategy[str]:
    return values.map(lambda v: dumps(v, ascii_only))


@cache
def hostile_tokens(ascii_only: bool) -> st.SearchStrategy[str]:
    """Any JSON value text (or near-JSON), of any type, hostile or not."""
    return st.one_of(
        st.sampled_from(NUMBER_TOKENS),
        st.sampled_from(TS_TOKENS),
        _as_json(hostile_strings, ascii_only),
        float_tokens,
        st.integers().map(str),
        _as_json(json_values, ascii_only),
        nested_tokens,
    )


@cache
def field_tokens(name: str, ascii_only: bool) -> st.SearchStrategy[str]:
    """Near misses for one field, mixed with anything at all."""
    near: dict[str, st.SearchStrategy[str]] = {
        "ts": st.sampled_from(TS_TOKENS),
        "quantity": st.sampled_from(NUMBER_TOKENS),
        "price": st.sampled_from(NUMBER_TOKENS),
        "type": st.sampled_from(TYPE_TOKENS),
        "title": _as_json(unicode_text, ascii_only),
        "categories": _as_json(labels, ascii_only),
        "tags": _as_json(labels, ascii_only),
        "available": st.sampled_from(["0", "1", '"true"', "null", "true"]),
    }
    for id_field in ("user_id", "item_id", "session_id", "rec_id", "event_id"):
        near[id_field] = _as_json(hostile_strings, ascii_only)
    anything = hostile_tokens(ascii_only)
    return st.one_of(near[name], anything) if name in near else anything


event_types = st.sampled_from(EVENT_TYPES)
optional_ids = st.none() | ids
optional_prices = st.none() | valid_prices
quantities = st.integers(1, 10_000)
titles = st.text(clean_chars, max_size=40)
label_lists = {"categories": st.lists(clean_labels, max_size=32), "tags": st.lists(clean_labels)}
extra_keys = st.sampled_from(EXTRA_KEYS) | unicode_text
known_keys = {
    known: st.sampled_from(sorted(known)) | extra_keys for known in (EVENT_FIELDS, ITEM_FIELDS)
}
OPS: Final = ["replace", "drop", "extra", "duplicate", "escape", "shuffle"]
SPACES: Final = ["", " ", "\n", "\t", "\r\n"]


def event_fields(draw: st.DrawFn, ts: st.SearchStrategy[float] = valid_ts) -> dict[str, Any]:
    """A valid event as a dict (optional fields present or not)."""
    body: dict[str, Any] = {
        "type": draw(event_types),
        "user_id": draw(ids),
        "item_id": draw(ids),
        "ts": draw(ts),
    }
    for name in ("session_id", "rec_id", "event_id"):
        if draw(st.booleans()):
            body[name] = draw(optional_ids)
    if draw(st.booleans()):
        body["quantity"] = draw(quantities)
    if draw(st.booleans()):
        body["price"] = draw(optional_prices)
    return body


def item_fields(draw: st.DrawFn) -> dict[str, Any]:
    """A valid item upsert as a dict, with real-world unicode in its texts."""
    body: dict[str, Any] = {"item_id": draw(ids)}
    if draw(st.booleans()):
        body["title"] = draw(titles)
    for name, values in label_lists.items():
        if draw(st.booleans()):
            body[name] = draw(values)
    if draw(st.booleans()):
        body["price"] = draw(optional_prices)
    if draw(st.booleans()):
        body["available"] = draw(st.booleans())
    return body


def mutate(draw: st.DrawFn, fields: dict[str, Any], known: frozenset[str]) -> bytes:
    """``fields`` as JSON bytes after zero to two hostile mutations, maybe padded to ~64 KiB."""
    ascii_only = draw(st.booleans())
    pairs = [(dumps(k, ascii_only), dumps(v, ascii_only)) for k, v in fields.items()]
    for _ in range(draw(st.integers(0, 2))):
        op = draw(st.sampled_from(OPS))
        at = draw(st.integers(0, max(0, len(pairs) - 1)))
        if op == "replace" and pairs:
            name = json.loads(pairs[at][0])
            pairs[at] = (pairs[at][0], draw(field_tokens(name, ascii_only)))
        elif op == "drop" and pairs:
            del pairs[at]
        elif op == "extra":
            key = draw(known_keys[known])
            pairs.insert(at, (dumps(key, ascii_only), draw(field_tokens(key, ascii_only))))
        elif op == "duplicate" and pairs:
            name = json.loads(pairs[at][0])
            dup = (pairs[at][0], draw(field_tokens(name, ascii_only)))
            pairs.insert(draw(st.sampled_from([0, len(pairs)])), dup)
        elif op == "escape" and pairs:
            pairs[at] = (escaped(json.loads(pairs[at][0])), pairs[at][1])
        elif op == "shuffle":
            pairs = list(draw(st.permutations(pairs)))
    text = render(pairs, draw(st.sampled_from(SPACES)))
    if draw(st.integers(0, 9)) == 0:  # right at the size limit, either side
        size = MAX_PAYLOAD_BYTES + draw(st.integers(-3, 3))
        return pad_to(text, size, draw(st.sampled_from([" ", "\n", "\t", "\r"])))
    return to_bytes(text)


valid_event_fields = st.composite(event_fields)


@st.composite
def event_payloads(draw: st.DrawFn, ts: st.SearchStrategy[float] = valid_ts) -> bytes:
    """Valid events with zero to two hostile mutations."""
    return mutate(draw, event_fields(draw, ts), EVENT_FIELDS)


@st.composite
def item_payloads(draw: st.DrawFn) -> bytes:
    """Valid item upserts with zero to two hostile mutations."""
    return mutate(draw, item_fields(draw), ITEM_FIELDS)


@st.composite
def mangled(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    """Byte-level damage to a payload: truncation, flips, insertions, BOMs, NULs, re-encoding."""
    raw = draw(base)
    op = draw(st.sampled_from(["cut", "flip", "insert", "bom", "nul", "twice", "utf16"]))
    at = draw(st.integers(0, len(raw)))
    if op == "cut":
        return raw[:at]
    if op == "flip":
        return raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at + 1 :]
    if op == "insert":
        return raw[:at] + draw(st.binary(min_size=1, max_size=8)) + raw[at:]
    if op == "bom":
        return b"\xef\xbb\xbf" + raw
    if op == "nul":
        return draw(st.sampled_from([b"\x00" + raw, raw + b"\x00"]))
    if op == "twice":
        return raw + raw
    return raw.decode("utf-8", "replace").encode(draw(st.sampled_from(["utf-16", "utf-32"])))


top_level_docs = st.one_of(
    json_values.map(lambda v: to_bytes(dumps(v, False))),
    nested_tokens.map(str.encode),
    long_strings.map(lambda s: to_bytes(dumps(s, False))),
)
raw_bytes = st.one_of(st.none(), st.just(b""), st.binary(max_size=300))
any_payload = st.one_of(
    event_payloads(),
    item_payloads(),
    mangled(event_payloads()),
    mangled(item_payloads()),
    top_level_docs,
    raw_bytes,
)


# --- decoder properties ----------------------------------------------------------------------

SETTINGS: Final = Settings(
    _env_file=None,
    key_prefix="fz",
    rec_size=5,
    history_size=5,
    max_future_skew_s=SKEW,
    flush_max_batch=10_000,
    model_version="fuzz-v1",
    data_dir=Path("/nonexistent/fuzz"),
    state_dir=Path("/nonexistent/fuzz-state"),
)


def decode_or_reason(decode: Callable[[], Any]) -> tuple[Any, str | None]:
    """(model, None) or (None, reason); any exception but DecodeError fails the test."""
    try:
        return decode(), None
    except DecodeError as exc:
        reason = exc.reason
        message = str(exc)
    except Exception as exc:
        pytest.fail(f"decoder raised {type(exc).__name__}: {exc!r:.300}")
    assert message == reason
    assert_reason(reason)
    field = reason.split(":", 1)[0].split(".", 1)[0]
    REASONS[field if field in EVENT_FIELDS | ITEM_FIELDS | {"payload"} else "(other)"] += 1
    return None, reason


def check_event(payload: bytes | None, now: float) -> bool:
    """Decode ``payload`` and compare with the oracle; True if it was accepted."""
    expected = verdict(lambda: expected_event(payload, now=now))
    event, reason = decode_or_reason(lambda: decode_event(payload, now=now))
    if event is None:
        assert expected is None, f"valid event rejected ({reason}): {payload!r:.400}"
        return False
    assert expected is not None, f"invalid event accepted: {payload!r:.400}"
    assert event.model_dump() == expected
    for name in ("user_id", "item_id", "session_id", "rec_id", "event_id"):
        value = getattr(event, name)
        if value is not None:
            assert_key_safe(SETTINGS, "rec", value)
    assert decode_event(encode(event), now=now) == event
    return True


def check_item(payload: bytes | None) -> bool:
    expected = verdict(lambda: expected_item(payload))
    item, reason = decode_or_reason(lambda: decode_item(payload))
    if item is None:
        assert expected is None, f"valid item rejected ({reason}): {payload!r:.400}"
        return False
    assert expected is not None, f"invalid item accepted: {payload!r:.400}"
    assert item.model_dump() == expected
    assert_key_safe(SETTINGS, "item", item.item_id)
    assert decode_item(encode(item)) == item
    assert decode_item(json.dumps(item.model_dump(mode="json")).encode()) == item
    return True


@fuzz(2500)
@given(payload=st.one_of(event_payloads(), mangled(event_payloads()), top_level_docs, raw_bytes))
def test_decode_event_accepts_exactly_the_valid_payloads(payload: bytes | None) -> None:
    EXAMPLES["decode_event"] += 1
    JUDGED["event accepted" if check_event(payload, NOW) else "event rejected"] += 1


@fuzz(1500)
@given(payload=st.one_of(item_payloads(), mangled(item_payloads()), top_level_docs, raw_bytes))
def test_decode_item_accepts_exactly_the_valid_payloads(payload: bytes | None) -> None:
    EXAMPLES["decode_item"] += 1
    JUDGED["item accepted" if check_item(payload) else "item rejected"] += 1


@fuzz(400)
@given(payload=any_payload)
def test_any_payload_on_either_topic_is_a_model_or_a_reason(payload: bytes | None) -> None:
    EXAMPLES["either decoder"] += 1
    JUDGED["event accepted" if check_event(payload, NOW) else "event rejected"] += 1
    JUDGED["item accepted" if check_item(payload) else "item rejected"] += 1


@fuzz(300)
@given(
    fields=valid_event_fields(),
    size=st.integers(MAX_PAYLOAD_BYTES - 3, MAX_PAYLOAD_BYTES + 3),
    ws=st.sampled_from([" ", "\n", "\t", "\r"]),
)
def test_the_size_limit_is_exact_in_bytes(fields: dict[str, Any], size: int, ws: str) -> None:
    EXAMPLES["size limit"] += 1
    payload = pad_to(json.dumps(fields), size, ws)
    assert len(payload) == size
    accepted = check_event(payload, NOW)
    assert accepted is (size <= MAX_PAYLOAD_BYTES)
    JUDGED["event accepted" if accepted else "event rejected"] += 1


@fuzz(300)
@given(
    fields=valid_event_fields(),
    ts=st.one_of(
        st.sampled_from(TS_TOKENS),
        st.floats(NOW + SKEW - 2, NOW + SKEW + 2).map(repr),
        st.floats(MIN_TS - 2, MIN_TS + 2).map(repr),
        float_tokens,
        st.integers().map(str),
    ),
    skew=st.sampled_from([SKEW, 0.0, 1.0, 3600.0]),
)
def test_event_times_far_past_far_future_and_at_the_limits(
    fields: dict[str, Any], ts: str, skew: float
) -> None:
    EXAMPLES["event times"] += 1
    fields = {**fields, "ts": 0}
    payload = json.dumps(fields).replace('"ts": 0', f'"ts": {ts}', 1).encode()
    expected = verdict(lambda: expected_event(payload, now=NOW, skew=skew))
    event, _ = decode_or_reason(lambda: decode_event(payload, now=NOW, max_future_skew_s=skew))
    assert (event is None) == (expected is None), payload
    JUDGED["event rejected" if event is None else "event accepted"] += 1
    if event is not None:
        assert MIN_TS <= event.ts <= NOW + skew


@fuzz(300)
@given(candidates=st.lists(st.one_of(hostile_strings, ids), min_size=2, max_size=12))
def test_accepted_ids_make_distinct_keys_that_stay_in_their_segment(
    candidates: list[str],
) -> None:
    """However ids are crafted, an accepted one is one key segment and keys never collide."""
    EXAMPLES["id keys"] += 1
    owners: dict[str, str] = {}
    popular = SETTINGS.key("rec", POPULAR_USER)
    for candidate in candidates:
        body = {"type": "view", "user_id": candidate, "item_id": "i1", "ts": NOW}
        accepted = check_event(json.dumps(body).encode(), NOW)
        JUDGED["event accepted" if accepted else "event rejected"] += 1
        if not accepted:
            continue
        key = assert_key_safe(SETTINGS, "rec", candidate)
        assert key != popular
        assert not key.startswith(popular + ":")
        assert owners.setdefault(key, candidate) == candidate, "two users share a key"


# --- the event path: Worker with a MemorySink, in micro-batches ---------------------------

Message = tuple[str, bytes | None, bytes | None]
"""(topic: "events" or "items", value, key)."""


garbage_keys = st.one_of(
    st.none(),
    st.just(b""),
    st.binary(max_size=40),
    hostile_strings.map(to_bytes),
    ids.map(str.encode),
)


def _named_id(raw: bytes | None, field: str) -> bytes | None:
    """The id ``raw`` names in ``field``, read leniently: what a producer would key it by."""
    try:
        doc = json.loads(raw or b"")
    except (ValueError, RecursionError):
        return None
    if isinstance(doc, dict) and isinstance(doc.get(field), str):
        return str(doc[field]).encode("utf-8", "surrogatepass")
    return None


def key_for(draw: st.DrawFn, payload: bytes | None, field: str) -> bytes | None:
    """A message key: usually the id the payload names, sometimes garbage or a near miss."""
    right = _named_id(payload, field)
    choice = draw(st.integers(0, 9))
    if right is not None and choice < 6:
        return right
    if right is not None and choice == 6:
        return draw(st.sampled_from([right + b" ", right.upper(), b" " + right, right[:-1]]))
    return draw(garbage_keys)


# Event times stay far from the worker clock's future limit: this path uses the real
# clock, and a verdict must not depend on when the test runs.
past_ts = st.one_of(st.floats(MIN_TS, NOW), st.sampled_from([MIN_TS, NOW]))
past_events = event_payloads(past_ts)
clean_events = valid_event_fields(past_ts).map(lambda f: json.dumps(f).encode())
future_events = valid_event_fields(st.sampled_from([FAR_FUTURE, NOW * 1000, 1e300])).map(
    lambda f: json.dumps(f).encode()
)
garbage_events = st.one_of(mangled(past_events), top_level_docs, raw_bytes, future_events)
clean_items = st.composite(item_fields)().map(lambda f: json.dumps(f).encode())
mutated_items = item_payloads()
garbage_items = st.one_of(mangled(mutated_items), top_level_docs, raw_bytes)
MIX: Final = [0] * 5 + [1] * 3 + [2] * 2
"""Half the messages are clean, three in ten mutated, two in ten garbage."""


@st.composite
def message(draw: st.DrawFn) -> Message:
    """One message on the events topic (3 in 4) or the items topic, with its key."""
    if draw(st.sampled_from([True, True, True, False])):
        kinds = (clean_events, past_events, garbage_events)
        value = draw(kinds[draw(st.sampled_from(MIX))])
        return "events", value, key_for(draw, value, "user_id")
    kinds = (clean_items, mutated_items, garbage_items)
    value = draw(kinds[draw(st.sampled_from(MIX))])
    return "items", value, key_for(draw, value, "item_id")


def _decodes(decode: Callable[[], Any]) -> Any:
    """What ``decode`` returns, or None if it raises ``DecodeError``."""
    try:
        return decode()
    except DecodeError:
        return None


def _on_event_expected(value: bytes | None, key: bytes | None, now: float) -> str | None:
    """The user an event message must be applied to, or None if it must be rejected."""
    expected = verdict(lambda: expected_event(value, now=now))
    if expected is None or key != expected["user_id"].encode():
        return None
    return str(expected["user_id"])


def _on_item_expected(value: bytes | None, key: bytes | None) -> str | None:
    """The item an upsert message must be applied to, or None if it must be rejected."""
    expected = verdict(lambda: expected_item(value))
    if expected is None or (key is not None and key != expected["item_id"].encode()):
        return None
    return str(expected["item_id"])


@cache
def tiny_prior() -> ModelArtefact:
    """A pre-trained artefact over 8 items, so the learning path runs too (0.2 s, once)."""
    items = [
        ItemUpsert(
            item_id=f"i{n}", title=f"Title {n}", categories=("Action" if n % 2 else "Drama",)
        )
        for n in range(8)
    ]
    history = [
        Event(type=EventType.CLICK, user_id=f"old{u}", item_id=f"i{(u + k) % 8}", ts=NOW + u + k)
        for u in range(12)
        for k in range(3)
    ]
    return train(Dataset("fuzz", items, history, 0, {}), TrainConfig(dim=4, seed=1))


BATCH: Final = 7
"""Event messages per micro-batch in ``run_batch``."""


def run_batch(batch: list[Message], prior: ModelArtefact | None) -> Counter[str]:
    """Feed ``batch`` to a fresh worker, in micro-batches of ``BATCH`` messages, and
    check every property; return the counts."""
    sink = MemorySink()
    proc = Worker(SETTINGS, sink, prior=prior)
    users: set[str] = set()
    items: set[str] = set()
    kinds: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    event_ids: dict[str, set[str | None]] = {}
    duplicates = 0
    lists = 0
    now = time.time()
    pending: list[Inbound] = []

    def process() -> int:
        """Run the pending micro-batch and the owner's learning, as the agents do."""
        out = asyncio.run(proc.process(pending))
        pending.clear()
        for body in proc.drain_item_updates().values():  # the item-updates topic
            deltas = decode_deltas(body)
            records = learn(deltas, proc.step.popularity, proc.items, proc.step.item_versions)
            proc.apply_records(decode_records(encode_records(records)))
        return len(out.lists)

    for n, (topic, value, key) in enumerate(batch):
        try:
            if topic == "events":
                user = _on_event_expected(value, key, now)
                decoded = _decodes(partial(decode_event, value, max_future_skew_s=SKEW))
                inbound = proc.decode(value, key, (0, n), now)
                result: Rejected | None = inbound if isinstance(inbound, Rejected) else None
                if isinstance(inbound, Inbound):
                    pending.append(inbound)
                ok = user is not None
                assert ok == (decoded is not None and key == decoded.user_id.encode())
                if user is not None:
                    event = expected_event(value, now=now)
                    seen = event_ids.setdefault(user, set())
                    if event["event_id"] is not None and event["event_id"] in seen:
                        duplicates += 1  # a producer retry: skipped, neither applied nor dead
                    else:
                        seen.add(event["event_id"])
                        users.add(user)
                        kinds[event["type"].value] += 1
            else:
                item_id = _on_item_expected(value, key)
                item = _decodes(partial(decode_item, value))
                result = proc.on_item(value, key)
                ok = item_id is not None
                assert ok == (item is not None and key in {None, item.item_id.encode()})
                if item_id is not None:
                    items.add(item_id)
            if len(pending) >= BATCH:
                lists += process()
        except Exception as exc:
            pytest.fail(f"{topic} handler raised {type(exc).__name__}: {exc!r:.300}")
        assert (result is None) == ok, (topic, key, value, result)
        if result is not None:
            assert_reason(result.reason)
            assert len(result.reason.encode()) <= len(value or b"") + MAX_REASON_OVERHEAD
        counts[f"{topic[:-1]} message {'accepted' if ok else 'rejected'}"] += 1
    lists += process()

    rejected = counts["event message rejected"] + counts["item message rejected"]
    assert proc.stats.dead_letters == rejected
    assert sum(proc.stats.events.values()) + duplicates == counts["event message accepted"]
    assert proc.stats.events == kinds
    assert proc.stats.duplicates == duplicates
    assert proc.stats.items == counts["item message accepted"]
    profile_keys = SETTINGS.key("profile", "")
    assert {k[len(profile_keys) :] for k in sink.data if k.startswith(profile_keys)} == users
    assert set(proc.catalog) == items

    proc.refresh_popular()
    assert asyncio.run(proc.flush())
    assert proc.stats.render_errors == 0
    assert proc.stats.redis_errors == 0
    assert proc.stats.lists_published == lists
    assert_written_keys_safe(SETTINGS, list(sink.data))
    written = {tuple(k.split(":")[1:]) for k in sink.data}  # (kind, id[, slug])
    assert {i for kind, i, *_ in written if kind == "rec" and i != POPULAR_USER} == users
    assert {i for kind, i, *_ in written if kind == "profile"} == users
    assert {i for kind, i, *_ in written if kind == "item"} == items
    return counts


batches = st.lists(message(), min_size=3, max_size=30)


@fuzz(250)
@given(batch=batches)
def test_processor_applies_exactly_the_valid_messages(batch: list[Message]) -> None:
    EXAMPLES["processor batches"] += 1
    JUDGED.update(run_batch(batch, prior=None))


@fuzz(100)
@given(batch=batches)
def test_processor_with_a_pretrained_model_applies_exactly_the_valid_messages(
    batch: list[Message],
) -> None:
    EXAMPLES["processor+model batches"] += 1
    JUDGED.update(run_batch(batch, prior=tiny_prior()))


# --- regressions: bugs this fuzzing found, fixed since -------------------------------------

KAFKA_MAX_REQUEST_BYTES: Final = 1_000_000
"""Faust's default ``producer_max_request_size``: a bigger dead letter cannot be sent."""


@pytest.mark.parametrize("topic", ["events", "items"])
def test_a_huge_message_key_still_gives_a_dead_letter_that_fits_in_kafka(topic: str) -> None:
    """Found by this suite: the key-mismatch reason embedded ``repr(key)`` whole, so a
    300 kB binary key made a 1.5 MB dead letter that crashed the events agent."""
    proc = Worker(SETTINGS, MemorySink())
    key = b"\xff" * 300_000
    value = json.dumps({"type": "click", "user_id": "u1", "item_id": "i1", "ts": NOW}).encode()
    rejected: Rejected | Inbound | None
    if topic == "events":
        rejected = proc.decode(value, key)
        assert isinstance(rejected, Rejected)
    else:
        rejected = proc.on_item(b'{"item_id": "i1"}', key)
    assert rejected is not None
    assert len(rejected.reason.encode()) <= MAX_REASON_OVERHEAD
    dead_letter = len(key) + len(value) + len(rejected.reason.encode()) + 200  # other headers
    assert dead_letter <= KAFKA_MAX_REQUEST_BYTES


def test_non_ascii_categories_get_their_own_popular_list() -> None:
    """Found by this suite: every category without ASCII letters or digits was slugged to
    ``_``, so Комедия, Драма and 日本映画 overwrote one key ``rec:_popular:_``."""
    sink = MemorySink()
    proc = Worker(SETTINGS, sink)
    batch = []
    for n, (item_id, category) in enumerate(
        [("i1", "Комедия"), ("i2", "Драма"), ("i3", "日本映画")]
    ):
        doc = {"item_id": item_id, "categories": [category]}
        assert proc.on_item(json.dumps(doc).encode(), item_id.encode()) is None
        event = {"type": "click", "user_id": "u1", "item_id": item_id, "ts": NOW}
        inbound = proc.decode(json.dumps(event).encode(), b"u1", (0, n))
        assert isinstance(inbound, Inbound)
        batch.append(inbound)
    asyncio.run(proc.process(batch))
    category_keys = [k for k in sink.data if k.startswith(SETTINGS.key("rec", POPULAR_USER, ""))]
    assert len(category_keys) == 3, category_keys
    assert_written_keys_safe(SETTINGS, list(sink.data))


@fuzz(200)
@given(value=st.one_of(any_payload, json_values.map(lambda v: json.dumps(v).encode())))
def test_garbage_on_the_item_updates_topic_is_skipped(value: bytes | None) -> None:
    """The internal item-updates topic can be written by any producer too."""
    EXAMPLES["item updates"] += 1
    proc = Worker(SETTINGS, MemorySink(), prior=tiny_prior())
    try:
        deltas = decode_deltas(value)
    except ValueError:
        return  # logged and skipped by the learn_items agent
    try:
        learn(deltas, proc.step.popularity, proc.items, proc.step.item_versions)
    except Exception as exc:
        pytest.fail(f"learning from {value!r:.100} raised {type(exc).__name__}: {exc!r:.300}")


# --- the number of cases tried --------------------------------------------------------------


def test_zz_cases_tried(capsys: pytest.CaptureFixture[str]) -> None:
    """Print how many examples each property ran in this run (the last test of the file)."""
    if not EXAMPLES:
        pytest.skip("counts only when the properties ran in this session")
    with capsys.disabled():
        print("\nhostile-input fuzz, examples run per property:")
        for name, count in EXAMPLES.items():
            print(f"  {name:<28} {count:>6}")
        print(f"  {'total examples':<28} {sum(EXAMPLES.values()):>6}")
        print("payloads judged against the oracle:")
        for name, count in sorted(JUDGED.items()):
            print(f"  {name:<28} {count:>6}")
        print(f"  {'total payloads':<28} {sum(JUDGED.values()):>6}")
        print("decoder rejections by the field the reason names first:")
        print("  " + ", ".join(f"{name} {n}" for name, n in REASONS.most_common()))
    # The generators are worth something only if they reach both verdicts.
    ran = {
        "event": EXAMPLES["decode_event"],
        "item": EXAMPLES["decode_item"],
        "event message": EXAMPLES["processor batches"],
        "item message": EXAMPLES["processor batches"],
    }
    for judged, examples in ran.items():
        if examples:
            assert JUDGED[f"{judged} accepted"] > examples / 20, judged
            assert JUDGED[f"{judged} rejected"] > examples / 20, judged
