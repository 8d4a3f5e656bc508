"""Load public interaction datasets as Eddy events and catalog items.

Pure: reads local files only (no network, no Kafka). Every loader returns a ``Dataset``
whose events are sorted by ``(ts, user_id, item_id)`` and whose items are sorted by
``item_id``. A row that does not fit the event contract (``models.events``) is skipped
and counted in ``Dataset.skip_reasons`` under a short reason such as
``"event: bad user_id"``; loaders raise only for problems with the file as a whole
(missing file, missing column, empty file).

MovieLens holds explicit ratings, not interactions: ``RatingMapping`` *relabels* each
rating as a view, click or purchase. Say so wherever results on such data are reported.
"""

from __future__ import annotations

import csv
import gc
import hashlib
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import ValidationError

from models.events import (
    DEFAULT_MAX_FUTURE_SKEW_S,
    MIN_TS,
    Event,
    EventType,
    ItemUpsert,
)

BUNDLED_MOVIELENS: Final = Path(__file__).resolve().parent.parent / "data" / "movielens"
"""The MovieLens latest-small copy shipped in ``data/movielens`` (licence in its README.txt)."""

YOOCHOOSE_HEADER: Final = ("SessionId", "ItemId", "Time")
"""Header of the session-rec YOOCHOOSE click files (tab-separated)."""

MAX_TAGS: Final = 64
"""Most tags kept per item (the ``ItemUpsert`` limit)."""

MAX_LABEL_CHARS: Final = 64
"""Longest category or tag accepted (the ``ItemUpsert`` label limit)."""

NO_GENRES: Final = "(no genres listed)"
"""MovieLens's placeholder for a movie without genres."""

TimeFormat = Literal["unix", "unix_ms", "iso"]
DatasetFormat = Literal["auto", "movielens", "yoochoose", "table"]

_LABEL_RE: Final = re.compile(r"^[^\x00-\x1f\x7f]+$")


@dataclass(frozen=True)
class Dataset:
    """Items and time-ordered events loaded from one source, with what was skipped.

    ``skipped`` is ``sum(skip_reasons.values())``: input rows dropped (and, for tags,
    tag values dropped), keyed by a short ``"<kind>: <reason>"``.
    """

    name: str
    items: list[ItemUpsert] = field(repr=False)
    events: list[Event] = field(repr=False)
    skipped: int
    skip_reasons: dict[str, int]

    @property
    def user_ids(self) -> set[str]:
        """Distinct users with at least one event."""
        return {event.user_id for event in self.events}

    def summary(self) -> str:
        """One line for logs: counts of items, events, users and skipped rows."""
        return (
            f"{self.name}: {len(self.items):,} items, {len(self.events):,} events, "
            f"{len(self.user_ids):,} users, {self.skipped:,} skipped"
        )


@dataclass(frozen=True)
class RatingMapping:
    """Relabelling of explicit ratings as event types (ratings are not observed clicks).

    ``rating >= purchase_at`` -> purchase, ``rating >= click_at`` -> click, else view.
    """

    purchase_at: float = 4.0
    click_at: float = 3.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.purchase_at) and math.isfinite(self.click_at)):
            raise ValueError("RatingMapping thresholds must be finite numbers")
        if self.click_at > self.purchase_at:
            raise ValueError(
                f"RatingMapping click_at ({self.click_at}) must not exceed "
                f"purchase_at ({self.purchase_at})"
            )

    def event_type(self, rating: float) -> EventType:
        """The event type this mapping assigns to ``rating``."""
        if rating >= self.purchase_at:
            return EventType.PURCHASE
        if rating >= self.click_at:
            return EventType.CLICK
        return EventType.VIEW


# --- building blocks -------------------------------------------------------------------


