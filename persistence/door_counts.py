"""Wrong API keys per source address, counted in Redis, so that every replica of the HTTP API
counts one source's failures together (engine/http/door.py keeps each replica's own view)."""

from __future__ import annotations

import logging

from redis.exceptions import RedisError

from persistence import keys
from persistence.presence import redis_client

log = logging.getLogger("billing.http")


class FailureCounts:
    def __init__(self, url: str) -> None:
        self._redis = redis_client(url)

    async def count(self, source: str, window_s: int) -> tuple[int, float] | None:
        """Count one wrong key from `source`: (its failures in its window, seconds the window
        has left); None if Redis does not answer (the replica then counts alone)."""
        key = keys.FAILED_KEYS + source
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(key, 0, ex=window_s, nx=True)  # the window starts at its first
                pipe.incr(key)
                pipe.pttl(key)
                _, n, left_ms = await pipe.execute()
        except (RedisError, OSError) as e:
            log.warning("could not count a wrong key in Redis: %s", e)
            return None
        return int(n), max(left_ms, 0) / 1000

    async def close(self) -> None:
        await self._redis.aclose()
