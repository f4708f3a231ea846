"""Presence and the ongoing-call cache in Redis. A cache: losing Redis loses no money.

Every method swallows Redis errors after logging them and counting them, and after a failure
Redis is left alone for `retry_after_s`, so a dead Redis costs billing nothing but a log line.
"""

from __future__ import annotations

import json
import logging
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from aio.batching import Batcher, BatchLimits
from persistence import keys
from persistence.db import mask_url

log = logging.getLogger("billing.presence")

SOCKET_TIMEOUT_S = 0.5
RETRY_AFTER_S = 5.0
CONNECTIONS_MAX = 32  # per process; more concurrent requests wait for a free connection
CONNECTION_WAIT_S = 2.0
# Commands of concurrent callers sent as one pipeline: up to size_max callers' commands, one
# pipeline at a time, so that a process's commands reach Redis in the order they were made.
PIPELINES = BatchLimits(size_max=1_000, in_flight_max=1, queued_max=100_000)


def _build_batch(pipe, items: list[tuple[str, object]]) -> None:
    """The commands of a batch of callers, fewer than one set per caller: heartbeats touch only
    ONLINE and LAST_SEEN, so the batch's are one SADD and one ZADD wherever they fell; the busy
    marks of consecutive call starts are one ZADD, written before any later command (a
    settlement's ZREM) so that the order between them holds."""
    seen: dict[str, float] = {}
    busy: dict[str, str] = {}
    for what, payload in items:
        if what == "heartbeat":
            seen.update(payload)
        elif what == "call_started":
            call, seen_at = payload
            pipe.hset(keys.call_key(call["call_id"]), mapping={k: str(v) for k, v in call.items()})
            parties = (str(call["user_id"]), str(call["listener_id"]))
            busy.update(dict.fromkeys(parties, "inf"))
            if seen_at is not None:
                seen.update(dict.fromkeys(parties, seen_at))
        else:
            if busy:
                pipe.zadd(keys.BUSY_UNTIL, busy)
                busy = {}
            payload(pipe)
    if busy:
        pipe.zadd(keys.BUSY_UNTIL, busy)
    if seen:
        pipe.sadd(keys.ONLINE, *seen)
        pipe.zadd(keys.LAST_SEEN, seen)


def redis_client(url: str, socket_timeout_s: float = SOCKET_TIMEOUT_S) -> aioredis.Redis:
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=CONNECTIONS_MAX,
        timeout=CONNECTION_WAIT_S,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=socket_timeout_s,
        decode_responses=True,
    )
    return aioredis.Redis(connection_pool=pool)


class Presence:
    def __init__(self, url: str | None, retry_after_s: float = RETRY_AFTER_S) -> None:
        self.url = url
        self.retry_after_s = retry_after_s
        self._redis: aioredis.Redis | None = None
        self._down_until = 0.0
        self.errors = 0
        self.last_error: str | None = None
        self._pipelines = Batcher(self._run_pipeline, PIPELINES, "redis pipelines")

    def _client(self) -> aioredis.Redis | None:
        if self.url is None or time.monotonic() < self._down_until:
            return None
        if self._redis is None:
            self._redis = redis_client(self.url)
        return self._redis

    def _failed(self, what: str, exc: Exception) -> None:
        self.errors += 1
        self.last_error = f"{what}: {type(exc).__name__}"
        self._down_until = time.monotonic() + self.retry_after_s
        log.warning("redis %s at %s failed, skipped: %s", what, mask_url(self.url), exc)

    async def _pipeline(self, what: str, build) -> bool:
        """Run `build(pipe)`'s commands. Concurrent callers share one pipeline (one round
        trip) per batch."""
        if self._client() is None:
            return False
        return await self._pipelines.submit((what, build))

    async def _run_pipeline(self, items: list[tuple[str, object]]) -> list[bool]:
        r = self._client()
        if r is None:
            return [False] * len(items)
        try:
            # Not MULTI/EXEC: a cache needs no atomicity across callers, and a transaction
            # doubles the replies to parse (each command answers QUEUED first).
            async with r.pipeline(transaction=False) as pipe:
                _build_batch(pipe, items)
                await pipe.execute()
            return [True] * len(items)
        except (RedisError, OSError) as exc:
            self._failed("+".join(sorted({what for what, _ in items})), exc)
            return [False] * len(items)

    async def call_started(self, call: dict, *, seen_at: float | None = None) -> bool:
        """Cache the call and mark both parties busy; with `seen_at`, count it as a heartbeat
        of both at that time."""
        return await self._pipeline("call_started", (call, seen_at))

    async def call_settled(self, settlement: dict, user_still_in_call: bool = False) -> bool:
        def build(pipe):
            pipe.delete(keys.call_key(settlement["call_id"]))
            pipe.zrem(keys.BUSY_UNTIL, str(settlement["listener_id"]))
            if not user_still_in_call:
                pipe.zrem(keys.BUSY_UNTIL, str(settlement["user_id"]))

        return await self._pipeline("call_settled", build)

    async def heartbeat(self, *user_ids: int, now: float) -> bool:
        # Not a build: `_run_pipeline` merges the batch's heartbeats into one SADD and one ZADD.
        return await self._pipeline("heartbeat", {str(u): now for u in user_ids})

    async def publish_low_balance(self, notices: list[dict]) -> bool:
        """One message per call and threshold on the low-balance channel."""

        def build(pipe):
            for n in notices:
                pipe.publish(keys.low_balance_channel(self.url), json.dumps(n))

        return await self._pipeline("publish_low_balance", build)

    async def busy_until(self, user_id: int) -> float | None:
        r = self._client()
        if r is None:
            return None
        try:
            return await r.zscore(keys.BUSY_UNTIL, str(user_id))
        except (RedisError, OSError) as exc:
            self._failed("busy_until", exc)
            return None

    def state(self) -> dict:
        return {"redis": mask_url(self.url), "errors": self.errors, "last_error": self.last_error}

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
