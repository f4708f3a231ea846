"""Webhook endpoints and their deliveries, in PostgreSQL (`webhooks`, `webhook_deliveries`):
what engine/webhooks.py registers, queues, sends and records.

An endpoint's events are queued as deliveries in event id order (`queue`: the events after its
`queued_through` of its types, one row each); a delivery is pending until a 2xx, then
delivered, and never sent again unless replayed. Event ids become visible in increasing order
(persistence/commit.py's events lock), so an endpoint that queues after its last id misses none.
"""

from __future__ import annotations

import json

import asyncpg

from persistence.commit import EVENTS_LOCK_CLASS, EVENTS_LOCK_SQL
from persistence.events import event_of
from persistence.records import WEBHOOK_DISABLED
from persistence.store import to_epoch

ENABLED, DISABLED, DELETED = "enabled", "disabled", "deleted"
PENDING, DELIVERED = "pending", "delivered"
WEBHOOK_STATUSES = (ENABLED, DISABLED, DELETED)
DELIVERY_STATUSES = (PENDING, DELIVERED)
DELIVERIES_PAGE_MAX = 100
ERROR_CHARS_MAX = 200  # of a failed attempt's error, kept

FIELDS = "webhook_id, url, event_types, status, created_at, disabled_at, disabled_reason"
DELIVERY_FIELDS = (
    "event_id, status, attempts, next_at, first_failed_at, last_attempt_at, last_status, "
    "last_error, delivered_at"
)


def _webhook(row) -> dict:
    out = dict(row)
    out["event_types"] = list(out["event_types"])
    for k in ("created_at", "disabled_at"):
        out[k] = to_epoch(out[k])
    return out


def _delivery(row) -> dict:
    out = dict(row)
    for k in ("next_at", "first_failed_at", "last_attempt_at", "delivered_at"):
        out[k] = to_epoch(out[k])
    if out["status"] == DELIVERED:
        out["next_at"] = None
    return out


async def create(pool: asyncpg.Pool, url: str, event_types: list[str], secret: str) -> dict:
    """A new endpoint, sent the events committed from now on."""
    row = await pool.fetchrow(
        f"""INSERT INTO webhooks (url, event_types, secret, queued_through)
            VALUES ($1, $2, $3, (SELECT coalesce(max(event_id), 0) FROM events))
            RETURNING {FIELDS}""",
        url,
        event_types,
        secret,
    )
    return _webhook(row)


async def live_count(pool: asyncpg.Pool) -> int:
    return await pool.fetchval("SELECT count(*) FROM webhooks WHERE status <> $1", DELETED)


async def listed(pool: asyncpg.Pool) -> list[dict]:
    """Every endpoint not deleted, oldest first (never their secrets)."""
    rows = await pool.fetch(
        f"SELECT {FIELDS} FROM webhooks WHERE status <> $1 ORDER BY webhook_id", DELETED
    )
    return [_webhook(r) for r in rows]


async def get(pool: asyncpg.Pool, webhook_id: int) -> dict | None:
    row = await pool.fetchrow(f"SELECT {FIELDS} FROM webhooks WHERE webhook_id = $1", webhook_id)
    return None if row is None else _webhook(row)


async def delete(pool: asyncpg.Pool, webhook_id: int) -> dict | None:
    """Stop an endpoint for good (its rows stay, for its deliveries' history); None if it is
    unknown or deleted already."""
    row = await pool.fetchrow(
        f"""UPDATE webhooks SET status = $2 WHERE webhook_id = $1 AND status <> $2
            RETURNING {FIELDS}""",
        webhook_id,
        DELETED,
    )
    return None if row is None else _webhook(row)


async def replay(pool: asyncpg.Pool, webhook_id: int, from_event_id: int) -> dict | None:
    """Send again every event of the endpoint's types from `from_event_id` on (delivered or
    not, in order), and enable it if it was disabled; None if it is unknown or deleted."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            f"""UPDATE webhooks SET status = $3, disabled_at = NULL, disabled_reason = NULL,
                       queued_through = least(queued_through, $2::bigint - 1)
                WHERE webhook_id = $1 AND status <> $4 RETURNING {FIELDS}""",
            webhook_id,
            from_event_id,
            ENABLED,
            DELETED,
        )
        if row is None:
            return None
        await conn.execute(
            """UPDATE webhook_deliveries SET status = $3, attempts = 0, next_at = now(),
                      first_failed_at = NULL
               WHERE webhook_id = $1 AND event_id >= $2""",
            webhook_id,
            from_event_id,
            PENDING,
        )
    return _webhook(row)


async def deliveries(
    pool: asyncpg.Pool, webhook_id: int, limit: int, before: int | None, status: str | None
) -> list[dict]:
    """An endpoint's deliveries, newest event first; `before` an event id, for the next page."""
    rows = await pool.fetch(
        f"""SELECT {DELIVERY_FIELDS} FROM webhook_deliveries
            WHERE webhook_id = $1 AND ($2::bigint IS NULL OR event_id < $2)
              AND ($3::text IS NULL OR status = $3)
            ORDER BY event_id DESC LIMIT $4""",
        webhook_id,
        before,
        status,
        min(limit, DELIVERIES_PAGE_MAX),
    )
    return [_delivery(r) for r in rows]


# -- what the dispatcher reads and records ---------------------------------------------------


