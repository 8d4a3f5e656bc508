"""SIGTERM ends a worker within its bound even with the broker gone (issue 11, item 4).

Without the watchdog (``streams/shutdown.py``) the worker stops Faust's consumer first
and, on Apache Kafka with the broker stopped, waits for it for good.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from infra import devstack
from streams.shutdown import SHUTDOWN_BOUND_S
from tests.integration.test_outages import OwnBroker, broker_setup, profile_counts
from tests.integration.test_pipeline import event
from tests.support import WorkerProcess, produce, wait_for

pytestmark = pytest.mark.integration

GRACE_S = 10.0
"""Allowed beyond the bound for a loaded machine to schedule the exit (not a speed target:
the old worker never ended)."""


@pytest.mark.parametrize("kind", devstack.BROKERS)
def test_sigterm_with_the_broker_gone_ends_the_worker(
    kind: devstack.Broker,
    session_redis_url: str,
    tmp_path: Path,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    run = tmp_path / "broker"
    bootstrap, pid = devstack.start_kafka(run, kind)
    try:
        s, r = broker_setup(session_redis_url, tmp_path, OwnBroker(kind, run, bootstrap, pid))
        worker = start_worker(s)
        users = [f"s{n}" for n in range(10)]
        now = time.time()
        produce(bootstrap, s.topic_events, [event("click", u, "a1", now - 60) for u in users])
        wait_for(
            lambda: all(c == {"click": 1} for c in profile_counts(r, s, users).values()) or None,
            60,
            "the clicks counted",
        )
    finally:
        devstack.stop_pid(pid)
    time.sleep(2.0)
    stopped_at = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    try:
        code = worker.proc.wait(SHUTDOWN_BOUND_S + GRACE_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"worker still running {time.monotonic() - stopped_at:.0f} s after SIGTERM")
    print(f"[{kind}] worker ended {time.monotonic() - stopped_at:.1f} s after SIGTERM")
    assert code == 0, worker.tail()
