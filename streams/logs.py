"""Worker logging: plain text for people, or one JSON object per line for log pipelines.

Every handler carries ``RedactSecrets``: aiokafka logs each request it sends at debug
level, and SASL PLAIN's ``SaslAuthenticateRequest`` holds the password in
``sasl_auth_bytes``; the configured SASL and Redis passwords are masked wherever else
they appear (a Redis URL in an error, a traceback).
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Iterable
from typing import Any, Final, cast
from urllib.parse import quote, unquote, urlsplit

from mode.utils.logging import DEFAULT_FORMATTERS

from streams.settings import Settings

JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"
MASK: Final = "***"

_SASL_AUTH_BYTES: Final = re.compile(
    r"""sasl_auth_bytes=(?:b?(['"])(?:\\.|(?!\1)[^\\])*(?:\1|$)|[^,)\s]*)""", re.DOTALL
)
"""``sasl_auth_bytes=`` and its value: a (bytes) literal in either quoting, up to its closing
quote or the end of the text if it was cut off, or else anything up to ``,``/``)``/space."""


def _spellings(secret: str) -> set[str]:
    """``secret`` as it may show up in a log line: itself, escaped by ``repr`` of a str or
    of its bytes, in JSON, and percent-encoded."""
    return {
        secret,
        repr(secret)[1:-1],
        repr(secret.encode())[2:-1],
        json.dumps(secret)[1:-1],
        quote(secret, safe=""),
    }


class RedactSecrets(logging.Filter):
    """Mask ``sasl_auth_bytes=...`` values and the given secrets in every record.

    A record with something to mask gets its formatted message (and traceback, stack and
    mode's ``data`` extras) rewritten, with ``args`` emptied; any other record is left
    exactly as it was, so formatters still see its arguments.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        found = {spelling for s in secrets if s for spelling in _spellings(s)}
        self.secrets = sorted((s for s in found if s), key=len, reverse=True)

    def redact(self, text: str) -> str:
        text = _SASL_AUTH_BYTES.sub("sasl_auth_bytes=" + MASK, text)
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # bad arguments: logging would print them raw
            note = "(arguments not shown: they do not fit the message)"
            record.msg, record.args = f"{self.redact(str(record.msg))} {note}", ()
        else:
            redacted = self.redact(message)
            if redacted != message:
                record.msg, record.args = redacted, ()
        if record.exc_info:
            # Formatted here so the secret-free text is what every formatter prints.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        data = record.__dict__.get("data")
        if isinstance(data, dict):
            record.__dict__["data"] = {k: _redacted_value(self, v) for k, v in data.items()}
        return True


def _redacted_value(redactor: RedactSecrets, value: Any) -> Any:
    shown = repr(value)
    redacted = redactor.redact(shown)
    return value if redacted == shown else redacted


def secrets_of(settings: Settings) -> list[str]:
    """The passwords in ``settings`` that must never reach a log line."""
    out = [settings.kafka_sasl_password.get_secret_value()]
    try:
        password = urlsplit(settings.redis_url.get_secret_value()).password
    except ValueError:
        password = None
    if password:
        out += [password, unquote(password)]
    return [s for s in out if s]


def logging_config(settings: Settings) -> dict[str, Any]:
    """The worker's ``logging.config.dictConfig``: Faust's coloured text lines on stderr, or
    for ``EDDY_LOG_FORMAT=json`` one JSON object per line on stdout; both redacted.

    JSON records carry ``asctime``, ``levelname``, ``name``, ``process``, ``message``,
    ``worker_id``, and ``exc_info`` when there is a traceback (python-json-logger).
    """
    level = settings.log_level.upper()
    redact = {"()": functools.partial(RedactSecrets, secrets_of(settings))}
    if settings.log_format == "json":
        formatter: dict[str, Any] = {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": JSON_FIELDS,
            "static_fields": {"worker_id": settings.worker_id},
        }
        handler: dict[str, Any] = {"class": "logging.StreamHandler", "stream": "ext://sys.stdout"}
    else:
        # What mode sets up when given no config (``mode.utils.logging._setup_logging``).
        formatter = dict(cast(dict[str, Any], DEFAULT_FORMATTERS["colored"]))
        handler = {"class": "colorlog.StreamHandler"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"eddy": formatter},
        "filters": {"redact": redact},
        "handlers": {
            "default": {**handler, "formatter": "eddy", "filters": ["redact"], "level": level}
        },
        "root": {"handlers": ["default"], "level": level},
    }
