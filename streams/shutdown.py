"""A bound on how long a stopping worker may take, whatever it waits for.

Faust stops its consumer before the app's shutdown hooks run (``App.on_stop``), and
with the broker gone aiokafka's consumer thread can wait for it for good, so a bound
inside the hooks (``streams.app.SHUTDOWN_WRITES_S``) never starts. ``BoundedWorker``
arms a watchdog thread at the first SIGTERM or SIGINT: if the process is still alive
``SHUTDOWN_BOUND_S`` later it logs why and exits at once. Nothing is lost by that: what
was not written or committed is read again by the partition's next owner, and the
profiles' per-partition watermarks skip what they already count (docs/reliability.md).
"""

from __future__ import annotations

import logging
import os
import threading

import faust

log = logging.getLogger(__name__)

SHUTDOWN_BOUND_S = 9.0
"""Seconds from the stop signal to the forced exit: inside compose's default 10 s
grace before SIGKILL, and above the 6 s the last writes may take."""

FORCED_EXIT_CODE = 0
"""The stop was asked for and the state is safe, so a forced stop is still a clean exit."""


class Watchdog:
    """Ends the process ``bound_s`` after ``arm`` unless it has ended by then."""

    def __init__(self, bound_s: float = SHUTDOWN_BOUND_S) -> None:
        self.bound_s = bound_s
        self._timer: threading.Timer | None = None

    @property
    def armed(self) -> bool:
        return self._timer is not None

    def arm(self) -> None:
        """Start the countdown (again calls do nothing: the first signal counts)."""
        if self._timer is None:
            self._timer = threading.Timer(self.bound_s, self.fire)
            self._timer.daemon = True
            self._timer.start()

    def fire(self) -> None:
        log.warning(
            "still stopping %.0f s after the stop signal (broker or Redis unreachable?): "
            "exiting now; what was not committed is read again and skipped where counted",
            self.bound_s,
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(FORCED_EXIT_CODE)


class BoundedWorker(faust.Worker):
    """``faust.Worker`` whose stop signals also arm a ``Watchdog``."""

    def __init__(self, *args: object, watchdog: Watchdog | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.watchdog = watchdog or Watchdog()

    @property
    def shortlabel(self) -> str:
        """Log as Faust's own worker: ``[^Worker]: Ready`` is the line tools wait for."""
        return "Worker"

    def _on_sigterm(self) -> None:
        self.watchdog.arm()
        super()._on_sigterm()

    def _on_sigint(self) -> None:
        self.watchdog.arm()
        super()._on_sigint()