class _Builder:
    """Validates rows into events and items, counting what it skips."""

    def __init__(self) -> None:
        self.context = {"now": time.time(), "max_future_skew_s": DEFAULT_MAX_FUTURE_SKEW_S}
        self.reasons: Counter[str] = Counter()
        self.events: list[Event] = []
        self.items: dict[str, ItemUpsert] = {}

    def skip(self, reason: str, count: int = 1) -> None:
        self.reasons[reason] += count

    def add_event(
        self,
        *,
        event_type: EventType,
        user_id: str,
        item_id: str,
        ts: float,
        event_id: str,
        session_id: str | None = None,
    ) -> None:
        """Validate one event against the contract and append it, or count a skip."""
        fields = {
            "type": event_type,
            "user_id": user_id,
            "item_id": item_id,
            "ts": ts,
            "session_id": session_id,
            "event_id": event_id,
        }
        try:
            # Full validation, with the worker's ts bounds; measured faster than
            # ``model_construct`` on pydantic 2.x.
            event = Event.model_validate(fields, context=self.context)
        except ValidationError as exc:
            field_name = str(exc.errors()[0]["loc"][0])
            if field_name != "ts":
                return self.skip(f"event: bad {field_name}")
            return self.skip("event: ts before 1990" if ts < MIN_TS else "event: ts in the future")
        self.events.append(event)

    def add_item(
        self, item_id: str, title: str, categories: Sequence[str], tags: Sequence[str]
    ) -> None:
        """Validate and keep one item (a later duplicate replaces it), or count a skip."""
        try:
            item = ItemUpsert(
                item_id=item_id, title=title, categories=tuple(categories), tags=tuple(tags)
            )
        except ValidationError as exc:
            return self.skip(f"item: bad {exc.errors()[0]['loc'][0]}")
        if item_id in self.items:
            self.skip("item: duplicate item_id (last kept)")
        self.items[item_id] = item

    def dataset(self, name: str) -> Dataset:
        """Sort and freeze what was collected."""
        events = sorted(self.events, key=lambda e: (e.ts, e.user_id, e.item_id))
        items = [self.items[key] for key in sorted(self.items)]
        reasons = dict(sorted(self.reasons.items()))
        return Dataset(name, items, events, sum(reasons.values()), reasons)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building many objects (halves load time), then restore."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _is_label(value: str) -> bool:
    return len(value) <= MAX_LABEL_CHARS and bool(_LABEL_RE.match(value))


def _split_labels(raw: str, sep: str) -> list[str]:
    """Split a separated list, strip each part, drop empty parts and repeats."""
    parts = (part.strip() for part in raw.split(sep))
    return list(dict.fromkeys(part for part in parts if part))


def _normalise_tag(raw: str) -> str | None:
    """Stripped, lower-cased tag, or ``None`` if it is not a valid label."""
    tag = raw.strip().lower()
    return tag if tag and _is_label(tag) else None


def _row_id(prefix: str, index: int, fields: Sequence[str]) -> str:
    """A deterministic event id from a row's index and content."""
    digest = hashlib.blake2b(str(index).encode(), digest_size=10)
    for value in fields:
        digest.update(b"\x1f" + value.encode())
    return f"{prefix}-{digest.hexdigest()}"


def _parse_time(raw: str, fmt: TimeFormat) -> float | None:
    """Unix seconds from ``raw``, or ``None`` if it cannot be parsed as ``fmt``."""
    try:
        if fmt == "iso":
            moment = datetime.fromisoformat(raw.strip())
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return moment.timestamp()
        value = float(raw)
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    return value / 1000.0 if fmt == "unix_ms" else value


def _parse_float(raw: str) -> float | None:
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _sniff_delimiter(header_line: str) -> str:
    return "\t" if "\t" in header_line else ","


def _rows(reader: Iterator[list[str]], on_malformed: Callable[[], None]) -> Iterator[list[str]]:
    """Non-blank rows of ``reader``; a row the csv module rejects is reported and passed."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error:  # e.g. a field over csv.field_size_limit()
            on_malformed()
            continue
        if row:
            yield row


@contextmanager
def _open_table(
    path: Path, builder: _Builder, kind: str, delimiter: str | None = None
) -> Iterator[tuple[list[str], Iterator[list[str]]]]:
    """Open a CSV/TSV file; yield its header and an iterator over its non-blank rows.

    Malformed rows are counted as ``"<kind>: malformed row"``.
    """
    if not path.is_file():
        raise FileNotFoundError(f"no such data file: {path}")
    with path.open(encoding="utf-8-sig", newline="") as handle:
        first = handle.readline()
        if not first.strip():
            raise ValueError(f"{path} is empty: expected a header line")
        sep = delimiter or _sniff_delimiter(first)
        header = [name.strip() for name in next(csv.reader([first], delimiter=sep))]
        reader = csv.reader(handle, delimiter=sep)
        yield header, _rows(reader, lambda: builder.skip(f"{kind}: malformed row"))


def _column_index(header: list[str], path: Path, names: dict[str, str]) -> dict[str, int]:
    """Map option names to column positions; raise ``ValueError`` naming a missing column."""
    positions: dict[str, int] = {}
    for option, column in names.items():
        if column not in header:
            raise ValueError(f"{path}: column {column!r} ({option}) not found; header has {header}")
        positions[option] = header.index(column)
    return positions


def _pick(row: list[str], positions: dict[str, int]) -> dict[str, str] | None:
    """The row's values for each option, or ``None`` if the row is too short."""
    try:
        return {option: row[index] for option, index in positions.items()}
    except IndexError:
        return None


