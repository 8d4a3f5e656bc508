"""Run the steady-load broker-restart test many times and report every run.

``python -m infra.restart_runs [--runs 50] [--broker kafka] [--json PATH]`` runs
``tests/integration/test_outages.py::test_broker_restart_under_steady_load_loses_nothing``
``--runs`` times in one pytest session (one broker of the chosen kind for all runs, as
the module's ``own_kafka`` fixture does for the CI run; a fresh group, topics and
worker for each run). For each run it records the outcome, the events the topic kept,
the events applied, the losses and double counts, the replays the worker skipped, and
the committed-offset lag once every event was applied (and how long the commits then
took to reach the end). The JSON file is rewritten after every run, so a long run can
be followed; the summary is printed at the end. Exit code 0 only if every run passed
with no loss and no double count.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest

TEST_FILE = "tests/integration/test_outages.py"
TEST_NAME = "test_broker_restart_under_steady_load_loses_nothing"
RUN_ARG = "restart_run"
REPORT_LINE = re.compile(
    r"broker restart under load \[(?P<broker>\w+)\]: sent=(?P<sent>\d+) kept=(?P<kept>\d+) "
    r"applied=(?P<applied>\d+) duplicates_skipped=(?P<dups>\w+) "
    r"committed=(?P<committed>\d+)/(?P<high>\d+) rejoins=(?P<rejoins>-?\d+) "
    r"lag_when_applied=(?P<lag>-?\d+) end_after_s=(?P<end>[\d.]+|None)"
    r"(?: offset_gaps=(?P<gaps>\d+) offset_gap_seeks=(?P<seeks>\d+))?"
)


PASSED = ("passed", "xpassed")


@dataclass
class Run:
    """One run of the test, as read from its report."""

    index: int
    outcome: str
    """``passed``, ``failed``, ``error`` (setup or teardown failed), or on ``[noida]``
    (an xfail) ``xpassed`` or ``xfailed``."""
    duration_s: float
    broker: str | None = None
    sent: int | None = None
    kept: int | None = None
    applied: int | None = None
    lost: int | None = None
    double_counted: int | None = None
    duplicates_skipped: int | None = None
    committed: int | None = None
    high: int | None = None
    lag_when_applied: int | None = None
    end_after_s: float | None = None
    rejoins: int | None = None
    offset_gaps: int | None = None
    """Holes the worker found in its partitions' offsets (and read again by seeking)."""
    offset_gap_seeks: int | None = None
    error: str | None = None


def parse_run(index: int, outcome: str, duration_s: float, stdout: str, error: str) -> Run:
    """A ``Run`` from the test's printed report line (missing if it failed before it)."""
    run = Run(index, outcome, round(duration_s, 1), error=error[-2000:] or None)
    m = REPORT_LINE.search(stdout)
    if m is None:
        return run
    run.broker = m["broker"]
    run.sent, run.kept, run.applied = int(m["sent"]), int(m["kept"]), int(m["applied"])
    run.lost = max(0, run.kept - run.applied)
    run.double_counted = max(0, run.applied - run.kept)
    run.duplicates_skipped = int(m["dups"]) if m["dups"].isdigit() else 0
    run.committed, run.high = int(m["committed"]), int(m["high"])
    run.lag_when_applied = int(m["lag"])
    run.end_after_s = None if m["end"] == "None" else float(m["end"])
    run.rejoins = int(m["rejoins"])
    if m["gaps"] is not None:
        run.offset_gaps, run.offset_gap_seeks = int(m["gaps"]), int(m["seeks"])
    return run


