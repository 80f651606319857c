"""Log configuration: JSON lines in production, readable text in debug.

Structured values travel in a record's `fields` attribute (`logger.info("request",
extra={"fields": {...}})`): the JSON formatter merges them into the line, the text
formatter appends them as `key=value`. Third-party loggers that would write SQL parameters
or request bodies at DEBUG (aiosqlite, SQLAlchemy, HTTP clients) are held at WARNING
whatever the level, so no log level prints a password hash, an email or a token.
"""

from __future__ import annotations

import logging
import logging.config
from datetime import UTC, datetime
from typing import IO, Any

import orjson

from models.settings import Settings

# Loggers that print statement parameters, request bodies or headers below WARNING.
QUIET_LOGGERS = (
    "aiosqlite",
    "asyncpg",
    "sqlalchemy",
    "httpx",
    "httpcore",
    "stripe",
    "aiosmtplib",
    "multipart",
    "urllib3",
    "opentelemetry",
)


def _fields(record: logging.LogRecord) -> dict[str, Any] | None:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, dict) else None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the record's fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = _fields(record)
        if fields:
            line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """`2025-01-01 12:00:00,000 INFO shopql.access request key=value ...` for humans."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        fields = _fields(record)
        if fields:
            text += " " + " ".join(f"{key}={value}" for key, value in fields.items())
        return text


def logging_config(settings: Settings, *, stream: str = "ext://sys.stderr") -> dict[str, Any]:
    """A `logging.config.dictConfig` for the process (also handed to uvicorn, which applies
    it in every worker): our formatter on the root logger; uvicorn's loggers propagate to
    it; uvicorn's access log only when ours is off."""
    formatter = settings.log_format_effective
    level = settings.log_level
    quiet = {name: {"level": "WARNING"} for name in QUIET_LOGGERS}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {"()": f"{__name__}.JsonFormatter"},
            "text": {"()": f"{__name__}.TextFormatter"},
        },
        "handlers": {
            "default": {"class": "logging.StreamHandler", "formatter": formatter, "stream": stream}
        },
        "root": {"level": level, "handlers": ["default"]},
        "loggers": {
            "uvicorn": {"level": level, "handlers": [], "propagate": True},
            "uvicorn.error": {"level": level, "handlers": [], "propagate": True},
            "uvicorn.access": {
                "level": "WARNING" if settings.access_log else "INFO",
                "handlers": [],
                "propagate": True,
            },
            **quiet,
        },
    }


def configure_logging(settings: Settings, *, stream: IO[str] | None = None) -> None:
    """Configure this process's logging (the CLI, and `uvicorn app:create_app_from_env`
    started by hand); `shopql serve` hands `logging_config` to uvicorn instead."""
    config = logging_config(settings)
    if stream is not None:
        config["handlers"]["default"]["stream"] = stream
    # `uvicorn --no-access-log` leaves its access logger without handlers and not
    # propagating, before the app factory runs: keep it off rather than route it to ours.
    access = logging.getLogger("uvicorn.access")
    if not access.propagate and not access.handlers:
        config["loggers"]["uvicorn.access"] = {
            "level": "WARNING",
            "handlers": [],
            "propagate": False,
        }
    logging.config.dictConfig(config)
