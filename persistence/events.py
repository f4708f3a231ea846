"""Call events: the outbox in PostgreSQL, read in id order, and its relay to a Redis Stream.

The writer inserts an event in the transaction that commits what it reports, so no event is
seen before its commit and none is lost with a crash. The relay copies committed events to the
stream `billing:events` (entry id `<event_id>-0`, so a copy made twice is refused by Redis, not
doubled), trimmed to about `STREAM_LEN_MAX` entries. If Redis loses the stream, the next round
copies the last `STREAM_LEN_MAX` events again from PostgreSQL. Delivery is at least once: a
consumer keeps the last id it handled and resumes after it.
"""

from __future__ import annotations

import json
import logging

import asyncpg
from redis.exceptions import RedisError

from actors.times import iso_times
from persistence import keys
from persistence.presence import redis_client

log = logging.getLogger("billing.events")

STREAM = keys.EVENTS_STREAM
STREAM_LEN_MAX = 100_000  # entries kept in the stream (approximately: XADD MAXLEN ~)
RELAY_BATCH_MAX = 1_000  # events copied per batch
RELAY_BATCHES_MAX = 20  # batches per round: a round copies at most 20,000 events
READ_LIMIT_MAX = 1_000  # events per read_events call

READ_SQL = """
SELECT event_id, type, call_id, user_id, at, data FROM events
WHERE event_id > $1 AND ($3::bigint IS NULL OR user_id = $3 OR (data->>'listener_id')::bigint = $3)
ORDER BY event_id LIMIT $2
"""


def event_of(row) -> dict:
    return {
        "id": row["event_id"],
        "type": row["type"],
        "call_id": row["call_id"],
        "user_id": row["user_id"],
        "at": row["at"].timestamp(),
        "data": json.loads(row["data"]),
    }


async def read_events(
    pool: asyncpg.Pool, after: int = 0, limit: int = 100, user_id: int | None = None
) -> list[dict]:
    """Committed events with an id above `after`, oldest first (of one party, if `user_id`:
    the payer's events and those of calls they listen to)."""
    rows = await pool.fetch(READ_SQL, after, min(limit, READ_LIMIT_MAX), user_id)
    return [event_of(r) for r in rows]


async def last_event_id(pool: asyncpg.Pool) -> int:
    return await pool.fetchval("SELECT coalesce(max(event_id), 0) FROM events")


class Relay:
    """Copies committed events to the Redis Stream; one relay runs, in the engine's owner."""

    def __init__(self, redis_url: str, stream: str = STREAM, len_max: int = STREAM_LEN_MAX):
        self.redis = redis_client(redis_url, socket_timeout_s=2.0)
        self.stream = stream
        self.len_max = len_max
        self.relayed = 0

    async def _cursor(self, pool: asyncpg.Pool) -> int:
        """The last event id the stream holds; with no stream (Redis lost it, or new), the id
        before the last `len_max` events, so those are copied again."""
        last = await self.redis.xrevrange(self.stream, count=1)
        if last:
            return int(last[0][0].split("-")[0])
        return max(0, await last_event_id(pool) - self.len_max)

    async def relay_once(self, pool: asyncpg.Pool) -> int:
        """Copy the events committed since the stream's last, up to RELAY_BATCHES_MAX batches;
        returns how many were added."""
        added = 0
        for _ in range(RELAY_BATCHES_MAX):
            copied, full = await self._relay_batch(pool)
            added += copied
            if not full:
                break
        return added

    async def _relay_batch(self, pool: asyncpg.Pool) -> tuple[int, bool]:
        """One batch: (events added, whether it was full, so more may wait)."""
        try:
            cursor = await self._cursor(pool)
            events = await read_events(pool, cursor, RELAY_BATCH_MAX)
            if not events:
                return 0, False
            pipe = self.redis.pipeline(transaction=False)
            for e in events:
                e = iso_times(e)  # the stream says its times as the HTTP API does
                # A field that is null (a payout's call_id) is left out: Redis holds strings.
                fields = {k: v for k, v in e.items() if k not in ("data", "id") and v is not None}
                fields["data"] = json.dumps(e["data"], separators=(",", ":"))
                pipe.xadd(
                    self.stream, fields, id=f"{e['id']}-0", maxlen=self.len_max, approximate=True
                )
            added = 0
            for result in await pipe.execute(raise_on_error=False):
                if not isinstance(result, Exception):
                    added += 1
                elif "equal or smaller" not in str(result):  # not "copied already"
                    raise result
            self.relayed += added
            return added, len(events) == RELAY_BATCH_MAX
        except (RedisError, OSError) as e:
            log.warning("event relay to Redis skipped this round: %s", e)
            return 0, False

    async def close(self) -> None:
        await self.redis.aclose()