def summarise(runs: list[Run]) -> dict[str, Any]:
    """Totals over the runs: outcomes, losses, double counts, offset lag."""
    lags = [r.lag_when_applied for r in runs if r.lag_when_applied is not None]
    ends = [r.end_after_s for r in runs if r.end_after_s is not None]
    return {
        "runs": len(runs),
        "passed": sum(r.outcome in PASSED for r in runs),
        "failed": sum(r.outcome not in PASSED for r in runs),
        "runs_with_loss": sum(bool(r.lost) for r in runs),
        "events_lost": sum(r.lost or 0 for r in runs),
        "events_double_counted": sum(r.double_counted or 0 for r in runs),
        "events_kept": sum(r.kept or 0 for r in runs),
        "replays_skipped": sum(r.duplicates_skipped or 0 for r in runs),
        "committed_to_the_end": sum(r.high is not None and r.committed == r.high for r in runs),
        "lag_when_applied_max": max(lags, default=None),
        "end_after_s_max": max(ends, default=None),
        "rejoins": sum(r.rejoins or 0 for r in runs),
        "offset_gaps": sum(r.offset_gaps or 0 for r in runs),
        "runs_with_offset_gaps": sum(bool(r.offset_gaps) for r in runs),
        "offset_gap_seeks": sum(r.offset_gap_seeks or 0 for r in runs),
        "duration_s_mean": round(sum(r.duration_s for r in runs) / len(runs), 1) if runs else None,
    }


def ok(summary: dict[str, Any]) -> bool:
    """Every run passed, nothing lost or counted twice, every commit at the end."""
    return bool(
        summary["runs"]
        and summary["failed"] == 0
        and summary["events_lost"] == 0
        and summary["events_double_counted"] == 0
        and summary["committed_to_the_end"] == summary["runs"]
    )


class Repeat:
    """pytest plugin: parametrise the test ``runs`` times and record each run."""

    def __init__(self, runs: int, json_path: Path, meta: dict[str, Any]) -> None:
        self.runs, self.json_path, self.meta = runs, json_path, meta
        self.results: list[Run] = []
        self.started: dict[str, float] = {}
        self.failed: dict[str, tuple[str, str]] = {}
        self.out: dict[str, str] = {}

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if metafunc.function.__name__ == TEST_NAME:
            metafunc.fixturenames.append(RUN_ARG)
            metafunc.parametrize(RUN_ARG, range(self.runs), ids=lambda n: f"run{n:02d}")

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        self.started[nodeid] = time.monotonic()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.out[report.nodeid] = self.out.get(report.nodeid, "") + report.capstdout
        if report.when == "call" and hasattr(report, "wasxfail"):  # [noida]: xfail
            kind = "xfailed" if report.skipped else "xpassed"
            self.failed[report.nodeid] = (kind, report.longreprtext)
        elif report.failed and report.nodeid not in self.failed:
            kind = "failed" if report.when == "call" else "error"
            self.failed[report.nodeid] = (kind, report.longreprtext)

    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        outcome, error = self.failed.get(nodeid, ("passed", ""))
        took = time.monotonic() - self.started.get(nodeid, time.monotonic())
        run = parse_run(len(self.results), outcome, took, self.out.get(nodeid, ""), error)
        self.results.append(run)
        print(f"\n[restart-runs] {nodeid}: {json.dumps(asdict(run))[:400]}", flush=True)
        self.write()

    def write(self) -> None:
        body = {
            "meta": self.meta,
            "summary": summarise(self.results),
            "runs": [asdict(r) for r in self.results],
        }
        self.json_path.write_text(json.dumps(body, indent=1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.restart_runs", description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--broker", choices=["kafka", "noida"], default="kafka")
    parser.add_argument("--json", type=Path, default=Path("restart-runs.json"))
    args = parser.parse_args(argv)
    meta = {
        "test": f"{TEST_FILE}::{TEST_NAME}[{args.broker}]",
        "runs_asked": args.runs,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_at_start": list(os.getloadavg()),
    }
    plugin = Repeat(args.runs, args.json, meta)
    select = f"{TEST_NAME} and {args.broker}"
    code = pytest.main([TEST_FILE, "-k", select, "-p", "no:cacheprovider", "-q"], [plugin])
    meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    meta["load_average_at_end"] = list(os.getloadavg())
    plugin.write()
    summary = summarise(plugin.results)
    print(json.dumps(summary, indent=1))
    print(f"wrote {args.json}")
    return 0 if code == 0 and ok(summary) and summary["runs"] == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
