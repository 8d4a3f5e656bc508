"""``eddy bench``: throughput, freshness, Redis reads, retrieval and RSS, measured in one run.

Everything runs on the embedded stack (noida-db broker + redis-server) on this machine,
and each raw baseline is measured in the same run, so that ratios hold on a noisy box:

1. pre-train on the bundled MovieLens (as ``eddy demo``) and produce its catalog;
2. bulk: one worker (full learning path) loads the catalog, then N MovieLens events
   (ratings relabelled as events) are produced as one burst and it works through the
   backlog; events/s from its first event until its item learning is done too (its
   stats hash), its RSS, and the Kafka messages written per event;
3. baseline: a plain confluent-kafka consumer reads the same N events from offset 0;
4. steady: a fresh worker on its own topics gets the following events at a paced rate
   it sustains; freshness (produced -> list written) p50 / p99 / max from its stats
   hash, which holds only this phase's samples;
5. Redis: ``GET`` of one list against ``PING`` (redis-py, one call at a time);
6. retrieval: ``models.retrieval_bench.benchmark`` per size (FAISS against exact numpy);
7. the issue's targets and, where throughput misses, a cProfile of ``streams.worker.Worker``
   in-process over the same events (no Kafka, no Faust, ``MemorySink``).
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import json
import os
import platform
import pstats
import signal
import subprocess
import sysconfig
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from functools import cached_property
from itertools import cycle, islice
from pathlib import Path
from types import FrameType
from typing import Any, Final, Literal, TypeVar

import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from rich.console import Console
from rich.table import Table

from infra import devstack
from models.artefact import ModelArtefact, save
from models.datasets import BUNDLED_MOVIELENS, Dataset, load_movielens
from models.events import Event, ItemUpsert, encode
from models.itemlearn import learn
from models.retrieval_bench import _percentiles_ms, benchmark
from models.step import Inbound
from models.training import TrainConfig, train
from streams.app import STATS_INTERVAL_S
from streams.cli.demo import stats, wait_processed
from streams.cli.replay import ReplayStats, replay
from streams.reader import connect
from streams.settings import Settings, load_settings
from streams.sink import MemorySink
from streams.topics import create_topics
from streams.worker import Worker

T = TypeVar("T")

STEADY_SHARE: Final = 0.1
"""Auto freshness rate: this share of the bulk rate. Live lists are ranked per flush,
not coalesced for 2 s as in a backlog, so a worker keeps lists fresh at a much lower
rate than it clears a backlog (2 cores: fresh at 40/s, coalescing at 86/s, 345/s bulk)."""
MIN_STEADY_RATE: Final = 10.0
WARMUP_CALLS: Final = 200
PROFILE_TOP: Final = 15
BACKLOG_AGE_S: Final = 60.0
"""In-process profile: events look produced this long ago, as the bulk backlog does."""
SCHEMA: Final = "eddy-bench/1"
_ROOT: Final = Path(__file__).resolve().parents[2]
_SITE: Final = "site-packages/"
_HARNESS: Final = ("streams/cli/bench.py", "asyncio/", "_contextvars", "_lsprof")
"""Profile rows of the in-process harness, not of the worker's code."""


@dataclass(frozen=True)
class BenchConfig:
    """Sizes of one run; the defaults take 2 minutes on 2 quiet cores, more under load."""

    events: int = 10_000
    retrieval_sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    steady_rate: float | None = None
    """Freshness phase events/s; None: ``STEADY_SHARE`` of the measured bulk rate."""
    steady_s: float = 20.0
    redis_samples: int = 20_000
    profile_events: int = 4_000
    full_catalog: bool = True
    """Produce the whole catalog; False: only the items of the first 2 x ``events`` events."""


QUICK: Final = BenchConfig(
    events=2_000,
    retrieval_sizes=(10_000,),
    steady_s=4.0,
    redis_samples=2_000,
    profile_events=500,
    full_catalog=False,
)