async def enabled(pool: asyncpg.Pool) -> list[dict]:
    """The endpoints to send to, with their secrets, and whether each has work now: events
    not queued yet, or a pending delivery due (one statement for all of them)."""
    rows = await pool.fetch(
        """SELECT w.webhook_id, w.url, w.event_types, w.secret,
                  w.queued_through < (SELECT coalesce(max(event_id), 0) FROM events)
                  OR EXISTS (SELECT 1 FROM webhook_deliveries d
                             WHERE d.webhook_id = w.webhook_id AND d.status = 'pending'
                               AND d.next_at <= now()) AS has_work
           FROM webhooks w WHERE w.status = $1 ORDER BY w.webhook_id""",
        ENABLED,
    )
    return [dict(r) for r in rows]


QUEUE_SQL = """
WITH hook AS (
    SELECT webhook_id, event_types, queued_through FROM webhooks
    WHERE webhook_id = $1 AND status = 'enabled' FOR UPDATE
), scanned AS (
    SELECT e.event_id, e.type, e.call_id, e.user_id FROM events e, hook
    WHERE e.event_id > hook.queued_through ORDER BY e.event_id LIMIT $2
), queued AS (
    INSERT INTO webhook_deliveries (webhook_id, event_id, lane, status, next_at)
    SELECT $1, s.event_id,
           coalesce('call:' || s.call_id, 'user:' || s.user_id, 'engine'), 'pending', now()
    FROM scanned s, hook WHERE s.type = ANY(hook.event_types)
    ON CONFLICT (webhook_id, event_id) DO NOTHING
    RETURNING 1
), moved AS (
    UPDATE webhooks w SET queued_through = (SELECT max(event_id) FROM scanned)
    WHERE w.webhook_id = $1 AND EXISTS (SELECT 1 FROM scanned)
    RETURNING 1
)
SELECT (SELECT count(*) FROM queued) AS queued, (SELECT count(*) FROM scanned) AS scanned
"""


async def queue(pool: asyncpg.Pool, webhook_id: int, scan_max: int) -> tuple[int, int]:
    """Queue the endpoint's next events (up to `scan_max` looked at): (queued, looked at)."""
    row = await pool.fetchrow(QUEUE_SQL, webhook_id, scan_max)
    return row["queued"], row["scanned"]


async def pending(pool: asyncpg.Pool, webhook_id: int, window: int) -> list[dict]:
    """The endpoint's first `window` pending deliveries in event order, each with its event
    as `/v1/events` reads it and whether it is due now."""
    rows = await pool.fetch(
        """SELECT d.event_id, d.lane, d.attempts, d.first_failed_at,
                  d.next_at <= now() AS due,
                  e.type, e.call_id, e.user_id, e.at, e.data
           FROM webhook_deliveries d JOIN events e USING (event_id)
           WHERE d.webhook_id = $1 AND d.status = 'pending'
           ORDER BY d.event_id LIMIT $2""",
        webhook_id,
        window,
    )
    out = []
    for r in rows:
        d = dict(r)
        d["event"] = event_of(r)
        out.append(d)
    return out


async def delivered(pool: asyncpg.Pool, webhook_id: int, event_id: int, status: int) -> None:
    await pool.execute(
        """UPDATE webhook_deliveries SET status = 'delivered', attempts = attempts + 1,
                  last_attempt_at = now(), last_status = $3, last_error = NULL,
                  first_failed_at = NULL, delivered_at = now()
           WHERE webhook_id = $1 AND event_id = $2 AND status = 'pending'""",
        webhook_id,
        event_id,
        status,
    )


async def failed(
    pool: asyncpg.Pool,
    webhook_id: int,
    event_id: int,
    status: int | None,
    error: str,
    retry_in_s: float,
    retry_for_s: float,
) -> float:
    """Record a failed attempt, the next one `retry_in_s` from now, but no later than
    `retry_for_s` after its first failure (the last attempt, which disables the endpoint if it
    fails too, comes on time); how long (seconds) this delivery has been failing."""
    failing_s = await pool.fetchval(
        """UPDATE webhook_deliveries SET attempts = attempts + 1, last_attempt_at = now(),
                  last_status = $3, last_error = $4,
                  first_failed_at = coalesce(first_failed_at, now()),
                  next_at = least(now() + make_interval(secs => $5),
                                  coalesce(first_failed_at, now()) + make_interval(secs => $6))
           WHERE webhook_id = $1 AND event_id = $2 AND status = 'pending'
           RETURNING extract(epoch FROM now() - first_failed_at)::float8""",
        webhook_id,
        event_id,
        status,
        error[:ERROR_CHARS_MAX],
        retry_in_s,
        retry_for_s,
    )
    return failing_s or 0.0


async def disable(pool: asyncpg.Pool, webhook_id: int, reason: str, at_ms: int) -> bool:
    """Disable an endpoint and say so with a `webhook_disabled` event, in one transaction
    (under the events lock, so event ids stay visible in order); False if it was not enabled."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            """UPDATE webhooks SET status = 'disabled', disabled_at = now(), disabled_reason = $2
               WHERE webhook_id = $1 AND status = 'enabled' RETURNING url""",
            webhook_id,
            reason,
        )
        if row is None:
            return False
        data = {"webhook_id": webhook_id, "url": row["url"], "reason": reason}
        await conn.execute(EVENTS_LOCK_SQL, EVENTS_LOCK_CLASS)
        await conn.execute(
            """INSERT INTO events (event_key, type, call_id, user_id, at, data)
               VALUES ($1, $2, NULL, NULL, to_timestamp($3 / 1000.0), $4::jsonb)
               ON CONFLICT (event_key) DO NOTHING""",
            f"{WEBHOOK_DISABLED}:{webhook_id}:{at_ms}",
            WEBHOOK_DISABLED,
            at_ms,
            json.dumps(data),
        )
    return True
