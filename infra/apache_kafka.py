"""A real Apache Kafka 4.x broker (KRaft, one node) for the tests and the dev stack.

The broker's jars come from Maven Central through ``infra/kafka/pom.xml`` (``mvn``
copies its runtime classpath into a cache dir once); the broker runs as
``java -cp '<lib>/*' kafka.Kafka server.properties``. Everything a broker writes lives in
one run dir::

    <run>/server.properties   broker + controller, PLAINTEXT on 127.0.0.1 (free ports)
    <run>/log4j2.properties   console logging, config dumps silenced
    <run>/data/               the log dir (formatted once with kafka.tools.StorageTool)
    <run>/kafka.log           the broker's output

``start(run)`` on a run dir that already has a ``server.properties`` starts the same broker
again (same ports, same log dir, same cluster id): a restart keeps topics, messages and
committed offsets. Stop it by PID with ``infra.devstack.stop_pid`` (SIGTERM: a controlled
shutdown, about 2 s).

    python -m infra.apache_kafka fetch        # fetch the jars (once) and print the dir
    python -m infra.apache_kafka start RUN    # start a broker in RUN; print bootstrap, pid
    python -m infra.apache_kafka stop RUN     # stop it (the PID is in RUN/kafka.pid)
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from infra.process import StackError, free_port, stop_pid

POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"
PROJECT_ROOT = POM.parents[2]
DEFAULT_LIB_DIR = PROJECT_ROOT / ".eddy" / "kafka-lib"
"""Where the jars go unless ``EDDY_KAFKA_LIB`` says otherwise: the checkout's state dir,
shared by every run from this checkout whatever its working directory."""
VERSION_FILE = "KAFKA_VERSION"
"""Written into the lib dir last, holding the pom's ``kafka.version``: a complete cache."""
MIN_JAVA = 17
HEAP = "512m"
START_TIMEOUT_S = 60.0

JAVA_HINT = (
    f"Apache Kafka needs java >= {MIN_JAVA}: `sudo apt-get install -y default-jre-headless` "
    "(Debian/Ubuntu), or set EDDY_JAVA to a java binary"
)
MVN_HINT = (
    "mvn not found on PATH (it fetches the Apache Kafka jars from Maven Central): "
    "`sudo apt-get install -y maven` (Debian/Ubuntu), or set EDDY_MVN to an mvn binary"
)

LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
logger.appinfo.name = org.apache.kafka.common.utils.AppInfoParser
logger.appinfo.level = WARN
"""


def kafka_version(pom: Path = POM) -> str:
    """The ``kafka.version`` property of the pom."""
    match = re.search(r"<kafka\.version>\s*([^<\s]+)\s*</kafka\.version>", pom.read_text())
    if not match:
        raise StackError(f"no <kafka.version> in {pom}")
    return match.group(1)


def find_mvn() -> str:
    """Path of ``mvn`` (``EDDY_MVN`` or PATH), or ``StackError`` saying how to install it."""
    path = os.environ.get("EDDY_MVN") or shutil.which("mvn")
    if not path or not Path(path).exists():
        raise StackError(MVN_HINT)
    return path


def find_java() -> str:
    """Path of a ``java`` >= 17 (``EDDY_JAVA`` or PATH), or ``StackError`` with the hint."""
    path = os.environ.get("EDDY_JAVA") or shutil.which("java")
    if not path or not Path(path).exists():
        raise StackError(f"java not found. {JAVA_HINT}")
    major = java_major(path)
    if major < MIN_JAVA:
        raise StackError(f"{path} is java {major}. {JAVA_HINT}")
    return path


@cache
def java_major(java: str) -> int:
    """The major version ``java -version`` reports (1.8 counts as 8)."""
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StackError(f"could not run {java} -version ({exc}). {JAVA_HINT}") from exc
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        raise StackError(f"cannot read the version of {java}: {out.stderr.strip()[:200]}")
    first, second = int(match.group(1)), int(match.group(2) or 0)
    return second if first == 1 else first


def lib_dir_default() -> Path:
    explicit = os.environ.get("EDDY_KAFKA_LIB")
    return Path(explicit) if explicit else DEFAULT_LIB_DIR


def cached(lib: Path, version: str) -> bool:
    marker = lib / VERSION_FILE
    return marker.is_file() and marker.read_text().strip() == version


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path``: one fetch at a time per cache dir."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fetch_jars(lib_dir: Path | None = None, timeout_s: float = 900.0) -> Path:
    """The dir holding the broker's runtime jars; fetched with ``mvn`` on first use.

    Idempotent and fast once done (one file read). The jars are copied into a temporary
    sibling dir and renamed into place, so an interrupted fetch leaves no partial cache.
    """
    lib = (lib_dir or lib_dir_default()).resolve()
    version = kafka_version()
    if cached(lib, version):
        return lib
    with _locked(lib.parent / f".{lib.name}.lock"):
        if cached(lib, version):  # fetched by someone else while we waited
            return lib
        mvn = find_mvn()
        staging = lib.parent / f".{lib.name}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        cmd = [mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(POM)]
        cmd += ["dependency:copy-dependencies", f"-DoutputDirectory={staging}"]
        print(f"fetching Apache Kafka {version} jars with mvn into {lib}", file=sys.stderr)
        try:
            out = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired as exc:
            shutil.rmtree(staging, ignore_errors=True)
            took = f"{timeout_s:.0f}s"
            raise StackError(f"mvn did not finish within {took}: {' '.join(cmd)}") from exc
        jars = sorted(staging.glob("*.jar")) if staging.is_dir() else []
        if out.returncode != 0 or not any(j.name.startswith("kafka_2.13-") for j in jars):
            shutil.rmtree(staging, ignore_errors=True)
            tail = (out.stdout + out.stderr)[-3000:]
            raise StackError(f"mvn could not fetch the Kafka jars ({' '.join(cmd)}):\n{tail}")
        (staging / VERSION_FILE).write_text(version + "\n")
        shutil.rmtree(lib, ignore_errors=True)
        staging.rename(lib)
    return lib


def classpath(lib: Path) -> str:
    return f"{lib}/*"


def cluster_id() -> str:
    """A fresh KRaft cluster id: a random UUID, base64url without padding, never starting
    with ``-`` (StorageTool would read ``-t -x...`` as an option), as Kafka's own
    ``Uuid.randomUuid``."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def write_config(
    run: Path,
    port: int | None = None,
    controller_port: int | None = None,
    partitions: int = 1,
    auto_create_topics: bool = True,
) -> Path:
    """Write ``<run>/server.properties`` (and the log4j2 config) for a single KRaft node.

    Broker and controller in one process; the client listener and the controller
    listener on 127.0.0.1 at free ports unless given. Replication factors and ISR are 1
    (one node), the first group rebalance is not delayed (Kafka's default waits 3 s).
    ``auto_create_topics`` keeps Kafka's default (producing to an unknown topic creates
    it, as noida-db does); production's docker-compose.yml turns it off.
    """
    run.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    controller_port = controller_port or free_port()
    while controller_port == port:
        controller_port = free_port()
    data = run / "data"
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "log.dirs": str(data),
        "num.partitions": str(partitions),
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "auto.create.topics.enable": str(auto_create_topics).lower(),
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "10",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "log.retention.check.interval.ms": "300000",
    }
    path = run / "server.properties"
    path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    (run / "log4j2.properties").write_text(LOG4J2)
    return path


def read_config(run: Path) -> dict[str, str]:
    """``<run>/server.properties`` as a dict."""
    props: dict[str, str] = {}
    for line in (run / "server.properties").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            props[key.strip()] = value.strip()
    return props


def bootstrap_of(run: Path) -> str:
    """``host:port`` of the PLAINTEXT listener configured in ``run``."""
    listener = read_config(run)["advertised.listeners"]
    return listener.split(",")[0].split("://", 1)[1]


def _jvm(java: str, lib: Path, run: Path, heap: str = HEAP) -> list[str]:
    return [
        java,
        f"-Xmx{heap}",
        "-Xms128m",
        # A dev and test broker: C1 only and the serial collector start it in about 3 s
        # instead of 5-7 s (G1 and C2, Kafka's defaults) on two busy cores.
        "-XX:TieredStopAtLevel=1",
        "-XX:+UseSerialGC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={run / 'log4j2.properties'}",
        f"-Dkafka.logs.dir={run / 'logs'}",
        "-cp",
        classpath(lib),
    ]


