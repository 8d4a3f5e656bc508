"""The event contract: what producers send to ``eddy.events`` and ``eddy.items``.

Events are JSON objects keyed by ``user_id`` on the wire. Validation is strict: an
event that does not fit is rejected with a reason (it goes to the dead-letter topic),
never silently repaired.
"""

from __future__ import annotations

import math
import re
import time
from enum import StrEnum
from typing import Annotated, Any, Final, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)

MAX_PAYLOAD_BYTES: Final = 64 * 1024
"""Largest accepted payload on either topic."""

MIN_TS: Final = 631_152_000.0
"""1990-01-01T00:00:00Z: older event times are rejected as insane."""

DEFAULT_MAX_FUTURE_SKEW_S: Final = 86_400.0
"""Event times further than this ahead of the worker's clock are rejected."""

ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$"
"""Ids are 1-128 chars of letters, digits and ``. _ @ -``, starting alphanumeric.

This keeps them safe inside Redis keys: no ``:`` separators, no glob characters,
no ``{}`` cluster hash tags, no whitespace or control characters, and nothing that
can collide with Eddy's reserved ``_``-prefixed keys such as ``_popular``.
"""

_ID_RE: Final = re.compile(ID_PATTERN)

PRICE_RULE: Final = (
    "A finite JSON number, integer or decimal, from 0 to 1000000000 (1e9) inclusive; "
    "null or left out for none."
)

Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
Label = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$"),
]


class EventType(StrEnum):
    """Kinds of user interaction, weakest signal first."""

    VIEW = "view"
    CLICK = "click"
    ADD_TO_CART = "add_to_cart"
    PURCHASE = "purchase"


class _Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, str_strip_whitespace=False
    )


class Event(_Strict):
    """One user interaction with an item."""

    type: EventType
    user_id: Id
    item_id: Id
    ts: float = Field(
        description="Event time, unix seconds (UTC): a JSON number, integer or decimal, from "
        "631152000 (1990-01-01) to EDDY_MAX_FUTURE_SKEW_S (default 86400) ahead of the "
        "worker's clock.",
        json_schema_extra={"minimum": MIN_TS},  # the check is check_ts, for its messages
    )
    session_id: Id | None = None
    quantity: int = Field(
        default=1,
        ge=1,
        le=10_000,
        description="A whole number from 1 to 10000 written as a JSON integer: 2, not 2.0 or "
        "2e0 (rejected, although JSON Schema validators count them as integers). Leave it "
        "out for 1; null is rejected.",
    )
    price: float | None = Field(default=None, ge=0, le=1e9, description=PRICE_RULE)
    rec_id: Id | None = Field(
        default=None, description="Id of the recommendation list the event came from."
    )
    event_id: Id | None = Field(default=None, description="Producer-chosen id for idempotency.")

    @field_validator("ts")
    @classmethod
    def _sane_ts(cls, ts: float, info: ValidationInfo) -> float:
        context = info.context or {}
        now = float(context.get("now", time.time()))
        skew = float(context.get("max_future_skew_s", DEFAULT_MAX_FUTURE_SKEW_S))
        return check_ts(ts, now=now, max_future_skew_s=skew)


class ItemUpsert(_Strict):
    """Create or replace one catalog item."""

    item_id: Id
    title: str = Field(default="", max_length=512)
    categories: tuple[Label, ...] = Field(default=(), max_length=32)
    tags: tuple[Label, ...] = Field(default=(), max_length=64)
    price: float | None = Field(default=None, ge=0, le=1e9, description=PRICE_RULE)
    available: bool = True

    @field_validator("title")
    @classmethod
    def _printable_title(cls, title: str) -> str:
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in title):
            raise ValueError("title contains control characters")
        return title


_M = TypeVar("_M", bound=_Strict)


class DecodeError(ValueError):
    """A payload that is not a valid event; ``reason`` is what goes to the DLQ."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def check_ts(ts: float, *, now: float, max_future_skew_s: float) -> float:
    """Return ``ts`` if it is a sane event time in unix seconds, else raise ``ValueError``."""
    if not math.isfinite(ts):
        raise ValueError("ts must be a finite number of unix seconds")
    if ts > now + max_future_skew_s:
        hint = " (milliseconds? send unix seconds)" if ts > now * 100 else ""
        raise ValueError(f"ts {ts:.0f} is more than {max_future_skew_s:.0f}s in the future{hint}")
    if ts < MIN_TS:
        raise ValueError(f"ts {ts:.0f} is before 1990-01-01")
    return ts


def is_valid_id(value: str) -> bool:
    """True if ``value`` may be used as a user, item, session or list id."""
    return _ID_RE.fullmatch(value) is not None


def _describe(errors: list[tuple[tuple[int | str, ...], str]]) -> str:
    parts = []
    for loc_parts, msg in errors[:5]:
        loc = ".".join(str(p) for p in loc_parts) or "payload"
        loc = loc.encode("unicode_escape").decode("ascii")[:100]  # field names are input
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def _reason(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    return _describe([(tuple(err["loc"]), err["msg"]) for err in errors])


def _check_size(raw: bytes | None) -> bytes:
    if raw is None or len(raw) == 0:
        raise DecodeError("empty payload")
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise DecodeError(f"payload is {len(raw)} bytes, over the {MAX_PAYLOAD_BYTES} limit")
    return raw


def _decode(model: type[_M], raw: bytes | None, context: dict[str, Any]) -> _M:
    raw = _check_size(raw)
    try:
        return model.model_validate_json(raw, strict=True, context=context)
    except ValidationError as exc:
        raise DecodeError(_reason(exc)) from None
    except (ValueError, RecursionError) as exc:  # pragma: no cover - pydantic wraps these
        raise DecodeError(f"invalid JSON: {exc}") from None


class ForgetUser(_Strict):
    """Control message on ``eddy.events`` (key ``user_id``): delete everything about a user.

    It shares the user's partition, so it is ordered with their events."""

    type: Literal["forget"]
    user_id: Id


