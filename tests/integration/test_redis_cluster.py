"""Eddy on a real Redis Cluster (``EDDY_REDIS_CLUSTER=true``): three local primaries.

The module starts three ``redis-server --cluster-enabled yes`` nodes on free ports, joins
them with ``redis-cli --cluster create`` (redis-cli ships with redis-server: Debian's
redis-server depends on redis-tools) and checks the sink, a real worker and the live
page's API against it. Keys are spread over all three nodes, so every check crosses slots.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from infra.devstack import StackError, find_redis_server, free_port, stop_pid, wait_for_port
from models.reclist import POPULAR_USER
from streams.reader import connect, item_titles, read_list
from streams.redisclient import SyncCluster, sync_client
from streams.settings import Settings
from streams.sink import Put, RedisSink
from streams.topics import create_topics
from tests.support import (
    Endpoints,
    WorkerProcess,
    get_json,
    isolated_settings,
    produce,
    wait_for,
)

pytestmark = pytest.mark.integration

NODES = 3
BUS_OFFSET = 10_000
"""A node's cluster bus listens on its port + 10000 (redis-server's default)."""
REDIS_CLI_HINT = (
    "redis-cli is needed to create the test Redis Cluster and was not found next to {server} "
    "or on PATH: install it with redis-server (Debian/Ubuntu: `sudo apt-get install -y "
    "redis-tools`, which redis-server depends on; Fedora: `dnf install redis`; macOS: "
    "`brew install redis`)"
)
CATALOG = {f"c{n}": f"Cluster Title {n}" for n in range(12)}
USERS = 20


@dataclass(frozen=True)
class Cluster:
    ports: list[int]
    slots: list[tuple[int, int, int]]
    """(first slot, last slot, port) of every primary."""

    @property
    def url(self) -> str:
        """The URL Eddy is given: one node; the client discovers the others."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def owner(self, key: str) -> int:
        """Port of the node that owns ``key``'s slot."""
        slot = key_slot(key.encode())
        return next(port for first, last, port in self.slots if first <= slot <= last)

    def node(self, port: int) -> redis.Redis:
        """A plain client on one node (sees only that node's keys)."""
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)


def find_redis_cli(server: str) -> str:
    beside = Path(server).with_name("redis-cli")
    path = str(beside) if beside.exists() else shutil.which("redis-cli")
    if path is None:
        pytest.fail(REDIS_CLI_HINT.format(server=server), pytrace=False)
    return path


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port(taken: set[int]) -> int:
    """A free port whose bus port (+10000) is free and valid too."""
    for _ in range(200):
        port = free_port()
        bus = port + BUS_OFFSET
        if port not in taken and bus <= 65_535 and bus not in taken and port_is_free(bus):
            return port
    raise AssertionError("no free port pair (port, port + 10000) for a cluster node")


