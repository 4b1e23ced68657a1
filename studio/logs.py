"""Request context and structured JSON logging, shared by every layer.

The request id and client id live in context variables so any log line written while a request is
handled (a database operation deep in a store, say) carries them without being passed around.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
client_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("client_id", default=None)

ACCESS_LOGGER = "studio.access"
DB_LOGGER = "studio.db"

_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request/client ids and any `extra`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, tz=dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id is not None:
            entry["request_id"] = request_id
        client_id = client_id_var.get()
        if client_id is not None:
            entry["client_id"] = client_id
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class DailyFileHandler(logging.Handler):
    """Appends to `<dir>/<prefix>-YYYY-MM-DD.jsonl`, switching files when the UTC date changes.

    Several processes (ingress replicas, actors) may write the same file: each line is one `write` on
    a file opened with O_APPEND, which the kernel keeps whole for lines this short.
    """

    def __init__(self, directory: Path, prefix: str = "studio") -> None:
        super().__init__()
        self._directory = directory
        self._prefix = prefix
        self._date: str | None = None
        self._fd: int | None = None
        self._guard = threading.Lock()

    def _fd_for(self, date: str) -> int:
        if self._fd is None or date != self._date:
            if self._fd is not None:
                os.close(self._fd)
            self._directory.mkdir(parents=True, exist_ok=True)
            path = self._directory / f"{self._prefix}-{date}.jsonl"
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            self._date = date
        return self._fd

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = (self.format(record) + "\n").encode()
            date = dt.datetime.fromtimestamp(record.created, tz=dt.UTC).date().isoformat()
            with self._guard:
                os.write(self._fd_for(date), line)
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        with self._guard:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
        super().close()


def configure_logging(*, log_dir: Path, level: str) -> None:
    """Send `studio.*` loggers as JSON lines to stdout and to daily files under `log_dir`.

    Idempotent: a second call (another replica in the same process) replaces the handlers.
    """
    root = logging.getLogger("studio")
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    formatter = JsonFormatter()
    stdout = logging.StreamHandler(sys.stdout)
    stdout.setFormatter(formatter)
    files = DailyFileHandler(log_dir)
    files.setFormatter(formatter)
    root.addHandler(stdout)
    root.addHandler(files)
    root.setLevel(level)
    root.propagate = False
