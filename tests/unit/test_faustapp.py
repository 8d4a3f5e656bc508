"""Empty fetches are paced: a broker that answers an empty fetch at once (noida-db) does
not make the consumer thread fetch in a loop."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiokafka.consumer.fetcher import Fetcher  # type: ignore[import-untyped]

from streams import faustapp


def _timed(fetched: bool, monkeypatch: pytest.MonkeyPatch) -> float:
    async def answer(self: Any, assignment: Any, node_id: int, request: Any) -> bool:
        return fetched

    monkeypatch.setattr(Fetcher, "_proc_fetch_request", answer)
    faustapp.pace_empty_fetches(0.05)
    faustapp.pace_empty_fetches(0.05)  # idempotent: wrapped once
    paced = Fetcher._proc_fetch_request
    assert paced.__wrapped__ is answer

    async def one() -> float:
        started = time.monotonic()
        assert await paced(None, None, 1, None) is fetched
        return time.monotonic() - started

    return asyncio.run(one())


def test_a_fetch_without_records_is_not_repeated_before_the_pause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert _timed(False, monkeypatch) >= 0.045


def test_a_fetch_with_records_is_not_delayed(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _timed(True, monkeypatch) < 0.04
