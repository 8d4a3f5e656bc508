"""Settings: EDDY_ environment variables, validation, keys, env round trip, masking."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError
from pydantic_settings import SettingsError

from models.events import EventType
from streams.settings import Settings, load_settings

PASSWORD = "hunter2-s3cret"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No inherited EDDY_* variables, and no .eddy/dev.env from the working directory."""
    for name in list(os.environ):
        if name.startswith("EDDY_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def build(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)


def test_defaults() -> None:
    s = build()
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert s.redis_url.get_secret_value() == "redis://127.0.0.1:6379/0"
    assert s.key_prefix == "eddy"
    assert s.topic_events == "eddy.events"
    assert s.topic_dlq == "eddy.events.dlq"
    assert s.rec_size == 20
    assert s.half_life_days == 30.0
    assert s.event_weights == {
        EventType.VIEW: 1.0,
        EventType.CLICK: 2.0,
        EventType.ADD_TO_CART: 4.0,
        EventType.PURCHASE: 8.0,
    }


def test_env_vars_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDDY_KAFKA_BOOTSTRAP", "k1:9093,k2:9093")
    monkeypatch.setenv("EDDY_REDIS_URL", f"redis://:{PASSWORD}@cache:6380/2")
    monkeypatch.setenv("EDDY_KEY_PREFIX", "shop")
    monkeypatch.setenv("EDDY_REC_SIZE", "7")
    monkeypatch.setenv("EDDY_HALF_LIFE_DAYS", "2.5")
    monkeypatch.setenv("EDDY_DATA_DIR", "/var/lib/eddy")
    monkeypatch.setenv("eddy_log_level", "debug")  # names are case-insensitive
    s = build()
    assert s.kafka_bootstrap == "k1:9093,k2:9093"
    assert s.redis_url.get_secret_value() == f"redis://:{PASSWORD}@cache:6380/2"
    assert s.key_prefix == "shop"
    assert s.rec_size == 7
    assert s.half_life_days == 2.5
    assert s.data_dir == Path("/var/lib/eddy")
    assert s.log_level == "debug"


def test_explicit_values_beat_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDDY_KEY_PREFIX", "from-env")
    assert build(key_prefix="explicit").key_prefix == "explicit"


def test_event_weights_from_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "EDDY_EVENT_WEIGHTS", '{"view": 0.5, "click": 1, "add_to_cart": 3, "purchase": 10}'
    )
    assert build().event_weights == {
        EventType.VIEW: 0.5,
        EventType.CLICK: 1.0,
        EventType.ADD_TO_CART: 3.0,
        EventType.PURCHASE: 10.0,
    }


def test_zero_weight_is_allowed() -> None:
    weights = {"view": 0, "click": 0, "add_to_cart": 0, "purchase": 1}
    assert build(event_weights=weights).event_weights[EventType.VIEW] == 0.0


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ('{"view": 1}', "event_weights lacks"),
        ('{"view": -1, "click": 2, "add_to_cart": 4, "purchase": 8}', "must be >= 0"),
        ('{"view": 1, "click": 2, "add_to_cart": 4, "purchase": 8, "like": 1}', "like"),
        ('{"view": "x", "click": 2, "add_to_cart": 4, "purchase": 8}', "valid number"),
    ],
)
def test_invalid_event_weights_are_rejected(
    monkeypatch: pytest.MonkeyPatch, weights: str, message: str
) -> None:
    monkeypatch.setenv("EDDY_EVENT_WEIGHTS", weights)
    with pytest.raises(ValidationError, match="event_weights") as info:
        build()
    assert message in str(info.value)


def test_missing_weights_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDDY_EVENT_WEIGHTS", '{"view": 1, "click": 2}')
    with pytest.raises(ValidationError) as info:
        build()
    assert "add_to_cart" in str(info.value)
    assert "purchase" in str(info.value)


def test_event_weights_that_are_not_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDDY_EVENT_WEIGHTS", "view=1")
    with pytest.raises(SettingsError, match="event_weights"):
        build()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("EDDY_REC_SIZE", "0"),
        ("EDDY_REC_SIZE", "501"),
        ("EDDY_HALF_LIFE_DAYS", "0"),
        ("EDDY_WEB_PORT", "70000"),
        ("EDDY_FLUSH_MAX_BATCH", "many"),
    ],
)
def test_out_of_range_values_are_rejected(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name.removeprefix("EDDY_").lower()):
        build()


def test_settings_are_frozen() -> None:
    s = build()
    with pytest.raises(ValidationError):
        s.key_prefix = "other"  # type: ignore[misc]


def test_key_builds_prefixed_keys() -> None:
    s = build(key_prefix="shop")
    assert s.key("rec", "u1") == "shop:rec:u1"
    assert s.key("rec", "_popular", "sci-fi") == "shop:rec:_popular:sci-fi"
    assert s.key("item", "i1") == "shop:item:i1"
    assert s.key() == "shop"
    assert build().key("rec", "u1") == "eddy:rec:u1"