# --- MovieLens ---------------------------------------------------------------------------


def _movielens_tags(path: Path, builder: _Builder, known: set[str]) -> dict[str, list[str]]:
    """Per-movie tags from tags.csv: normalised, deduped, most frequent first, capped."""
    counts: dict[str, Counter[str]] = {}
    if not path.is_file():
        return {}
    with _open_table(path, builder, "tag", ",") as (header, rows):
        positions = _column_index(header, path, {"item": "movieId", "tag": "tag"})
        for row in rows:
            values = _pick(row, positions)
            if values is None:
                builder.skip("tag: short row")
                continue
            tag = _normalise_tag(values["tag"])
            if tag is None:
                builder.skip("tag: invalid")
            elif values["item"] not in known:
                builder.skip("tag: unknown item")
            else:
                counts.setdefault(values["item"], Counter())[tag] += 1
    tags: dict[str, list[str]] = {}
    for item_id, counter in counts.items():
        ranked = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
        tags[item_id] = [tag for tag, _ in ranked[:MAX_TAGS]]
        dropped = sum(count for _, count in ranked[MAX_TAGS:])
        if dropped:
            builder.skip(f"tag: beyond {MAX_TAGS} per item", dropped)
    return tags


@_gc_paused()
def load_movielens(directory: Path, mapping: RatingMapping = RatingMapping()) -> Dataset:
    """Load a MovieLens ``ml-latest*`` directory (movies.csv, ratings.csv, optional tags.csv).

    Items: ``item_id`` = movieId, the title unchanged, categories = genres split on ``|``
    (``"(no genres listed)"`` means none), tags from tags.csv (stripped, lower-cased,
    deduped, invalid ones dropped, most frequent first, at most 64; ties alphabetical).
    Events: one per rating, ``user_id`` = userId, ``item_id`` = movieId, ``ts`` =
    timestamp, ``event_id`` = ``ml-{userId}-{movieId}-{timestamp}``, and the type
    *relabelled* from the rating by ``mapping``.
    """
    directory = Path(directory)
    builder = _Builder()
    movies_path = directory / "movies.csv"
    with _open_table(movies_path, builder, "item", ",") as (header, rows):
        movies = _column_index(
            header, movies_path, {"item": "movieId", "title": "title", "genres": "genres"}
        )
        movie_rows: list[tuple[str, str, list[str]]] = []
        for row in rows:
            values = _pick(row, movies)
            if values is None:
                builder.skip("item: short row")
                continue
            genres = _split_labels(values["genres"], "|")
            categories = [genre for genre in genres if genre != NO_GENRES]
            movie_rows.append((values["item"], values["title"], categories))
    tags = _movielens_tags(directory / "tags.csv", builder, {row[0] for row in movie_rows})
    for item_id, title, categories in movie_rows:
        builder.add_item(item_id, title, categories, tags.get(item_id, []))

    ratings_path = directory / "ratings.csv"
    with _open_table(ratings_path, builder, "event", ",") as (header, rows):
        ratings = _column_index(
            header,
            ratings_path,
            {"user": "userId", "item": "movieId", "rating": "rating", "time": "timestamp"},
        )
        for row in rows:
            values = _pick(row, ratings)
            if values is None:
                builder.skip("event: short row")
                continue
            rating = _parse_float(values["rating"])
            if rating is None:
                builder.skip("event: bad rating")
                continue
            ts = _parse_time(values["time"], "unix")
            if ts is None:
                builder.skip("event: bad ts")
                continue
            user, item, stamp = values["user"], values["item"], values["time"].strip()
            builder.add_event(
                event_type=mapping.event_type(rating),
                user_id=user,
                item_id=item,
                ts=ts,
                event_id=f"ml-{user}-{item}-{stamp}",
            )
    return builder.dataset(directory.name)