def cluster_state_ok(ports: list[int]) -> bool:
    for port in ports:
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
        try:
            info = client.cluster("info")
        except redis.RedisError:
            return False
        finally:
            client.close()
        if info.get("cluster_state") != "ok" or int(info["cluster_known_nodes"]) != len(ports):
            return False
    return True


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three primaries holding all 16384 slots; stopped and deleted at teardown."""
    server = find_redis_server()
    cli = find_redis_cli(server)
    root = tmp_path_factory.mktemp("redis-cluster")
    pids: list[int] = []
    ports: list[int] = []
    try:
        for _ in range(NODES):
            port = cluster_port({p + d for p in ports for d in (0, BUS_OFFSET)})
            ports.append(port)
            node_dir = root / str(port)
            node_dir.mkdir()
            log = root / f"{port}.log"
            cmd = [server, "--bind", "127.0.0.1", "--port", str(port)]
            cmd += ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf"]
            cmd += ["--dir", str(node_dir), "--save", "", "--appendonly", "no"]
            with log.open("ab") as out:
                proc = subprocess.Popen(
                    cmd,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            pids.append(proc.pid)
            try:
                wait_for_port(port, proc, f"redis-server (cluster node {port})", log)
            except StackError as exc:
                raise AssertionError(str(exc)) from None
        create = [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports)]
        create += ["--cluster-replicas", "0", "--cluster-yes"]
        done = subprocess.run(create, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, f"redis-cli --cluster create failed:\n{done.stdout}"
        wait_for(lambda: cluster_state_ok(ports), 30, "cluster_state:ok on every node")
        probe = redis.Redis(host="127.0.0.1", port=ports[0], socket_timeout=5)
        slots = [
            (int(first), int(last), int(primary[1]))
            for first, last, primary, *_ in probe.cluster("slots")
        ]
        probe.close()
        yield Cluster(ports, slots)
    finally:
        for pid in pids:
            stop_pid(pid)
        shutil.rmtree(root, ignore_errors=True)


def keys_per_node(cluster: Cluster, keys: list[str]) -> dict[int, int]:
    """How many of ``keys`` each node holds, asked of the nodes themselves."""
    wanted, out = {k.encode() for k in keys}, {}
    for port in cluster.ports:
        node = cluster.node(port)  # SCAN on one node lists that node's keys only
        out[port] = len(wanted & set(node.scan_iter(count=1000)))
        node.close()
    return out


def test_redis_sink_contract_on_a_cluster(cluster: Cluster) -> None:
    tag = f"sink{time.time_ns()}"
    keys = [f"{tag}:rec:u{n}" for n in range(300)]
    short, gone, missing = f"{tag}:short", f"{tag}:gone", f"{tag}:missing"

    async def run() -> dict[str, Any]:
        # the URL names the second node: any node will do
        sink = RedisSink(f"redis://127.0.0.1:{cluster.ports[1]}/0", cluster=True)
        try:
            # one batch spanning every node: values, TTLs, and the last write to a key wins
            batch = [
                Put(k, f"v{n}".encode(), ttl_s=120 if n % 2 else None) for n, k in enumerate(keys)
            ]
            batch += [Put(keys[0], b"old"), Put(keys[0], b"new"), Put(gone, b"x")]
            batch += [Put(short, b"short", ttl_s=1)]
            await sink.write(batch)
            got = {k: await sink.get(k) for k in keys}
            short_before = await sink.get(short)
            # deletes; deleting a missing key is fine
            await sink.write([Put(gone, None), Put(missing, None)])
            await sink.write([])
            await asyncio.sleep(1.2)
            return {
                "got": got,
                "short": (short_before, await sink.get(short)),
                "gone": await sink.get(gone),
                "missing": await sink.get(missing),
            }
        finally:
            await sink.close()

    result = asyncio.run(run())
    assert result["got"][keys[0]] == b"new"
    assert all(result["got"][k] == f"v{n}".encode() for n, k in enumerate(keys) if n)
    assert result["short"] == (b"short", None)
    assert result["gone"] is None
    assert result["missing"] is None

    spread = keys_per_node(cluster, keys)
    assert sum(spread.values()) == len(keys)
    assert all(count > 0 for count in spread.values()), spread  # the batch crossed every node
    client = SyncCluster.from_url(cluster.url, socket_timeout=5)
    try:
        ttls = [client.ttl(k) for k in keys[1:]]
    finally:
        client.close()
    assert all(0 < t <= 120 for t in ttls[::2]), "odd keys were written with a 120 s TTL"
    assert all(t == -1 for t in ttls[1::2]), "even keys were written without a TTL"


def users_on_every_node(cluster: Cluster, settings: Settings) -> list[str]:
    """``USERS`` user ids whose list keys are spread over every node."""
    per_node: dict[int, list[str]] = {port: [] for port in cluster.ports}
    quota = -(-USERS // NODES)
    n = 0
    while sum(len(u) for u in per_node.values()) < USERS:
        user = f"cu{n}"
        mine = per_node[cluster.owner(settings.key("rec", user))]
        if len(mine) < quota:
            mine.append(user)
        n += 1
    return [u for users in per_node.values() for u in users]


def click(user: str, item: str, ts: float) -> tuple[str, str]:
    return user, json.dumps({"type": "click", "user_id": user, "item_id": item, "ts": ts})


def test_worker_and_page_on_a_cluster(
    cluster: Cluster,
    endpoints: Endpoints,
    tmp_path: Path,
    start_worker: Callable[[Settings], WorkerProcess],
) -> None:
    settings = isolated_settings(endpoints, tmp_path, redis_url=cluster.url, redis_cluster=True)
    users = users_on_every_node(cluster, settings)
    now = time.time() - 600
    create_topics(settings)
    produce(
        settings.kafka_bootstrap,
        settings.topic_items,
        [
            (i, json.dumps({"item_id": i, "title": t, "categories": ["Test"]}))
            for i, t in CATALOG.items()
        ],
    )
    client = sync_client(settings, socket_timeout=5)
    stats_key = settings.key("stats", settings.worker_id)
    worker = start_worker(settings)

    def healthy() -> None:
        assert worker.proc.poll() is None, f"worker exited\n{worker.tail()}"
        errors = int(client.hget(stats_key, "redis_errors") or 0)
        assert errors < 3, (
            f"the worker's sink failed {errors} writes to the cluster (a single-server client "
            "gets MOVED errors: is RedisSink built with cluster=settings.redis_cluster?)\n"
            + worker.tail()
        )

    # a crowd first, so every user's list has popular items to offer
    crowd = [click(f"crowd{n}", i, now) for n in range(3) for i in CATALOG]
    produce(settings.kafka_bootstrap, settings.topic_events, crowd)
    popular = settings.key("rec", POPULAR_USER)

    def popular_ready() -> bool:
        raw = client.get(popular)
        return bool(raw and len(json.loads(raw)["items"]) >= 3)

    wait_for(popular_ready, 30, "the popular list", healthy)
    items = list(CATALOG)
    events = [
        click(u, items[(n + k) % len(items)], now + k)
        for n, u in enumerate(users)
        for k in range(2)
    ]
    produce(settings.kafka_bootstrap, settings.topic_events, events)

    # (2) every user's list, written by the worker, is readable through the cluster
    def lists() -> dict[str, Any] | None:
        docs = {u: client.get(settings.key("rec", u)) for u in users}
        done = all(raw and json.loads(raw)["event_ts"] == now + 1 for raw in docs.values())
        return docs if done else None

    docs = wait_for(lists, 40, f"lists of all {USERS} users", healthy)
    on_nodes = keys_per_node(cluster, [settings.key("rec", u) for u in users])
    assert all(count > 0 for count in on_nodes.values()), on_nodes
    reader = connect(settings)
    for user in users:
        lookup = read_list(reader, settings, user)
        assert not lookup.fallback, user
        assert lookup.recs is not None
        assert lookup.recs.user_id == user
        assert lookup.recs.items, user
        assert json.loads(docs[user])["user_id"] == user
    # MGET across slots: titles of every catalog item, whichever node holds them
    assert len({key_slot(settings.key("item", i).encode()) for i in CATALOG}) > 1
    assert wait_for(
        lambda: item_titles(reader, settings, CATALOG) == CATALOG or None, 20, "item titles"
    )
    reader.close()

    stats = wait_for(lambda: client.hgetall(stats_key) or None, 20, "the worker's stats hash")
    assert stats[b"worker_id"] == settings.worker_id.encode()
    assert 0 < client.ttl(stats_key) <= 3600

    # (3) the page scans every node: plant other workers' stats on each node
    planted = set()
    for port in cluster.ports:
        n = 0
        while cluster.owner(settings.key("stats", f"other{n}")) != port:
            n += 1
        planted.add(f"other{n}")
        client.hset(settings.key("stats", f"other{n}"), mapping={"worker_id": f"other{n}"})
    base = f"http://{settings.web_host}:{settings.web_port}"

    status, body = get_json(f"{base}/api/users?n=100")
    assert status == 200, body
    crowd_users = {f"crowd{n}" for n in range(3)}
    assert set(users) <= set(body["users"]) <= set(users) | crowd_users
    assert POPULAR_USER not in body["users"]

    status, body = get_json(f"{base}/api/stats")
    assert status == 200, body
    workers = {w["worker_id"] for w in body["workers"]}
    assert workers == {settings.worker_id, *planted}

    for user in (users[0], users[-1]):  # first and last node's users; titles via MGET
        status, body = get_json(f"{base}/api/recs/{user}")
        assert status == 200, body
        assert body["items"]
        assert all(item["title"] == CATALOG[item["item_id"]] for item in body["items"])
    client.close()