def test_to_env_round_trips(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    original = build(
        kafka_bootstrap="k1:9093,k2:9093",
        redis_url=f"rediss://user:{PASSWORD}@cache:6380/2",
        key_prefix="shop",
        rec_size=7,
        half_life_days=0.1,
        broker_session_timeout_s=6.5,
        event_weights={"view": 0.25, "click": 1, "add_to_cart": 3, "purchase": 12.5},
        data_dir=tmp_path / "worker dir",
        state_dir=tmp_path / "state",
        worker_id="w-1",
        model_version="pop-v2",
    )
    env = original.to_env()
    unset = {name for name in Settings.model_fields if getattr(original, name) is None}
    assert unset == {"kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile"}
    assert set(env) == {f"EDDY_{name.upper()}" for name in set(Settings.model_fields) - unset}
    assert all(isinstance(v, str) for v in env.values())
    assert env["EDDY_REDIS_URL"] == f"rediss://user:{PASSWORD}@cache:6380/2"  # real secret
    assert json.loads(env["EDDY_EVENT_WEIGHTS"]) == {
        "view": 0.25,
        "click": 1.0,
        "add_to_cart": 3.0,
        "purchase": 12.5,
    }
    assert env["EDDY_REC_SIZE"] == "7"
    assert env["EDDY_DATA_DIR"] == str(tmp_path / "worker dir")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    rebuilt = build()
    assert rebuilt == original
    assert rebuilt.model_dump() == original.model_dump()
    assert rebuilt.redis_url.get_secret_value() == original.redis_url.get_secret_value()


def test_to_env_round_trips_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    original = build()
    for name, value in original.to_env().items():
        monkeypatch.setenv(name, value)
    assert build() == original


def test_secrets_are_masked() -> None:
    s = build(redis_url=f"redis://:{PASSWORD}@cache:6379/0")
    assert isinstance(s.redis_url, SecretStr)
    assert str(s.redis_url) == "**********"
    assert PASSWORD not in repr(s)
    assert PASSWORD not in str(s)
    safe = s.safe_dict()
    assert safe["redis_url"] == "**********"
    assert PASSWORD not in json.dumps(safe, default=str)
    assert safe["key_prefix"] == "eddy"
    assert safe["event_weights"] == {"view": 1.0, "click": 2.0, "add_to_cart": 4.0, "purchase": 8.0}
    assert set(safe) == set(Settings.model_fields)


def test_load_settings_reads_state_dir_env_file(tmp_path: Path) -> None:
    state = tmp_path / "stack"
    state.mkdir()
    (state / "dev.env").write_text("EDDY_KAFKA_BOOTSTRAP=127.0.0.1:39092\nEDDY_REC_SIZE=9\n")
    s = load_settings(state_dir=state)
    assert s.kafka_bootstrap == "127.0.0.1:39092"
    assert s.rec_size == 9
    assert s.state_dir == state
    assert load_settings(state_dir=state, rec_size=4).rec_size == 4


def test_env_vars_beat_the_env_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    state = tmp_path / "stack"
    state.mkdir()
    (state / "dev.env").write_text("EDDY_REC_SIZE=9\n")
    monkeypatch.setenv("EDDY_REC_SIZE", "11")
    assert load_settings(state_dir=state).rec_size == 11


def test_kafka_security_reaches_every_client_and_the_password_stays_hidden(
    tmp_path: Path,
) -> None:
    import ssl

    import faust

    from streams.faustapp import broker_credentials
    from streams.topics import admin_config

    plain = Settings(_env_file=None)
    assert admin_config(plain) == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "PLAINTEXT",
    }
    assert broker_credentials(plain) is None
    secure = Settings(
        _env_file=None,
        kafka_bootstrap="broker:9093",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="eddy",
        kafka_sasl_password=SecretStr("s3cret"),
    )
    assert admin_config(secure) == {
        "bootstrap.servers": "broker:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "eddy",
        "sasl.password": "s3cret",
    }
    creds = broker_credentials(secure)
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.username == "eddy"
    assert isinstance(creds.ssl_context, ssl.SSLContext)
    shown = json.dumps(secure.safe_dict())
    assert "s3cret" not in shown
    assert "s3cret" not in repr(secure)
    tls = Settings(
        _env_file=None, kafka_security_protocol="SSL", kafka_ssl_cafile=tmp_path / "ca.pem"
    )
    assert tls.kafka_security() == {
        "security.protocol": "SSL",
        "ssl.ca.location": str(tmp_path / "ca.pem"),
    }


NOT_URL_SAFE = ["Qx7/k#9?Zq", "Zq#Wv8", "9999/Zq", "Jq[9]Wz", "Qx7?Wv"]
"""Redis passwords that break an unencoded URL: they cut it short or make a bad port or host."""


def fragments(secret: str) -> set[str]:
    return {secret[i : i + 3] for i in range(len(secret) - 2)}


@pytest.mark.parametrize("password", NOT_URL_SAFE)
def test_a_redis_url_with_an_unencoded_password_is_rejected_without_showing_it(
    monkeypatch: pytest.MonkeyPatch, password: str
) -> None:
    monkeypatch.setenv("EDDY_REDIS_URL", f"redis://eddy:{password}@cache:6379/0")
    with pytest.raises(ValidationError) as info:
        build()
    text = str(info.value)
    assert "EDDY_REDIS_URL" in text
    assert "percent-encode" in text
    assert "urllib.parse.quote" in text
    assert not {f for f in fragments(password) if f in text}, text


@pytest.mark.parametrize("password", [*NOT_URL_SAFE, "p@ss:w rd", "%41", "Wq%zz9"])
def test_a_percent_encoded_redis_password_is_accepted_and_reaches_redis_intact(
    password: str,
) -> None:
    from urllib.parse import quote

    from redis.connection import parse_url

    url = f"rediss://eddy:{quote(password, safe='')}@cache:6380/2"
    s = build(redis_url=url)
    assert s.redis_url.get_secret_value() == url
    assert parse_url(url)["password"] == password
    assert parse_url(url)["host"] == "cache"
