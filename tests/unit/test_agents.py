"""The Faust agents without a broker (``agent.test_context()``), tables in memory."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from models.reclist import RecList
from streams.app import DLQ_REASON, EddyApp, build_app
from streams.settings import Settings
from streams.sink import MemorySink


@pytest.fixture
def eddy(tmp_path: Path) -> tuple[EddyApp, MemorySink, list[dict[str, Any]]]:
    sink = MemorySink()
    app = build_app(Settings(data_dir=tmp_path, app_id="unit", key_prefix="u"), sink=sink)
    sent: list[dict[str, Any]] = []

    async def record_send(**kwargs: Any) -> None:  # the DLQ producer, without a broker
        sent.append(kwargs)

    app.dlq_topic.send = record_send
    return app, sink, sent


def click(user: str, item: str, ts: float) -> bytes:
    return json.dumps({"type": "click", "user_id": user, "item_id": item, "ts": ts}).encode()


def test_events_agent_updates_profile_and_publishes(
    eddy: tuple[EddyApp, MemorySink, list[dict[str, Any]]],
) -> None:
    app, sink, sent = eddy
    now = time.time()

    async def run() -> None:
        async with app.items_agent.test_context() as items:
            doc = {"item_id": "i1", "title": "Up", "categories": ["Animation"]}
            await items.put(json.dumps(doc).encode(), key=b"i1")
        async with app.events_agent.test_context() as agent:
            await agent.put(click("u1", "i1", now), key=b"u1")
            await agent.put(b"{broken", key=b"u1")
            await agent.put(click("u1", "i2", now + 1), key=b"u1")
        await app.drain()

    asyncio.run(run())
    profile = json.loads(asyncio.run(sink.get("u:profile:u1")) or b"{}")
    assert profile["counts"] == {"click": 2}
    assert profile["recent"] == ["i2", "i1"]
    # the first click, decayed by one second (30-day half-life); i2 has no catalog entry
    assert profile["affinities"]["Animation"] == pytest.approx(2.0 * 2 ** (-1 / (30 * 86_400)))
    assert len(sent) == 1
    headers = dict(sent[0]["headers"])
    assert b"Invalid JSON" in headers[DLQ_REASON]
    assert sent[0]["value"] == b"{broken"
    raw = asyncio.run(sink.get("u:rec:u1"))
    assert raw is not None
    assert RecList.model_validate_json(raw).event_ts == now + 1
    assert json.loads(asyncio.run(sink.get("u:item:i1")) or b"{}")["title"] == "Up"


def test_a_batch_that_fails_is_retried_event_by_event_and_only_the_culprit_is_dead(
    eddy: tuple[EddyApp, MemorySink, list[dict[str, Any]]],
) -> None:
    app, sink, sent = eddy
    now = time.time()
    step = app.worker.step
    real_run = step.run

    def run(batch: Any, *args: Any, **kwargs: Any) -> Any:  # a bug that only u2 triggers
        if any(i.message.user_id == "u2" for i in batch):
            raise RuntimeError("boom for u2")
        return real_run(batch, *args, **kwargs)

    step.run = run  # type: ignore[method-assign]

    async def go() -> None:
        async with app.events_agent.test_context() as agent:
            for user in ("u1", "u2", "u3"):
                await agent.put(click(user, "i1", now), key=user.encode())
        await app.drain()

    asyncio.run(go())
    assert asyncio.run(sink.get("u:rec:u1")) is not None
    assert asyncio.run(sink.get("u:rec:u3")) is not None
    assert asyncio.run(sink.get("u:rec:u2")) is None
    assert len(sent) == 1
    headers = dict(sent[0]["headers"])
    assert headers[DLQ_REASON].startswith(b"processing failed: RuntimeError('boom for u2')")
    assert sent[0]["key"] == b"u2"
    assert app.worker.stats.dead_letters == 1


def test_the_impressions_body_is_the_windows_lists_as_one_document() -> None:
    """Encoded list by list (one long ``json.dumps`` would hold the GIL for the event
    loop's whole window), the same bytes as encoding the document at once."""
    import json

    from streams.app import impressions_body

    lists = [
        {"rec_id": f"r{n}", "user_id": f"u{n}", "variant": None, "items": [{"item_id": "é"}]}
        for n in range(3)
    ]
    for pending in (lists, lists[:1], []):
        body = impressions_body(pending)
        assert body == json.dumps({"lists": pending}, separators=(",", ":")).encode()
        assert json.loads(body) == {"lists": pending}
