"""``eddy bench``: the worker against a bare Faust agent, freshness, messages per event,
ranking CPU per list and event-loop stalls, all measured in one run.

Everything runs on the embedded stack (noida-db, or Apache Kafka with ``--broker kafka``,
and a redis-server) on this machine, and every baseline is measured in the same run, so
that ratios hold on a noisy box. Each phase has its own topics, consumer group and Redis
key prefix: no phase reads another's profiles, stats or item feed.

1. pre-train on the bundled MovieLens (as ``eddy demo``) and produce its catalog;
2. one row per traffic mix. ``live``: a synthetic stream over ``live_users`` users on the
   MovieLens catalog (each user follows one MovieLens user's history from its own
   starting point; users take turns, so consecutive events come from different users and
   every event's user needs a fresh list). ``bulk``: the first N MovieLens ratings in time
   order (today's replay; users binge, so a micro-batch folds a user's events into one
   list). Per row, one worker (catalog loaded) works through the burst; then the bare
   Faust agent (``streams.cli.bare``) and a plain confluent-kafka consumer read the same
   events from offset 0. Rates are events / (first -> newest event stamp). Kafka messages
   per event count every topic of the row; consumed messages per event (events,
   item-updates, Redis item-feed entries) come from the worker's stats and the feed;
3. two workers share a third live-mix stream: each one's consumed messages per event it
   owns, against the one-worker live row;
4. freshness: a fresh worker gets a live-mix stream paced at half the live row's worker
   rate: produced -> list written p50 / p99 from its stats, every touched user's list
   checked in Redis, the event loop probed with ``GET /health`` on its web port (the
   latency is how long the loop did not answer), Faust's timer warnings from its log;
5. in process, in CPU time (robust to other load): ``VectorRanker.rank_batch`` per list
   count and catalogue size (MovieLens, synthetic 100k and 1M items), ``ReferenceRanker``
   on MovieLens; the periodic work of one item window at the live rate; a cProfile of
   ``streams.worker.Worker`` on live-mix events when a worker target is missed;
6. Redis ``GET`` of a list against ``PING``; retrieval per size (FAISS against exact).
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import gc
import http.client
import json
import math
import os
import platform
import pstats
import random
import re
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from functools import cached_property, partial
from itertools import cycle, islice, pairwise
from pathlib import Path
from types import FrameType
from typing import Any, Final, Literal, TypeVar

import numpy as np
import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from rich.console import Console
from rich.table import Table
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from infra import devstack, process
from models.artefact import ModelArtefact, save
from models.bandit import EpsilonGreedyRanker
from models.batchrank import Ranker, RankRequest, ReferenceRanker, VectorRanker
from models.datasets import BUNDLED_MOVIELENS, Dataset, load_movielens
from models.events import Event, ItemUpsert, encode
from models.itemlearn import ItemRecord, decode, decode_deltas, learn
from models.itemlearn import encode as encode_records
from models.profile import UserProfile
from models.recommender import ItemView, RankConfig, SimpleItemView
from models.rerank import ShownCounter
from models.retrieval import FaissRetriever
from models.retrieval_bench import _percentiles_ms, benchmark
from models.step import Inbound
from models.synthetic import clustered_vectors, queries_near
from models.training import TrainConfig, train
from streams.app import STATS_INTERVAL_S, impressions_body
from streams.cli.bare import stats_key as bare_stats_key
from streams.cli.demo import stats, wait_processed
from streams.cli.replay import ReplayStats, replay
from streams.itemfeed import Window
from streams.reader import connect
from streams.settings import Settings, load_settings
from streams.sink import MemorySink
from streams.stats import stats_mapping
from streams.topics import create_topics
from streams.worker import Worker

T = TypeVar("T")

SCHEMA: Final = "eddy-bench/2"
FRESHNESS_SHARE: Final = 0.5
"""Freshness is measured at this share of the live row's worker rate (the issue's "half
the worker's maximum rate")."""
MIN_FRESHNESS_RATE: Final = 5.0
LIVE_TS_STEP_S: Final = 0.001
"""Event-time step between consecutive live-mix events (the newest is "now")."""
WARMUP_CALLS: Final = 200
PROFILE_TOP: Final = 15
BACKLOG_AGE_S: Final = 60.0
"""In-process profile: events look produced this long ago, as a backlog does."""
PROBE_INTERVAL_S: Final = 0.02
"""Pause between two ``GET /health`` probes of a worker's event loop."""
STALL_MS: Final = 10.0
RANK_MAX_BATCHES: Final = 20
SYNTHETIC_CATEGORIES: Final = 200
DEFAULT_THREADS: Final = "VectorRanker, default BLAS/OpenMP threads"
"""The ranker as it ran before the worker's step thread pinned BLAS and OpenMP to one
thread (the ``VectorRanker`` rows run as the worker does, with one)."""
SYNTHETIC_RECENT: Final = 10
SYNTHETIC_AFFINITIES: Final = 4
BARE_TIMEOUT_S: Final = 120.0
WARM_MS: Final = 200.0
WARM_IN_A_ROW: Final = 3
WARM_MAX_EVENTS: Final = 200
WARM_TIMEOUT_S: Final = 60.0
_ROOT: Final = Path(__file__).resolve().parents[2]
_SITE: Final = "site-packages/"
_HARNESS: Final = ("streams/cli/bench.py", "asyncio/", "_contextvars", "_lsprof")
"""Profile rows of the in-process harness, not of the worker's code."""
_OVERLAP = re.compile(r"Timer (\S+) is overlapping \(interval=([0-9.e+-]+) runtime=([0-9.e+-]+)\)")
_BUCKET = re.compile(r'eddy_freshness_seconds_bucket\{le="([^"]+)"\} ([0-9.e+-]+)')
_LATE = re.compile(r"Timer (\S+) woke up too late, with a drift of \+([0-9.e+-]+)")

Broker = Literal["noida", "kafka"]


@dataclass(frozen=True)
class BenchConfig:
    """Sizes of one run; the defaults take a few minutes on 2 quiet cores, more under load."""

    events: int = 10_000
    """Events of the bulk MovieLens row."""
    live_events: int = 20_000
    live_users: int = 20_000
    two_worker_events: int = 5_000
    freshness_rate: float | None = None
    """Freshness phase events/s; None: ``FRESHNESS_SHARE`` of the live row's worker rate."""
    freshness_s: float = 15.0
    ranking_sizes: tuple[int, ...] = (100_000, 1_000_000)
    """Synthetic catalogues ranked in process, besides MovieLens."""
    ranking_lists: tuple[int, ...] = (1, 50, 500)
    ranking_budget: int = 500
    """Lists ranked per (catalogue, ranker, lists per batch) at most, besides a warm-up."""
    reference_budget: int = 100
    """The same for ``ReferenceRanker``, which ranks one list at a time."""
    retrieval_sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    redis_samples: int = 20_000
    profile_events: int = 1_000
    periodic_windows: int = 5
    full_catalog: bool = True
    """Produce the whole catalog; False: only the items the bulk and live rows use."""
    broker: Broker = "noida"


QUICK: Final = BenchConfig(
    events=1_000,
    live_events=1_000,
    two_worker_events=800,
    freshness_s=3.0,
    ranking_sizes=(),
    ranking_lists=(1, 20),
    ranking_budget=100,
    reference_budget=20,
    retrieval_sizes=(2_000,),
    redis_samples=2_000,
    profile_events=200,
    periodic_windows=1,
    full_catalog=False,
)


def make_config(quick: bool = False, **overrides: Any) -> BenchConfig:
    """The quick or default sizes, with the options given (None: not given)."""
    config = QUICK if quick else BenchConfig()
    given = {k: v for k, v in overrides.items() if v is not None}
    for name in ("retrieval_sizes", "ranking_sizes", "ranking_lists"):
        if isinstance(given.get(name), str):
            given[name] = parse_sizes(given[name], allow_empty=name == "ranking_sizes")
    return replace(config, **given)


def parse_sizes(text: str, allow_empty: bool = False) -> tuple[int, ...]:
    """``"10000,100000,1_000_000"`` -> sizes; ``ValueError`` unless all are positive ints."""
    try:
        sizes = tuple(int(part.strip().replace("_", "")) for part in text.split(",") if part)
    except ValueError:
        raise ValueError(f"sizes must be whole numbers separated by commas, not {text!r}") from None
    if (not sizes and not allow_empty) or (sizes and min(sizes) < 1):
        raise ValueError(f"sizes must be positive, not {text!r}")
    return sizes