def catalog(config: BenchConfig, dataset: Dataset) -> list[ItemUpsert]:
    """The item upserts a run produces (every worker applies them before any event)."""
    if config.full_catalog:
        return dataset.items
    used = {e.item_id for e in dataset.events[: 2 * config.events]}
    return [item for item in dataset.items if item.item_id in used]


def make_config(
    quick: bool, events: int | None, sizes: str | None, rate: float | None
) -> BenchConfig:
    """The quick or default sizes, with what the command line overrides."""
    config = QUICK if quick else BenchConfig()
    if sizes is not None:
        config = replace(config, retrieval_sizes=parse_sizes(sizes))
    if events is not None:
        config = replace(config, events=events)
    return config if rate is None else replace(config, steady_rate=rate)


def parse_sizes(text: str) -> tuple[int, ...]:
    """``"10000,100000,1_000_000"`` -> sizes; ``ValueError`` unless all are positive ints."""
    try:
        sizes = tuple(int(part.strip().replace("_", "")) for part in text.split(",") if part)
    except ValueError:
        raise ValueError(f"sizes must be whole numbers separated by commas, not {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise ValueError(f"sizes must be positive, not {text!r}")
    return sizes


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


def memory_mb(pid: int) -> dict[str, float]:
    """Resident set size now and at its peak (VmRSS, VmHWM from /proc), in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = round(int(value.split()[0]) / 1024, 1)
    return {"rss_mb": fields["VmRSS"], "peak_rss_mb": fields["VmHWM"]}


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
    """Messages in the phase's topics and Faust's internal ones; per event processed
    (leaving out the catalog changelog, which holds catalog upserts)."""
    mine = {
        settings.topic_events,
        settings.topic_item_updates,
        settings.topic_impressions,
        settings.topic_dlq,
    }
    with kafka_admin(settings.kafka_bootstrap) as admin:
        counts = message_counts(admin, lambda t: t in mine or t.startswith(f"{settings.app_id}-"))
    catalog = f"{settings.app_id}-catalog-changelog"  # catalog upserts, not events
    total = sum(n for name, n in counts.items() if name != catalog)
    return {"per_topic": counts, "total_for_events": total, "per_event": round(total / events, 2)}


def poll_worker(
    proc: subprocess.Popen[bytes],
    doing: str,
    done: Callable[[], T | None],
    timeout_s: float = 300.0,
) -> T:
    """Call ``done`` every 0.25 s until it returns a value; ``RuntimeError`` if the
    worker exits or ``timeout_s`` passes first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = done()
        if result is not None:
            return result
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited with code {proc.returncode} while {doing}")
        time.sleep(0.25)
    raise RuntimeError(f"the worker was still {doing} after {timeout_s:.0f}s")


def wait_learned(
    client: redis.Redis, settings: Settings, proc: subprocess.Popen[bytes]
) -> dict[str, float]:
    """Wait until the worker has consumed every message in its item-updates topic
    (learning steps and quality counts alike); return its stats at that point."""
    topic = settings.topic_item_updates
    with kafka_admin(settings.kafka_bootstrap) as admin:

        def learned() -> dict[str, float] | None:
            sent = message_counts(admin, lambda t: t == topic).get(topic, 0)
            now = stats(client, settings)
            return now if now.get("item_updates_done", 0) >= sent else None

        return poll_worker(proc, "learning item updates", learned)


# --- in-process profile ---------------------------------------------------------------
def process_in_process(
    settings: Settings,
    prior: ModelArtefact,
    items: Sequence[ItemUpsert],
    events: Sequence[Event],
    profiler: cProfile.Profile | None = None,
) -> float:
    """Run ``events`` through a fresh ``Worker`` (``MemorySink``) in micro-batches as the
    agent forms them, with the item owner's learning applied per window; return events/s.
    The catalog is loaded first, untimed and unprofiled."""
    worker = Worker(settings, MemorySink(), prior=prior)
    loop = asyncio.new_event_loop()
    try:
        for item in items:
            worker.on_item(encode(item), item.item_id.encode())
        loop.run_until_complete(worker.flush())
        payloads = [(encode(e), e.user_id.encode()) for e in events]
        produced_at = time.time() - BACKLOG_AGE_S
        size = settings.batch_max_events
        started = time.perf_counter()
        with profiler or contextlib.nullcontext():
            for start in range(0, len(payloads), size):
                batch = []
                for n, (raw, key) in enumerate(payloads[start : start + size], start):
                    decoded = worker.decode(raw, key, (0, n), produced_at)
                    if isinstance(decoded, Inbound):
                        batch.append(decoded)
                loop.run_until_complete(worker.process(batch))
                deltas = worker.item_deltas
                worker.item_deltas = {}
                learn(deltas, worker.step.popularity, worker.items, worker.step.item_versions)
                worker.impressions = []
                worker.refresh_popular()
        return len(payloads) / (time.perf_counter() - started)
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


def ms_per_call(stats: pstats.StatsProfile, file_end: str, name: str) -> float | None:
    """Cumulative milliseconds per call of one function (under the profiler)."""
    for fn, fp in stats.func_profiles.items():
        if fn == name and fp.file_name.endswith(file_end):
            calls = int(fp.ncalls.split("/")[0])
            return round(fp.cumtime * 1000 / calls, 3) if calls else None
    return None


def profile(
    settings: Settings,
    prior: ModelArtefact,
    items: Sequence[ItemUpsert],
    events: Sequence[Event],
    worker_rate: float,
) -> dict[str, Any]:
    """Where an event's time goes: the processor alone, timed and under cProfile."""
    rate = process_in_process(settings, prior, items, events)
    profiler = cProfile.Profile()
    process_in_process(settings, prior, items, events, profiler)
    stats = pstats.Stats(profiler).get_stats_profile()
    return {
        "method": (
            "the first events through one Worker in-process (MemorySink, micro-batches "
            "of EDDY_BATCH_MAX_EVENTS, the owner's item learning per batch), once timed "
            "and once under cProfile"
        ),
        "events": len(events),
        "in_process_events_per_s": round(rate, 1),
        "worker_share_outside_processor": round(max(0.0, 1 - worker_rate / rate), 3),
        "profiled_ms_per_batch": ms_per_call(stats, "models/step.py", "run"),
        "profiled_ms_per_batch_ranked": ms_per_call(stats, "models/step.py", "_rank"),
        "top_cumulative": profile_rows(stats, "cumtime", PROFILE_TOP),
        "top_own_time": profile_rows(stats, "tottime", PROFILE_TOP),
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


TARGET_EVENTS_PER_S: Final = 10_000.0
TARGET_RETRIEVAL_ITEMS: Final = 1_000_000
GOALS: Final = {
    goal.name: goal
    for goal in (
        Goal("worker_events_per_s", TARGET_EVENTS_PER_S, ">=", "events/s"),
        Goal("freshness_p50_ms", 50.0, "<="),
        Goal("freshness_p99_ms", 250.0, "<="),
        Goal("redis_read_p99_ms", 0.3, "<="),
        Goal("retrieval_recall_at_100", 0.95, ">=", ""),
        Goal("retrieval_p99_ms", 2.0, "<="),
    )
}


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets against this run's numbers."""
    fresh = result["freshness"]
    rate = fresh["rate_events_per_s"]
    at_rate = (
        f"at {TARGET_EVENTS_PER_S:,.0f} events/s; measured at {rate:,.0f}",
        rate >= TARGET_EVENTS_PER_S,
    )
    largest = max(result["retrieval"], key=lambda r: r["n_items"])
    n = largest["n_items"]
    at_size = (
        f"at {TARGET_RETRIEVAL_ITEMS:,} items; measured at {n:,}",
        n >= TARGET_RETRIEVAL_ITEMS,
    )
    measured = {
        "worker_events_per_s": (result["throughput"]["worker_events_per_s"], ("", True)),
        "freshness_p50_ms": (fresh["p50_ms"], at_rate),
        "freshness_p99_ms": (fresh["p99_ms"], at_rate),
        "redis_read_p99_ms": (result["redis_read"]["get_ms"]["p99"], ("", True)),
        "retrieval_recall_at_100": (largest["recall_at_k"], at_size),
        "retrieval_p99_ms": (largest["faiss_single_ms"]["p99"], at_size),
    }
    return [GOALS[name].judge(value, *note) for name, (value, note) in measured.items()]


# --- the run on the embedded stack ----------------------------------------------------
@dataclass
class _Run:
    """One run: where it lives, the stack, the data, and the worker logs written."""

    console: Console
    config: BenchConfig
    root: Path
    stack: devstack.Stack
    base: Settings
    dataset: Dataset

    @cached_property
    def items(self) -> list[ItemUpsert]:
        """The catalog upserts every worker applies before its first event."""
        return catalog(self.config, self.dataset)

    def settings(self, phase: str) -> Settings:
        """Settings of one phase: its own topics, group and worker id; a shared catalog."""
        tag = f"bench-{phase}"
        update = {
            "kafka_bootstrap": self.stack.kafka_bootstrap,
            "redis_url": self.stack.redis_url,
            "app_id": f"eddy-{tag}",
            "topic_events": f"{tag}.events",
            "topic_item_updates": f"{tag}.item-updates",
            "topic_impressions": f"{tag}.impressions",
            "topic_dlq": f"{tag}.events.dlq",
            "topic_items": "bench.items",
            "worker_id": tag,
            "web_port": devstack.free_port(),
            "data_dir": self.root / tag,
            "state_dir": self.root / "state",
            "model_dir": self.root / "artifacts",
        }
        return Settings.model_validate({**self.base.model_dump(), **update})

    @contextlib.contextmanager
    def worker(self, settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
        """An ``eddy worker`` that is ready and has loaded the catalog; stopped on exit."""
        log = self.root / f"{settings.worker_id}.log"
        proc = devstack.spawn_worker(settings.to_env(), log)
        try:
            with self.console.status(f"starting {settings.worker_id} and loading the catalog…"):
                devstack.wait_worker_ready(proc, log)
                self._wait_catalog(settings, proc)
            yield proc
        except Exception:
            self.console.print(log.read_text(errors="replace")[-3000:])
            raise
        finally:
            devstack.stop_pid(proc.pid, timeout_s=20)

    def _wait_catalog(self, settings: Settings, proc: subprocess.Popen[bytes]) -> None:
        """Wait until the worker has applied every catalog upsert (its stats say so)."""
        client, wanted = connect(settings), len(self.items)

        def loaded() -> bool | None:
            return stats(client, settings).get("items", 0) >= wanted or None

        poll_worker(proc, "loading the catalog", loaded)

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
    run.console.print(
        f"model {artefact.version}: {len(artefact):,} item vectors, dim {artefact.dim}"
    )
    settings = run.settings("bulk")
    create_topics(settings)
    upserts = replace(run.dataset, items=run.items, events=[])
    replay(settings.kafka_bootstrap, settings.topic_events, settings.topic_items, upserts)
    return artefact


def bulk_phase(run: _Run) -> dict[str, Any]:
    """One worker (catalog loaded) works through a burst of N events; then the raw
    consumer reads the same N events from offset 0."""
    settings = run.settings("bulk")
    events = run.dataset.events[: run.config.events]
    client = connect(settings)
    with run.worker(settings) as proc:
        sent = run.produce(settings, events)
        wait_processed(client, settings, len(events), proc, run.console)
        worker = wait_learned(client, settings, proc)
        memory = memory_mb(proc.pid)
        messages = kafka_messages(settings, len(events))
    with run.console.status("baseline: plain confluent-kafka consumer from offset 0…"):
        raw = raw_consume(settings.kafka_bootstrap, settings.topic_events, len(events))
    total, first = worker["events_total"], worker["first_event_at"]
    rate = total / (worker["updated_at"] - first)
    events_only = total / (worker["last_event_at"] - first)
    run.console.print(
        f"worker {rate:,.0f} events/s with item learning ({events_only:,.0f} events/s "
        f"events agent alone); raw consumer {raw['events_per_s']:,.0f} events/s"
    )
    return {
        "events": len(events),
        "produce_events_per_s": round(sent.events_per_s, 1),
        "raw_consume": raw,
        "worker_events_per_s": round(rate, 1),
        "worker_seconds": round(worker["updated_at"] - first, 3),
        "worker_over_raw": round(rate / raw["events_per_s"], 6),
        "events_agent_events_per_s": round(events_only, 1),
        "events_agent_seconds": round(worker["last_event_at"] - first, 3),
        "item_updates_done": worker["item_updates_done"],
        "lists_published": worker["lists_published"],
        "dead_letters": worker["dead_letters"],
        "kafka_messages": messages,
        "worker_memory": memory,
    }


def steady_rate(config: BenchConfig, bulk_rate: float) -> float:
    """The freshness phase's rate: as configured, else a share of the bulk rate."""
    if config.steady_rate is not None:
        return config.steady_rate
    return round(max(MIN_STEADY_RATE, min(TARGET_EVENTS_PER_S, STEADY_SHARE * bulk_rate)))


def steady_phase(run: _Run, rate: float) -> dict[str, Any]:
    """A fresh worker gets the events after the bulk ones at ``rate``; freshness from
    its stats hash, which then holds only this phase's samples."""
    settings = run.settings("steady")
    create_topics(settings)
    n = run.config.events
    count = max(1, round(rate * run.config.steady_s))
    events = list(islice(cycle([*run.dataset.events[n:], *run.dataset.events[:n]]), count))
    client = connect(settings)
    with run.worker(settings) as proc:
        sent = run.produce(settings, events, rate)
        produced_at = time.monotonic()
        wait_processed(client, settings, count, proc, run.console)
        behind_s = time.monotonic() - produced_at
        time.sleep(STATS_INTERVAL_S + 0.5)  # the last lists' samples reach the next snapshot
        worker = stats(client, settings)
        memory = memory_mb(proc.pid)
    if "freshness_ms_p50" not in worker:
        raise RuntimeError("the steady worker recorded no freshness samples")
    run.console.print(
        f"freshness at {rate:,.0f} events/s: p50 {worker['freshness_ms_p50']:.1f} ms, "
        f"p99 {worker['freshness_ms_p99']:.1f} ms, max {worker['freshness_ms_max']:.1f} ms"
    )
    return {
        "rate_events_per_s": rate,
        "produced_events_per_s": round(sent.events_per_s, 1),
        "events": count,
        "p50_ms": worker["freshness_ms_p50"],
        "p99_ms": worker["freshness_ms_p99"],
        "max_ms": worker["freshness_ms_max"],
        "samples": worker["freshness_samples"],
        "lists_published": worker["lists_published"],
        "done_after_last_produce_s": round(behind_s, 2),
        "worker_memory": memory,
    }


def machine() -> dict[str, Any]:
    """What this run ran on, with the load average as a hint of other processes."""
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def measure_stack(run: _Run) -> dict[str, Any]:
    """The measurements that need the broker, Redis and workers."""
    bulk = bulk_phase(run)
    fresh = steady_phase(run, steady_rate(run.config, bulk["worker_events_per_s"]))
    settings = run.settings("bulk")
    users = sorted({e.user_id for e in run.dataset.events[: run.config.events]})
    keys = [settings.key("rec", u) for u in users]
    with run.console.status("Redis: GET of one list against PING…"):
        reads = redis_reads(connect(settings), keys, run.config.redis_samples)
    return {"throughput": bulk, "freshness": fresh, "redis_read": reads}


def on_stack(
    config: BenchConfig, console: Console, base: Settings, dataset: Dataset
) -> tuple[ModelArtefact, dict[str, Any]]:
    """Start the stack in a temporary directory, measure, and stop it again."""
    with tempfile.TemporaryDirectory(prefix="eddy-bench-") as tmp:
        root = Path(tmp)
        with console.status("starting the embedded stack (noida-db + redis-server)…"):
            stack = devstack.start(root / "services")
        try:
            run = _Run(console, config, root, stack, base, dataset)
            artefact = prepare(run)
            return artefact, measure_stack(run)
        finally:
            devstack.stop(stack)


def run_bench(config: BenchConfig, console: Console) -> dict[str, Any]:
    """Run every measurement once; stops all it started, also on errors and Ctrl-C."""
    clock = time.monotonic()
    result: dict[str, Any] = {"schema": SCHEMA, "started_at": datetime.now(UTC).isoformat()}
    result.update(machine=machine(), config=asdict(config))
    dataset = load_movielens(BUNDLED_MOVIELENS)
    if not 0 < config.events < len(dataset.events):
        raise ValueError(f"--events must be between 1 and {len(dataset.events) - 1:,}")
    result["dataset"] = {"name": "MovieLens latest-small", "items": len(dataset.items)}
    base = load_settings()
    artefact, measured = on_stack(config, console, base, dataset)
    result.update(model={"version": artefact.version, "items": len(artefact)}, **measured)
    result["retrieval"] = retrieval(config.retrieval_sizes, console)
    result["targets"] = targets(result)
    result["profile"] = None
    throughput = result["throughput"]["worker_events_per_s"]
    if throughput < TARGET_EVENTS_PER_S:
        with console.status("throughput target missed: profiling the Worker in-process…"):
            result["profile"] = profile(
                base,
                artefact,
                catalog(config, dataset),
                dataset.events[: config.profile_events],
                throughput,
            )
    result["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    result["duration_s"] = round(time.monotonic() - clock, 1)
    return result


# --- output ---------------------------------------------------------------------------
def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def targets_table(result: dict[str, Any]) -> Table:
    """Each target with the measured value, whether it is met and the ratio."""
    table = Table(title="Targets (issue, 2-core machine)", title_justify="left")
    table.add_column("target", no_wrap=True)
    for col in ("measured", "goal", "met", "measured / goal"):
        table.add_column(col, justify="right")
    for t in result["targets"]:
        met = (
            "[green]yes[/]"
            if t["met"]
            else "[red]no[/]" + ("*" if t["value_within_target"] else "")
        )
        goal = f"{t['op']} {_number(t['target'])} {t['unit']}"
        table.add_row(t["name"], _number(t["value"]), goal, met, f"{t['ratio']:.3g}")
    notes = {t["condition"] for t in result["targets"] if t["value_within_target"] and not t["met"]}
    table.caption = "\n".join(f"* within the goal, which holds {n}" for n in sorted(notes))
    return table


def baselines_table(result: dict[str, Any]) -> Table:
    """Eddy against the raw baseline measured in the same run."""
    table = Table(title="Against the raw baselines (same run)", title_justify="left")
    for col in ("measure", "Eddy", "baseline", "ratio"):
        table.add_column(col)
    bulk, reads = result["throughput"], result["redis_read"]
    table.add_row(
        "events/s, one worker vs plain consumer",
        _number(bulk["worker_events_per_s"]),
        _number(bulk["raw_consume"]["events_per_s"]),
        f"{bulk['worker_over_raw']:.3g}",
    )
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
    console.print(baselines_table(result))
    console.print(targets_table(result))
    bulk = result["throughput"]
    console.print(
        f"worker RSS at the end: {bulk['worker_memory']['rss_mb']:,.0f} MiB (bulk, peak "
        f"{bulk['worker_memory']['peak_rss_mb']:,.0f}); "
        f"{bulk['kafka_messages']['per_event']:.2f} Kafka messages per event"
    )
    prof = result["profile"]
    if prof is not None:
        console.print(
            f"profile: the Worker alone {prof['in_process_events_per_s']:,.0f} events/s; "
            f"{prof['worker_share_outside_processor']:.0%} of the worker's time per event "
            f"is outside it (Faust, Kafka, Redis); ranking one list takes "
            f"{prof['profiled_ms_per_list_ranked'] or 0:.1f} ms under cProfile. Top own time:"
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
