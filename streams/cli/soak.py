"""``eddy soak``: sustained load on the embedded stack, with a report on memory and lag.

One worker with the learning core (pre-trained on MovieLens) takes real MovieLens events,
re-timed to now and replayed in a loop at a fixed rate; every loop gets new user ids, so
the number of users keeps growing like a live site's. Every ``interval`` seconds the
report samples the worker's RSS, its consumer lag (events produced minus processed) and
freshness. The verdict: RSS in the second half grows less than ``rss_slack_mb``, and the
lag returns to about zero once the load stops.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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
from streams.cli.replay import Pacer, producer_config, replay
from streams.settings import Settings, load_settings
from streams.topics import create_topics


@dataclass(frozen=True)
class SoakConfig:
    minutes: float = 10.0
    rate: float = 300.0
    """Events per second produced while the load runs."""
    interval_s: float = 10.0
    drain_s: float = 120.0
    """How long to wait for the lag to return to zero after the load."""
    rss_slack_mb: float = 50.0


@dataclass
class Sample:
    t_s: float
    produced: int
    processed: int
    lag: int
    rss_mb: float
    freshness_p50_ms: float | None
    freshness_p99_ms: float | None


@dataclass
class Load:
    """Produces re-timed events in a background thread until stopped."""

    settings: Settings
    events: list[Event]
    rate: float
    produced: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        config = producer_config(self.settings.kafka_bootstrap, **self.settings.kafka_security())
        producer = Producer(config)
        pacer = Pacer(self.rate)
        loop = 0
        while not self.stop.is_set():
            for event in self.events:
                if self.stop.is_set():
                    break
                pacer.wait()
                user = f"{event.user_id}-{loop}"
                body = event.model_copy(update={"user_id": user, "ts": time.time()})
                value = body.model_dump_json(exclude_none=True).encode()
                producer.produce(self.settings.topic_events, key=user.encode(), value=value)
                producer.poll(0)
                self.produced += 1
            loop += 1
        producer.flush(30)


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def sample(client: redis.Redis, settings: Settings, load: Load, pid: int, t0: float) -> Sample:
    now = stats(client, settings)
    processed = int(now.get("events_total", 0))
    return Sample(
        round(time.monotonic() - t0, 1),
        load.produced,
        processed,
        max(0, load.produced - processed),
        round(rss_mb(pid), 1),
        now.get("freshness_ms_p50"),
        now.get("freshness_ms_p99"),
    )


def verdict(samples: list[Sample], cfg: SoakConfig, load_samples: int) -> dict[str, Any]:
    """Whether memory stayed bounded and the lag drained."""
    during = samples[:load_samples]
    half = during[len(during) // 2 :] or during
    growth = half[-1].rss_mb - half[0].rss_mb if half else 0.0
    end = samples[-1]
    return {
        "rss_start_mb": during[0].rss_mb if during else None,
        "rss_max_mb": max(s.rss_mb for s in samples),
        "rss_end_mb": end.rss_mb,
        "rss_growth_second_half_mb": round(growth, 1),
        "rss_bounded": growth <= cfg.rss_slack_mb,
        "lag_max": max(s.lag for s in samples),
        "lag_end": end.lag,
        "lag_drained": end.lag <= max(10, cfg.rate * 0.01),
        "events_produced": end.produced,
        "events_processed": end.processed,
    }


def run_soak(console: Console, cfg: SoakConfig, json_path: Path | None) -> int:
    """Run the soak; return the exit code (1 if memory grew or the lag did not drain)."""
    base = load_settings()
    with tempfile.TemporaryDirectory(prefix="eddy-soak-") as tmp:
        root = Path(tmp)
        stack = devstack.start(root / "services")
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
            load = Load(settings, dataset.events, cfg.rate)
            thread = threading.Thread(target=load.run, daemon=True)
            t0 = time.monotonic()
            thread.start()
            samples: list[Sample] = []
            console.print(f"load: {cfg.rate:.0f} events/s for {cfg.minutes:g} min")
            while time.monotonic() - t0 < cfg.minutes * 60:
                time.sleep(cfg.interval_s)
                samples.append(sample(client, settings, load, worker.pid, t0))
                console.print(_line(samples[-1]))
                if worker.poll() is not None:
                    raise RuntimeError(f"the worker exited ({worker.returncode})")
            load.stop.set()
            thread.join(60)
            load_samples = len(samples)
            drain_until = time.monotonic() + cfg.drain_s
            while time.monotonic() < drain_until:
                time.sleep(min(cfg.interval_s, 5.0))
                samples.append(sample(client, settings, load, worker.pid, t0))
                console.print(_line(samples[-1]) + "  (draining)")
                if samples[-1].lag == 0:
                    break
            outcome = verdict(samples, cfg, load_samples)
            result = {
                "config": asdict(cfg),
                "verdict": outcome,
                "samples": [asdict(s) for s in samples],
            }
            console.print(_summary(outcome))
            if json_path is not None:
                json_path.write_text(json.dumps(result, indent=1))
                console.print(f"wrote {json_path}")
            ok = outcome["rss_bounded"] and outcome["lag_drained"]
            return 0 if ok else 1
        except KeyboardInterrupt:
            return 130
        finally:
            if load is not None:
                load.stop.set()
            if worker is not None:
                devstack.stop_pid(worker.pid)
            devstack.stop(stack)


def _line(s: Sample) -> str:
    fresh = f"{s.freshness_p50_ms:.0f}/{s.freshness_p99_ms:.0f} ms" if s.freshness_p99_ms else "-"
    return (
        f"t={s.t_s:6.0f}s produced={s.produced:8,} processed={s.processed:8,} "
        f"lag={s.lag:6,} rss={s.rss_mb:7.1f} MiB freshness p50/p99={fresh}"
    )


def _summary(v: dict[str, Any]) -> Table:
    table = Table(title="soak verdict")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in v.items():
        table.add_row(key, str(value))
    return table
