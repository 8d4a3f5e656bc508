"""Structured logs: with ``EDDY_LOG_FORMAT=json`` every worker log line is a JSON object."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from streams.settings import Settings
from streams.topics import create_topics
from tests.support import WorkerProcess, produce, wait_for

pytestmark = pytest.mark.integration


def test_json_logs_carry_the_worker_and_the_dead_letter_reason(
    settings: Settings, start_worker: Callable[..., WorkerProcess]
) -> None:
    create_topics(settings)
    s = settings.model_copy(update={"log_format": "json"})
    worker = start_worker(s)
    produce(s.kafka_bootstrap, s.topic_events, [("u1", "not json")])

    def records() -> list[dict[str, object]] | None:
        lines = [ln for ln in worker.log.read_text().splitlines() if ln.startswith("{")]
        parsed = [json.loads(ln) for ln in lines]
        return parsed if any("dead letter" in str(r.get("message")) for r in parsed) else None

    parsed = wait_for(records, 30, "the dead letter's log record")
    assert all(r["worker_id"] == s.worker_id for r in parsed)
    assert {"asctime", "levelname", "name", "message"} <= set(parsed[-1])
    dead = next(r for r in parsed if "dead letter" in str(r["message"]))
    assert dead["levelname"] == "WARNING"
    assert "invalid JSON" in str(dead["message"]) or "JSON" in str(dead["message"])