_EVENT_TAG: Final = "event"
_FORGET_TAG: Final = "forget"
FORGET_REASON_PREFIX: Final = "forget control message: "
"""Starts the reason of a message whose ``type`` is ``forget`` but that is not a valid one."""


def _message_kind(value: Any) -> str:
    """Control message or event, decided on the parsed ``type`` (escapes already resolved,
    the last of duplicate keys, as the validator sees it); anything else is an event."""
    if isinstance(value, dict) and value.get("type") == "forget":
        return _FORGET_TAG
    return _EVENT_TAG


_MESSAGE: Final[TypeAdapter[Event | ForgetUser]] = TypeAdapter(
    Annotated[
        Annotated[Event, Tag(_EVENT_TAG)] | Annotated[ForgetUser, Tag(_FORGET_TAG)],
        Discriminator(_message_kind),
    ]
)
_CONTROL: Final[TypeAdapter[ForgetUser | Any]] = TypeAdapter(
    Annotated[
        Annotated[ForgetUser, Tag(_FORGET_TAG)] | Annotated[Any, Tag(_EVENT_TAG)],
        Discriminator(_message_kind),
    ]
)
"""Parses the payload but validates only a control message (events pass unvalidated)."""


def _message_reason(exc: ValidationError) -> str:
    errors = [
        (tuple(err["loc"]), err["msg"])
        for err in exc.errors(include_url=False, include_input=False)
    ]
    # Every error of the tagged union starts with the tag; a JSON syntax error has none.
    tag = errors[0][0][0] if errors and errors[0][0] else None
    if tag not in (_EVENT_TAG, _FORGET_TAG):
        return _describe(errors)
    body = _describe([(loc[1:], msg) for loc, msg in errors])
    return FORGET_REASON_PREFIX + body if tag == _FORGET_TAG else body


def decode_message(
    raw: bytes | None,
    *,
    now: float | None = None,
    max_future_skew_s: float = DEFAULT_MAX_FUTURE_SKEW_S,
) -> Event | ForgetUser:
    """Parse one ``eddy.events`` payload once and validate it as what its ``type`` says:
    a ``ForgetUser`` if ``type`` is ``forget``, else an ``Event``.

    Raises ``DecodeError``; the reason of an invalid forget starts with
    ``FORGET_REASON_PREFIX``, an invalid event's names the event's fields.
    """
    raw = _check_size(raw)
    context = {"now": time.time() if now is None else now, "max_future_skew_s": max_future_skew_s}
    try:
        return _MESSAGE.validate_json(raw, strict=True, context=context)
    except ValidationError as exc:
        raise DecodeError(_message_reason(exc)) from None
    except (ValueError, RecursionError) as exc:  # pragma: no cover - pydantic wraps these
        raise DecodeError(f"invalid JSON: {exc}") from None


def decode_event(
    raw: bytes | None,
    *,
    now: float | None = None,
    max_future_skew_s: float = DEFAULT_MAX_FUTURE_SKEW_S,
) -> Event:
    """Parse and validate one ``eddy.events`` payload, raising ``DecodeError`` with a reason.

    A payload whose ``type`` is ``forget`` is never an event: an invalid one gets the
    forget-specific reason of ``decode_message``, a valid one a reason saying it is a
    control message (``decode_control`` or ``decode_message`` return it).
    """
    message = decode_message(raw, now=now, max_future_skew_s=max_future_skew_s)
    if isinstance(message, ForgetUser):
        raise DecodeError(FORGET_REASON_PREFIX + "a control message, not an event")
    return message


def decode_control(raw: bytes | None) -> ForgetUser | None:
    """The control message in ``raw``, or None if it is not a valid one.

    Decided on the parsed ``type``, like ``decode_message``; for None, decode ``raw`` with
    ``decode_event``, which rejects an invalid forget with a forget-specific reason.
    """
    if raw is None or len(raw) == 0 or len(raw) > MAX_PAYLOAD_BYTES:
        return None
    try:
        message = _CONTROL.validate_json(raw, strict=True)
    except (ValidationError, ValueError, RecursionError):
        return None
    return message if isinstance(message, ForgetUser) else None


def decode_item(raw: bytes | None) -> ItemUpsert:
    """Parse and validate one ``eddy.items`` payload, raising ``DecodeError`` with a reason."""
    return _decode(ItemUpsert, raw, {})


def encode(model: BaseModel) -> bytes:
    """Serialise an event or item to its compact JSON wire form."""
    return model.model_dump_json(exclude_none=True).encode()