# --- traffic ---------------------------------------------------------------------------
def live_mix(dataset: Dataset, n: int, users: int, tag: str, end_ts: float) -> list[Event]:
    """``n`` events over ``users`` synthetic users ``{tag}-{i}`` taking turns.

    User ``i`` follows MovieLens user ``i mod 610``'s history (time order) from its own
    starting point, so its events have a real user's taste; event ``k`` belongs to user
    ``k mod users``, so consecutive events never share a user while ``users > 1``. Event
    times step by ``LIVE_TS_STEP_S`` up to ``end_ts``.
    """
    histories: dict[str, list[Event]] = defaultdict(list)
    for e in dataset.events:
        histories[e.user_id].append(e)
    real = sorted(histories, key=lambda u: (len(u), u))
    out = []
    for k in range(n):
        i, turn = k % users, k // users
        history = histories[real[i % len(real)]]
        e = history[((i // len(real)) * 7 + turn) % len(history)]
        out.append(
            Event(
                type=e.type,
                user_id=f"{tag}-{i}",
                item_id=e.item_id,
                ts=round(end_ts - (n - k) * LIVE_TS_STEP_S, 3),
                event_id=f"{tag}-{i}-{turn}",
            )
        )
    return out


def mix_shape(events: Sequence[Event]) -> dict[str, int]:
    """How many users a stream touches and how often an event's user is the previous one's."""
    same = sum(1 for a, b in pairwise(events) if a.user_id == b.user_id)
    return {
        "events": len(events),
        "users": len({e.user_id for e in events}),
        "consecutive_same_user": same,
    }


def catalog(
    config: BenchConfig, dataset: Dataset, streams: Iterable[Sequence[Event]]
) -> list[ItemUpsert]:
    """The item upserts a run produces (every worker applies them before any event)."""
    if config.full_catalog:
        return dataset.items
    used = {e.item_id for events in streams for e in events}
    return [item for item in dataset.items if item.item_id in used]


# --- measurements that need no worker -------------------------------------------------
def timed_calls(call: Callable[[T], object], args: Iterable[T]) -> list[int]:
    """Nanoseconds of each ``call(arg)``, after ``WARMUP_CALLS`` untimed calls."""
    todo = list(args)
    for arg in todo[:WARMUP_CALLS]:
        call(arg)
    elapsed = []
    for arg in todo:
        t0 = time.perf_counter_ns()
        call(arg)
        elapsed.append(time.perf_counter_ns() - t0)
    return elapsed


def redis_reads(client: redis.Redis, keys: Sequence[str], samples: int) -> dict[str, Any]:
    """Latency of ``GET`` of one list (keys in turn) against ``PING``, one call at a time."""
    lists = {k: len(v) for k, v in zip(keys, client.mget(keys), strict=True) if v is not None}
    if not lists:
        raise RuntimeError("no recommendation lists in Redis to read")
    get_ms = _percentiles_ms(timed_calls(client.get, islice(cycle(lists), samples)))
    ping_ms = _percentiles_ms(timed_calls(lambda _: client.ping(), range(samples)))
    return {
        "samples": samples,
        "keys": len(lists),
        "list_bytes_mean": round(sum(lists.values()) / len(lists)),
        "get_ms": get_ms,
        "ping_ms": ping_ms,
        "get_p99_over_ping_p99": round(get_ms["p99"] / ping_ms["p99"], 2),
    }


def raw_consume(
    bootstrap: str, topic: str, expected: int, timeout_s: float = 120.0
) -> dict[str, Any]:
    """Consume ``expected`` messages from offset 0 with a plain confluent-kafka consumer.

    Timed from ``assign`` to the last message, so the fetches from the broker count.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"eddy-bench-raw-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        got, started = 0, time.perf_counter()
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        deadline = time.monotonic() + timeout_s
        while got < expected and time.monotonic() < deadline:
            batch = consumer.consume(min(1000, expected - got), timeout=1.0)
            got += sum(1 for m in batch if m.error() is None)
        seconds = time.perf_counter() - started
    finally:
        consumer.close()
    if got < expected:
        raise RuntimeError(f"raw consumer read {got} of {expected} events in {timeout_s:.0f}s")
    return {"events": got, "seconds": round(seconds, 4), "events_per_s": round(got / seconds, 1)}


def retrieval(sizes: Sequence[int], console: Console) -> list[dict[str, Any]]:
    """``models.retrieval_bench.benchmark`` per size, with the speed-up over exact search."""
    rows = []
    for n in sizes:
        with console.status(f"retrieval at {n:,} items: FAISS against exact numpy…"):
            result = benchmark(n)
        exact, fast = result["exact_single_ms"], result["faiss_single_ms"]
        result["faiss_over_exact_p99"] = round(fast["p99"] / exact["p99"], 4)
        console.print(
            f"retrieval {n:,} items: recall@100 {result['recall_at_k']:.3f}, "
            f"p50 {fast['p50']:.3f} ms, p99 {fast['p99']:.3f} ms (exact p99 {exact['p99']:.3f} ms)"
        )
        rows.append(result)
    return rows


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, every thread) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_mb(pid: int) -> dict[str, float]:
    """Resident set size now and at its peak (VmRSS, VmHWM from /proc), in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = round(int(value.split()[0]) / 1024, 1)
    return {"rss_mb": fields["VmRSS"], "peak_rss_mb": fields["VmHWM"]}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


@contextlib.contextmanager
def kafka_admin(bootstrap: str) -> Iterator[Consumer]:
    """A consumer that only reads metadata and watermarks."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "eddy-bench-admin"})
    try:
        yield consumer
    finally:
        consumer.close()


def message_counts(consumer: Consumer, wanted: Callable[[str], bool]) -> dict[str, int]:
    """Messages held by each ``wanted`` topic (high minus low watermark, all partitions)."""
    counts: dict[str, int] = {}
    for name, meta in consumer.list_topics(timeout=30).topics.items():
        if wanted(name):
            marks = (
                consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)
                for p in meta.partitions
            )
            counts[name] = sum(high - low for low, high in marks)
    return counts


def kafka_messages(settings: Settings, events: int) -> dict[str, Any]:
    """Every message in every topic of a phase (its own, Faust's internal ones and the
    shared catalog topic), per event; ``per_event`` leaves out the catalog upserts (the
    items topic and the catalog changelog), loaded once before the first event."""
    mine = {
        settings.topic_events,
        settings.topic_item_updates,
        settings.topic_impressions,
        settings.topic_dlq,
        settings.topic_items,
    }
    with kafka_admin(settings.kafka_bootstrap) as admin:
        counts = message_counts(admin, lambda t: t in mine or t.startswith(f"{settings.app_id}-"))
    return per_event_messages(settings, counts, events)


def per_event_messages(
    settings: Settings, per_topic: Mapping[str, int], events: int
) -> dict[str, Any]:
    """``per_topic`` message counts per event, with and without the catalog topics (the
    items topic and the catalog changelog, loaded once before the first event)."""
    catalog_topics = {settings.topic_items, f"{settings.app_id}-catalog-changelog"}
    for_events = sum(n for name, n in per_topic.items() if name not in catalog_topics)
    every = sum(per_topic.values())
    return {
        "per_topic": dict(per_topic),
        "total_for_events": for_events,
        "per_event": round(for_events / events, 4),
        "total_all_topics": every,
        "per_event_all_topics": round(every / events, 4),
        "catalog_topics": sorted(catalog_topics),
    }


def feed_entries(client: redis.Redis, settings: Settings) -> list[tuple[str, int]]:
    """The phase's Redis item-feed stream: (writer worker id, records) per entry."""
    raw: Any = client.xrange(settings.key("items", "changes"))
    out = []
    for _, fields in raw:
        writer = fields.get(b"w", b"")
        out.append((writer.decode(), len(decode(fields[b"b"]))))
    return out


def consumed(
    worker: Mapping[str, float], worker_id: str, feed: Sequence[tuple[str, int]]
) -> dict[str, Any]:
    """The messages one worker consumed: the events topic's (applied, duplicates, dead
    letters), the item-updates it learned, and every item-feed entry (it reads them all,
    its own included, and decodes the others' records)."""
    events = worker.get("events_total", 0) + worker.get("duplicates", 0)
    events += worker.get("dead_letters", 0)
    updates = worker.get("item_updates_done", 0)
    records = sum(n for writer, n in feed if writer != worker_id)
    total = events + updates + len(feed)
    return {
        "events": int(events),
        "item_updates": int(updates),
        "feed_entries": len(feed),
        "feed_records_decoded": records,
        "total": int(total),
        "per_event": round(total / events, 4) if events else None,
    }


def poll_process(
    proc: subprocess.Popen[bytes],
    doing: str,
    done: Callable[[], T | None],
    timeout_s: float = 300.0,
) -> T:
    """Call ``done`` every 0.25 s until it returns a value; ``RuntimeError`` if the
    process exits or ``timeout_s`` passes first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = done()
        if result is not None:
            return result
        if proc.poll() is not None:
            raise RuntimeError(f"the process exited with code {proc.returncode} while {doing}")
        time.sleep(0.25)
    raise RuntimeError(f"still {doing} after {timeout_s:.0f}s")


Running = tuple[Settings, subprocess.Popen[bytes]]
"""A worker process of a phase, with its settings."""


def worker_stats(client: redis.Redis, workers: Sequence[Running]) -> list[dict[str, float]]:
    return [stats(client, settings) for settings, _ in workers]


def wait_learned(client: redis.Redis, workers: Sequence[Running]) -> list[dict[str, float]]:
    """Wait until the workers have consumed every message of their item-updates topic;
    return each one's stats at that point."""
    topic = workers[0][0].topic_item_updates
    with kafka_admin(workers[0][0].kafka_bootstrap) as admin:

        def learned() -> list[dict[str, float]] | None:
            sent = message_counts(admin, lambda t: t == topic).get(topic, 0)
            now = worker_stats(client, workers)
            return now if sum(s.get("item_updates_done", 0) for s in now) >= sent else None

        return poll_process(workers[0][1], "learning item updates", learned)


class LoopProbe:
    """``GET /health`` on a worker's web port, one request at a time with a short pause:
    each latency is how long its event loop took to answer, so the longest is a lower
    bound of its longest stall while probed (plus this process's own scheduling)."""

    def __init__(self, port: int, interval_s: float = PROBE_INTERVAL_S) -> None:
        self.port = port
        self.interval_s = interval_s
        self.samples_ms: list[float] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loop-probe", daemon=True)

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                conn.request("GET", "/health")
                conn.getresponse().read()
            except (OSError, http.client.HTTPException):
                self.errors += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            else:
                self.samples_ms.append((time.perf_counter() - started) * 1000)
            self._stop.wait(self.interval_s)
        conn.close()

    def __enter__(self) -> LoopProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=35)

    def summary(self) -> dict[str, Any]:
        ms = np.array(self.samples_ms or [0.0])
        return {
            "samples": len(self.samples_ms),
            "errors": self.errors,
            "interval_ms": self.interval_s * 1000,
            "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "max_ms": round(float(ms.max()), 3),
            f"over_{STALL_MS:.0f}ms": int((ms > STALL_MS).sum()),
        }


def timer_warnings(log: Path, offset: int = 0) -> dict[str, dict[str, dict[str, float]]]:
    """Faust's timer warnings in a worker log from ``offset``: per timer, how often it
    overlapped its interval (longest run) and woke up late (longest drift), in ms."""
    text = log.read_bytes()[offset:].decode(errors="replace")
    out: dict[str, dict[str, dict[str, float]]] = {"overlapping": {}, "late": {}}
    for kind, pattern, group in (("overlapping", _OVERLAP, 3), ("late", _LATE, 2)):
        for m in pattern.finditer(text):
            row = out[kind].setdefault(m.group(1), {"count": 0, "max_ms": 0.0})
            row["count"] += 1
            row["max_ms"] = max(row["max_ms"], round(float(m.group(group)) * 1000, 1))
    return out


def lists_refreshed(
    client: redis.Redis, settings: Settings, events: Sequence[Event]
) -> dict[str, Any]:
    """Whether every user of ``events`` has a list in Redis that reflects their newest
    event (its ``event_ts``)."""
    newest: dict[str, float] = {}
    for e in events:
        newest[e.user_id] = max(e.ts, newest.get(e.user_id, e.ts))
    users = sorted(newest)
    missing = stale = 0
    for start in range(0, len(users), 1000):
        chunk = users[start : start + 1000]
        for user, raw in zip(
            chunk, client.mget([settings.key("rec", u) for u in chunk]), strict=True
        ):
            if raw is None:
                missing += 1
            elif (json.loads(raw).get("event_ts") or 0.0) < newest[user] - 1e-6:
                stale += 1
    fresh = len(users) - missing - stale
    return {
        "users": len(users),
        "refreshed": fresh,
        "missing": missing,
        "stale": stale,
        "share": round(fresh / len(users), 6) if users else 0.0,
    }


# --- in process ---------------------------------------------------------------------------
def loaded_worker(
    settings: Settings,
    prior: ModelArtefact,
    items: Sequence[ItemUpsert],
    loop: asyncio.AbstractEventLoop,
) -> Worker:
    """A ``Worker`` on a ``MemorySink`` with the catalog applied and written."""
    worker = Worker(settings, MemorySink(), prior=prior)
    for item in items:
        worker.on_item(encode(item), item.item_id.encode())
    loop.run_until_complete(worker.flush())
    return worker


def inbound(worker: Worker, events: Sequence[Event], produced_at: float) -> list[Inbound]:
    """``events`` decoded as the agent decodes them (positions on partition 0)."""
    out = []
    for n, e in enumerate(events):
        decoded = worker.decode(encode(e), e.user_id.encode(), (0, n), produced_at)
        if isinstance(decoded, Inbound):
            out.append(decoded)
    return out


def process_in_process(
    settings: Settings,
    prior: ModelArtefact,
    items: Sequence[ItemUpsert],
    events: Sequence[Event],
    profiler: cProfile.Profile | None = None,
    step_profiler: cProfile.Profile | None = None,
) -> dict[str, float]:
    """Run ``events`` through a fresh ``Worker`` (``MemorySink``) in micro-batches as the
    agent forms them, the owner's item learning applied per batch; events per CPU second
    and per wall second. The catalog is loaded first, untimed and unprofiled."""
    loop = asyncio.new_event_loop()
    try:
        worker = loaded_worker(settings, prior, items, loop)
        batches = inbound(worker, events, time.time() - BACKLOG_AGE_S)
        size = settings.batch_max_events
        gc.collect()
        gc.freeze()  # as the worker freezes its startup objects
        # the step runs on the worker's step thread: ``step_profiler`` profiles it there
        # (cProfile profiles the thread that enables it)
        if step_profiler is not None:
            loop.run_until_complete(worker.call(step_profiler.enable))
        cpu, wall = time.process_time(), time.perf_counter()
        with profiler or contextlib.nullcontext():
            for start in range(0, len(batches), size):
                loop.run_until_complete(worker.process(batches[start : start + size]))
                deltas = worker.item_deltas
                worker.item_deltas = {}
                learn(deltas, worker.step.popularity, worker.items, worker.step.item_versions)
                worker.impressions = []
                worker.refresh_popular()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        if step_profiler is not None:
            loop.run_until_complete(worker.call(step_profiler.disable))
        gc.unfreeze()
        worker.close()
        return {"events_per_cpu_s": len(events) / cpu, "events_per_wall_s": len(events) / wall}
    finally:
        loop.close()


def _where(file_name: str, line: int, name: str) -> str:
    """``path:line(function)``, the path relative to site-packages, stdlib or the repo."""
    for base in (_SITE, sysconfig.get_paths()["stdlib"] + "/", f"{_ROOT}/"):
        if base in file_name:
            file_name = file_name.split(base, 1)[1]
            break
    return f"{file_name}:{line}({name})" if line else name


def profile_rows(stats: pstats.StatsProfile, key: str, top: int) -> list[dict[str, Any]]:
    """The ``top`` functions by ``key`` (``cumtime`` or ``tottime``) with their share of
    the total, leaving out the harness (this module, asyncio, the profiler)."""
    total = stats.total_tt or 1.0
    rows = []
    for name, fp in sorted(stats.func_profiles.items(), key=lambda kv: -getattr(kv[1], key)):
        where = _where(fp.file_name, fp.line_number, name)
        if where.startswith(_HARNESS) or any(h in name for h in _HARNESS):
            continue
        rows.append(
            {
                "function": where,
                "calls": fp.ncalls,
                "cumulative_s": round(fp.cumtime, 3),
                "own_s": round(fp.tottime, 3),
                "share_of_total": round(getattr(fp, key) / total, 3),
            }
        )
    return rows[:top]


def ms_per_call(stats: pstats.Stats, file_end: str, name: str) -> float | None:
    """Cumulative milliseconds per call of one function (under the profiler); by file and
    name, as functions of the same name in other files (an executor's ``run``) differ."""
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]]
    raw = stats.stats  # type: ignore[attr-defined]
    for (file_name, _, fn), (_, calls, _, cumtime, _) in raw.items():
        if fn == name and file_name.endswith(file_end):
            return round(cumtime * 1000 / calls, 3) if calls else None
    return None


