"""Log lines for people (default) or for a log pipeline (`BILLING_LOG_FORMAT=json`): one JSON
object per line with `ts`, `level`, `logger`, `message`, and the `call_id`, `user_id` or
`listener_id` a line is about when it names one (`log.warning(..., extra=about(call_id=7))`)."""

from __future__ import annotations

import json
import logging
import os
import time

CONTEXT_KEYS = ("call_id", "user_id", "listener_id", "route", "status")
TEXT_FORMAT = "%(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in CONTEXT_KEYS:
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def about(**ids) -> dict:
    """`extra=` for a log line about a call or person."""
    return {k: v for k, v in ids.items() if v is not None}


def configure(level: int = logging.WARNING, fmt: str | None = None) -> None:
    """Set up this process's `billing.*` logs in the format BILLING_LOG_FORMAT names (text or
    json); a process's actors and replicas call it too, so their lines match."""
    fmt = (fmt or os.environ.get("BILLING_LOG_FORMAT") or "text").lower()
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    billing = logging.getLogger("billing")
    billing.handlers[:] = [handler]
    billing.setLevel(min(level, billing.level or level))
    billing.propagate = False