def formatted(run: Path) -> bool:
    return (run / "data" / "meta.properties").is_file()


def format_storage(run: Path, lib: Path, java: str | None = None) -> None:
    """Format ``<run>/data`` for a new cluster (``kafka.tools.StorageTool format``);
    nothing to do when it is already formatted (a restart)."""
    if formatted(run):
        return
    java = java or find_java()
    cmd = [*_jvm(java, lib, run, heap="256m"), "kafka.tools.StorageTool", "format"]
    cmd += ["-t", cluster_id(), "-c", str(run / "server.properties")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if out.returncode != 0 or not formatted(run):
        tail = (out.stdout + out.stderr)[-3000:]
        raise StackError(f"kafka.tools.StorageTool format failed ({out.returncode}):\n{tail}")


def _tail(log: Path, n: int = 3000) -> str:
    return log.read_bytes()[-n:].decode(errors="replace") if log.exists() else ""


def _answers_metadata(bootstrap: str, timeout_s: float) -> bool:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        admin.list_topics(timeout=timeout_s)
    except KafkaException:
        return False
    return True


def wait_ready(
    bootstrap: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = START_TIMEOUT_S
) -> None:
    """Wait until the broker answers a metadata request; ``StackError`` with the log's
    tail if it exits or does not within ``timeout_s``."""
    host, port = bootstrap.rsplit(":", 1)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(
                f"Apache Kafka exited with code {proc.returncode}; {log}:\n{_tail(log)}"
            )
        try:
            with socket.create_connection((host, int(port)), timeout=0.5):
                pass
        except OSError:
            time.sleep(0.1)
            continue
        if _answers_metadata(bootstrap, min(2.0, max(0.1, deadline - time.monotonic()))):
            return
    raise StackError(
        f"Apache Kafka did not answer a metadata request on {bootstrap} within "
        f"{timeout_s:.0f}s; {log}:\n{_tail(log)}"
    )


def start(
    run: Path,
    lib_dir: Path | None = None,
    port: int | None = None,
    heap: str = HEAP,
    timeout_s: float = START_TIMEOUT_S,
) -> tuple[str, int]:
    """Start a broker in ``run`` (configured and formatted on first use); return
    (bootstrap, pid). An existing ``<run>/server.properties`` is reused as it is: the same
    broker comes back on the same ports and log dir. ``port`` only applies to a new run."""
    java = find_java()
    lib = fetch_jars(lib_dir)
    if not (run / "server.properties").exists():
        write_config(run, port=port)
    format_storage(run, lib, java)
    bootstrap, log = bootstrap_of(run), run / "kafka.log"
    cmd = [*_jvm(java, lib, run, heap), "kafka.Kafka", str(run / "server.properties")]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=run,
        )
    try:
        wait_ready(bootstrap, proc, log, timeout_s)
    except BaseException:
        stop_pid(proc.pid)
        raise
    (run / "kafka.pid").write_text(f"{proc.pid}\n")
    return bootstrap, proc.pid


def stop(run: Path) -> bool:
    """Stop the broker whose PID ``start`` recorded in ``run``; False if none recorded."""
    pid_file = run / "kafka.pid"
    if not pid_file.exists():
        return False
    stop_pid(int(pid_file.read_text()))
    pid_file.unlink()
    return True


def main(argv: list[str]) -> int:
    usage = "usage: python -m infra.apache_kafka fetch | start RUN_DIR | stop RUN_DIR"
    try:
        if argv[:1] == ["fetch"] and len(argv) == 1:
            print(fetch_jars())
            return 0
        if argv[:1] == ["start"] and len(argv) == 2:
            started = time.monotonic()
            bootstrap, pid = start(Path(argv[1]).resolve())
            took = time.monotonic() - started
            print(f"{bootstrap} pid {pid} (up in {took:.1f}s)")
            return 0
        if argv[:1] == ["stop"] and len(argv) == 2:
            started = time.monotonic()
            if not stop(Path(argv[1]).resolve()):
                print(f"no broker recorded in {argv[1]}", file=sys.stderr)
                return 1
            print(f"stopped in {time.monotonic() - started:.1f}s")
            return 0
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(usage, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
