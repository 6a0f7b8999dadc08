"""The service's logs: one JSON object per line, so a value a client sent (an event id with a
newline, say) is escaped and can never forge or split a line."""

from __future__ import annotations

import json
import logging


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                 "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        # ASCII only: control characters, and even lone surrogates, come out as \u escapes.
        return json.dumps(entry, default=str)


def configure_logging(level: int) -> None:
    """JSON lines on stderr for the root logger (uvicorn's loggers propagate to it)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
