"""A tiny catalog with two taste groups in one category, and a history that trains them."""

from __future__ import annotations

from models.events import Event, EventType, ItemUpsert

# Two taste groups inside ONE category, so only the item vectors can tell them apart.
SPACE = [f"s{n}" for n in range(1, 6)]
GARDEN = [f"g{n}" for n in range(1, 6)]
TITLES = {
    **{i: f"Space Rocket Voyage {n}" for n, i in enumerate(SPACE, 1)},
    **{i: f"Garden Rose Tales {n}" for n, i in enumerate(GARDEN, 1)},
}


def catalog() -> list[ItemUpsert]:
    return [ItemUpsert(item_id=i, title=t, categories=("Books",)) for i, t in TITLES.items()]


def history(t0: float) -> list[Event]:
    events = []
    for n in range(40):
        group = SPACE if n % 2 else GARDEN
        for k, item in enumerate(group):
            events.append(
                Event(type=EventType.CLICK, user_id=f"h{n}", item_id=item, ts=t0 + n * 10 + k)
            )
    return events