def profile(
    settings: Settings,
    prior: ModelArtefact,
    items: Sequence[ItemUpsert],
    events: Sequence[Event],
    worker_rate: float,
) -> dict[str, Any]:
    """Where an event's time goes: the worker's code alone, timed and under cProfile."""
    rates = process_in_process(settings, prior, items, events)
    profiler = cProfile.Profile(time.thread_time)  # CPU time: other load does not count
    on_step = cProfile.Profile(time.thread_time)
    process_in_process(settings, prior, items, events, profiler, on_step)
    merged = pstats.Stats(profiler).add(on_step)
    stats = merged.get_stats_profile()
    per_cpu_s = rates["events_per_cpu_s"]
    return {
        "method": (
            "live-mix events through one Worker in-process (MemorySink, micro-batches of "
            "EDDY_BATCH_MAX_EVENTS, the owner's item learning per batch), once timed "
            "(CPU and wall) and once under cProfile with a per-thread CPU clock, on the "
            "event-loop thread and on the step thread, merged"
        ),
        "events": len(events),
        "in_process_events_per_cpu_s": round(per_cpu_s, 1),
        "in_process_events_per_wall_s": round(rates["events_per_wall_s"], 1),
        "cpu_ms_per_event": round(1000 / per_cpu_s, 4),
        "worker_share_outside_processor": round(max(0.0, 1 - worker_rate / per_cpu_s), 3),
        "profiled_ms_per_batch": ms_per_call(merged, "models/step.py", "run"),
        "profiled_ms_per_batch_ranked": ms_per_call(merged, "models/step.py", "_rank"),
        "profiled_ms_per_rank_batch": ms_per_call(merged, "models/batchrank.py", "rank_batch"),
        "top_cumulative": profile_rows(stats, "cumtime", PROFILE_TOP),
        "top_own_time": profile_rows(stats, "tottime", PROFILE_TOP),
    }


def rank_request(profile: UserProfile, cfg: RankConfig, t: float, seed: int) -> RankRequest:
    """What ``WorkerStep`` asks the ranker for one user (no shows yet)."""
    vector = np.asarray(profile.vector, dtype=np.float32) if profile.vector else None
    bandit = EpsilonGreedyRanker(cfg.epsilon, random.Random(seed))
    return RankRequest(profile, vector, ShownCounter(), cfg, bandit, t)


def synthetic_world(
    n: int, users: int, cfg: RankConfig, pool: int, seed: int = 0
) -> tuple[ItemView, list[RankRequest], float]:
    """A synthetic catalogue of ``n`` items (``models.synthetic.clustered_vectors``, dim 64,
    2 of ``SYNTHETIC_CATEGORIES`` categories each, heavy-tailed popularity giving the
    global and per-category top ``pool``) in a ``FaissRetriever`` with the worker's
    default configuration, and ``users`` requests with a taste vector near catalogue
    items, ``SYNTHETIC_AFFINITIES`` categories and ``SYNTHETIC_RECENT`` recent items."""
    rng = np.random.default_rng(seed)
    vectors = clustered_vectors(n, 64, seed=seed)
    ids = [f"syn-{i}" for i in range(n)]
    names = [f"cat-{c}" for c in range(SYNTHETIC_CATEGORIES)]
    cats = rng.integers(0, SYNTHETIC_CATEGORIES, size=(n, 2)).tolist()
    item_categories = {ids[i]: (names[a], names[b]) for i, (a, b) in enumerate(cats)}
    weight = rng.pareto(1.2, n) + 1e-9
    order = np.argsort(-weight)
    score = weight / weight[order[0]]
    global_top = [(ids[i], float(score[i])) for i in order[:pool]]
    category_top: dict[str, list[tuple[str, float]]] = {name: [] for name in names}
    for i in order.tolist():
        for c in cats[i]:
            top = category_top[names[c]]
            if len(top) < pool:
                top.append((ids[i], float(score[i])))
    view = SimpleItemView(
        FaissRetriever.from_arrays(ids, vectors),
        item_categories,
        global_top=global_top,
        category_top=category_top,
    )
    now = time.time()
    queries = queries_near(vectors, users, seed + 1)
    requests = []
    for j in range(users):
        recent = [ids[int(i)] for i in rng.integers(0, n, SYNTHETIC_RECENT)]
        liked = rng.choice(SYNTHETIC_CATEGORIES, SYNTHETIC_AFFINITIES, replace=False)
        profile = UserProfile(
            user_id=f"syn-user-{j}",
            affinities={names[int(c)]: float(rng.uniform(0.5, 3.0)) for c in liked},
            recent=recent,
            last_ts=now,
            vector=[float(x) for x in queries[j]],
        )
        requests.append(rank_request(profile, cfg, float(j), seed + j))
    return view, requests, now


