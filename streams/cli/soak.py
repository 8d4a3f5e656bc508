"""``eddy soak``: sustained load on the embedded stack, with a report on memory and lag.

One worker with the learning core (pre-trained on MovieLens) on the embedded stack
(noida-db, or Apache Kafka with ``--broker kafka``) takes MovieLens events re-timed to
now. Each event's user is a new one with probability ``new_user_p``, else a user drawn
uniformly from the population so far, so the population keeps growing like a live
site's. The run, in phases:

1. templates: ``template_users`` users get MovieLens events through the worker; the
   profiles it writes are the templates of the preloaded users (step 3);
2. maximum rate: a backlog of ``max_rate_events`` events from the same stream is
   produced at once; the worker's rate through it is its maximum rate on this stream;
   the soak runs at ``rate_fraction`` of it (unless ``rate`` is given);
3. preload: enough users to reach ``users`` distinct users by the end are written to
   Redis as copies of the template profiles (user id replaced, counts kept), so that the
   returning users the stream draws from them are real Redis reads for the worker;
4. load: ``minutes`` at the soak rate, with a burst of ``burst_factor`` times the rate
   for ``burst_s`` every ``burst_every_s``; every ``interval_s`` a sample of the
   worker's RSS, its lag (events produced minus events counted in its stats) and
   freshness;
5. drain, then the checks: the stats count every event produced exactly once, and the
   profiles of a sample of users count exactly the events produced for them (plus their
   template's for preloaded users).

The verdict (``verdict``): the RSS slope after the warm-up is under
``rss_slope_limit_mib`` MiB per 10 minutes, the lag came back down after every burst,
the lag drained to 0 at the end, and every event was counted once.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import redis
from confluent_kafka import Producer
from rich.console import Console
from rich.table import Table

from infra import devstack
from models.artefact import save
from models.datasets import BUNDLED_MOVIELENS, Dataset, load_movielens
from models.events import Event
from models.training import TrainConfig, train
from streams.cli.demo import stats
from streams.cli.replay import producer_config, replay
from streams.settings import Settings, load_settings
from streams.topics import create_topics

MIB = 1024 * 1024


@dataclass(frozen=True)
class SoakConfig:
    minutes: float = 30.0
    rate: float = 0.0
    """Events per second while the load runs; 0: ``rate_fraction`` of the measured maximum."""
    rate_fraction: float = 0.5
    users: int = 1_000_000
    """Distinct users (Redis profiles) to reach by the end of the load."""
    new_user_p: float = 0.7
    """Probability that an event comes from a user never seen before."""
    template_users: int = 500
    max_rate_events: int = 100_000
    burst_every_s: float = 300.0
    """0: no bursts."""
    burst_s: float = 20.0
    burst_factor: float = 3.0
    warmup_fraction: float = 1 / 3
    warmup_users: int = Settings.model_fields["profile_cache_size"].default
    """The warm-up lasts at least ``warmup_fraction`` of the load and until the stream
    has touched ``warmup_users`` distinct users (the worker's profile cache is full);
    the RSS slope is taken after it."""
    interval_s: float = 10.0
    drain_s: float = 180.0
    """How long to wait for the lag to return to zero after the load."""
    rss_slope_limit_mib: float = 10.0
    """Largest RSS slope after the warm-up that passes, MiB per 10 minutes."""
    settled_lag_s: float = 2.0
    """A burst is over once the lag is under this many seconds of traffic (the stats
    that count processed events are written once a second)."""
    sample_users: int = 50_000
    broker: devstack.Broker = "noida"
    seed: int = 11


@dataclass
class Sample:
    t_s: float
    produced: int
    processed: int
    lag: int
    rss_mb: float
    freshness_p50_ms: float | None
    freshness_p99_ms: float | None
    users: int = 0
    """Users in the population (including preloaded ones)."""
    in_burst: bool = False
    touched: int = 0
    """Distinct users the stream has sent events for so far (the worker has read them)."""


# --- pure parts ------------------------------------------------------------------------
def bursts(cfg: SoakConfig, duration_s: float) -> list[tuple[float, float]]:
    """(start, end) of each burst, seconds into the load; none in the last minute."""
    if cfg.burst_every_s <= 0 or cfg.burst_s <= 0:
        return []
    out, k = [], 1
    while k * cfg.burst_every_s + cfg.burst_s + 60 <= duration_s:
        start = k * cfg.burst_every_s
        out.append((start, start + cfg.burst_s))
        k += 1
    return out


def rate_at(
    t_s: float, rate: float, windows: Sequence[tuple[float, float]], factor: float
) -> float:
    """The production rate ``t_s`` seconds into the load."""
    return rate * factor if any(a <= t_s < b for a, b in windows) else rate


def slope_per_10min(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MiB) points, in MiB per 10 minutes."""
    if len(points) < 2:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    if var == 0:
        return None
    cov = sum((t - mt) * (v - mv) for t, v in points)
    return cov / var * 600


def burst_recovery(
    samples: Sequence[Sample], windows: Sequence[tuple[float, float]], settled: float
) -> list[dict[str, Any]]:
    """Per burst: the peak lag from its start to the next burst, and how long after its
    end the lag first came back to ``settled`` or below (None: it never did)."""
    out = []
    for i, (start, end) in enumerate(windows):
        until = windows[i + 1][0] if i + 1 < len(windows) else float("inf")
        during = [s for s in samples if start <= s.t_s < until]
        after = [s for s in during if s.t_s >= end and s.lag <= settled]
        out.append(
            {
                "start_s": start,
                "end_s": end,
                "peak_lag": max((s.lag for s in during), default=None),
                "settled_after_s": round(after[0].t_s - end, 1) if after else None,
            }
        )
    return out


PRELOAD_MARGIN = 0.05
"""Share of the new users expected from the load not counted on when preloading: the
load can fall short of its rate (one run without a margin ended 183 users short)."""


def preload_needed(
    cfg: SoakConfig,
    population: int,
    rate: float,
    duration_s: float,
    windows: Sequence[tuple[float, float]],
) -> int:
    """Users to preload so that the population reaches ``cfg.users`` by the end of the
    load, counting on 95% of the new users the load should bring."""
    extra_s = sum(b - a for a, b in windows) * (cfg.burst_factor - 1)
    expected_new = rate * (duration_s + extra_s) * cfg.new_user_p * (1 - PRELOAD_MARGIN)
    return max(0, cfg.users - population - int(expected_new))


def count_mismatches(
    expected: dict[str, int], got: dict[str, int | None], limit: int = 20
) -> dict[str, Any]:
    """Users whose profile does not count exactly the events expected (None: no profile)."""
    wrong = {u: (got.get(u), n) for u, n in expected.items() if got.get(u) != n}
    lost = sum(n - (got.get(u) or 0) for u, n in expected.items() if (got.get(u) or 0) < n)
    extra = sum((got.get(u) or 0) - n for u, n in expected.items() if (got.get(u) or 0) > n)
    return {
        "users_checked": len(expected),
        "events_expected": sum(expected.values()),
        "users_wrong": len(wrong),
        "events_missing": lost,
        "events_extra": extra,
        "examples": dict(list(wrong.items())[:limit]),
    }


def verdict(
    samples: list[Sample],
    cfg: SoakConfig,
    load_samples: int,
    rate: float,
    windows: Sequence[tuple[float, float]] = (),
    counts: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Whether memory stayed flat after the warm-up, the lag settled after every burst
    and drained at the end, and (given ``counts``) every event was counted once."""
    during = samples[:load_samples]
    load_s = during[-1].t_s if during else 0.0
    steady = [
        s for s in during if s.t_s >= cfg.warmup_fraction * load_s and s.touched >= cfg.warmup_users
    ]
    slope = slope_per_10min([(s.t_s, s.rss_mb) for s in steady])
    warming = [s for s in samples if s.touched < cfg.warmup_users]
    per_user = slope_per_10min([(s.touched, s.rss_mb) for s in warming])
    settled = max(10.0, rate * cfg.settled_lag_s)
    recovery = burst_recovery(during, windows, settled)
    end = samples[-1]
    out: dict[str, Any] = {
        "rate": round(rate, 1),
        "rss_start_mb": during[0].rss_mb if during else None,
        "warmup_end_s": steady[0].t_s if steady else None,
        "rss_after_warmup_mb": steady[0].rss_mb if steady else None,
        "rss_steady_minutes": round((steady[-1].t_s - steady[0].t_s) / 60, 1) if steady else 0,
        "worker_rss_bytes_per_cached_user": None
        if per_user is None
        else round(per_user / 600 * MIB),
        "rss_max_mb": max(s.rss_mb for s in samples),
        "rss_end_mb": end.rss_mb,
        "rss_slope_mib_per_10min": None if slope is None else round(slope, 2),
        "rss_flat": slope is not None and slope <= cfg.rss_slope_limit_mib,
        "lag_max": max(s.lag for s in samples),
        "lag_settled_threshold": settled,
        "bursts": recovery,
        "bursts_settled": all(b["settled_after_s"] is not None for b in recovery),
        "lag_end": end.lag,
        "lag_drained": end.lag == 0,
        "events_produced": end.produced,
        "events_processed": end.processed,
        "users_end": end.users,
    }
    ok = out["rss_flat"] and out["bursts_settled"] and out["lag_drained"]
    if counts is not None:
        once = (
            counts["events_total"] == end.produced
            and counts["duplicates"] == 0
            and counts["sample"]["users_wrong"] == 0
        )
        out["counted_once"] = once
        ok = ok and once
    out["ok"] = bool(ok)
    return out


# --- the stream ------------------------------------------------------------------------
def user_id(n: int) -> str:
    return f"s{n:07d}"


class Stream:
    """Produces MovieLens events re-timed to now, for users of a growing population;
    remembers how many events it produced for each user."""

    def __init__(self, settings: Settings, events: list[Event], cfg: SoakConfig) -> None:
        self.settings, self.cfg = settings, cfg
        config = producer_config(settings.kafka_bootstrap, **settings.kafka_security())
        self.producer = Producer(config)
        self.source: Iterator[Event] = _cycle(events)
        self.rng = random.Random(cfg.seed)
        self.population = 0
        self.produced = 0
        self.per_user = np.zeros(1 << 20, dtype=np.uint32)
        self.base = np.zeros(1 << 20, dtype=np.uint32)
        """Events in a user's profile before the stream: a preloaded user's template's."""
        self.lock = threading.Lock()

    def grow(self, n: int) -> range:
        """``n`` new user numbers."""
        with self.lock:
            first = self.population
            self.population += n
            while self.population > len(self.per_user):
                self.per_user = np.concatenate([self.per_user, np.zeros_like(self.per_user)])
                self.base = np.concatenate([self.base, np.zeros_like(self.base)])
            return range(first, self.population)

    def touched(self) -> int:
        """Distinct users sent at least one event."""
        return int(np.count_nonzero(self.per_user[: self.population]))

    def pick(self) -> int:
        if self.population == 0 or self.rng.random() < self.cfg.new_user_p:
            return self.grow(1)[0]
        return self.rng.randrange(self.population)

    def send(self, user: int) -> None:
        event = next(self.source)
        uid = user_id(user)
        body = {"type": event.type.value, "user_id": uid, "item_id": event.item_id}
        body["ts"] = round(time.time(), 3)  # type: ignore[assignment]
        value = json.dumps(body, separators=(",", ":")).encode()
        while True:
            try:
                self.producer.produce(self.settings.topic_events, key=uid.encode(), value=value)
                break
            except BufferError:
                self.producer.poll(0.05)
        self.producer.poll(0)
        self.per_user[user] += 1
        self.produced += 1

    def flush(self) -> None:
        if self.producer.flush(60) != 0:
            raise RuntimeError("events not delivered within 60 s")


def _cycle(events: list[Event]) -> Iterator[Event]:
    while True:
        yield from events


@dataclass
class Load:
    """Runs ``stream`` at ``rate`` (times ``factor`` in the burst windows) until stopped."""

    stream: Stream
    rate: float
    windows: list[tuple[float, float]]
    factor: float
    t0: float = 0.0
    stop: threading.Event = field(default_factory=threading.Event)

    def in_burst(self) -> bool:
        t = time.monotonic() - self.t0
        return any(a <= t < b for a, b in self.windows)

    def run(self) -> None:
        next_at = self.t0 = time.monotonic()
        while not self.stop.is_set():
            now = time.monotonic()
            if next_at > now:
                self.stop.wait(next_at - now)
                continue
            self.stream.send(self.stream.pick())
            next_at += 1 / rate_at(now - self.t0, self.rate, self.windows, self.factor)
            if now - next_at > 1.0:  # fell behind by more than a second: do not catch up
                next_at = now
        self.stream.flush()


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def sample(
    client: redis.Redis, settings: Settings, stream: Stream, pid: int, t0: float, burst: bool
) -> Sample:
    now = stats(client, settings)
    processed = int(now.get("events_total", 0))
    return Sample(
        round(time.monotonic() - t0, 1),
        stream.produced,
        processed,
        max(0, stream.produced - processed),
        round(rss_mb(pid), 1),
        now.get("freshness_ms_p50"),
        now.get("freshness_ms_p99"),
        stream.population,
        burst,
        stream.touched(),
    )


def wait_counted(
    client: redis.Redis,
    settings: Settings,
    n: int,
    worker: subprocess.Popen[bytes],
    timeout_s: float,
) -> float:
    """Wait until the worker's stats count ``n`` events; return when that was seen."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if int(stats(client, settings).get("events_total", 0)) >= n:
            return time.monotonic()
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited ({worker.returncode})")
        time.sleep(0.2)
    raise RuntimeError(f"the worker did not count {n} events within {timeout_s:.0f}s")


def read_counts(
    client: redis.Redis, settings: Settings, users: Sequence[str]
) -> dict[str, int | None]:
    """Each user's event count from their Redis profile (None: no profile)."""
    out: dict[str, int | None] = {}
    for i in range(0, len(users), 2000):
        chunk = users[i : i + 2000]
        raws = client.mget([settings.key("profile", u) for u in chunk])
        for u, raw in zip(chunk, raws, strict=True):
            out[u] = sum(json.loads(raw)["counts"].values()) if raw else None
    return out


def used_memory(client: redis.Redis) -> int:
    info: dict[str, Any] = client.info("memory")
    return int(info["used_memory"])


# --- the run ---------------------------------------------------------------------------
def run_soak(console: Console, cfg: SoakConfig, json_path: Path | None) -> int:
    """Run the soak; return the exit code (1 if the verdict is not ok)."""
    base = load_settings()
    cfg = replace(cfg, warmup_users=base.profile_cache_size)  # the worker's cache is full
    with tempfile.TemporaryDirectory(prefix="eddy-soak-") as tmp:
        root = Path(tmp)
        stack = devstack.start(root / "services", cfg.broker)
        worker: subprocess.Popen[bytes] | None = None
        load: Load | None = None
        try:
            settings = Settings.model_validate(
                base.model_copy(
                    update={
                        "kafka_bootstrap": stack.kafka_bootstrap,
                        "redis_url": stack.redis_url,
                        "app_id": f"eddy-soak-{int(time.time())}",
                        "data_dir": root / "worker",
                        "state_dir": root / "state",
                        "web_port": devstack.free_port(),
                        "worker_id": "soak-worker",
                        "model_dir": root / "artifacts",
                    }
                ).model_dump()
            )
            create_topics(settings)
            dataset = load_movielens(BUNDLED_MOVIELENS)
            with console.status("pre-training on MovieLens…"):
                save(train(dataset, TrainConfig()), settings.model_dir)
            replay(
                settings.kafka_bootstrap,
                settings.topic_events,
                settings.topic_items,
                Dataset("catalog", dataset.items, [], 0, {}),
                progress=False,
            )
            worker = devstack.spawn_worker(settings.to_env(), root / "worker.log")
            devstack.wait_worker_ready(worker, root / "worker.log")
            client = redis.Redis.from_url(settings.redis_url.get_secret_value())
            memory_base = used_memory(client)
            stream = Stream(settings, dataset.events, cfg)
            phases: dict[str, Any] = {"broker": cfg.broker, "loadavg_start": _loadavg()}

            # 1. templates
            templates = stream.grow(cfg.template_users)
            for n in range(cfg.template_users * 8):
                stream.send(templates[n % len(templates)])
            stream.flush()
            wait_counted(client, settings, stream.produced, worker, 300)
            bodies = _template_profiles(client, settings, templates)
            phases["template_users"] = len(bodies)
            phases["rss_after_templates_mb"] = round(rss_mb(worker.pid), 1)

            # 2. the maximum rate on this stream
            start_count = stream.produced
            for _ in range(cfg.max_rate_events):
                stream.send(stream.pick())
            stream.flush()
            first = wait_counted(client, settings, start_count + 1, worker, 120)
            last = wait_counted(client, settings, stream.produced, worker, 1800)
            max_rate = (cfg.max_rate_events - 1) / max(last - first, 1e-3)
            rate = cfg.rate or cfg.rate_fraction * max_rate
            phases["max_rate_events"] = cfg.max_rate_events
            phases["max_rate"] = round(max_rate, 1)
            phases["loadavg_after_max_rate"] = _loadavg()
            console.print(
                f"maximum rate on this stream: {max_rate:.0f} events/s; soak at {rate:.0f}"
            )

            # 3. preload
            duration = cfg.minutes * 60
            windows = bursts(cfg, duration)
            preload = preload_needed(cfg, stream.population, rate, duration, windows)
            _preload(client, settings, stream, bodies, preload)
            phases["preloaded_users"] = preload
            phases["population_before_load"] = stream.population
            phases["redis_used_memory_after_preload_mb"] = round(used_memory(client) / MIB, 1)

            # 4. load
            load = Load(stream, rate, windows, cfg.burst_factor)
            thread = threading.Thread(target=load.run, daemon=True)
            thread.start()
            time.sleep(0.1)
            t0 = load.t0
            samples: list[Sample] = []
            console.print(
                f"load: {rate:.0f} events/s for {cfg.minutes:g} min, bursts x{cfg.burst_factor:g} "
                f"for {cfg.burst_s:g}s at {[int(a) for a, _ in windows]} s"
            )
            while time.monotonic() - t0 < duration:
                time.sleep(cfg.interval_s - (time.monotonic() - t0) % cfg.interval_s)
                samples.append(sample(client, settings, stream, worker.pid, t0, load.in_burst()))
                console.print(_line(samples[-1]))
                if worker.poll() is not None:
                    raise RuntimeError(f"the worker exited ({worker.returncode})")
            load.stop.set()
            thread.join(120)
            load_samples = len(samples)
            phases["loadavg_end_of_load"] = _loadavg()

            # 5. drain and checks
            drain_until = time.monotonic() + cfg.drain_s
            while time.monotonic() < drain_until:
                time.sleep(2.0)
                samples.append(sample(client, settings, stream, worker.pid, t0, False))
                console.print(_line(samples[-1]) + "  (draining)")
                if samples[-1].lag == 0:
                    time.sleep(3.0)  # anything counted twice would show up late
                    samples.append(sample(client, settings, stream, worker.pid, t0, False))
                    break
            counts = _check_counts(client, settings, stream, cfg)
            memory = _memory(client, settings, stream, memory_base)
            outcome = verdict(samples, cfg, load_samples, rate, windows, counts)
            result = {
                "config": asdict(cfg),
                "phases": phases,
                "verdict": outcome,
                "counts": counts,
                "memory": memory,
                "samples": [asdict(s) for s in samples],
            }
            console.print(_summary({**phases, **outcome, **memory}))
            if json_path is not None:
                json_path.write_text(json.dumps(result, indent=1, default=str))
                console.print(f"wrote {json_path}")
            return 0 if outcome["ok"] else 1
        except KeyboardInterrupt:
            return 130
        finally:
            if load is not None:
                load.stop.set()
            if worker is not None:
                devstack.stop_pid(worker.pid)
            devstack.stop(stack)


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _template_profiles(client: redis.Redis, settings: Settings, users: range) -> list[bytes]:
    """The profiles the worker wrote for the template users (every one of them)."""
    deadline = time.monotonic() + 60
    while True:
        raws = client.mget([settings.key("profile", user_id(u)) for u in users])
        if all(raws) or time.monotonic() > deadline:
            return [r if isinstance(r, bytes) else str(r).encode() for r in raws if r]
        time.sleep(0.5)


def _preload(
    client: redis.Redis, settings: Settings, stream: Stream, bodies: list[bytes], n: int
) -> None:
    """Write ``n`` new users' profiles, copies of ``bodies`` under their own user ids."""
    docs = [json.loads(b) for b in bodies]
    counts = [sum(d["counts"].values()) for d in docs]
    for start in range(0, n, 5000):
        users = stream.grow(min(5000, n - start))
        pipe = client.pipeline(transaction=False)
        for u in users:
            i = u % len(docs)
            doc = {**docs[i], "user_id": user_id(u)}
            pipe.set(
                settings.key("profile", user_id(u)),
                json.dumps(doc, separators=(",", ":")),
                ex=settings.profile_ttl_s,
            )
            stream.base[u] = counts[i]
        pipe.execute()


def _check_counts(
    client: redis.Redis, settings: Settings, stream: Stream, cfg: SoakConfig
) -> dict[str, Any]:
    """The stats' totals, and a sample of users' profiles against what was produced."""
    raw = stats(client, settings)
    rng = random.Random(cfg.seed + 1)
    picked = sorted(rng.sample(range(stream.population), min(cfg.sample_users, stream.population)))
    expected = {user_id(u): int(stream.base[u] + stream.per_user[u]) for u in picked}
    got = read_counts(client, settings, list(expected))
    touched = int(np.count_nonzero(stream.per_user[: stream.population]))
    return {
        "events_total": int(raw.get("events_total", 0)),
        "duplicates": int(raw.get("duplicates", 0)),
        "dead_letters": int(raw.get("dead_letters", 0)),
        "users_in_stream": touched,
        "population": stream.population,
        "sample": count_mismatches(expected, got),
    }


def _memory(client: redis.Redis, settings: Settings, stream: Stream, base: int) -> dict[str, Any]:
    """Redis memory per user: used memory over the population, and ``MEMORY USAGE`` of
    the profile and list keys of 1,000 users the stream touched."""
    used = used_memory(client)
    touched = np.flatnonzero(stream.per_user[: stream.population])
    rng = random.Random(1)
    some = [int(u) for u in rng.sample(list(touched), min(1000, len(touched)))]
    sizes: dict[str, list[int]] = {"profile": [], "rec": []}
    for u in some:
        for kind in sizes:
            n = client.memory_usage(settings.key(kind, user_id(u)))
            if n:
                sizes[kind].append(int(n))
    return {
        "redis_used_memory_mb": round(used / MIB, 1),
        "redis_bytes_per_user": round((used - base) / max(1, stream.population)),
        "redis_keys": int(client.dbsize()),
        "profile_key_bytes_mean": round(float(np.mean(sizes["profile"])))
        if sizes["profile"]
        else None,
        "rec_key_bytes_mean": round(float(np.mean(sizes["rec"]))) if sizes["rec"] else None,
    }


def _line(s: Sample) -> str:
    fresh = f"{s.freshness_p50_ms:.0f}/{s.freshness_p99_ms:.0f} ms" if s.freshness_p99_ms else "-"
    return (
        f"t={s.t_s:6.0f}s produced={s.produced:9,} processed={s.processed:9,} "
        f"lag={s.lag:6,} rss={s.rss_mb:7.1f} MiB users={s.users:9,} touched={s.touched:8,} "
        f"freshness p50/p99={fresh}{' burst' if s.in_burst else ''}"
    )


def _summary(v: dict[str, Any]) -> Table:
    table = Table(title="soak verdict")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in v.items():
        table.add_row(key, str(value)[:120])
    return table
