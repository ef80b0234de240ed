"""Logging set-up: readable lines for a terminal, one JSON object per line for collectors.

JSON lines come from python-json-logger (its orjson formatter): every `extra=` field of a
record lands in its object, so the position, table or attempt a message is about can be
queried, not parsed out of text. Times are UTC with milliseconds, as collectors sort them.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from pythonjsonlogger.orjson import OrjsonFormatter


def utc_millis(created: float) -> str:
    """`2026-12-01T17:33:28.123Z` for a record's `created` time."""
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created * 1000) % 1000:03d}Z"


def _plain(value: Any) -> Any:
    """JSON's own types as they are; anything else (a Position, a Path) as its text."""
    if value is None or isinstance(value, str | int | float | bool | list | dict):
        return value
    return str(value)


class JsonLines(OrjsonFormatter):
    """time, level, logger, message, then the record's extra fields and any exception."""

    def __init__(self) -> None:
        super().__init__(["levelname", "name", "message"],
                         rename_fields={"levelname": "level", "name": "logger"},
                         json_default=str)

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        log_data["time"] = utc_millis(record.created)
        super().add_fields(log_data, record, message_dict)
        for key, value in log_data.items():
            log_data[key] = _plain(value)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        position = getattr(record, "position", None)
        return f"{line} [{position}]" if position else line


def _no_connect_errors(record: logging.LogRecord) -> bool:
    """aiokafka logs each refused connection as an ERROR with the socket's repr; the
    retrying caller says the same once per retry, in words ("cannot reach Kafka at ...")."""
    return not str(record.msg).startswith("Unable connect to")


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonLines())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    kafka = logging.getLogger("aiokafka")
    kafka.setLevel(max(root.level, logging.WARNING))
    kafka.filters[:] = [_no_connect_errors]
    logging.getLogger("elastic_transport").setLevel(max(root.level, logging.WARNING))