def time_ranker(
    ranker: Ranker,
    requests: Sequence[RankRequest],
    items: ItemView,
    now_ts: float,
    lists: int,
    budget: int,
) -> dict[str, Any]:
    """CPU (``time.process_time``, every thread) and wall time of ``rank_batch`` over
    batches of ``lists`` different users, after one untimed warm-up batch; what is alive
    is frozen out of the garbage collector first, as the worker freezes its startup
    objects (``streams.app.FREEZE_FOR_S``)."""
    batches = max(1, min(RANK_MAX_BATCHES, budget // lists))
    ranker.rank_batch(list(islice(cycle(requests), lists)), items, now_ts)
    gc.collect()
    gc.freeze()
    cpu = wall = 0.0
    ring = cycle(requests)
    for _ in range(batches):
        chunk = list(islice(ring, lists))
        c0, w0 = time.process_time(), time.perf_counter()
        ranker.rank_batch(chunk, items, now_ts)
        cpu += time.process_time() - c0
        wall += time.perf_counter() - w0
    gc.unfreeze()
    n = batches * lists
    return {
        "lists_per_batch": lists,
        "batches": batches,
        "cpu_ms_per_list": round(cpu * 1000 / n, 4),
        "cpu_ms_per_batch": round(cpu * 1000 / batches, 3),
        "wall_ms_per_list": round(wall * 1000 / n, 4),
    }


def ranking(
    settings: Settings,
    prior: ModelArtefact,
    dataset: Dataset,
    items: Sequence[ItemUpsert],
    config: BenchConfig,
    console: Console,
) -> list[dict[str, Any]]:
    """``VectorRanker.rank_batch`` CPU per list by list count and catalogue, and
    ``ReferenceRanker`` on the smallest (MovieLens)."""
    users = max(max(config.ranking_lists), RANK_MAX_BATCHES)
    rows: list[dict[str, Any]] = []
    loop = asyncio.new_event_loop()
    try:
        with console.status("ranking: MovieLens users on the MovieLens catalogue…"):
            worker = loaded_worker(settings, prior, items, loop)
            events = live_mix(dataset, users, users, "rank", time.time())
            worker.step.run(inbound(worker, events, time.time()), rank=False)
            view = worker.items
            assert view is not None
            cfg = worker.step.config.rank
            requests = [
                rank_request(worker.profiles[e.user_id], cfg, float(n), n)
                for n, e in enumerate(events)
            ]
            now_ts = worker.step.clock or time.time()
            for lists in config.ranking_lists:
                for name, ranker, budget in (
                    ("VectorRanker", VectorRanker(settings.seed), config.ranking_budget),
                    ("ReferenceRanker", ReferenceRanker(), config.reference_budget),
                ):
                    if lists > budget:
                        continue  # the reference ranks one list at a time: no batch gain
                    with threadpool_limits(limits=1):  # as on the worker's step thread
                        row = time_ranker(ranker, requests, view, now_ts, lists, budget)
                    rows.append(
                        {
                            "catalogue": "movielens",
                            "items": len(view.retriever),
                            "ranker": name,
                            **row,
                        }
                    )
                # the same with the default threads: how much of the CPU time is a
                # second BLAS thread waiting on small matrix products
                ranker = VectorRanker(settings.seed)
                row = time_ranker(ranker, requests, view, now_ts, lists, config.ranking_budget)
                rows.append(
                    {
                        "catalogue": "movielens",
                        "items": len(view.retriever),
                        "ranker": DEFAULT_THREADS,
                        **row,
                    }
                )
    finally:
        loop.close()
    for n in config.ranking_sizes:
        with console.status(f"ranking: a synthetic catalogue of {n:,} items (building its index)…"):
            world, requests, now_ts = synthetic_world(n, users, cfg, worker.step.config.pool)
            for lists in config.ranking_lists:
                with threadpool_limits(limits=1):  # as on the worker's step thread
                    row = time_ranker(
                        VectorRanker(settings.seed),
                        requests,
                        world,
                        now_ts,
                        lists,
                        config.ranking_budget,
                    )
                rows.append({"catalogue": "synthetic", "items": n, "ranker": "VectorRanker", **row})
            del world, requests
    for row in rows:
        if row["lists_per_batch"] == max(config.ranking_lists):
            console.print(
                f"ranking {row['catalogue']} {row['items']:,} items, {row['ranker']}: "
                f"{row['cpu_ms_per_list']:.3f} ms CPU per list, "
                f"batches of {row['lists_per_batch']}"
            )
    return rows


@dataclass
class _Calls:
    """CPU and wall milliseconds of each call of one function."""

    cpu_ms: list[float] = field(default_factory=list)
    wall_ms: list[float] = field(default_factory=list)

    def time(self, call: Callable[[], T]) -> T:
        c0, w0 = time.process_time(), time.perf_counter()
        out = call()
        self.cpu_ms.append((time.process_time() - c0) * 1000)
        self.wall_ms.append((time.perf_counter() - w0) * 1000)
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "calls": len(self.cpu_ms),
            "cpu_ms_mean": round(float(np.mean(self.cpu_ms)), 3) if self.cpu_ms else None,
            "cpu_ms_max": round(max(self.cpu_ms), 3) if self.cpu_ms else None,
            "wall_ms_max": round(max(self.wall_ms), 3) if self.wall_ms else None,
        }


def _learn_message(owner: Worker, body: bytes) -> list[ItemRecord]:
    return learn(decode_deltas(body), owner.step.popularity, owner.items, owner.step.item_versions)


def _follow_entry(follower: Worker, blob: bytes) -> int:
    return follower.apply_records(decode(blob))


def periodic(
    settings: Settings,
    prior: ModelArtefact,
    items: Sequence[ItemUpsert],
    events: Sequence[Event],
    window_events: int,
) -> dict[str, Any]:
    """The synchronous part of each periodic task of the worker, timed in process on the
    traffic of one item window (``window_events`` live-mix events) at a time: what each
    call blocks the event loop for. An owner worker processes the events; a follower
    applies the records the owner publishes, as another worker would."""
    calls: defaultdict[str, _Calls] = defaultdict(_Calls)
    loop = asyncio.new_event_loop()
    try:
        owner = loaded_worker(settings, prior, items, loop)
        follower = loaded_worker(settings, prior, items, loop)
        batches = inbound(owner, events, time.time())
        size = settings.batch_max_events
        windows = records_published = 0
        for start in range(0, len(batches), window_events):
            window = batches[start : start + window_events]
            for b in range(0, len(window), size):
                loop.run_until_complete(owner.process(window[b : b + size]))
            bodies = calls["send_items: drain_item_updates"].time(owner.drain_item_updates)
            pending, owner.impressions = owner.impressions, []
            calls["send_items: impressions JSON"].time(partial(impressions_body, pending))
            learned = Window()
            for n, body in enumerate(bodies.values()):
                records = calls["learn_items: decode_deltas + learn (one message)"].time(
                    partial(_learn_message, owner, body)
                )
                learned.add(records, n, 0)
            records_published += len(learned.records)
            entries = [
                calls["send_items: encode the window's records (one feed entry)"].time(
                    partial(encode_records, list(learned.records.values()))
                )
            ]
            for blob in entries:
                calls["follow_items: decode + apply_records (one entry)"].time(
                    partial(_follow_entry, follower, blob)
                )
            calls["refresh_popular (after applying records)"].time(follower.refresh_popular)
            calls["write_stats: stats_mapping"].time(
                lambda: stats_mapping(owner.stats, settings.worker_id, (0, "digest"))
            )
            windows += 1
        # a long-running worker has learned an online vector for every item it has seen:
        # the stats digest then hashes all of them, every second
        assert owner.items is not None
        for item_id in owner.items.retriever.ids():
            vector = owner.items.vector(item_id)
            if vector is not None:
                owner.items.set_vector(item_id, vector)
        calls["item digest, every item learned online (step thread, every 5 s)"].time(owner.digest)
    finally:
        loop.close()
    rows = {name: c.summary() for name, c in calls.items()}
    worst = max((r["cpu_ms_max"] or 0.0 for r in rows.values()), default=0.0)
    follow = calls["follow_items: decode + apply_records (one entry)"]
    owned = calls["learn_items: decode_deltas + learn (one message)"]
    return {
        "method": (
            "one Worker processes live-mix events window by window; after each window the "
            "synchronous part of each periodic task is timed (a second Worker applies the "
            "feed entries, as another worker would)"
        ),
        "window_events": window_events,
        "windows": windows,
        "item_records_per_window": round(records_published / max(1, windows), 1),
        "item_records_per_event": round(records_published / max(1, len(batches)), 3),
        "follow_cpu_us_per_record": round(sum(follow.cpu_ms) * 1000 / records_published, 3)
        if records_published
        else None,
        "learn_cpu_us_per_record": round(sum(owned.cpu_ms) * 1000 / records_published, 3)
        if records_published
        else None,
        "calls": rows,
        "longest_cpu_ms": round(worst, 3),
    }


# --- targets --------------------------------------------------------------------------
@dataclass(frozen=True)
class Goal:
    """A target of the benchmark issue (for a 2-core machine)."""

    name: str
    target: float
    op: Literal[">=", "<="]
    unit: str = "ms"

    def judge(self, value: float, condition: str = "", holds: bool = True) -> dict[str, Any]:
        """The measured ``value`` against the target, with the ratio value / target.

        ``holds`` is False when the run did not measure under the target's ``condition``
        (a lower rate, a smaller catalogue): then ``met`` is False whatever the value.
        """
        within = value >= self.target if self.op == ">=" else value <= self.target
        return {
            "name": self.name,
            "value": value,
            "target": self.target,
            "op": self.op,
            "unit": self.unit,
            "met": within and holds,
            "value_within_target": within,
            "ratio": float(f"{value / self.target:.4g}"),
            "condition": condition,
            "condition_holds": holds,
        }


TARGET_RETRIEVAL_ITEMS: Final = 1_000_000
RANKING_TARGET_LISTS: Final = 500
GOALS: Final = {
    goal.name: goal
    for goal in (
        Goal("worker_over_faust", 0.7, ">=", ""),
        Goal("freshness_p50_ms", 50.0, "<="),
        Goal("freshness_p99_ms", 250.0, "<="),
        Goal("touched_users_refreshed", 1.0, ">=", ""),
        Goal("kafka_messages_per_event", 1.2, "<=", ""),
        Goal("ranking_cpu_ms_per_list", 0.5, "<="),
        Goal("two_workers_consumed_per_event_ratio", 1.1, "<=", ""),
        Goal("event_loop_stall_ms", STALL_MS, "<="),
        Goal("redis_read_p99_ms", 0.3, "<="),
        Goal("retrieval_recall_at_100", 0.95, ">=", ""),
        Goal("retrieval_p99_ms", 2.0, "<="),
    )
}


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets against this run's numbers."""
    live = result["throughput"]["live"]
    fresh = result["freshness"]
    rate, half = fresh["rate_events_per_s"], FRESHNESS_SHARE * live["worker"]["events_per_s"]
    at_rate = (
        f"at half the live worker's rate ({half:,.0f} events/s); measured at {rate:,.0f}",
        rate >= 0.99 * half,
    )
    out = [
        GOALS["worker_over_faust"].judge(live["worker_over_faust"], "live mix, full processing"),
        GOALS["freshness_p50_ms"].judge(fresh["p50_ms"], *at_rate),
        GOALS["freshness_p99_ms"].judge(fresh["p99_ms"], *at_rate),
        GOALS["touched_users_refreshed"].judge(fresh["refreshed"]["share"], *at_rate),
        GOALS["kafka_messages_per_event"].judge(
            live["kafka_messages"]["per_event"], "live mix; the catalog upserts left out"
        ),
    ]
    biggest = max(r["lists_per_batch"] for r in result["ranking"])
    for row in result["ranking"]:
        if row["ranker"] != "VectorRanker" or row["lists_per_batch"] != biggest:
            continue
        goal = GOALS["ranking_cpu_ms_per_list"].judge(
            row["cpu_ms_per_list"],
            f"{row['items']:,} items ({row['catalogue']}), batches of {biggest} lists",
            biggest >= RANKING_TARGET_LISTS,
        )
        out.append({**goal, "name": f"ranking_cpu_ms_per_list_{row['items']}"})
    two = result["two_workers"]
    out.append(
        GOALS["two_workers_consumed_per_event_ratio"].judge(
            two["max_ratio_to_one_worker"], "each worker against the one-worker live row"
        )
    )
    out.append(
        GOALS["event_loop_stall_ms"].judge(
            max(fresh["loop_probe"]["max_ms"], 1e-3), "GET /health probe during the freshness run"
        )
    )
    out.append(GOALS["redis_read_p99_ms"].judge(result["redis_read"]["get_ms"]["p99"]))
    largest = max(result["retrieval"], key=lambda r: r["n_items"])
    n = largest["n_items"]
    at_size = (
        f"at {TARGET_RETRIEVAL_ITEMS:,} items; measured at {n:,}",
        n >= TARGET_RETRIEVAL_ITEMS,
    )
    out.append(GOALS["retrieval_recall_at_100"].judge(largest["recall_at_k"], *at_size))
    out.append(GOALS["retrieval_p99_ms"].judge(largest["faiss_single_ms"]["p99"], *at_size))
    return out


# --- the run on the embedded stack ----------------------------------------------------
@contextlib.contextmanager
def timed_phase(phases: dict[str, float], name: str) -> Iterator[None]:
    """Record the wall seconds of one phase of the run in ``phases``."""
    started = time.monotonic()
    try:
        yield
    finally:
        phases[name] = round(time.monotonic() - started, 1)


@dataclass
class _Run:
    """One run: where it lives, the stack, the data, and the worker logs written."""

    console: Console
    config: BenchConfig
    root: Path
    stack: devstack.Stack
    base: Settings
    dataset: Dataset
    phases: dict[str, float] = field(default_factory=dict)
    stopping: list[subprocess.Popen[bytes]] = field(default_factory=list)
    artefact: ModelArtefact | None = None
    """The pre-trained model (``prepare``)."""

    @cached_property
    def live(self) -> list[Event]:
        return live_mix(
            self.dataset, self.config.live_events, self.config.live_users, "live", time.time()
        )

    @cached_property
    def bulk(self) -> list[Event]:
        return self.dataset.events[: self.config.events]

    @cached_property
    def items(self) -> list[ItemUpsert]:
        """The catalog upserts every worker applies before its first event."""
        return catalog(
            self.config, self.dataset, (self.live, self.dataset.events[: 2 * self.config.events])
        )

    def settings(self, phase: str, worker: str = "") -> Settings:
        """Settings of one phase: its own topics, group, Redis prefix; a shared catalog."""
        tag = f"bench-{phase}"
        wid = f"{tag}-{worker}" if worker else tag
        update = {
            "kafka_bootstrap": self.stack.kafka_bootstrap,
            "redis_url": self.stack.redis_url,
            "app_id": f"eddy-{tag}",
            "key_prefix": tag,
            "topic_events": f"{tag}.events",
            "topic_item_updates": f"{tag}.item-updates",
            "topic_impressions": f"{tag}.impressions",
            "topic_dlq": f"{tag}.events.dlq",
            "topic_items": "bench.items",
            "worker_id": wid,
            "web_host": "127.0.0.1",
            "web_port": devstack.free_port(),
            "data_dir": self.root / wid,
            "state_dir": self.root / "state",
            "model_dir": self.root / "artifacts",
        }
        return Settings.model_validate({**self.base.model_dump(), **update})

    def log(self, settings: Settings) -> Path:
        return self.root / f"{settings.worker_id}.log"

    @contextlib.contextmanager
    def workers(
        self,
        phase: Sequence[Settings],
        wait_catalog: bool = True,
        meanwhile: Callable[[], None] | None = None,
    ) -> Iterator[list[Running]]:
        """``eddy worker`` processes, each started once the previous one is ready (two
        joining the group at once can leave one without an assignment on noida-db),
        yielded once they have applied the catalog between them (each reads its share
        of the items topic, the rest through the catalog table) and every process this
        run stopped before has exited. ``meanwhile`` runs while the last one starts.
        Stopped (without waiting) on exit."""
        procs: list[Running] = []
        try:
            for n, settings in enumerate(phase, 1):
                with self.console.status(f"starting {settings.worker_id}…"):
                    proc = devstack.spawn_worker(settings.to_env(), self.log(settings))
                    procs.append((settings, proc))
                if meanwhile is not None and n == len(phase):
                    meanwhile()
                with self.console.status(f"starting {settings.worker_id}…"):
                    devstack.wait_worker_ready(proc, self.log(settings))
            with self.console.status("loading the catalog…"):
                if wait_catalog:
                    self._wait_catalog(procs)
                self.settle()
            yield procs
        except Exception:
            for settings, _ in procs:
                self.console.print(self.log(settings).read_text(errors="replace")[-3000:])
            raise
        finally:
            for _, proc in procs:
                self.stop_later(proc)

    @contextlib.contextmanager
    def worker(self, settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
        """One ``eddy worker``, ready, with the catalog applied; stopped on exit."""
        with self.workers([settings]) as ((_, proc),):
            yield proc

    def spawn_bare(self, settings: Settings) -> subprocess.Popen[bytes]:
        """Start the bare Faust agent (``streams.cli.bare``); ``bare`` waits for it."""
        with self.log(settings).open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "streams.cli.bare"],
                env={**os.environ, **settings.to_env()},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    @contextlib.contextmanager
    def bare(self, settings: Settings, proc: subprocess.Popen[bytes]) -> Iterator[float]:
        """The bare agent ``proc``, ready, with the time (unix) by which every process
        stopped before had exited; stopped on exit."""
        log = self.log(settings)
        try:
            with self.console.status(f"starting the bare Faust agent {settings.worker_id}…"):
                self.settle()
                settled_at = time.time()
                devstack.wait_worker_ready(proc, log)
            yield settled_at
        except Exception:
            self.console.print(log.read_text(errors="replace")[-3000:])
            raise
        finally:
            self.stop_later(proc)

    def stop_later(self, proc: subprocess.Popen[bytes]) -> None:
        """Kill a process group (SIGKILL: its numbers are read, and a graceful Faust
        shutdown takes 2-3 s of CPU); ``settle`` waits until it is gone."""
        process.signal_group(proc.pid, signal.SIGKILL)
        self.stopping.append(proc)

    def settle(self, timeout_s: float = 20.0) -> None:
        """Wait until every process stopped with ``stop_later`` has exited: nothing of an
        earlier phase runs during a measurement."""
        deadline = time.monotonic() + timeout_s
        for proc in self.stopping:
            while process.group_alive(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if process.group_alive(proc.pid):
                process.signal_group(proc.pid, signal.SIGKILL)
        self.stopping.clear()

    def _wait_catalog(self, procs: Sequence[Running]) -> None:
        """Wait until the workers have applied every catalog upsert (their stats say so)."""
        client, wanted = connect(procs[0][0]), len(self.items)

        def loaded() -> bool | None:
            return sum(s.get("items", 0) for s in worker_stats(client, procs)) >= wanted or None

        poll_process(procs[0][1], "loading the catalog", loaded)

    def produce(
        self, settings: Settings, events: list[Event], rate: float | None = None
    ) -> ReplayStats:
        """Send ``events`` (no items) to the phase's events topic, paced if ``rate``."""
        extra = {"linger.ms": 0} if rate is not None else None
        data = replace(self.dataset, items=[], events=events)
        topics = (settings.topic_events, settings.topic_items)
        return replay(settings.kafka_bootstrap, *topics, data, rate=rate, producer_extra=extra)


def prepare(run: _Run) -> ModelArtefact:
    """Train on the bundled MovieLens, save the artefact, produce the shared catalog."""
    with run.console.status("pre-training on MovieLens (eddy train)…"):
        artefact = train(run.dataset, TrainConfig())
        save(artefact, run.root / "artifacts")
        run.artefact = artefact
    run.console.print(
        f"model {artefact.version}: {len(artefact):,} item vectors, dim {artefact.dim}"
    )
    settings = run.settings("live")
    create_topics(settings)
    upserts = replace(run.dataset, items=run.items, events=[])
    replay(settings.kafka_bootstrap, settings.topic_events, settings.topic_items, upserts)
    return artefact


def bare_settings(run: _Run, settings: Settings) -> Settings:
    """The bare agent's settings for a phase: its own group, id, web port and data."""
    phase = settings.key_prefix.removeprefix("bench-")
    return settings.model_copy(
        update={
            "app_id": f"eddy-bare-{phase}",
            "worker_id": f"bare-{phase}",
            "web_port": devstack.free_port(),
            "data_dir": run.root / f"bare-{phase}",
        }
    )


def bare_agent(
    run: _Run, bare: Settings, proc: subprocess.Popen[bytes], expected: int
) -> dict[str, Any]:
    """The bare Faust agent ``proc`` reads the phase's events topic from offset 0, in its
    own group; its rate from its first to its newest event stamp."""
    client = connect(bare)

    def read() -> dict[str, float] | None:
        raw = client.hgetall(bare_stats_key(bare))
        got = {_text(k): float(v) for k, v in raw.items()}
        return got if got.get("events", 0) >= expected else None

    with run.bare(bare, proc) as settled_at:
        cpu = cpu_seconds(proc.pid)
        got = poll_process(proc, "reading events (bare Faust agent)", read, BARE_TIMEOUT_S)
        cpu = cpu_seconds(proc.pid) - cpu
    seconds = got["last_event_at"] - got["first_event_at"]
    alone = got["first_event_at"] >= settled_at
    if not alone:
        run.console.print("[yellow]the bare agent started before the worker had exited[/]")
    return {
        "events": int(got["events"]),
        "seconds": round(seconds, 4),
        "events_per_s": round(got["events"] / seconds, 1),
        "bytes_per_event": round(got["bytes"] / got["events"], 1),
        "cpu_ms_per_event": round(cpu * 1000 / got["events"], 4),
        "started_after_earlier_processes_exited": alone,
    }


def warm_up(
    run: _Run, settings: Settings, proc: subprocess.Popen[bytes], settle_s: float = 0.0
) -> dict[str, Any]:
    """Send single live-mix events (new users) one at a time, each timed from produce to
    its list in Redis, until ``WARM_IN_A_ROW`` in a row take under ``WARM_MS``: a freshly
    started worker still reads back its catalog table's changelog (one record at a time)
    and pays first-call costs, which a long-running worker has behind it."""
    client = connect(settings)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 0})
    tag = f"warm-{settings.worker_id}"
    started, fast, n, last = time.monotonic(), 0, 0, 0.0
    events = live_mix(run.dataset, WARM_MAX_EVENTS, WARM_MAX_EVENTS, tag, time.time())
    with run.console.status(f"warming {settings.worker_id} up…"):
        for event in events:
            n += 1
            key = settings.key("rec", event.user_id)
            t0 = time.monotonic()
            producer.produce(settings.topic_events, key=event.user_id.encode(), value=encode(event))
            producer.flush(10)
            while client.get(key) is None:
                if proc.poll() is not None:
                    raise RuntimeError(f"{settings.worker_id} exited while warming up")
                if time.monotonic() - t0 > WARM_TIMEOUT_S:
                    raise RuntimeError(f"{settings.worker_id} wrote no list in {WARM_TIMEOUT_S}s")
                time.sleep(0.002)
            last = (time.monotonic() - t0) * 1000
            fast = fast + 1 if last < WARM_MS else 0
            if fast >= WARM_IN_A_ROW:
                break
    time.sleep(settle_s)
    return {"events": n, "seconds": round(time.monotonic() - started, 2), "last_ms": round(last, 1)}


