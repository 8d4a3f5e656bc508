"""The soak report's pure parts: RSS slope after the warm-up, burst windows and recovery,
exact counts, and the verdict."""

from __future__ import annotations

import pytest

from streams.cli.soak import (
    Sample,
    SoakConfig,
    burst_recovery,
    bursts,
    count_mismatches,
    preload_needed,
    rate_at,
    slope_per_10min,
    verdict,
)

CFG = SoakConfig(rate=100, warmup_fraction=0.25, warmup_users=1000, rss_slope_limit_mib=10)


def samples(rss: list[float], lags: list[int], touched: int = 5000) -> list[Sample]:
    """One sample a minute, the stream having touched ``touched`` users from the start."""
    return [
        Sample(
            60.0 * n, 100 * (n + 1), 100 * (n + 1) - lag, lag, mb, 20.0, 60.0, 10, False, touched
        )
        for n, (mb, lag) in enumerate(zip(rss, lags, strict=True))
    ]


def test_slope_is_the_least_squares_fit_in_mib_per_10_minutes() -> None:
    assert slope_per_10min([(0, 100), (300, 105), (600, 110)]) == pytest.approx(10.0)
    assert slope_per_10min([(0, 100), (60, 130), (120, 100)]) == pytest.approx(0.0)
    assert slope_per_10min([(0, 100)]) is None
    assert slope_per_10min([(5, 100), (5, 200)]) is None


def test_bursts_every_period_and_none_in_the_last_minute() -> None:
    cfg = SoakConfig(burst_every_s=300, burst_s=20)
    assert bursts(cfg, 1800) == [(300, 320), (600, 620), (900, 920), (1200, 1220), (1500, 1520)]
    assert bursts(cfg, 380) == [(300, 320)]
    assert bursts(cfg, 379) == []
    assert bursts(SoakConfig(burst_every_s=0), 1800) == []
    assert rate_at(310, 100, [(300, 320)], 3) == 300
    assert rate_at(320, 100, [(300, 320)], 3) == 100


def test_burst_recovery_finds_the_first_settled_sample_after_each_burst() -> None:
    run = samples([100.0] * 10, [0, 500, 900, 400, 50, 0, 800, 700, 600, 500])
    got = burst_recovery(run, [(60, 120), (360, 420)], settled=100)
    assert got[0] == {"start_s": 60, "end_s": 120, "peak_lag": 900, "settled_after_s": 120.0}
    assert got[1]["peak_lag"] == 800
    assert got[1]["settled_after_s"] is None  # 500 left at the end: never settled


def test_count_mismatches_tells_missing_from_extra() -> None:
    ok = count_mismatches({"a": 2, "b": 1}, {"a": 2, "b": 1})
    assert ok["users_wrong"] == 0
    assert ok["events_expected"] == 3
    bad = count_mismatches({"a": 2, "b": 1, "c": 4}, {"a": 3, "b": None, "c": 1})
    assert bad["users_wrong"] == 3
    assert bad["events_missing"] == 1 + 3  # b has no profile, c is 3 short
    assert bad["events_extra"] == 1
    assert bad["examples"]["b"] == (None, 1)


def counts(total: int, wrong: int = 0, duplicates: int = 0) -> dict[str, object]:
    return {"events_total": total, "duplicates": duplicates, "sample": {"users_wrong": wrong}}


def test_flat_memory_settled_bursts_and_exact_counts_pass() -> None:
    run = samples([200, 240, 250, 251, 250, 252, 251], [5, 40, 30, 20, 10, 5, 0])
    v = verdict(run, CFG, load_samples=6, rate=100, counts=counts(run[-1].produced))
    assert v["warmup_end_s"] == 120.0  # a quarter of the 300 s of load, rounded up to a sample
    assert v["rss_slope_mib_per_10min"] == pytest.approx(5.0)  # fit of 250 251 250 252
    assert v["rss_flat"] is True
    assert v["lag_drained"] is True
    assert v["counted_once"] is True
    assert v["ok"] is True


def test_growing_memory_fails() -> None:
    run = samples([200, 220, 240, 260, 280, 300], [0] * 6)
    v = verdict(run, CFG, load_samples=6, rate=100)
    assert v["rss_slope_mib_per_10min"] == pytest.approx(200.0)
    assert v["rss_flat"] is False
    assert v["ok"] is False


def test_the_warm_up_lasts_until_the_cache_is_full() -> None:
    run = samples([200, 220, 240, 260, 260, 260], [0] * 6)
    for n, s in enumerate(run):
        s.touched = 250 * n  # 1000 users (the cache) reached at the 5th sample
    v = verdict(run, CFG, load_samples=6, rate=100)
    assert v["warmup_end_s"] == 240.0
    assert v["rss_slope_mib_per_10min"] == 0.0
    # 20 MiB per 250 users while the cache filled
    assert v["worker_rss_bytes_per_cached_user"] == round(20 * 1024 * 1024 / 250)
    never_full = samples([200, 200, 200], [0] * 3, touched=10)
    v = verdict(never_full, CFG, load_samples=3, rate=100)
    assert v["rss_flat"] is False  # no sample after the warm-up: no verdict on memory


def test_a_lag_left_over_a_burst_not_settled_or_a_count_off_fail() -> None:
    stuck = verdict(samples([200] * 4, [0, 50, 11, 1]), CFG, load_samples=3, rate=100)
    assert stuck["lag_end"] == 1
    assert stuck["lag_drained"] is False
    assert stuck["ok"] is False
    run = samples([200] * 6, [0, 900, 800, 700, 600, 0])
    unsettled = verdict(run, CFG, load_samples=5, rate=100, windows=[(60, 120)])
    assert unsettled["bursts_settled"] is False
    assert unsettled["ok"] is False
    produced = run[-1].produced
    for bad in (counts(produced - 1), counts(produced, wrong=1), counts(produced, duplicates=2)):
        v = verdict(run, CFG, load_samples=6, rate=100, counts=bad)
        assert v["counted_once"] is False
        assert v["ok"] is False


def test_the_preload_leaves_room_for_the_new_users_the_load_brings_with_a_margin() -> None:
    cfg = SoakConfig(users=1_000_000, new_user_p=0.5, burst_factor=3)
    # 100 events/s for 1,000 s plus one 10 s burst at 3x: 102,000 events, 51,000 new
    # users, 95% of them counted on: 48,450
    assert preload_needed(cfg, 50_000, 100, 1000, [(300, 310)]) == 1_000_000 - 50_000 - 48_450
    assert preload_needed(cfg, 990_000, 100, 1000, []) == 0
