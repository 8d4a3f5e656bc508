"""The worker's live page, driven in headless Chromium against a real worker, broker and Redis.

Needs Debian's ``chromium`` (``apt-get install -y chromium``; ``infra/bootstrap.sh`` installs
it) and the ``playwright`` Python package (the ``dev`` extra); Playwright's own browser
downloads are not used. Set ``EDDY_SAVE_SCREENSHOT=1`` to also write ``docs/live-page.png``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from models.artefact import save
from models.datasets import Dataset
from models.events import Event, EventType, ItemUpsert
from models.training import TrainConfig, train
from streams.settings import Settings
from streams.topics import create_topics
from tests.support import WorkerProcess, get_json, produce, wait_for

pytestmark = pytest.mark.integration

DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "live-page.png"
CHROMIUM_HINT = (
    "Debian's chromium is needed for the live-page test and was not found on PATH: "
    "install it with `sudo apt-get install -y chromium` (infra/bootstrap.sh, run by "
    "`make test`, does this)"
)
CATALOG = {
    "m1": ("Die Hard", ["Action"]),
    "m2": ("Heat", ["Action", "Crime"]),
    "m3": ("Speed", ["Action"]),
    "m4": ("Ronin", ["Action"]),
    "m5": ("The Rock", ["Action"]),
    "k1": ("Up", ["Animation", "Children"]),
    "k2": ("Cars", ["Animation", "Children"]),
    "k3": ("Coco", ["Animation"]),
    "k4": ("Soul", ["Animation"]),
    "k5": ("Luca", ["Animation"]),
}
HOSTILE_IDS = ["eve:rec:alice", "*", "%7Beve%7D", "..%2F..%2Fetc", "a%20b", "_popular", "x" * 200]


def event(kind: str, user: str, item: str, ts: float) -> tuple[str, str]:
    return user, json.dumps({"type": kind, "user_id": user, "item_id": item, "ts": ts})


def js_number(value: float) -> str:
    """``value`` as JavaScript's ``String(value)`` writes it (no ``.0`` on integers)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def console_error(message: Any) -> str:
    """A console message's text if it is an error the page should not cause, else ""."""
    if message.type != "error":
        return ""
    if message.location.get("url", "").endswith("/api/recs/nobody"):
        return ""  # the 404 the test asks for
    return f"{message.text} ({message.location.get('url')})"


def require_chromium() -> str:
    """Path of Debian's chromium; the test fails (not skips) without it or Playwright."""
    path = shutil.which("chromium")
    if path is None:
        pytest.fail(CHROMIUM_HINT, pytrace=False)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail(
            "the playwright package is missing: `pip install -e '.[dev]'` "
            "(no browser download needed, the test uses Debian's chromium)",
            pytrace=False,
        )
    return path


def pretrain(settings: Settings, now: float) -> None:
    """A tiny artefact, so the worker runs the learning core (bandit, propensities)."""
    items = [ItemUpsert(item_id=i, title=t, categories=tuple(c)) for i, (t, c) in CATALOG.items()]
    action = [i for i in CATALOG if i.startswith("m")]
    animation = [i for i in CATALOG if i.startswith("k")]
    history = [
        Event(type=EventType.CLICK, user_id=f"old{n}", item_id=item, ts=now - 3600 + n)
        for n in range(16)
        for item in (action if n % 2 else animation)
    ]
    dataset = Dataset("history", items, history, 0, {})
    save(train(dataset, TrainConfig(dim=4, seed=1)), settings.model_dir)


def start_page_worker(
    settings: Settings,
    start_worker: Callable[[Settings], WorkerProcess],
    pretrained: bool = False,
) -> tuple[str, float]:
    """Seed topics and catalog, start a worker; return (page URL, base event time)."""
    now = time.time() - 600
    if pretrained:
        pretrain(settings, now)
    create_topics(settings)
    produce(
        settings.kafka_bootstrap,
        settings.topic_items,
        [
            (i, json.dumps({"item_id": i, "title": t, "categories": c}))
            for i, (t, c) in CATALOG.items()
        ],
    )
    crowd = [event("click", f"crowd{n}", item, now) for n in range(3) for item in CATALOG]
    produce(settings.kafka_bootstrap, settings.topic_events, crowd)
    worker = start_worker(settings)
    base = f"http://{settings.web_host}:{settings.web_port}"

    def stats_ready() -> bool | None:
        try:
            status, body = get_json(f"{base}/api/stats")
        except OSError:
            return None
        return True if status == 200 and body["workers"] else None

    def alive() -> None:
        assert worker.proc.poll() is None, f"worker exited\n{worker.tail()}"

    wait_for(stats_ready, 30, "the worker's web server and first stats", alive)
    return base, now