def throughput_row(run: _Run, mix: str, events: list[Event], description: str) -> dict[str, Any]:
    """One warm worker works through a burst of ``events``; then the bare Faust agent and
    the plain consumer read its events topic from offset 0 (the warm-up events and the
    burst). The worker's rate is the burst over (first produce -> its newest event
    stamp); its counters, CPU time and the topics' messages are counted over the burst."""
    settings = run.settings(mix)
    create_topics(settings)
    client = connect(settings)
    bare_config = bare_settings(run, settings)
    with run.worker(settings) as proc:
        # its item-updates and impressions out, its stats written, before counting
        warm = warm_up(run, settings, proc, settings.item_window_ms / 1000 + STATS_INTERVAL_S)
        before, counts_before = stats(client, settings), topic_counts(settings)
        mark = len(feed_entries(client, settings))
        load_start = load_average()
        cpu, started = cpu_seconds(proc.pid), time.time()
        sent = run.produce(settings, events)
        total = round(before.get("events_total", 0.0)) + len(events)
        wait_processed(client, settings, total, proc, run.console)
        cpu = cpu_seconds(proc.pid) - cpu
        # the bare agent imports while the worker sends its last window; it reads only
        # once the worker has gone (``bare_agent`` checks)
        bare_proc = run.spawn_bare(bare_config)
        try:
            time.sleep(settings.item_window_ms / 1000 + STATS_INTERVAL_S)  # the last window
            (after,) = wait_learned(client, [(settings, proc)])
            memory = memory_mb(proc.pid)
            counts = topic_counts(settings)
            feed = feed_entries(client, settings)[mark:]
        except BaseException:
            run.stop_later(bare_proc)
            raise
    bare = bare_agent(run, bare_config, bare_proc, total)
    with run.console.status("plain confluent-kafka consumer from offset 0…"):
        raw = raw_consume(settings.kafka_bootstrap, settings.topic_events, total)
    seconds = after["last_event_at"] - started
    rate = len(events) / seconds
    burst = _diff(after, before)
    lists = after["lists_published"] - before.get("lists_published", 0.0)
    messages = messages_between(settings, counts_before, counts, len(events))
    cpu_ms = cpu * 1000 / len(events)
    row = {
        "mix": mix,
        "description": description,
        **mix_shape(events),
        "warm_up": warm,
        "load_average_start": load_start,
        "load_average_end": load_average(),
        "produce_events_per_s": round(sent.events_per_s, 1),
        "worker": {
            "events_per_s": round(rate, 1),
            "seconds": round(seconds, 3),
            "cpu_ms_per_event": round(cpu_ms, 4),
            "events_total": burst["events_total"],
            "lists_published": lists,
            "lists_per_event": round(lists / len(events), 4),
            "item_updates_done": burst["item_updates_done"],
            "dead_letters": burst["dead_letters"],
            "duplicates": burst["duplicates"],
            "memory": memory,
        },
        "faust": bare,
        "raw_consume": raw,
        "worker_over_faust": round(rate / bare["events_per_s"], 4),
        "worker_over_raw": round(rate / raw["events_per_s"], 6),
        "worker_over_faust_cpu": round(bare["cpu_ms_per_event"] / cpu_ms, 4),
        "kafka_messages": messages,
        "consumed": consumed(burst, settings.worker_id, feed),
    }
    run.console.print(
        f"{mix}: worker {rate:,.0f} events/s, bare Faust agent {bare['events_per_s']:,.0f} "
        f"events/s (x{row['worker_over_faust']:.3f}); {messages['per_event']:.3f} Kafka "
        f"messages per event; load average {load_start[0]:.1f}"
    )
    return row


