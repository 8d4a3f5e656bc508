"""The embedded stack: `eddy dev up | status | down` start and stop real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from confluent_kafka.admin import AdminClient

from infra import devstack

pytestmark = pytest.mark.integration


def eddy(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_dev_up_status_down(tmp_path: Path) -> None:
    env = {"EDDY_STATE_DIR": str(tmp_path / "state")}
    up = eddy("dev", "up", cwd=tmp_path, env=env)
    assert up.returncode == 0, up.stderr
    stack = devstack.load(tmp_path / "state")
    assert stack is not None
    try:
        env_file = (tmp_path / "state" / "dev.env").read_text()
        assert f"EDDY_KAFKA_BOOTSTRAP={stack.kafka_bootstrap}" in env_file
        assert redis.Redis.from_url(stack.redis_url).ping()
        topics = AdminClient({"bootstrap.servers": stack.kafka_bootstrap}).list_topics(timeout=10)
        assert topics is not None

        status = eddy("dev", "status", cwd=tmp_path, env=env)
        assert status.returncode == 0
        assert '"running": true' in status.stdout

        again = eddy("dev", "up", cwd=tmp_path, env=env)
        assert again.returncode == 1
        assert "already running" in again.stderr

        # Other commands find the stack through the recorded env file.
        topics_cmd = eddy("topics", cwd=tmp_path, env=env)
        assert topics_cmd.returncode == 0, topics_cmd.stderr
        assert "eddy.events" in topics_cmd.stdout
        assert "created" in topics_cmd.stdout
    finally:
        down = eddy("dev", "down", cwd=tmp_path, env=env)
    assert down.returncode == 0
    assert not devstack.pid_alive(stack.kafka_pid)
    assert not devstack.pid_alive(stack.redis_pid)
    assert not Path(stack.root).exists()
    assert eddy("dev", "status", cwd=tmp_path, env=env).returncode == 1


def test_missing_redis_server_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDDY_REDIS_SERVER", "/nonexistent/redis-server")
    with pytest.raises(devstack.StackError, match="apt-get install -y redis-server"):
        devstack.find_redis_server()
