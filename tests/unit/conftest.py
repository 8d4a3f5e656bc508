"""Fixtures shared by the unit tests of the worker's adapters (``streams``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from streams.settings import Settings


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    """A worker's settings with no ``EDDY_`` variable of the environment."""
    for name in list(os.environ):
        if name.startswith("EDDY_"):
            monkeypatch.delenv(name)
    return Settings(
        _env_file=None,
        key_prefix="t",
        rec_size=3,
        history_size=5,
        half_life_days=1.0,
        rec_ttl_s=120,
        model_version="unit-v1",
        data_dir=tmp_path / "worker",
        state_dir=tmp_path / "state",
    )