def wait_list(r: redis.Redis, settings: Settings, user: str, event_ts: float) -> dict[str, Any]:
    """The user's list once it reflects the event at ``event_ts``."""

    def probe() -> dict[str, Any] | None:
        raw = r.get(settings.key("rec", user))
        doc: dict[str, Any] | None = json.loads(raw) if raw else None
        return doc if doc and doc["event_ts"] == event_ts and doc["items"] else None

    return wait_for(probe, 30, f"list of {user} reflecting ts={event_ts}")


def test_api_rejects_hostile_ids_and_explains_unknown_users(
    settings: Settings, r: redis.Redis, start_worker: Callable[[Settings], WorkerProcess]
) -> None:
    base, now = start_page_worker(settings, start_worker)
    produce(settings.kafka_bootstrap, settings.topic_events, [event("click", "bob", "m1", now)])
    wait_list(r, settings, "bob", now)
    r.set(settings.key("rec", "eve:rec:alice"), b"planted")  # must never be reachable

    for bad in HOSTILE_IDS:
        status, body = get_json(f"{base}/api/recs/{bad}")
        assert status == 400, (bad, status, body)
        assert "invalid user id" in body["error"]
    status, body = get_json(f"{base}/api/recs/")
    assert status == 400

    status, body = get_json(f"{base}/api/recs/nobody")
    assert status == 404
    assert body["user_id"] == "nobody"
    assert "no recommendations for user 'nobody'" in body["error"]

    status, body = get_json(f"{base}/api/recs/bob")
    assert status == 200
    assert body["user_id"] == "bob"
    assert [i["rank"] for i in body["items"]] == list(range(1, len(body["items"]) + 1))
    raw = r.get(settings.key("rec", "bob"))
    assert raw is not None
    stored = json.loads(raw)
    assert [i["item_id"] for i in body["items"]] == [i["item_id"] for i in stored["items"]]
    for item in body["items"]:
        assert item["title"] == CATALOG[item["item_id"]][0]
        assert 0 < item["propensity"] <= 1
        assert item["reason"]

    status, body = get_json(f"{base}/api/users?n=5")
    assert status == 200
    assert "bob" in body["users"]
    assert len(body["users"]) <= 5
    assert not any(u.startswith("_") for u in body["users"])
    for bad_n in ("0", "1000", "ten"):
        assert get_json(f"{base}/api/users?n={bad_n}")[0] == 400

    def stats_with_events() -> dict[str, Any] | None:
        status, body = get_json(f"{base}/api/stats")
        assert status == 200
        (worker,) = body["workers"]
        return body if worker["events_total"] >= 1 + len(CATALOG) * 3 else None

    body = wait_for(stats_with_events, 15, "stats counting every event")
    assert abs(body["server_time"] - time.time()) < 5
    (worker,) = body["workers"]
    assert worker["worker_id"] == settings.worker_id
    assert worker["freshness_ms_p99"] >= worker["freshness_ms_p50"] >= 0

    with urllib.request.urlopen(f"{base}/", timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/html")
        assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
        page = resp.read().decode()
    assert 'id="chart-throughput"' in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page


def test_live_page_follows_a_user_in_headless_chromium(
    settings: Settings,
    r: redis.Redis,
    start_worker: Callable[[Settings], WorkerProcess],
    tmp_path: Path,
) -> None:
    chromium = require_chromium()
    from playwright.sync_api import expect, sync_playwright

    settings = settings.model_copy(update={"rec_size": 6})  # short: new items come in
    base, now = start_page_worker(settings, start_worker, pretrained=True)
    t = now + 60
    produce(
        settings.kafka_bootstrap,
        settings.topic_events,
        [event("click", "alice", "m1", t), event("purchase", "alice", "m2", t + 1)],
    )
    first = wait_list(r, settings, "alice", t + 1)

    # Background traffic from other users while the page is open, for the charts.
    stop = threading.Event()

    def traffic() -> None:
        n = 0
        ids = list(CATALOG)
        while not stop.is_set() and n < 40:
            batch = [
                event("view", f"shopper{(n * 25 + k) % 60}", ids[(n + k) % len(ids)], now + n)
                for k in range(25)
            ]
            produce(settings.kafka_bootstrap, settings.topic_events, batch)
            n += 1
            stop.wait(0.25)

    feeder = threading.Thread(target=traffic, daemon=True)
    external: list[str] = []
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            page.set_default_timeout(30_000)
            page.on(
                "request",
                lambda req: None if req.url.startswith(base) else external.append(req.url),
            )
            page.on("console", lambda m: errors.append(console_error(m)))
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{base}/")
            expect(page).to_have_title("Eddy · live recommendations")

            # Suggestions list recent users and pick one with a click.
            page.locator('#suggestion-list button[data-user="alice"]').click()
            expect(page.locator("#list-user")).to_have_text("alice")
            expect(page.locator("#recs-body tr")).to_have_count(len(first["items"]))
            feeder.start()

            # A bad id gets a clear message; an unknown user the server's explanation.
            page.get_by_label("User id").fill("eve:rec:alice")
            page.get_by_role("button", name="Show list").click()
            expect(page.locator("#list-message")).to_contain_text("1 to 128 characters")
            page.get_by_label("User id").fill("nobody")
            page.get_by_role("button", name="Show list").click()
            expect(page.locator("#list-message")).to_contain_text("no recommendations for user")

            # Alice's list, with titles, reasons and propensities as stored in Redis.
            page.get_by_label("User id").fill("alice")
            page.get_by_role("button", name="Show list").click()
            meta = page.locator("#list-meta")
            expect(meta).to_have_attribute("data-generated-at", js_number(first["generated_at"]))
            expect(page.locator("#rec-id")).to_have_text(first["rec_id"])
            rows = page.locator("#recs-body tr")
            expect(rows).to_have_count(len(first["items"]))
            for n, item in enumerate(first["items"]):
                row = rows.nth(n)
                expect(row.locator("td").nth(1)).to_contain_text(CATALOG[item["item_id"]][0])
                expect(row.locator("td.reason")).to_have_text(item["reason"])
                expect(row.locator("td.propensity")).to_have_text(f"{item['propensity']:.3f}")
            assert page.url.endswith("?user=alice")

            # Her next event changes the list and the page follows within seconds.
            produce(
                settings.kafka_bootstrap,
                settings.topic_events,
                [event("purchase", "alice", "k1", t + 2)],
            )
            second = wait_list(r, settings, "alice", t + 2)
            assert second["rec_id"] != first["rec_id"]
            expect(meta).to_have_attribute("data-generated-at", js_number(second["generated_at"]))
            expect(page.locator("#rec-id")).to_have_text(second["rec_id"])
            expect(rows).to_have_count(len(second["items"]))
            for n, item in enumerate(second["items"]):
                expect(rows.nth(n)).to_have_attribute("data-item-id", item["item_id"])
            # Rows are marked new or moved against the previous version of the list.
            old_rank = {i["item_id"]: n for n, i in enumerate(first["items"], start=1)}
            marked = 0
            for n, item in enumerate(second["items"], start=1):
                row = rows.nth(n - 1)
                was = old_rank.get(item["item_id"])
                if was is None or was != n:
                    expect(row).to_have_attribute("data-change", "new" if was is None else "moved")
                    marked += 1
                else:
                    expect(row).not_to_have_attribute("data-change", re.compile(".*"))
            assert marked, "her purchase should change the list"
            expect(page.locator("#list-message")).to_contain_text("new or moved")

            # Charts are drawn from the polled stats, and the stats show the events.
            feeder.join(timeout=30)
            for chart in ("#chart-throughput", "#chart-freshness"):
                expect(page.locator(f"{chart} path.series").first).to_be_attached()
            page.wait_for_function(
                "Number(document.querySelector('#chart-throughput path.series')"
                "?.dataset.points) >= 3"
            )
            expect(page.locator("#chart-freshness path[data-series='p99']")).to_be_attached()
            expected_total = len(CATALOG) * 3 + 3
            page.wait_for_function(
                f"Number(document.getElementById('events-total').dataset.total) >= {expected_total}"
            )
            worker_row = page.locator(f'#workers-body tr[data-worker-id="{settings.worker_id}"]')
            expect(worker_row).to_be_visible()
            page.wait_for_function(
                "Number(document.getElementById('chart-throughput').dataset.max) > 0"
            )

            shot = tmp_path / "live-page.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            if os.environ.get("EDDY_SAVE_SCREENSHOT"):
                DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
                shutil.copyfile(shot, DOCS_SCREENSHOT)
        finally:
            stop.set()
            browser.close()
    assert not external, f"the page requested outside resources: {external}"
    assert not [e for e in errors if e], f"errors in the page: {errors}"