# --- YOOCHOOSE ---------------------------------------------------------------------------


@_gc_paused()
def load_yoochoose(path: Path) -> Dataset:
    """Load a session-rec YOOCHOOSE click file (``SessionId<TAB>ItemId<TAB>Time``).

    Every row is a click by an anonymous session: ``user_id`` = ``session_id`` =
    SessionId. ``event_id`` is a hash of the row index and content. No items (the data
    has no item content).
    """
    path = Path(path)
    builder = _Builder()
    with _open_table(path, builder, "event", "\t") as (header, rows):
        positions = _column_index(
            header, path, dict(zip(("session", "item", "time"), YOOCHOOSE_HEADER, strict=True))
        )
        for index, row in enumerate(rows):
            values = _pick(row, positions)
            if values is None:
                builder.skip("event: short row")
                continue
            ts = _parse_time(values["time"], "unix")
            if ts is None:
                builder.skip("event: bad ts")
                continue
            session = values["session"]
            builder.add_event(
                event_type=EventType.CLICK,
                user_id=session,
                item_id=values["item"],
                ts=ts,
                session_id=session,
                event_id=_row_id("yc", index, row),
            )
    return builder.dataset(path.stem)


# --- generic tables ----------------------------------------------------------------------


def _load_table_items(
    path: Path,
    builder: _Builder,
    *,
    delimiter: str | None,
    item_id_col: str,
    title_col: str | None,
    categories_col: str | None,
    categories_sep: str,
    tags_col: str | None,
) -> None:
    names = {"item_id_col": item_id_col}
    optional = {"title_col": title_col, "categories_col": categories_col, "tags_col": tags_col}
    names.update({option: column for option, column in optional.items() if column is not None})
    with _open_table(path, builder, "item", delimiter) as (header, rows):
        positions = _column_index(header, path, names)
        for row in rows:
            values = _pick(row, positions)
            if values is None:
                builder.skip("item: short row")
                continue
            tags: list[str] = []
            for raw in _split_labels(values.get("tags_col", ""), categories_sep):
                tag = _normalise_tag(raw)
                if tag is None:
                    builder.skip("tag: invalid")
                elif tag not in tags:
                    tags.append(tag)
            if len(tags) > MAX_TAGS:
                builder.skip(f"tag: beyond {MAX_TAGS} per item", len(tags) - MAX_TAGS)
            builder.add_item(
                values["item_id_col"],
                values.get("title_col", ""),
                _split_labels(values.get("categories_col", ""), categories_sep),
                tags[:MAX_TAGS],
            )