def messages_between(
    settings: Settings, before: Mapping[str, int], after: Mapping[str, int], events: int
) -> dict[str, Any]:
    """Messages written to every topic of a phase between two counts, per event; the
    catalog topics (upserts loaded before any event) apart."""
    per_topic = {t: n - before.get(t, 0) for t, n in after.items()}
    return per_event_messages(settings, per_topic, events)


def wait_owned(client: redis.Redis, workers: Sequence[Running]) -> list[int]:
    """Wait until the workers' stats say they share every events partition, each some."""
    want = workers[0][0].events_partitions

    def shared() -> list[int] | None:
        owned = [int(s.get("events_partitions", 0)) for s in worker_stats(client, workers)]
        return owned if sum(owned) == want and min(owned) > 0 else None

    return poll_process(workers[0][1], "sharing the events partitions", shared, 120.0)


def wait_total(
    client: redis.Redis, workers: Sequence[Running], total: int, stall_s: float = 60.0
) -> None:
    """Wait until the workers have applied ``total`` events between them."""
    last, changed = -1.0, time.monotonic()
    while True:
        done = sum(s.get("events_total", 0) for s in worker_stats(client, workers))
        if done >= total:
            return
        for _, proc in workers:
            if proc.poll() is not None:
                raise RuntimeError(f"a worker exited with code {proc.returncode}")
        if done != last:
            last, changed = done, time.monotonic()
        elif time.monotonic() - changed > stall_s:
            raise RuntimeError(
                f"the workers made no progress for {stall_s:.0f}s ({done:.0f} of {total})"
            )
        time.sleep(0.25)


def _diff(after: Mapping[str, float], before: Mapping[str, float]) -> dict[str, float]:
    """Counters of a worker's stats since ``before``."""
    keys = ("events_total", "duplicates", "dead_letters", "item_updates_done")
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in keys}


def topic_counts(settings: Settings) -> dict[str, int]:
    """Messages per topic of a phase (``kafka_messages``'s topics)."""
    return dict(kafka_messages(settings, 1)["per_topic"])


