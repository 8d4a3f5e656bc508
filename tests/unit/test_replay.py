"""Replay building blocks that need no broker: the Pacer and the producer settings."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaException, Producer

from streams.cli.replay import Pacer, producer_config


class FakeClock:
    """A clock that only moves when something sleeps (or the test advances it)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_pacer_holds_the_target_rate() -> None:
    clock = FakeClock()
    pacer = Pacer(10.0, clock=clock, sleep=clock.sleep)
    released = []
    for _ in range(101):
        pacer.wait()
        released.append(clock.now - 1000.0)

    assert released[:3] == pytest.approx([0.0, 0.1, 0.2])
    assert released[-1] == pytest.approx(10.0)  # 100 intervals at 10/s
    assert pacer.count == 101
    assert clock.sleeps[0] == pytest.approx(0.1)  # the first call goes at once


def test_pacer_without_rate_never_sleeps_or_reads_the_clock() -> None:
    def no_clock() -> float:
        raise AssertionError("clock read")

    def no_sleep(seconds: float) -> None:
        raise AssertionError("slept")

    pacer = Pacer(None, clock=no_clock, sleep=no_sleep)
    for _ in range(1000):
        pacer.wait()
    assert pacer.count == 1000


def test_pacer_does_not_slow_a_caller_that_is_already_slower() -> None:
    clock = FakeClock()
    pacer = Pacer(100.0, clock=clock, sleep=clock.sleep)
    for _ in range(20):
        pacer.wait()
        clock.now += 0.05  # work takes 50 ms, longer than the 10 ms interval
    assert clock.sleeps == []


def test_pacer_catches_up_after_a_stall_to_keep_the_long_run_rate() -> None:
    clock = FakeClock()
    pacer = Pacer(10.0, clock=clock, sleep=clock.sleep)
    pacer.wait()
    clock.now += 1.0  # stalled for 10 intervals
    for _ in range(10):
        pacer.wait()
    assert clock.sleeps == []  # the 10 overdue sends go at once
    pacer.wait()
    assert clock.now - 1000.0 == pytest.approx(1.1)


def test_pacer_sleeps_again_when_sleep_returns_early() -> None:
    clock = FakeClock()

    def short_sleep(seconds: float) -> None:  # like producer.poll(): may return early
        clock.sleep(min(seconds, 0.0625))

    pacer = Pacer(2.0, clock=clock, sleep=short_sleep)
    pacer.wait()
    pacer.wait()
    assert clock.now - 1000.0 == 0.5
    assert clock.sleeps == [0.0625] * 8


@pytest.mark.parametrize("rate", [0.0, -5.0, float("inf"), float("nan")])
def test_pacer_rejects_impossible_rates(rate: float) -> None:
    with pytest.raises(ValueError, match="rate"):
        Pacer(rate)


def test_producer_config_defaults() -> None:
    config = producer_config("kafka-1:9092,kafka-2:9092")
    assert config["bootstrap.servers"] == "kafka-1:9092,kafka-2:9092"
    assert config["acks"] == "all"
    assert config["enable.idempotence"] is True
    assert config["linger.ms"] == 5
    assert config["compression.type"] == "lz4"
    assert config["partitioner"] == "murmur2_random"  # the Java client's key hashing
    assert config["batch.num.messages"] >= 10_000


def test_producer_config_extra_overrides_and_adds() -> None:
    config = producer_config("k:9092", **{"linger.ms": 50, "client.id": "replayer"})
    assert config["linger.ms"] == 50
    assert config["client.id"] == "replayer"
    assert config["acks"] == "all"


def test_producer_config_rejects_empty_bootstrap() -> None:
    with pytest.raises(ValueError, match="bootstrap"):
        producer_config(" ")


def test_librdkafka_accepts_the_config() -> None:
    # librdkafka checks every key and value at construction, including that this
    # build supports lz4 and the murmur2_random partitioner; a bad value raises.
    Producer(producer_config("127.0.0.1:9", **{"log_level": 0}))
    with pytest.raises(KafkaException, match="compression"):
        Producer(producer_config("127.0.0.1:9", **{"compression.type": "brotli"}))