@_gc_paused()
def load_table(
    path: Path,
    *,
    user_col: str,
    item_col: str,
    time_col: str,
    type_col: str | None = None,
    rating_col: str | None = None,
    mapping: RatingMapping = RatingMapping(),
    delimiter: str | None = None,
    time_format: TimeFormat = "unix",
    items_path: Path | None = None,
    item_id_col: str = "item_id",
    title_col: str | None = "title",
    categories_col: str | None = "categories",
    categories_sep: str = "|",
    tags_col: str | None = None,
) -> Dataset:
    """Load events (and optionally items) from any CSV/TSV file with a header line.

    The event type comes from ``type_col`` (values of ``EventType``, case-insensitive),
    or is *relabelled* from ``rating_col`` by ``mapping``; with neither, every row is a
    click. ``delimiter=None`` sniffs tab vs comma from the header. ``time_format`` is
    ``"unix"`` seconds, ``"unix_ms"`` milliseconds or ``"iso"`` 8601 (naive times are
    UTC). ``items_path`` names an item file with ``item_id_col`` and, unless set to
    ``None``, ``title_col`` and ``categories_col``; ``tags_col`` is optional. Categories
    and tags are split on ``categories_sep``. ``event_id`` is a hash of row index and
    content. Raises ``ValueError`` naming any configured column the file lacks.
    """
    if type_col is not None and rating_col is not None:
        raise ValueError("give type_col or rating_col, not both")
    if time_format not in ("unix", "unix_ms", "iso"):
        raise ValueError(f"time_format must be 'unix', 'unix_ms' or 'iso', not {time_format!r}")
    path = Path(path)
    builder = _Builder()
    names = {"user_col": user_col, "item_col": item_col, "time_col": time_col}
    if type_col is not None:
        names["type_col"] = type_col
    if rating_col is not None:
        names["rating_col"] = rating_col
    with _open_table(path, builder, "event", delimiter) as (header, rows):
        positions = _column_index(header, path, names)
        for index, row in enumerate(rows):
            values = _pick(row, positions)
            if values is None:
                builder.skip("event: short row")
                continue
            if type_col is not None:
                try:
                    event_type = EventType(values["type_col"].strip().lower())
                except ValueError:
                    builder.skip("event: unknown event type")
                    continue
            elif rating_col is not None:
                rating = _parse_float(values["rating_col"])
                if rating is None:
                    builder.skip("event: bad rating")
                    continue
                event_type = mapping.event_type(rating)
            else:
                event_type = EventType.CLICK
            ts = _parse_time(values["time_col"], time_format)
            if ts is None:
                builder.skip("event: bad ts")
                continue
            builder.add_event(
                event_type=event_type,
                user_id=values["user_col"],
                item_id=values["item_col"],
                ts=ts,
                event_id=_row_id("ev", index, row),
            )
    if items_path is not None:
        _load_table_items(
            Path(items_path),
            builder,
            delimiter=delimiter,
            item_id_col=item_id_col,
            title_col=title_col,
            categories_col=categories_col,
            categories_sep=categories_sep,
            tags_col=tags_col,
        )
    return builder.dataset(path.stem)


# --- dispatch and splitting --------------------------------------------------------------


def detect_format(path: Path) -> Literal["movielens", "yoochoose", "table"]:
    """Guess a dataset's format from its layout or header line."""
    path = Path(path)
    if path.is_dir():
        if (path / "ratings.csv").is_file() and (path / "movies.csv").is_file():
            return "movielens"
        raise ValueError(
            f"{path} is a directory without ratings.csv and movies.csv: "
            "not a MovieLens dataset; pass a CSV/TSV file instead"
        )
    if not path.is_file():
        raise FileNotFoundError(f"no such dataset: {path}")
    with path.open(encoding="utf-8-sig", newline="") as handle:
        first = handle.readline().rstrip("\r\n")
    if tuple(first.split("\t")) == YOOCHOOSE_HEADER:
        return "yoochoose"
    return "table"


def load_dataset(path: Path, fmt: DatasetFormat = "auto", **table_options: Any) -> Dataset:
    """Load ``path`` as ``fmt``, auto-detecting the format by default.

    A directory with ratings.csv and movies.csv is MovieLens (``mapping`` may be given);
    a file with the header ``SessionId<TAB>ItemId<TAB>Time`` is YOOCHOOSE; anything else
    is a table, and ``table_options`` are the keyword arguments of ``load_table``.
    """
    path = Path(path)
    kind = detect_format(path) if fmt == "auto" else fmt
    if kind == "movielens":
        extra = set(table_options) - {"mapping"}
        if extra:
            raise ValueError(f"options {sorted(extra)} do not apply to MovieLens data")
        return load_movielens(path, **table_options)
    if kind == "yoochoose":
        if table_options:
            raise ValueError(f"options {sorted(table_options)} do not apply to YOOCHOOSE data")
        return load_yoochoose(path)
    if kind == "table":
        return load_table(path, **table_options)
    raise ValueError(f"unknown dataset format {fmt!r}: use auto, movielens, yoochoose or table")


def split_by_time(events: Sequence[Event], fraction: float) -> tuple[list[Event], list[Event]]:
    """Global temporal split: the last ``fraction`` of events by time form the second list.

    Events are ordered by ``(ts, user_id, item_id)``; the second list holds the last
    ``round(len(events) * fraction)`` of them.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be between 0 and 1, not {fraction}")
    ordered = sorted(events, key=lambda e: (e.ts, e.user_id, e.item_id))
    cut = len(ordered) - round(len(ordered) * fraction)
    return ordered[:cut], ordered[cut:]
