"""Item state learned online, on the worker that owns each item, and its wire format.

Events are partitioned by user, so many workers learn about one item. Each sends the
item's ``ItemDelta`` (``models.step``) to the item's owner, once per window; the owner
folds the deltas of every worker into absolute ``ItemRecord`` values (``learn``) and
shares them, many items to one compact message (``encode``: a JSON header and the
vectors as float16). Every worker applies them with ``apply``; records are absolute
and popularity only grows, so applying one twice, or an old one late, changes nothing
for long.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.itemstate import ItemState
from models.popularity import PopularityIndex
from models.step import ItemDelta

FORMAT = 1
"""Version of ``encode``'s format."""


@dataclass(frozen=True, slots=True)
class ItemRecord:
    """An item's shared state: online vector, quality totals, online popularity mass."""

    item_id: str
    vector: npt.NDArray[np.float32] | None = None
    quality: tuple[float, float] | None = None
    """(impressions, rewards) totals."""
    mass: float | None = None
    """Online popularity, log domain (``models.popularity.log_mass``)."""
    version: int = 0
    """The owner's count of updates to this item: a record older than the one applied
    (a late or repeated message) is ignored."""


def _f16(vector: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """``vector`` as it travels: rounded to float16, back to float32."""
    return np.asarray(vector, dtype=np.float16).astype(np.float32)


def learn(
    deltas: Mapping[str, ItemDelta],
    popularity: PopularityIndex,
    items: ItemState | None,
    versions: MutableMapping[str, int],
) -> list[ItemRecord]:
    """Fold ``deltas`` into the owner's state and return the items' new records (also
    applied here, so the next window starts from them). ``versions`` holds the newest
    record version applied per item (``apply`` keeps it)."""
    records: list[ItemRecord] = []
    for item_id, delta in deltas.items():
        mass = None
        if math.isfinite(delta.mass):
            current = popularity.online(item_id)
            mass = float(np.logaddexp(-math.inf if current is None else current, delta.mass))
        vector = quality = None
        if items is not None:
            if delta.impressions or delta.rewards:
                items.quality.record_impression(item_id, delta.impressions)
                items.quality.record_reward(item_id, delta.rewards)
                quality = items.quality.stats(item_id)
            if delta.context:
                stepped = items.step(item_id, delta.context)
                vector = None if stepped is None else _f16(stepped)
        record = ItemRecord(item_id, vector, quality, mass, versions.get(item_id, 0) + 1)
        apply([record], popularity, items, versions)
        records.append(record)
    return records


def apply(
    records: Iterable[ItemRecord],
    popularity: PopularityIndex,
    items: ItemState | None,
    versions: MutableMapping[str, int],
) -> int:
    """Apply records (from any owner) newer than what this worker holds; return how
    many were applied."""
    n = 0
    vectors: dict[str, npt.NDArray[np.float32]] = {}
    for r in records:
        if r.version <= versions.get(r.item_id, 0):
            continue
        versions[r.item_id] = r.version
        if r.mass is not None:
            popularity.set_online(r.item_id, r.mass)
        if items is not None:
            if r.vector is not None:
                vectors[r.item_id] = np.asarray(r.vector, dtype=np.float32)
            if r.quality is not None:
                items.quality.set(r.item_id, *r.quality)
        n += 1
    if items is not None and vectors:
        items.set_vectors(list(vectors), list(vectors.values()))  # one index update
    return n


def encode(records: Iterable[ItemRecord]) -> bytes:
    """Records as one message: a JSON header line, then the vectors as float16 rows."""
    ids: list[str] = []
    quality: list[list[float] | None] = []
    mass: list[float | None] = []
    version: list[int] = []
    with_vector: list[int] = []
    vectors: list[npt.NDArray[np.float32]] = []
    for n, r in enumerate(records):
        ids.append(r.item_id)
        quality.append(None if r.quality is None else [float(r.quality[0]), float(r.quality[1])])
        mass.append(r.mass)
        version.append(r.version)
        if r.vector is not None:
            with_vector.append(n)
            vectors.append(r.vector)
    dim = int(vectors[0].shape[0]) if vectors else 0
    header = {
        "v": FORMAT,
        "ids": ids,
        "q": quality,
        "m": mass,
        "n": version,
        "vec": with_vector,
        "dim": dim,
    }
    body = np.stack(vectors).astype("<f2").tobytes() if vectors else b""
    return json.dumps(header, separators=(",", ":")).encode() + b"\n" + body


def decode(blob: bytes) -> list[ItemRecord]:
    """The inverse of ``encode``; ``ValueError`` on anything malformed."""
    head, sep, body = blob.partition(b"\n")
    if not sep:
        raise ValueError("item records lack their header line")
    try:
        header = json.loads(head)
        if header.get("v") != FORMAT:
            raise ValueError(f"unknown item records format {header.get('v')!r}")
        ids = [str(i) for i in header["ids"]]
        quality, mass, version = header["q"], header["m"], [int(n) for n in header["n"]]
        with_vector = [int(i) for i in header["vec"]]
        dim = int(header["dim"])
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"bad item records header: {exc}") from None
    if not len(quality) == len(mass) == len(version) == len(ids):
        raise ValueError("item records header lists differ in length")
    if len(body) != len(with_vector) * dim * 2:
        raise ValueError(
            f"item records carry {len(body)} vector bytes, expected {len(with_vector) * dim * 2}"
        )
    matrix = np.frombuffer(body, dtype="<f2").reshape(len(with_vector), dim).astype(np.float32)
    vectors = dict(zip(with_vector, matrix, strict=True))
    out: list[ItemRecord] = []
    for n, item_id in enumerate(ids):
        q = quality[n]
        m = mass[n]
        out.append(
            ItemRecord(
                item_id,
                vectors.get(n),
                None if q is None else (float(q[0]), float(q[1])),
                None if m is None else float(m),
                version[n],
            )
        )
    return out


def encode_deltas(deltas: Mapping[str, ItemDelta]) -> bytes:
    """Item deltas bound for one owner as one item-updates message (JSON)."""
    body = {item_id: delta.to_json() for item_id, delta in deltas.items()}
    return json.dumps(body, separators=(",", ":")).encode()


def decode_deltas(raw: bytes | None) -> dict[str, ItemDelta]:
    """The inverse of ``encode_deltas``; ``ValueError`` on anything malformed (the topic
    is internal, but any producer can write to it)."""
    try:
        body = json.loads(raw or b"")
        if not isinstance(body, dict):
            raise ValueError("item updates must be a JSON object")
        return {str(item_id): ItemDelta.from_json(doc) for item_id, doc in body.items()}
    except (TypeError, AttributeError, RecursionError, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed item updates: {exc}") from None
