"""The node's JSON-lines log (stderr): one object per event, never a key (the signer exposes only its
address)."""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any, TextIO


class JsonLog:
    """One JSON object per line: ts, level, event, then fields. Values are never secrets: callers pass
    addresses, ids, hashes and messages only."""

    def __init__(self, stream: TextIO = sys.stderr, extra: dict[str, Any] | None = None) -> None:
        self.stream = stream
        self.extra = extra or {}
        self._lock = threading.Lock()

    def __call__(self, event: str, level: str = "info", **fields: Any) -> None:
        record = {"ts": round(time.time(), 3), "level": level, "event": event, **self.extra, **fields}
        line = json.dumps(record, default=str, sort_keys=False)
        with self._lock:
            try:
                self.stream.write(line + "\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass


def short_error(exc: BaseException) -> str:
    """An exception as one short line for a log field."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:240]}"
