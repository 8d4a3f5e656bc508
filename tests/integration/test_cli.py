"""The command line against the real stack: replay a CSV, read a list back."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from streams.settings import Settings
from streams.topics import create_topics
from tests.support import WorkerProcess, wait_for

pytestmark = pytest.mark.integration


def eddy(settings: Settings, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        cwd=cwd,
        env={**os.environ, **settings.to_env()},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_replay_a_csv_then_recommend_with_titles(
    settings: Settings, tmp_path: Path, start_worker: Callable[[Settings], WorkerProcess]
) -> None:
    create_topics(settings)
    start_worker(settings)
    t0 = int(time.time()) - 600
    items = tmp_path / "items.csv"
    items.write_text(
        "item_id,title,categories\n"
        "b1,Dune,Sci-Fi\nb2,Foundation,Sci-Fi\nb3,Hyperion,Sci-Fi\n"
        "c1,Emma,Romance\nc2,Persuasion,Romance\n"
    )
    events = tmp_path / "events.csv"
    rows = [f"reader{n},{item},{t0 + n},click" for n in range(4) for item in ("b1", "b2", "c1")]
    events.write_text("user,item,time,kind\n" + "\n".join([*rows, "mallory,b2,soon,click"]))
    table = ["--format", "table", "--user-col", "user", "--item-col", "item"]
    table += ["--time-col", "time", "--type-col", "kind", "--items-path", str(items)]

    replay = eddy(settings, "replay", str(events), *table, cwd=tmp_path)
    assert replay.returncode == 0, replay.stderr
    assert "sent 5 items and 12 events" in replay.stdout
    assert "skipped 1 invalid rows" in replay.stderr

    # Catalog and events are separate topics: let the catalog land before Zoe's event.
    r = redis.Redis.from_url(settings.redis_url.get_secret_value())
    wait_for(lambda: r.get(settings.key("item", "c2")), 30, "catalog in Redis")
    wait_for(lambda: r.get(settings.key("rec", "reader3")), 30, "readers' lists")
    time.sleep(2 * settings.popular_refresh_s)
    zoe = tmp_path / "zoe.csv"
    zoe.write_text(f"user,item,time,kind\nzoe,b1,{t0 + 10},purchase\n")
    assert eddy(settings, "replay", str(zoe), *table, cwd=tmp_path).returncode == 0
    wait_for(lambda: r.get(settings.key("rec", "zoe")), 30, "zoe's list")

    shown = eddy(settings, "recommend", "zoe", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "Foundation" in shown.stdout
    assert "popular in Sci-Fi" in shown.stdout
    assert "Dune" not in shown.stdout  # she bought it

    stranger = eddy(settings, "recommend", "nobody-knows-me", cwd=tmp_path)
    assert stranger.returncode == 0, stranger.stderr
    assert "showing the popular list" in stranger.stdout
    assert "Dune" in stranger.stdout


def test_recommend_without_redis_fails_clearly(settings: Settings, tmp_path: Path) -> None:
    dead = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    out = eddy(Settings.model_validate(dead.model_dump()), "recommend", "zoe", cwd=tmp_path)
    assert out.returncode == 1
    assert "cannot read Redis" in out.stderr
