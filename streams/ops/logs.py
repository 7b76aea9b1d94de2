"""The worker's logging: LOG_LEVEL and LOG_FORMAT, from the first line on.

Faust's worker configures logging when it starts, through mode's ``setup_logging`` (the level
of its ``-l`` flag, Faust's text format). :func:`configure_logging` applies the settings with that
same function as soon as the app module is imported, so the lines logged while the app is built
follow them too, and ``streams.worker.MirrorWorker`` hands the same level and configuration to
Faust's own set-up: no line is written before LOG_FORMAT=json takes effect.

``LOG_FORMAT=json``: one JSON object per line, with ``time``, ``level``, ``logger``,
``message``, and, when the record carries them (every rejection does), ``topic``,
``partition``, ``offset`` and ``reason``; ``exc`` for tracebacks.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from mode.utils.logging import setup_logging

EXTRA_FIELDS = ("topic", "partition", "offset", "reason")

#: Faust's ``-l`` names (``faust.cli.base.LOGLEVELS``) and LOG_LEVEL's, as logging's levels.
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "crit": logging.CRITICAL,
    "critical": logging.CRITICAL,
}


class JsonFormatter(logging.Formatter):
    """Format a log record as one line of JSON."""

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as a JSON object on one line."""
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in EXTRA_FIELDS:
            if name in record.__dict__:
                entry[name] = record.__dict__[name]
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def level_number(name: str | int | None) -> int | None:
    """Return the logging level of a LOG_LEVEL or ``-l`` name (None when it is neither)."""
    if isinstance(name, int):
        return name
    return _LEVELS.get((name or "").strip().lower())


def logging_config(log_format: str, log_level: str) -> dict[str, Any] | None:
    """Return the ``logging.config.dictConfig`` of LOG_FORMAT (None: Faust's own text lines).

    Existing loggers stay enabled: the modules' loggers are created at import, before this.
    """
    if log_format != "json":
        return None
    level = logging.getLevelName(level_number(log_level) or logging.INFO)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        # To stderr, as Faust's own handler writes.
        "handlers": {
            "default": {"class": "logging.StreamHandler", "formatter": "json", "level": level}
        },
        "root": {"level": level, "handlers": ["default"]},
    }


def configure_logging(log_format: str, log_level: str) -> None:
    """Apply LOG_FORMAT and LOG_LEVEL now, as Faust's worker will again when it starts."""
    setup_logging(loglevel=log_level, logging_config=logging_config(log_format, log_level))
