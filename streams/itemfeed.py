"""Shared item state in Redis: a hash of every item's record and a stream of changes.

The owner of an item (``models.itemlearn``) collects the records it learns from every
item-updates message of a window (``Window``: merged per item) and writes them once per
window in one pipeline: the records into the hash ``{prefix}:items:state`` (one field
per item), one entry holding all of them (``models.itemlearn.encode``) onto the stream
``{prefix}:items:changes``, and the item-updates offsets it has applied into
``{prefix}:items:offsets`` (so a replayed update is skipped). Every worker loads the
hash on start and then follows the stream: inbound traffic is one entry per owner per
window, whatever the number of workers, partitions or events.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from models.itemlearn import ItemRecord, decode, encode
from streams.redisclient import AsyncClient
from streams.settings import Settings

STREAM_MAXLEN = 10_000
"""Change entries kept (approximately); a worker further behind reloads the hash."""


def merge(old: ItemRecord, new: ItemRecord) -> ItemRecord:
    """One record with what both say, ``new`` winning (records carry absolute values and
    leave None what did not change)."""
    return replace(
        new,
        vector=old.vector if new.vector is None else new.vector,
        quality=old.quality if new.quality is None else new.quality,
        mass=old.mass if new.mass is None else new.mass,
        version=max(old.version, new.version),
    )


@dataclass
class Window:
    """What an owner learned since its last publish: records per item, offsets applied."""

    records: dict[str, ItemRecord] = field(default_factory=dict)
    offsets: dict[int, int] = field(default_factory=dict)
    """Item-updates partition -> newest offset learned."""

    def add(self, records: Sequence[ItemRecord], partition: int, offset: int) -> None:
        for record in records:
            found = self.records.get(record.item_id)
            self.records[record.item_id] = record if found is None else merge(found, record)
        self.offsets[partition] = max(offset, self.offsets.get(partition, -1))

    def take(self) -> Window:
        """This window's content; the window starts again empty."""
        taken = Window(self.records, self.offsets)
        self.records, self.offsets = {}, {}
        return taken

    def restore(self, taken: Window) -> None:
        """``taken`` could not be published: it goes out with this window (newer)."""
        for item_id, record in taken.records.items():
            found = self.records.get(item_id)
            self.records[item_id] = record if found is None else merge(record, found)
        for partition, offset in taken.offsets.items():
            self.offsets[partition] = max(offset, self.offsets.get(partition, -1))

    def __bool__(self) -> bool:
        return bool(self.offsets)


class ItemFeed:
    """Reads and writes the shared item state for one app (key prefix)."""

    def __init__(self, settings: Settings, client: AsyncClient) -> None:
        self.client = client
        self.worker_id = settings.worker_id
        self.state_key = settings.key("items", "state")
        self.stream_key = settings.key("items", "changes")
        self.offsets_key = settings.key("items", "offsets")

    async def applied_offset(self, partition: int) -> int:
        """The newest item-updates offset of ``partition`` already applied (-1: none)."""
        value: Any = await self.client.hget(self.offsets_key, str(partition))
        return -1 if value is None else int(value)

    async def publish(self, records: Sequence[ItemRecord], offsets: Mapping[int, int]) -> None:
        """Write ``records``, learned from the item-updates up to ``offsets`` (partition
        -> offset)."""
        pipe = self.client.pipeline(transaction=False)
        if records:
            pipe.hset(self.state_key, mapping={r.item_id: encode([r]) for r in records})
            pipe.xadd(
                self.stream_key,
                {"w": self.worker_id, "b": encode(records)},
                maxlen=STREAM_MAXLEN,
                approximate=True,
            )
        if offsets:
            pipe.hset(self.offsets_key, mapping={str(p): str(o) for p, o in offsets.items()})
        await pipe.execute()

    async def snapshot(self) -> tuple[str, list[ItemRecord]]:
        """Every item's record and the stream id to follow from."""
        last: Any = await self.client.xrevrange(self.stream_key, count=1)
        last_id = _text(last[0][0]) if last else "0-0"
        records: list[ItemRecord] = []
        cursor: Any = 0
        while True:
            scanned: Any = await self.client.hscan(self.state_key, cursor, count=2000)
            cursor, fields = scanned
            for blob in fields.values():
                records.extend(decode(blob))
            if not cursor:
                break
        return last_id, records

    async def follow(self, last_id: str, block_ms: int = 1000) -> tuple[str, list[ItemRecord]]:
        """Records written after ``last_id`` by other workers, and the new last id."""
        found: Any = await self.client.xread({self.stream_key: last_id}, count=200, block=block_ms)
        records: list[ItemRecord] = []
        if not found:
            return last_id, records
        for _, entries in found:
            for entry_id, fields in entries:
                last_id = _text(entry_id)
                if _text(fields.get(b"w", fields.get("w", b""))) == self.worker_id:
                    continue
                records.extend(decode(fields.get(b"b") or fields["b"]))
        return last_id, records


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
