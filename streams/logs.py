"""One JSON object per log line (``LOG_FORMAT=json``), for log shippers.

Fields: ``time``, ``level``, ``logger``, ``message``, and, when the record carries them (every
rejection does), ``topic``, ``partition``, ``offset`` and ``reason``; ``exc`` for tracebacks.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

EXTRA_FIELDS = ("topic", "partition", "offset", "reason")


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


def use_json_logs() -> None:
    """Switch every handler of the root logger (Faust's included) to JSON lines."""
    for handler in logging.getLogger().handlers:
        handler.setFormatter(JsonFormatter())
