"""``eddy demo``: the whole pipeline on the embedded stack with the bundled MovieLens data.

1. start a fresh broker and redis-server, create topics, start one worker;
2. replay the catalog and the first 90% of ratings (by time) as fast as possible;
   (after pre-training on the same 90% with ``eddy train``, so the worker starts from
   the learned item vectors; popularity thus counts that history twice, which leaves
   its ranking unchanged);
3. show a few real users' lists, then send their next real events as a paced burst;
4. show the lists again, with the throughput and event-to-Redis freshness of this run;
5. stop everything, also on Ctrl-C.

MovieLens ratings are relabelled as events: rating >= 4 is a purchase, 3-3.5 a click,
below 3 a view (see ``models.datasets.RatingMapping``).
"""

from __future__ import annotations

import signal
import subprocess
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import numpy as np
import redis
from confluent_kafka import Producer
from rich.console import Console
from rich.progress import Progress

from infra import devstack
from models.artefact import save
from models.datasets import BUNDLED_MOVIELENS, Dataset, load_movielens, split_by_time
from models.events import Event, encode
from models.reclist import RecList
from models.training import TrainConfig, train
from streams.cli.render import render_list
from streams.cli.replay import producer_config, replay
from streams.reader import connect, item_titles
from streams.settings import Settings, load_settings
from streams.topics import create_topics

HISTORY_FRACTION = 0.9
BURST_EVENTS_PER_USER = 15
MIN_HISTORY = 20
BURST_RATE = 100.0
POLL_S = 0.005
IDLE_S = 0.5
"""A probe reflected within this is taken as a worker with no backlog left."""
PROBE_USER = "eddy-demo-probe"


@dataclass(frozen=True)
class Burst:
    events: list[Event]
    users: list[str]


def pick_burst(history: list[Event], later: list[Event], n_users: int) -> Burst:
    """Users with a history and the most later events, and their next events."""
    known = Counter(e.user_id for e in history)
    counts = Counter(e.user_id for e in later if known[e.user_id] >= MIN_HISTORY)
    users = [u for u, n in counts.most_common() if n >= BURST_EVENTS_PER_USER][:n_users]
    per_user: dict[str, list[Event]] = defaultdict(list)
    for e in later:
        mine = per_user[e.user_id] if e.user_id in users else None
        fits = mine is not None and len(mine) < BURST_EVENTS_PER_USER
        if mine is not None and fits and (not mine or e.ts > mine[-1].ts):
            mine.append(e)
    events = sorted((e for evs in per_user.values() for e in evs), key=lambda e: e.ts)
    return Burst(events, users)


def stats(client: redis.Redis, settings: Settings) -> dict[str, float]:
    raw = client.hgetall(settings.key("stats", settings.worker_id))
    out = {}
    for k, v in raw.items():
        try:
            out[k.decode() if isinstance(k, bytes) else str(k)] = float(v)
        except ValueError:
            continue
    return out


def wait_processed(
    client: redis.Redis,
    settings: Settings,
    total: int,
    worker: subprocess.Popen[bytes],
    console: Console,
    stall_s: float = 60.0,
) -> None:
    """Follow the worker's progress; fail if it dies or makes no progress for ``stall_s``."""
    last, last_change = -1.0, time.monotonic()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("worker processing", total=total)
        learning = progress.add_task("item vectors learning", total=None)
        while True:
            now = stats(client, settings)
            done = now.get("events_total", 0)
            sent, learned = now.get("item_updates_sent", 0), now.get("item_updates_done", 0)
            progress.update(task, completed=done)
            progress.update(learning, total=sent, completed=learned)
            if done >= total and learned >= sent:
                return
            done += learned  # progress of either kind counts as progress
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited with code {worker.returncode}")
            if done != last:
                last, last_change = done, time.monotonic()
            elif time.monotonic() - last_change > stall_s:
                raise RuntimeError(f"the worker made no progress for {stall_s:.0f}s")
            time.sleep(0.25)


def show(
    console: Console,
    client: redis.Redis,
    settings: Settings,
    users: list[str],
    when: str,
    before: dict[str, list[str]] | None = None,
) -> dict[str, list[str]]:
    lists = {}
    for user in users:
        raw = client.get(settings.key("rec", user))
        if raw is None:
            console.print(f"user {user}: no list yet")
            continue
        recs = RecList.model_validate_json(raw)
        items = recs.items[:8]
        titles = item_titles(client, settings, [i.item_id for i in items])
        if before is not None:
            old = set(before.get(user, []))
            titles = {k: ("[green]+ [/]" if k not in old else "  ") + v for k, v in titles.items()}
        console.print(render_list(items, titles, f"user {user} — {when}"))
        lists[user] = [i.item_id for i in recs.items]
    return lists


def send_burst(client: redis.Redis, settings: Settings, burst: Burst) -> list[float]:
    """Send the burst paced, polling Redis to time each event until its list is written."""
    keys = [settings.key("rec", u) for u in burst.users]
    waiting: list[tuple[Event, float]] = []
    freshness: list[float] = []
    interval = 1.0 / BURST_RATE
    next_send = time.monotonic()
    pending = list(burst.events)
    deadline = time.monotonic() + 60
    producer = Producer(producer_config(settings.kafka_bootstrap, **{"linger.ms": 0}))
    while (pending or waiting) and time.monotonic() < deadline:
        now = time.monotonic()
        if pending and now >= next_send:
            event = pending.pop(0)
            sent_at = time.time()
            producer.produce(settings.topic_events, key=event.user_id, value=encode(event))
            producer.flush(10)
            waiting.append((event, sent_at))
            next_send += interval
        docs = dict(zip(burst.users, client.mget(keys), strict=True))
        seen_at = time.time()
        still = []
        for event, sent_at in waiting:
            raw = docs.get(event.user_id)
            ts = RecList.model_validate_json(raw).event_ts if raw else None
            if ts is not None and ts >= event.ts:
                freshness.append(seen_at - sent_at)
            else:
                still.append((event, sent_at))
        waiting = still
        time.sleep(POLL_S)
    return freshness


