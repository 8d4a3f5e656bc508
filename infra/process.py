"""Processes of the dev stack: errors, free ports, stopping by PID (no stack logic)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time


class StackError(RuntimeError):
    """The dev stack could not be started or found."""


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def stop_pid(pid: int, timeout_s: float = 10.0) -> None:
    """Stop a service started by ``_spawn`` and everything it started (its process group):
    SIGTERM, then SIGKILL after ``timeout_s``. Quiet if already gone."""
    if not signal_group(pid, signal.SIGTERM):
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not group_alive(pid):
            return
        time.sleep(0.05)
    signal_group(pid, signal.SIGKILL)


def signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Signal the process group led by ``pgid`` (or the lone process); False if gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        try:
            os.kill(pgid, sig)
        except ProcessLookupError:
            return False
    return True


def group_alive(pgid: int) -> bool:
    with contextlib.suppress(ChildProcessError):  # reap our own zombie leader
        os.waitpid(pgid, os.WNOHANG)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
