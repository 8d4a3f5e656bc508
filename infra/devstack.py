"""The embedded dev stack: a Kafka broker and a real redis-server.

The broker is noida-db (a Kafka-wire-compatible stand-in, the default) or, with
``broker="kafka"``, a real Apache Kafka 4.x in KRaft mode (``infra.apache_kafka``; needs
java and, once, mvn). Both run on free loopback ports with fresh data directories under
a state directory; ``<run>/broker.json`` records which broker runs there and on what
port, so ``restart_kafka`` can bring the same one back.
``up`` records the connection settings in ``<state>/dev.env`` (read by ``Settings``) and
the PIDs in ``<state>/dev.json``; ``down`` stops both by PID and removes their data.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, cast

from infra import apache_kafka, process

Broker = Literal["noida", "kafka"]
BROKERS: tuple[Broker, ...] = ("noida", "kafka")

StackError = process.StackError
free_port = process.free_port
stop_pid = process.stop_pid

REDIS_HINT = (
    "redis-server not found on PATH. Install it: `sudo apt-get install -y redis-server` "
    "(Debian/Ubuntu), `sudo dnf install redis` (Fedora), `brew install redis` (macOS); "
    "or set EDDY_REDIS_SERVER to its path."
)


@dataclass(frozen=True)
class Stack:
    """A running dev stack: where to connect and what to stop."""

    kafka_bootstrap: str
    redis_url: str
    kafka_pid: int
    redis_pid: int
    root: str
    broker: Broker = "noida"

    def env(self) -> dict[str, str]:
        """``EDDY_*`` settings that point Eddy at this stack."""
        return {"EDDY_KAFKA_BOOTSTRAP": self.kafka_bootstrap, "EDDY_REDIS_URL": self.redis_url}


def find_redis_server() -> str:
    """Path of the redis-server binary, or ``StackError`` saying how to install it."""
    explicit = os.environ.get("EDDY_REDIS_SERVER")
    path = explicit or shutil.which("redis-server")
    if not path or not Path(path).exists():
        raise StackError(REDIS_HINT)
    return path


def find_noida() -> str:
    """Path of the noida-db binary installed with Eddy (PyPI package ``noida-db``)."""
    beside = Path(sys.executable).parent / "noida-db"
    path = str(beside) if beside.exists() else shutil.which("noida-db")
    if not path:
        raise StackError("noida-db not found: install Eddy's dependencies (`pip install -e .`)")
    return path


def wait_for_port(
    port: int, proc: subprocess.Popen[bytes], name: str, log: Path, timeout_s: float = 20.0
) -> None:
    """Wait until ``port`` accepts connections, failing early if ``proc`` dies."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise StackError(f"{name} exited with code {proc.returncode}:\n{tail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise StackError(f"{name} did not listen on 127.0.0.1:{port} within {timeout_s:.0f}s")


def _spawn(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


WORKER_READY = b"[^Worker]: Ready"
"""The line a Faust worker logs once it has its partitions and recovered its tables."""


def spawn_worker(env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``eddy worker`` with ``env`` added to this environment, logging to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def wait_worker_ready(proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 90) -> None:
    """Wait for the worker's ready line; ``StackError`` if it exits or takes too long."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if WORKER_READY in log.read_bytes():
            return
        if proc.poll() is not None:
            raise StackError(f"worker exited with code {proc.returncode}; see {log}")
        time.sleep(0.1)
    raise StackError(f"worker not ready after {timeout_s:.0f}s; see {log}")


def broker_file(run: Path) -> Path:
    return run / "broker.json"


def start_kafka(run: Path, broker: Broker = "noida", port: int | None = None) -> tuple[str, int]:
    """Start the broker with its data under ``run``; return (bootstrap, pid).

    ``noida``: noida-db (Kafka only), data in ``<run>/kafka``, log ``<run>/kafka.log``.
    ``kafka``: Apache Kafka, everything in ``<run>/apache-kafka`` (see infra.apache_kafka).
    ``port`` (default: a free one) is the client port of a new broker; the broker and port
    are recorded in ``<run>/broker.json``.
    """
    if broker not in BROKERS:
        raise StackError(f"unknown broker {broker!r}: one of {', '.join(BROKERS)}")
    run.mkdir(parents=True, exist_ok=True)
    if broker == "kafka":
        bootstrap, pid = apache_kafka.start(run / "apache-kafka", port=port)
        port = int(bootstrap.rsplit(":", 1)[1])
    else:
        noida_bin = find_noida()
        (run / "kafka").mkdir(parents=True, exist_ok=True)
        port, log = port or free_port(), run / "kafka.log"
        cmd = [noida_bin, "start", "--data-dir", str(run / "kafka"), "--host", "127.0.0.1"]
        proc = _spawn([*cmd, "--only", "kafka", "--kafka-port", str(port)], log)
        try:
            wait_for_port(port, proc, "noida-db (Kafka)", log)
        except StackError:
            stop_pid(proc.pid)
            raise
        bootstrap, pid = f"127.0.0.1:{port}", proc.pid
    broker_file(run).write_text(json.dumps({"broker": broker, "port": port}))
    return bootstrap, pid


def restart_kafka(
    run: Path, pid: int, down_s: float = 0.0, check: Callable[[], None] | None = None
) -> tuple[str, int]:
    """Stop the broker ``start_kafka`` started in ``run`` (whichever it is, by ``pid``),
    keep it down for ``down_s`` (calling ``check`` every 0.5 s meanwhile, e.g. to assert a
    worker is still up), and start the same broker again on the same port and data dir.
    Return (bootstrap, new pid)."""
    try:
        recorded = json.loads(broker_file(run).read_text())
    except FileNotFoundError:
        raise StackError(f"no broker recorded in {run} (start it with start_kafka)") from None
    stop_pid(pid)
    down_at = time.monotonic()
    while (left := down_s - (time.monotonic() - down_at)) > 0:
        time.sleep(min(0.5, left))
        if check is not None:
            check()
    return start_kafka(run, cast(Broker, recorded["broker"]), port=int(recorded["port"]))


def start_redis(run: Path) -> tuple[str, int]:
    """Start redis-server (no persistence) under ``run``; return (url, pid)."""
    redis_bin = find_redis_server()
    (run / "redis").mkdir(parents=True, exist_ok=True)
    port, log = free_port(), run / "redis.log"
    cmd = [redis_bin, "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
    cmd += ["--appendonly", "no", "--dir", str(run / "redis"), "--protected-mode", "yes"]
    proc = _spawn(cmd, log)
    try:
        wait_for_port(port, proc, "redis-server", log)
    except StackError:
        stop_pid(proc.pid)
        raise
    return f"redis://127.0.0.1:{port}/0", proc.pid


def start(root: Path, broker: Broker = "noida") -> Stack:
    """Start broker and Redis with fresh data dirs under ``root``; return the stack."""
    find_redis_server()  # fail with the install hint before starting anything
    run = root / f"run-{os.getpid()}-{time.time_ns()}"
    run.mkdir(parents=True)
    bootstrap, kafka_pid = start_kafka(run, broker)
    try:
        redis_url, redis_pid = start_redis(run)
    except (StackError, OSError):
        stop_pid(kafka_pid)
        raise
    return Stack(bootstrap, redis_url, kafka_pid, redis_pid, str(run), broker)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def stop(stack: Stack, keep_data: bool = False) -> None:
    """Stop both services and (by default) delete their data."""
    stop_pid(stack.kafka_pid)
    stop_pid(stack.redis_pid)
    if not keep_data:
        shutil.rmtree(stack.root, ignore_errors=True)


# --- the recorded stack used by `eddy dev up | down | status` -------------------------
def state_file(state_dir: Path) -> Path:
    return state_dir / "dev.json"


def env_file(state_dir: Path) -> Path:
    return state_dir / "dev.env"


def up(state_dir: Path, broker: Broker = "noida") -> Stack:
    """Start a stack and record it; refuse if one recorded there is still running."""
    current = load(state_dir)
    if current is not None and (pid_alive(current.kafka_pid) or pid_alive(current.redis_pid)):
        raise StackError(
            f"a dev stack is already running ({state_file(state_dir)}); `eddy dev down` first"
        )
    stack = start(state_dir / "services", broker)
    state_file(state_dir).write_text(json.dumps(asdict(stack), indent=2))
    env_file(state_dir).write_text("".join(f"{k}={v}\n" for k, v in stack.env().items()))
    return stack


def load(state_dir: Path) -> Stack | None:
    path = state_file(state_dir)
    if not path.exists():
        return None
    return Stack(**json.loads(path.read_text()))


def down(state_dir: Path) -> Stack | None:
    """Stop the recorded stack and forget it; return what was stopped."""
    stack = load(state_dir)
    if stack is not None:
        stop(stack)
    for path in (state_file(state_dir), env_file(state_dir)):
        path.unlink(missing_ok=True)
    return stack


def status(state_dir: Path) -> dict[str, object]:
    """What is recorded and whether each service is alive."""
    stack = load(state_dir)
    if stack is None:
        return {"running": False}
    kafka, redis = pid_alive(stack.kafka_pid), pid_alive(stack.redis_pid)
    return {"running": kafka and redis, "kafka": kafka, "redis": redis, **asdict(stack)}
