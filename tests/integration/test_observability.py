"""A real worker's /health and /metrics, and A/B variants in the lists it writes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from models.reclist import RecList
from models.recommender import DEFAULT_PROTECTED_SLOTS
from models.variants import assign
from streams.settings import Settings, VariantSettings
from streams.topics import create_topics
from tests.integration.test_learning import click, start_with_catalog, wait_list
from tests.support import WorkerProcess, http_get, produce, wait_for

pytestmark = pytest.mark.integration

VARIANTS = {
    "calm": VariantSettings(share=1.0, epsilon=0.0),
    "bold": VariantSettings(share=1.0, epsilon=1.0),
}


def get(s: Settings, path: str) -> tuple[int, bytes]:
    return http_get(f"http://{s.web_host}:{s.web_port}{path}")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_health_metrics_and_variants_on_a_running_worker(
    trained: Settings, r: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    s = start_with_catalog(trained, r, start_worker, variants=VARIANTS, variant_salt="obs")
    status, body = get(s, "/health")
    assert status == 200
    assert json.loads(body)["status"] == "ok"
    users = [f"viewer{n}" for n in range(10)]
    t = time.time() - 300
    produce(s.kafka_bootstrap, s.topic_events, [click(u, "s1", t + n) for n, u in enumerate(users)])
    lists: dict[str, RecList] = {u: wait_list(r, s, u, t + n) for n, u in enumerate(users)}
    for user, recs in lists.items():
        expected = assign(user, s.variant_list(), "obs").name
        assert recs.variant == expected
        free = recs.items[DEFAULT_PROTECTED_SLOTS:]  # the first slots never explore
        assert all((i.reason == "exploring") == (expected == "bold") for i in free)
        assert all(i.reason != "exploring" for i in recs.items[:DEFAULT_PROTECTED_SLOTS])

    def scraped() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        status, text = get(s, "/metrics")
        assert status == 200
        got = samples(text.decode())
        lag = [v for (name, _), v in got.items() if name == "eddy_consumer_lag"]
        done = got.get(("eddy_events_total", (("type", "click"), ("worker", s.worker_id))))
        return got if done == len(users) and lag and max(lag) == 0 else None

    got = wait_for(scraped, 20, "metrics to show every event and no lag")
    shown = {v: 0 for v in VARIANTS}
    for recs in lists.values():
        shown[recs.variant or ""] += len(recs.items)
    for variant, n in shown.items():
        key = ("eddy_variant_impressions_total", (("variant", variant), ("worker", s.worker_id)))
        assert got.get(key, 0) >= n
    assert got[("eddy_retrieval_seconds_count", ())] >= len(users)
    assert got[("eddy_freshness_seconds_count", ())] >= 1


FAUST_VIEWS = [
    "/table/",
    "/table/profiles/",
    "/table/profiles/{user}/",
    "/table/catalog/",
    "/router/",
    "/router/topics",
    "/router/profiles/",
    "/router/profiles/{user}/",
    "/graph/",
    "/assignment/",
    "/performance/",
    "/stats/",
    "/signal/",
]
"""faust-streaming's built-in web views (``faust.web.apps``) and some guesses."""


def test_the_web_port_serves_only_eddy_routes(
    settings: Settings,
    r: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Faust's own settings from the environment beat its keyword arguments: none of them
    # may bring a Faust view back.
    for flag in ("ROUTER", "TABLES", "GRAPH", "STATS", "METRICS"):
        monkeypatch.setenv(f"APP_WEB_{flag}_ENABLED", "true")
    create_topics(settings)
    s = settings
    start_worker(s)
    user = "webuser1"
    produce(s.kafka_bootstrap, s.topic_events, [click(user, "i1", time.time() - 60)])
    wait_for(lambda: r.get(s.key("profile", user)), 30, f"{user}'s profile")
    served = {path: get(s, path.format(user=user)) for path in FAUST_VIEWS}
    assert {path: status for path, (status, _) in served.items()} == dict.fromkeys(
        FAUST_VIEWS, 404
    ), {path: body[:200] for path, (_, body) in served.items()}
    assert all(user.encode() not in body for _, body in served.values())
    for path in ("/metrics", "/health", "/", "/api/stats", f"/api/recs/{user}"):
        status, _ = get(s, path)
        assert status == 200, path
    assert get(s, "/")[1].lstrip().lower().startswith(b"<!doctype html")  # the live page
