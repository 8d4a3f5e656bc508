"""Worker logs never carry the SASL or Redis password, in text or JSON, at any level.

Each case runs the worker's real logging set-up (``mode.utils.logging.setup_logging``
with ``streams.logs.logging_config``, exactly what ``faust.Worker`` does) in a child
process, so the global logging state of the test session is left alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SASL_PASSWORD = "s3cr'et-é pw"
"""Quotes, non-ASCII and a space: escaped differently by repr of str and of bytes."""
REDIS_PASSWORD = "r3dis-pw"

SCRIPT = r"""
import logging

from aiokafka.protocol.admin import SaslAuthenticateRequest_v1
from mode.utils.logging import setup_logging

from streams.logs import logging_config
from streams.settings import Settings

s = Settings(_env_file=None)
setup_logging(loglevel=s.log_level, logging_config=logging_config(s))
password = s.kafka_sasl_password.get_secret_value()
# What aiokafka logs at debug when it authenticates with SASL PLAIN:
request = SaslAuthenticateRequest_v1(b"user\x00user\x00" + password.encode())
logging.getLogger("aiokafka.conn").debug("Request to %s:%d %d: %s", "broker", 9092, 7, request)
logging.getLogger("streams.app").info("redis at %s", s.redis_url.get_secret_value())
logging.getLogger("streams.app").warning("password %r in a message", password)
logging.getLogger("streams.app").info("nothing secret: %d events", 42)
try:
    raise RuntimeError("login failed for " + password)
except RuntimeError:
    logging.getLogger("streams.app").exception("connection failed")
"""


def run_logging(log_format: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDDY_")}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "EDDY_LOG_LEVEL": "debug",
            "EDDY_LOG_FORMAT": log_format,
            "EDDY_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "EDDY_KAFKA_SASL_MECHANISM": "PLAIN",
            "EDDY_KAFKA_SASL_USERNAME": "user",
            "EDDY_KAFKA_SASL_PASSWORD": SASL_PASSWORD,
            "EDDY_REDIS_URL": f"redis://:{REDIS_PASSWORD}@cache:6379/0",
        }
    )
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        cwd=ROOT / "tests",  # no .eddy/dev.env here
        capture_output=True,
        timeout=120,
        check=True,
    )
    return (done.stdout + done.stderr).decode("utf-8")


def assert_no_secret(output: str) -> None:
    for leak in (
        SASL_PASSWORD,
        SASL_PASSWORD.encode().decode("ascii", "backslashreplace"),  # inside repr(bytes)
        "s3cr",
        REDIS_PASSWORD,
        "r3dis",
    ):
        assert leak not in output, f"{leak!r} in the logs:\n{output}"


def test_text_logs_redact_sasl_bytes_and_passwords() -> None:
    output = run_logging("text")
    assert_no_secret(output)
    assert "Request to broker:9092 7: SaslAuthenticateRequest_v1(sasl_auth_bytes=***)" in output
    assert "redis at redis://:***@cache:6379/0" in output
    assert 'password "***" in a message' in output
    assert "nothing secret: 42 events" in output
    assert "RuntimeError: login failed for ***" in output  # the traceback too


def test_json_logs_redact_sasl_bytes_and_passwords() -> None:
    output = run_logging("json")
    assert_no_secret(output)
    records = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    messages = [r["message"] for r in records]
    assert "Request to broker:9092 7: SaslAuthenticateRequest_v1(sasl_auth_bytes=***)" in messages
    assert "redis at redis://:***@cache:6379/0" in messages
    assert 'password "***" in a message' in messages
    assert "nothing secret: 42 events" in messages
    failed = next(r for r in records if r["message"] == "connection failed")
    assert "RuntimeError: login failed for ***" in failed["exc_info"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("X(sasl_auth_bytes=b'a\\x00b\\x00pw', y=1)", "X(sasl_auth_bytes=***, y=1)"),
        ('X(sasl_auth_bytes=b"it\'s", y=1)', "X(sasl_auth_bytes=***, y=1)"),
        ("X(sasl_auth_bytes=b'a\\'b')", "X(sasl_auth_bytes=***)"),
        ("X(sasl_auth_bytes=b'cut off", "X(sasl_auth_bytes=***"),
        ("X(sasl_auth_bytes=None)", "X(sasl_auth_bytes=***)"),
        ("no secrets here", "no secrets here"),
    ],
)
def test_sasl_auth_bytes_are_redacted_in_any_quoting(text: str, expected: str) -> None:
    from streams.logs import RedactSecrets

    assert RedactSecrets().redact(text) == expected


def test_a_record_whose_arguments_do_not_fit_is_redacted_not_printed_raw() -> None:
    import logging

    from streams.logs import RedactSecrets

    record = logging.LogRecord("x", logging.INFO, __file__, 1, "token %d", ("pw-123",), None)
    assert RedactSecrets(["pw-123"]).filter(record)
    assert record.getMessage() == "token %d (arguments not shown: they do not fit the message)"


def test_percent_encoded_redis_passwords_are_masked_in_both_spellings() -> None:
    from pydantic import SecretStr

    from streams.logs import RedactSecrets, secrets_of
    from streams.settings import Settings

    s = Settings(_env_file=None, redis_url=SecretStr("redis://u:p%40ss%2Fw0rd@cache:6379/0"))
    redactor = RedactSecrets(secrets_of(s))
    assert redactor.redact("url redis://u:p%40ss%2Fw0rd@cache, password p@ss/w0rd") == (
        "url redis://u:***@cache, password ***"
    )
