"""``eddy forget USER``: ask the workers to delete everything about a user, and check."""

from __future__ import annotations

import json
import time
from typing import Annotated, cast

import redis
import typer
from confluent_kafka import Producer
from rich.console import Console

from models.events import is_valid_id
from streams.cli.replay import producer_config
from streams.redisclient import sync_client
from streams.settings import Settings, load_settings
from streams.worker import USER_KEYS

console = Console()
err = Console(stderr=True)


def send_forget(settings: Settings, user_id: str, timeout_s: float = 30.0) -> None:
    """Produce the ``forget`` control message for ``user_id`` (keyed like their events)."""
    # the events' producer settings (murmur2), so the message shares the user's partition
    producer = Producer(producer_config(settings.kafka_bootstrap, **settings.kafka_security()))
    body = json.dumps({"type": "forget", "user_id": user_id}).encode()
    producer.produce(settings.topic_events, key=user_id.encode(), value=body)
    if producer.flush(timeout_s) > 0:
        raise RuntimeError(f"could not deliver to {settings.topic_events} in {timeout_s:.0f}s")


def remaining_keys(client: redis.Redis, settings: Settings, user_id: str) -> list[str]:
    """The user's keys still in Redis."""
    keys = [settings.key(kind, user_id) for kind in USER_KEYS]
    return [k for k in keys if client.exists(k)]


def forget_command(
    user_id: Annotated[str, typer.Argument(help="The user to forget.")],
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for the worker to confirm (0: do not wait).")
    ] = 30.0,
) -> None:
    """Delete a user's profile, vectors, lists and exploration memory (via the worker)."""
    if not is_valid_id(user_id):
        err.print(f"[bold red]error:[/] {user_id!r} is not a valid user id")
        raise typer.Exit(code=1)
    settings = load_settings()
    try:
        send_forget(settings, user_id)
    except RuntimeError as exc:
        err.print(f"[bold red]error:[/] {exc} (is Kafka at {settings.kafka_bootstrap}?)")
        raise typer.Exit(code=1) from exc
    console.print(f"sent forget for {user_id} to {settings.topic_events}")
    if wait <= 0:
        return
    client = cast(redis.Redis, sync_client(settings))  # same commands on a cluster client
    deadline = time.monotonic() + wait
    try:
        while (left := remaining_keys(client, settings, user_id)) and time.monotonic() < deadline:
            time.sleep(0.2)
    except redis.RedisError as exc:
        err.print(f"[bold red]error:[/] cannot check Redis: {exc}")
        raise typer.Exit(code=1) from exc
    finally:
        client.close()
    if left:
        err.print(
            f"[bold red]error:[/] {', '.join(left)} still in Redis after {wait:.0f}s: "
            "is a worker running? The message is in Kafka and will be applied when one runs."
        )
        raise typer.Exit(code=1)
    console.print(f"forgot {user_id}: profile, lists and exploration memory deleted")
