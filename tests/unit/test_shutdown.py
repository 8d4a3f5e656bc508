"""The stop watchdog: a process still alive after its bound ends, with a reason logged."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from streams.shutdown import Watchdog

SCRIPT = textwrap.dedent(
    """
    import logging, sys, time
    from streams.shutdown import Watchdog
    logging.basicConfig(stream=sys.stderr, level=logging.INFO)
    dog = Watchdog(0.3)
    dog.arm()
    dog.arm()  # a second signal does not restart the countdown
    time.sleep(60)
    print("not stopped")
    """
)


def test_an_armed_watchdog_ends_a_hung_process_and_says_why() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0
    assert "not stopped" not in done.stdout
    assert "still stopping 0 s after the stop signal" in done.stderr


def test_a_watchdog_is_not_armed_until_asked() -> None:
    dog = Watchdog(0.1)
    assert not dog.armed
