"""``infra.restart_runs``: reading the broker-restart test's report line, the totals."""

from __future__ import annotations

from infra.restart_runs import ok, parse_run, summarise

LINE = (
    "broker restart under load [kafka]: sent=1002 kept=1002 applied={applied} "
    "duplicates_skipped={dups} committed={committed}/1002 rejoins=0 "
    "lag_when_applied={lag} end_after_s={end}\n"
)


def line(applied: int = 1002, dups: str = "0", committed: int = 1002, lag: int = 0) -> str:
    end = "0.4" if committed == 1002 else "None"
    return LINE.format(applied=applied, dups=dups, committed=committed, lag=lag, end=end)


def test_a_clean_run_is_read_from_its_line() -> None:
    run = parse_run(3, "passed", 37.04, "noise\n" + line(lag=120), "")
    assert (run.index, run.broker, run.kept, run.applied) == (3, "kafka", 1002, 1002)
    assert (run.lost, run.double_counted, run.duplicates_skipped) == (0, 0, 0)
    assert (run.lag_when_applied, run.end_after_s, run.duration_s) == (120, 0.4, 37.0)
    assert ok(summarise([run]))


def test_losses_double_counts_and_stalled_commits_fail() -> None:
    lost = parse_run(0, "failed", 40, line(applied=1001, committed=1001), "EventsLostError")
    assert lost.lost == 1
    assert lost.end_after_s is None
    double = parse_run(1, "passed", 40, line(applied=1003), "")
    assert double.double_counted == 1
    stalled = parse_run(2, "passed", 40, line(committed=534), "")
    clean = parse_run(3, "passed", 40, line(dups="None"), "")
    assert clean.duplicates_skipped == 0
    for bad in (lost, double, stalled):
        assert not ok(summarise([clean, bad]))
    total = summarise([clean, lost, double, stalled])
    assert (total["runs"], total["passed"], total["failed"]) == (4, 3, 1)
    assert (total["events_lost"], total["events_double_counted"]) == (1, 1)
    assert total["committed_to_the_end"] == 2


def test_a_run_that_failed_before_its_line_counts_as_failed() -> None:
    run = parse_run(0, "error", 5, "", "own_kafka: broker did not start")
    assert run.kept is None
    assert run.error == "own_kafka: broker did not start"
    assert not ok(summarise([run]))
    assert not ok(summarise([]))


def test_an_xfailed_noida_run_is_a_failure_and_an_xpassed_one_a_pass() -> None:
    xfailed = parse_run(0, "xfailed", 40, line(applied=1001), "EventsLostError")
    xpassed = parse_run(1, "xpassed", 40, line(), "")
    total = summarise([xfailed, xpassed])
    assert (total["passed"], total["failed"], total["events_lost"]) == (1, 1, 1)
    assert ok(summarise([xpassed]))
    assert not ok(total)


def test_the_offset_holes_the_worker_repaired_are_read_when_reported() -> None:
    run = parse_run(0, "passed", 40, line().rstrip() + " offset_gaps=1 offset_gap_seeks=2\n", "")
    assert (run.offset_gaps, run.offset_gap_seeks) == (1, 2)
    assert parse_run(1, "passed", 40, line(), "").offset_gaps is None
    total = summarise([run, parse_run(1, "passed", 40, line(), "")])
    assert (total["offset_gaps"], total["runs_with_offset_gaps"], total["offset_gap_seeks"]) == (
        1,
        1,
        2,
    )
    assert ok(total)
