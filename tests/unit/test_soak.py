"""The soak report's verdict: memory bounded in the second half, lag drained at the end."""

from __future__ import annotations

from streams.cli.soak import Sample, SoakConfig, verdict


def samples(rss: list[float], lags: list[int]) -> list[Sample]:
    return [
        Sample(10.0 * n, 100 * (n + 1), 100 * (n + 1) - lag, lag, mb, 20.0, 60.0)
        for n, (mb, lag) in enumerate(zip(rss, lags, strict=True))
    ]


def test_flat_memory_and_a_drained_lag_pass() -> None:
    cfg = SoakConfig(rate=100, rss_slack_mb=50)
    run = samples([200, 240, 250, 260, 255, 258], [5, 40, 30, 20, 10, 0])
    v = verdict(run, cfg, load_samples=5)
    assert v["rss_growth_second_half_mb"] == 5.0  # 250 -> 255 over the last 3 load samples
    assert v["rss_bounded"] is True
    assert v["lag_max"] == 40
    assert v["lag_drained"] is True
    assert v["rss_max_mb"] == 260


def test_growing_memory_or_a_lag_left_over_fail() -> None:
    cfg = SoakConfig(rate=100, rss_slack_mb=50)
    growing = verdict(samples([200, 250, 300, 360, 420], [0] * 5), cfg, load_samples=5)
    assert growing["rss_growth_second_half_mb"] == 120.0
    assert growing["rss_bounded"] is False
    stuck = verdict(samples([200, 200, 200], [0, 50, 11]), cfg, load_samples=2)
    assert stuck["lag_end"] == 11
    assert stuck["lag_drained"] is False  # more than max(10, 1% of the rate) left
