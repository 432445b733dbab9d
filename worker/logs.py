"""Logging set-up: one line per event, human-readable by default, JSON lines for clusters.

Every line goes through ``worker.protocol.redact.redact`` on its way out, whoever logged it: a library
that quotes a node URL with its API key, or an exception carrying a signed URL, shows neither.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from worker.protocol.redact import redact


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        task_id = getattr(record, "task_id", None)
        if task_id:
            entry["chainTaskId"] = task_id
        if record.exc_info:
            entry["error"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, separators=(",", ":"))


class _TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        task_id = getattr(record, "task_id", None)
        line = redact(super().format(record))
        return f"{line} [task {task_id}]" if task_id else line


def setup_logging(level: str = "INFO", *, json_lines: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if json_lines else _TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Third-party chatter that would drown the worker's own events at INFO.
    for noisy in ("aiohttp.access", "web3", "urllib3", "asyncio", "aiodocker"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
