"""Log formats of every part: `text` for people, `json` (one object a line) for machines.

Context goes in `extra=`, never into the message: `conn_id` and `request_id` (text prints them
as `conn=… request=…` before the message), then whatever a line adds (`action`, `status`,
`duration_ms`…), printed after it as `key=value`. JSON has them all as fields. Standard library
only, so that Django's LOGGING (project/settings.py) names these same formatters for the
workers and the web part.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import datetime, timezone
from typing import Any

LOG_FORMATS = ("text", "json")
# Context fields that name what a line is about; text prints them first, under these labels.
ID_FIELDS = (("conn_id", "conn"), ("request_id", "request"))
# Every attribute a LogRecord has of its own; the others came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime", "taskName"}
_PLAIN = (str, int, float, bool)


def context_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a record got from `extra=`, in the order they were given."""
    return {key: value for key, value in record.__dict__.items()
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_")}


def _text_value(value: Any) -> str:
    text = str(value)
    if not text or any(char.isspace() or char in '"=' for char in text):
        return json.dumps(text)
    return text


class TextFormatter(logging.Formatter):
    """`TIME LEVEL LOGGER PID [conn=… request=…] MESSAGE [key=value…]`.

    Only plain values (strings, numbers) of the context are printed: an object some library
    passes in `extra=` (Django passes its request) has no one-line form worth reading.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        fields = context_fields(record)
        head = "".join(f"{label}={_text_value(fields.pop(key))} " for key, label in ID_FIELDS
                       if fields.get(key) is not None)
        tail = "".join(f" {key}={_text_value(value)}" for key, value in fields.items()
                       if isinstance(value, _PLAIN))
        return (f"{self.formatTime(record)} {record.levelname} {record.name} {record.process} "
                f"{head}{record.message}{tail}")


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (ISO 8601, UTC), level, logger, process, message, the context
    fields, and `exception` (the traceback, as one string) when there is one. ASCII only, so no
    character of a message can break the line or the encoding."""

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.process,
            "message": record.message,
        }
        for key, value in context_fields(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        try:
            return json.dumps(entry, default=str, allow_nan=False)
        except (TypeError, ValueError):
            # A context value json cannot take even as str() (a dict with tuple keys, NaN, a cycle).
            return json.dumps({key: _json_safe(value) for key, value in entry.items()}, allow_nan=False)


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return repr(value)


def formatter(log_format: str) -> logging.Formatter:
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r} is not one of {', '.join(LOG_FORMATS)}")
    return JsonFormatter() if log_format == "json" else TextFormatter()


def configure(level: str, log_format: str) -> None:
    """Log to stderr in `log_format` at `level`, unless logging is configured already (a test
    runner, a gunicorn --log-config): then it is left as it is."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(log_format))
    root.addHandler(handler)
    root.setLevel(level)