def wait_idle(
    client: redis.Redis, settings: Settings, item_id: str, console: Console, timeout_s: float = 180
) -> float:
    """Send probe events until one is reflected in Redis within ``IDLE_S``; return the wait.

    After a bulk replay the worker may still be working through the backlog (events and
    the item owners' windows); the burst is timed once that backlog is gone, so it
    measures freshness, not the backlog."""
    producer = Producer(producer_config(settings.kafka_bootstrap, **{"linger.ms": 0}))
    started = time.monotonic()
    key = settings.key("rec", PROBE_USER)
    with console.status("waiting for the worker to clear its backlog…"):
        while time.monotonic() - started < timeout_s:
            event = Event(type="view", user_id=PROBE_USER, item_id=item_id, ts=time.time())
            sent = time.monotonic()
            producer.produce(settings.topic_events, key=PROBE_USER, value=encode(event))
            producer.flush(10)
            while time.monotonic() - sent < IDLE_S:
                raw = client.get(key)
                if raw and RecList.model_validate_json(raw).event_ts == event.ts:
                    return time.monotonic() - started
                time.sleep(POLL_S)
            time.sleep(1.0)
    raise RuntimeError(f"the worker did not catch up within {timeout_s:.0f}s")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_demo(console: Console, n_users: int = 3) -> int:
    """Run the demo; return the process exit code. Cleans up on Ctrl-C and SIGTERM."""
    signal.signal(signal.SIGTERM, _interrupt)
    base = load_settings()
    with tempfile.TemporaryDirectory(prefix="eddy-demo-") as tmp:
        root = Path(tmp)
        console.rule("[bold]Eddy demo")
        console.print("starting the embedded stack (noida-db broker + redis-server)…")
        stack = devstack.start(root / "services")
        worker: subprocess.Popen[bytes] | None = None
        log = root / "worker.log"
        try:
            settings = base.model_copy(
                update={
                    "kafka_bootstrap": stack.kafka_bootstrap,
                    "redis_url": stack.redis_url,
                    "app_id": f"eddy-demo-{int(time.time())}",
                    "data_dir": root / "worker",
                    "state_dir": root / "state",
                    "web_port": devstack.free_port(),
                    "worker_id": "demo-worker",
                    "popular_refresh_s": 1.0,
                    "model_dir": root / "artifacts",
                }
            )
            settings = Settings.model_validate(settings.model_dump())
            create_topics(settings)
            dataset = load_movielens(BUNDLED_MOVIELENS)
            history, later = split_by_time(dataset.events, 1 - HISTORY_FRACTION)
            console.print(
                f"MovieLens latest-small: {len(dataset.items):,} movies, "
                f"{len(dataset.events):,} ratings as events "
                "(rating >= 4 → purchase, 3–3.5 → click, < 3 → view)"
            )
            history_set = Dataset("history", dataset.items, history, 0, {})
            with console.status("pre-training on the first 90% (eddy train)…"):
                artefact = train(history_set, TrainConfig())
                save(artefact, settings.model_dir)
            console.print(
                f"model {artefact.version}: {len(artefact):,} item vectors (ALS, dim "
                f"{artefact.dim}), popularity and a content model for new items"
            )
            worker = devstack.spawn_worker(settings.to_env(), log)
            devstack.wait_worker_ready(worker, log)
            client = connect(settings)
            replay(
                settings.kafka_bootstrap, settings.topic_events, settings.topic_items, history_set
            )
            wait_processed(client, settings, len(history), worker, console)
            time.sleep(2 * settings.popular_refresh_s)  # let popular lists refresh
            bulk = stats(client, settings)
            span = bulk.get("last_event_at", 0) - bulk.get("first_event_at", 0)
            rate = bulk["events_total"] / span if span > 0 else float("nan")
            idle = wait_idle(client, settings, history[-1].item_id, console)
            console.print(f"worker caught up with its table updates {idle:.0f}s later")

            burst = pick_burst(history, later, n_users)
            console.rule("Before: lists after the first 90% of history")
            before = show(console, client, settings, burst.users, "before")
            console.rule(f"Burst: {len(burst.events)} new real events for these users")
            freshness = send_burst(client, settings, burst)
            show(console, client, settings, burst.users, "after the burst", before)

            console.rule("Measured in this run")
            console.print(
                f"worker throughput (bulk replay): {rate:,.0f} events/s over "
                f"{bulk['events_total']:,.0f} events"
            )
            if freshness:
                p50, p99 = np.percentile(freshness, [50, 99])
                console.print(
                    f"event → Redis freshness (burst, {len(freshness)} events at "
                    f"{BURST_RATE:.0f}/s): p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
                    f"max {max(freshness) * 1000:.1f} ms"
                )
            missing = len(burst.events) - len(freshness)
            if missing:
                console.print(f"[red]{missing} burst events were not reflected in time[/]")
                return 1
            return 0
        except KeyboardInterrupt:
            console.print("[yellow]interrupted: shutting down[/]")
            return 130
        except RuntimeError as exc:
            console.print(f"[red]demo failed: {exc}[/]")
            if worker is not None and log.exists():
                console.print(log.read_text(errors="replace")[-3000:])
            return 1
        finally:
            if worker is not None:
                devstack.stop_pid(worker.pid, timeout_s=20)
            devstack.stop(stack)
            console.print("stopped the worker, broker and redis-server")
