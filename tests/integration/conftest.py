"""Fixtures shared by the integration tests that need a trained model and Redis."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from models.artefact import save
from models.datasets import Dataset
from models.training import TrainConfig, train
from streams.settings import Settings
from streams.topics import create_topics
from tests.integration.groups import catalog, history
from tests.support import produce


@pytest.fixture
def trained(settings: Settings) -> Settings:
    """Settings whose model dir holds a model trained on the groups, catalog produced."""
    t0 = time.time() - 7200
    artefact = train(Dataset("groups", catalog(), history(t0), 0, {}), TrainConfig(dim=8))
    save(artefact, settings.model_dir)
    create_topics(settings)
    produce(
        settings.kafka_bootstrap,
        settings.topic_items,
        [(i.item_id, i.model_dump_json()) for i in catalog()],
    )
    return settings


@pytest.fixture
def r(settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    yield client
    client.close()
