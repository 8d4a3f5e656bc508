"""Worker logging: plain text for people, or one JSON object per line for log pipelines."""

from __future__ import annotations

from typing import Any

from streams.settings import Settings

JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"


def logging_config(settings: Settings) -> dict[str, Any] | None:
    """A ``logging.config.dictConfig`` for ``EDDY_LOG_FORMAT=json``; None keeps Faust's text.

    JSON records carry ``asctime``, ``levelname``, ``name``, ``process``, ``message``,
    ``worker_id``, and ``exc_info`` when there is a traceback (python-json-logger).
    """
    if settings.log_format != "json":
        return None
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {
                "()": "pythonjsonlogger.json.JsonFormatter",
                "fmt": JSON_FIELDS,
                "static_fields": {"worker_id": settings.worker_id},
            }
        },
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stdout",
            }
        },
        "root": {"handlers": ["stdout"], "level": settings.log_level.upper()},
    }
