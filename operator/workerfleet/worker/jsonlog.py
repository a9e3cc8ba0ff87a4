"""One JSON object per log line, so log pipelines can filter on job id, job type and attempt.

Fields passed as `extra=` become top-level keys. Only what the runtime passes is written: settings and
credentials are never handed to the logger.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from itertools import islice
from typing import Any, TextIO

_SAMPLE_RECORD = logging.LogRecord("", 0, "", 0, "", (), None)
_STANDARD_ATTRIBUTES = frozenset(vars(_SAMPLE_RECORD)) | {"message", "asctime"}
_STANDARD_COUNT = len(vars(_SAMPLE_RECORD))
"""A record's own attributes come first in its __dict__, `extra=` fields after them."""
_encode = json.JSONEncoder(default=str).encode
"""One encoder for every line: `json.dumps(..., default=str)` builds a new one per call."""


class JsonFormatter(logging.Formatter):
    """The line is assembled by hand around one encoding of the fields: at thousands of jobs a second,
    formatting was a tenth of a worker's CPU per job."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._second_text = ""
        self._prefixes: dict[tuple[int, str], str] = {}

    def _time(self, created: float) -> str:
        """`2026-12-07T22:50:49.576+00:00`: the date and time part is computed once per second."""
        second = int(created)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{int((created - second) * 1000):03d}+00:00"

    def _prefix(self, record: logging.LogRecord) -> str:
        key = (record.levelno, record.name)
        prefix = self._prefixes.get(key)
        if prefix is None:
            prefix = f', "level": {_encode(record.levelname.lower())}, "logger": {_encode(record.name)}'
            self._prefixes[key] = prefix
        return prefix

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            key: value
            for key, value in islice(vars(record).items(), _STANDARD_COUNT, None)
            if key not in _STANDARD_ATTRIBUTES
        }
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        head = f'{{"time": "{self._time(record.created)}"{self._prefix(record)}, "message": '
        head += _encode(record.getMessage())
        return f"{head}, {_encode(fields)[1:]}" if fields else head + "}"


def configure(level: str, stream: TextIO | None = None) -> None:
    """JSON lines on `stream` (default stderr) for the whole process."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