def two_workers(
    run: _Run,
    first: Running,
    second: Settings,
    events: list[Event],
    one: dict[str, Any],
    meanwhile: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """A second worker joins ``first`` (the freshness worker, done); the two share a
    live-mix stream. Each one's consumed messages per event it owns, counted from the
    moment both hold their partitions, against the one-worker live row's."""
    a, _ = first
    client = connect(a)
    with run.workers([second], wait_catalog=False, meanwhile=meanwhile) as (joined,):
        running = [first, joined]
        owned = wait_owned(client, running)
        before = worker_stats(client, running)
        mark = len(feed_entries(client, a))
        counts_before = topic_counts(a)
        load_start = load_average()
        started = time.time()
        run.produce(a, events)
        done = sum(s.get("events_total", 0.0) for s in before) + len(events)
        wait_total(client, running, round(done))
        time.sleep(a.item_window_ms / 1000 + STATS_INTERVAL_S)
        after = wait_learned(client, running)
        counts = topic_counts(a)
        feed = feed_entries(client, a)[mark:]
    messages = messages_between(a, counts_before, counts, len(events))
    baseline = one["consumed"]["per_event"]
    rows: list[dict[str, Any]] = []
    for (settings, _), now, then, partitions in zip(running, after, before, owned, strict=True):
        mine = consumed(_diff(now, then), settings.worker_id, feed)
        if not mine["events"]:
            raise RuntimeError(f"{settings.worker_id} owned no events of the two-worker run")
        rows.append(
            {
                "worker_id": settings.worker_id,
                "events_partitions": partitions,
                "consumed": mine,
                "ratio_to_one_worker": round(mine["per_event"] / baseline, 4),
            }
        )
    total_rate = len(events) / (max(w["last_event_at"] for w in after) - started)
    result = {
        **mix_shape(events),
        "load_average_start": load_start,
        "load_average_end": load_average(),
        "method": (
            "the freshness worker, then a second worker joins its group; counters, feed "
            "entries and topic messages counted from when both hold their partitions"
        ),
        "workers": rows,
        "one_worker_consumed_per_event": baseline,
        "max_ratio_to_one_worker": max(r["ratio_to_one_worker"] for r in rows),
        "events_per_s_together": round(total_rate, 1),
        "kafka_messages": messages,
    }
    run.console.print(
        "two workers: consumed messages per event "
        + ", ".join(f"{r['consumed']['per_event']:.4f}" for r in rows)
        + f" (one worker {baseline:.4f}); {total_rate:,.0f} events/s together"
    )
    return result


def freshness_rate(config: BenchConfig, live_rate: float) -> float:
    """The freshness phase's rate: as configured, else half the live worker's rate."""
    if config.freshness_rate is not None:
        return config.freshness_rate
    return float(max(MIN_FRESHNESS_RATE, round(FRESHNESS_SHARE * live_rate)))


def freshness_buckets(port: int) -> dict[float, float]:
    """The worker's freshness histogram from its ``/metrics``: upper bound (s) -> lists
    written within it, cumulative (``inf`` holds the count)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    out = {}
    for m in _BUCKET.finditer(text):
        out[float(m.group(1))] = float(m.group(2))
    if not out:
        raise RuntimeError("the worker's /metrics has no freshness histogram")
    return out


def histogram_quantile(buckets: Mapping[float, float], q: float) -> float:
    """The ``q`` quantile (s) of a cumulative histogram, linear within its bucket (as
    Prometheus's ``histogram_quantile``); the last finite bound if it falls past it."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return 0.0
    rank, lower, below = q * total, 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            width = count - below
            return lower + (bound - lower) * ((rank - below) / width if width else 1.0)
        lower, below = bound, count
    return lower


def freshness_run(run: _Run, worker: Running, rate: float) -> dict[str, Any]:
    """A warm worker gets a live-mix stream at ``rate``: freshness of this run's lists
    from the difference of its freshness histogram (``/metrics``) before and after, every
    touched user's list checked in Redis, its event loop probed."""
    settings, proc = worker
    count = max(1, round(rate * run.config.freshness_s))
    events = live_mix(run.dataset, count, run.config.live_users, "fresh", time.time())
    client = connect(settings)
    warm = warm_up(run, settings, proc)
    before = freshness_buckets(settings.web_port)
    total = round(stats(client, settings).get("events_total", 0.0)) + count
    load_start = load_average()
    log = run.log(settings)
    offset = log.stat().st_size
    with LoopProbe(settings.web_port) as probe:
        sent = run.produce(settings, events, rate)
        produced_at = time.monotonic()
        wait_processed(client, settings, total, proc, run.console)
        behind_s = time.monotonic() - produced_at
    time.sleep(STATS_INTERVAL_S + 0.5)  # the last lists' freshness is recorded
    after = freshness_buckets(settings.web_port)
    stats_now = stats(client, settings)
    memory = memory_mb(proc.pid)
    timers = timer_warnings(log, offset)
    run_buckets = {b: after[b] - before.get(b, 0.0) for b in after}
    lists = run_buckets[math.inf]
    if lists <= 0:
        raise RuntimeError("the freshness worker wrote no lists")
    p50 = histogram_quantile(run_buckets, 0.5) * 1000
    p99 = histogram_quantile(run_buckets, 0.99) * 1000
    refreshed = lists_refreshed(client, settings, events)
    loop = probe.summary()
    run.console.print(
        f"freshness at {rate:,.0f} events/s: p50 {p50:.1f} ms, p99 {p99:.1f} ms "
        f"({run_buckets[0.05] / lists:.1%} within 50 ms, {run_buckets[0.25] / lists:.1%} "
        f"within 250 ms); {refreshed['refreshed']:,} of {refreshed['users']:,} users' lists "
        f"refreshed; longest /health wait {loop['max_ms']:.1f} ms"
    )
    return {
        **mix_shape(events),
        "rate_events_per_s": rate,
        "produced_events_per_s": round(sent.events_per_s, 1),
        "warm_up": warm,
        "load_average_start": load_start,
        "load_average_end": load_average(),
        "p50_ms": round(p50, 3),
        "p99_ms": round(p99, 3),
        "within_50ms": round(run_buckets[0.05] / lists, 4),
        "within_250ms": round(run_buckets[0.25] / lists, 4),
        "lists_timed": lists,
        "histogram": {("+Inf" if math.isinf(b) else str(b)): n for b, n in run_buckets.items()},
        "max_ms_since_start": stats_now["freshness_ms_max"],
        "refreshed": refreshed,
        "done_after_last_produce_s": round(behind_s, 2),
        "loop_probe": loop,
        "timer_warnings": timers,
        "worker_memory": memory,
    }


def freshness_then_two(
    run: _Run, rate: float, one: dict[str, Any], meanwhile: Callable[[], None]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The freshness run on a fresh worker, then the two-worker run with a second one;
    ``meanwhile`` (CPU-time measurements in process) runs while the second one starts,
    which no wall-clock number of this run depends on."""
    a, b = run.settings("fresh", "a"), run.settings("fresh", "b")
    create_topics(a)
    config = run.config
    with run.workers([a]) as (first,):
        with timed_phase(run.phases, "freshness"):
            fresh = freshness_run(run, first, rate)
        with timed_phase(run.phases, "two workers (with the in-process work)"):
            stream = live_mix(
                run.dataset, config.two_worker_events, config.live_users, "two", time.time()
            )
            two = two_workers(run, first, b, stream, one, meanwhile)
    return fresh, two


def cpu_time_work(run: _Run, live_rate: float, out: dict[str, Any]) -> None:
    """The periodic work per item window and the Worker's profile, in process, in CPU
    time; single-threaded code, so other processes change their wall time, not this."""
    assert run.artefact is not None
    config, base = run.config, run.base
    window = max(1, round(live_rate * base.item_window_ms / 1000))
    windows = config.periodic_windows
    with timed_phase(run.phases, "periodic"), run.console.status("periodic work, in process…"):
        events = live_mix(run.dataset, window * windows, config.live_users, "periodic", time.time())
        out["periodic"] = periodic(base, run.artefact, run.items, events, window)
    with timed_phase(run.phases, "profile"), run.console.status("profiling the Worker…"):
        out["profile"] = profile(
            base, run.artefact, run.items, run.live[: config.profile_events], live_rate
        )


def machine() -> dict[str, Any]:
    """What this run ran on, with the load average as a hint of other processes."""
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average": load_average(),
    }


def measure_stack(run: _Run) -> dict[str, Any]:
    """The measurements that need the broker, Redis and workers."""
    config = run.config
    with timed_phase(run.phases, "live row"):
        live = throughput_row(
            run,
            "live",
            run.live,
            f"synthetic live mix: {config.live_users:,} users taking turns on the MovieLens "
            "catalogue, each following a MovieLens user's history",
        )
    with timed_phase(run.phases, "bulk row"):
        bulk = throughput_row(run, "bulk", run.bulk, "MovieLens ratings in time order (bulk)")
    live_rate = live["worker"]["events_per_s"]
    in_process: dict[str, Any] = {}
    work = partial(cpu_time_work, run, live_rate, in_process)
    fresh, two = freshness_then_two(run, freshness_rate(config, live_rate), live, work)
    settings = run.settings("live")
    keys = [settings.key("rec", u) for u in sorted({e.user_id for e in run.live})]
    with timed_phase(run.phases, "redis reads"), run.console.status("Redis: GET against PING…"):
        reads = redis_reads(connect(settings), keys, config.redis_samples)
    return {
        "throughput": {"live": live, "bulk": bulk},
        "two_workers": two,
        "freshness": fresh,
        "redis_read": reads,
        **in_process,
    }


def on_stack(
    config: BenchConfig,
    console: Console,
    base: Settings,
    dataset: Dataset,
    phases: dict[str, float],
) -> tuple[ModelArtefact, list[ItemUpsert], dict[str, Any]]:
    """Start the stack in a temporary directory, measure, and stop it again."""
    with tempfile.TemporaryDirectory(prefix="eddy-bench-") as tmp:
        root = Path(tmp)
        with (
            timed_phase(phases, "stack start"),
            console.status(f"starting the embedded stack ({config.broker} + redis-server)…"),
        ):
            stack = devstack.start(root / "services", broker=config.broker)
        try:
            run = _Run(console, config, root, stack, base, dataset, phases)
            with timed_phase(phases, "train and catalog"):
                artefact = prepare(run)
            try:
                return artefact, run.items, measure_stack(run)
            finally:
                run.settle()
        finally:
            devstack.stop(stack)


def ranking_phase(
    config: BenchConfig,
    console: Console,
    base: Settings,
    dataset: Dataset,
    artefact: ModelArtefact,
    items: list[ItemUpsert],
    phases: dict[str, float],
) -> list[dict[str, Any]]:
    """Ranking in process, after the stack has stopped (FAISS and BLAS use every core)."""
    with timed_phase(phases, "ranking"):
        return ranking(base, artefact, dataset, items, config, console)


def run_bench(config: BenchConfig, console: Console) -> dict[str, Any]:
    """Run every measurement once; stops all it started, also on errors and Ctrl-C."""
    clock = time.monotonic()
    result: dict[str, Any] = {"schema": SCHEMA, "started_at": datetime.now(UTC).isoformat()}
    result.update(machine=machine(), config=asdict(config))
    dataset = load_movielens(BUNDLED_MOVIELENS)
    if not 0 < config.events < len(dataset.events):
        raise ValueError(f"--events must be between 1 and {len(dataset.events) - 1:,}")
    for name in ("live_events", "live_users", "two_worker_events"):
        if getattr(config, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    result["dataset"] = {"name": "MovieLens latest-small", "items": len(dataset.items)}
    base = load_settings()
    phases: dict[str, float] = {}
    artefact, items, measured = on_stack(config, console, base, dataset, phases)
    result.update(model={"version": artefact.version, "items": len(artefact)}, **measured)
    result["ranking"] = ranking_phase(config, console, base, dataset, artefact, items, phases)
    with timed_phase(phases, "retrieval"):
        result["retrieval"] = retrieval(config.retrieval_sizes, console)
    result["targets"] = targets(result)
    result["phase_seconds"] = phases
    result["machine"]["load_average_end"] = load_average()
    result["duration_s"] = round(time.monotonic() - clock, 1)
    return result


# --- output ---------------------------------------------------------------------------
def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _load(row: Mapping[str, Any]) -> str:
    return f"{row['load_average_start'][0]:.1f} → {row['load_average_end'][0]:.1f}"


def targets_table(result: dict[str, Any]) -> Table:
    """Each target with the measured value, whether it is met and the ratio; the
    condition it holds under below the table."""
    table = Table(title="Targets (issue 9, 2-core machine)", title_justify="left")
    table.add_column("target", no_wrap=True)
    for col in ("measured", "goal", "met", "measured / goal"):
        table.add_column(col, justify="right")
    notes = []
    for t in result["targets"]:
        met = "[green]yes[/]" if t["met"] else "[red]no[/]"
        if t["value_within_target"] and not t["met"]:
            met += "*"
        goal = f"{t['op']} {_number(t['target'])} {t['unit']}".rstrip()
        table.add_row(t["name"], _number(t["value"]), goal, met, f"{t['ratio']:.3g}")
        if t["condition"]:
            notes.append(f"{t['name']}: {t['condition']}")
    if any(t["value_within_target"] and not t["met"] for t in result["targets"]):
        notes.append("* within the goal, but not measured under its condition")
    table.caption = "\n".join(notes)
    table.caption_justify = "left"
    return table


def throughput_table(result: dict[str, Any]) -> Table:
    """Each traffic mix: the worker against the bare Faust agent on the same events."""
    rows = list(result["throughput"].values())
    table = Table(
        title="Throughput: one worker against a bare Faust agent (same run)", title_justify="left"
    )
    table.add_column("measure")
    for row in rows:
        table.add_column(f"{row['mix']} mix", justify="right")
    measures: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("events / users", lambda r: f"{r['events']:,} / {r['users']:,}"),
        ("worker events/s", lambda r: _number(r["worker"]["events_per_s"])),
        ("bare Faust agent events/s", lambda r: _number(r["faust"]["events_per_s"])),
        ("worker / bare Faust agent", lambda r: f"{r['worker_over_faust']:.3g}"),
        ("CPU ms per event: worker", lambda r: f"{r['worker']['cpu_ms_per_event']:.3f}"),
        ("CPU ms per event: bare Faust agent", lambda r: f"{r['faust']['cpu_ms_per_event']:.3f}"),
        ("bare agent CPU / worker CPU, per event", lambda r: f"{r['worker_over_faust_cpu']:.3g}"),
        (
            "plain confluent-kafka consumer events/s",
            lambda r: _number(r["raw_consume"]["events_per_s"]),
        ),
        ("lists written per event", lambda r: f"{r['worker']['lists_per_event']:.3g}"),
        ("Kafka messages per event", lambda r: f"{r['kafka_messages']['per_event']:.3f}"),
        ("messages consumed per event", lambda r: f"{r['consumed']['per_event']:.3f}"),
        ("load average (1 min), start → end", _load),
    ]
    for name, cell in measures:
        table.add_row(name, *(cell(r) for r in rows))
    return table


def ranking_table(result: dict[str, Any]) -> Table:
    table = Table(title="Ranking CPU per list, in process", title_justify="left")
    for col in ("catalogue", "items", "ranker", "lists / batch", "CPU ms / list", "CPU ms / batch"):
        table.add_column(col, justify="left" if col in ("catalogue", "ranker") else "right")
    for r in result["ranking"]:
        table.add_row(
            r["catalogue"],
            f"{r['items']:,}",
            r["ranker"],
            str(r["lists_per_batch"]),
            f"{r['cpu_ms_per_list']:.3f}",
            f"{r['cpu_ms_per_batch']:.2f}",
        )
    return table


def two_workers_table(result: dict[str, Any]) -> Table:
    two = result["two_workers"]
    table = Table(
        title=f"Two workers on one live-mix stream (load avg {_load(two)})", title_justify="left"
    )
    for col in ("worker", "parts", "events", "updates", "feed", "consumed / event", "vs one"):
        table.add_column(col, justify="left" if col == "worker" else "right", no_wrap=True)
    table.caption = (
        "consumed = events + item-updates + Redis item-feed entries read; "
        f"one worker (live row): {two['one_worker_consumed_per_event']:.4f} per event"
    )
    for r in two["workers"]:
        c = r["consumed"]
        table.add_row(
            r["worker_id"],
            str(r["events_partitions"]),
            f"{c['events']:,}",
            str(c["item_updates"]),
            str(c["feed_entries"]),
            f"{c['per_event']:.4f}",
            f"{r['ratio_to_one_worker']:.3f}",
        )
    return table


def loop_table(result: dict[str, Any]) -> Table:
    fresh = result["freshness"]
    probe = fresh["loop_probe"]
    table = Table(title="Event loop: longest blocking", title_justify="left")
    table.add_column("what")
    table.add_column("measured", justify="right")
    table.add_row(
        f"GET /health wait during the freshness run ({probe['samples']:,} probes)",
        f"p50 {probe['p50_ms']:.1f} / p99 {probe['p99_ms']:.1f} / max {probe['max_ms']:.1f} ms",
    )
    for kind, timers in fresh["timer_warnings"].items():
        for name, row in timers.items():
            table.add_row(
                f"Faust timer {name} {kind} (log)",
                f"{row['count']}x, longest {row['max_ms']:.0f} ms",
            )
    for name, row in result["periodic"]["calls"].items():
        table.add_row(
            f"in process: {name}",
            f"CPU mean {row['cpu_ms_mean']:.2f} / max {row['cpu_ms_max']:.2f} ms",
        )
    return table


def baselines_table(result: dict[str, Any]) -> Table:
    """Redis and retrieval against their raw baselines measured in the same run."""
    table = Table(
        title="Redis and retrieval against their baselines (same run)", title_justify="left"
    )
    for col in ("measure", "Eddy", "baseline", "ratio"):
        table.add_column(col)
    reads = result["redis_read"]
    table.add_row(
        "Redis p99 ms, GET list vs PING",
        _number(reads["get_ms"]["p99"]),
        _number(reads["ping_ms"]["p99"]),
        f"{reads['get_p99_over_ping_p99']:.3g}",
    )
    for r in result["retrieval"]:
        table.add_row(
            f"retrieval p99 ms at {r['n_items']:,}, FAISS vs exact (recall {r['recall_at_k']:.3f})",
            _number(r["faiss_single_ms"]["p99"]),
            _number(r["exact_single_ms"]["p99"]),
            f"{r['faiss_over_exact_p99']:.3g}",
        )
    return table


def summary(console: Console, result: dict[str, Any]) -> None:
    """The tables, worker memory and the profile's top functions."""
    console.rule("Measured in this run")
    console.print(throughput_table(result))
    console.print(two_workers_table(result))
    console.print(ranking_table(result))
    console.print(loop_table(result))
    console.print(baselines_table(result))
    console.print(targets_table(result))
    live, fresh = result["throughput"]["live"], result["freshness"]
    console.print(
        f"freshness run: {fresh['rate_events_per_s']:,.0f} events/s, load average {_load(fresh)}; "
        f"worker RSS at the end of the live row {live['worker']['memory']['rss_mb']:,.0f} MiB "
        f"(peak {live['worker']['memory']['peak_rss_mb']:,.0f})"
    )
    prof = result["profile"]
    if prof is not None:
        console.print(
            f"profile: the Worker alone {prof['in_process_events_per_cpu_s']:,.0f} events per CPU "
            f"second ({prof['cpu_ms_per_event']:.2f} ms per event); "
            f"{prof['worker_share_outside_processor']:.0%} of the live worker's time per event "
            "is outside it (Faust, Kafka, Redis). Top own time:"
        )
        for row in prof["top_own_time"][:8]:
            console.print(f"  {row['share_of_total']:>6.1%}  {row['function']}")
    console.print(f"took {result['duration_s']:.0f} s")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(console: Console, config: BenchConfig, json_path: Path | None) -> int:
    """``eddy bench``: run, print the summary, write the JSON; return the exit code."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        result = run_bench(config, console)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: stopped the workers, broker and redis-server[/]")
        return 130
    except (RuntimeError, ValueError, OSError) as exc:
        console.print(f"[red]bench failed: {exc}[/]")
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    summary(console, result)
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
        console.print(f"wrote {json_path}")
    return 0
