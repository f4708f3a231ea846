"""Daily badges: each listener's tier for a day, from the minutes billed the day before."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import asyncpg

log = logging.getLogger("billing.badges")


@dataclass(frozen=True)
class BadgeThresholds:
    """Minutes talked the day before that earn each tier."""

    bronze_minutes: int = 3 * 60
    silver_minutes: int = 6 * 60
    gold_minutes: int = 9 * 60

    def tier(self, minutes: int) -> str:
        if minutes >= self.gold_minutes:
            return "gold"
        if minutes >= self.silver_minutes:
            return "silver"
        if minutes >= self.bronze_minutes:
            return "bronze"
        return "basic"


def day_window(today: dt.date, timezone: str) -> tuple[dt.datetime, dt.datetime]:
    """Yesterday in `timezone`, as [start, end) instants (23 or 25 hours across DST)."""
    tz = ZoneInfo(timezone)
    start = dt.datetime.combine(today - dt.timedelta(days=1), dt.time(), tz)
    end = dt.datetime.combine(today, dt.time(), tz)
    return start, end


def local_day(now: float, timezone: str) -> dt.date:
    return dt.datetime.fromtimestamp(now, ZoneInfo(timezone)).date()


# Every billed minute counts, whatever the call's end reason (the older system skipped calls
# cut off for low balance). A minute belongs to the day it was billed in.
MINUTES_SQL = """
SELECT u.user_id AS listener_id, coalesce(m.minutes, 0)::int AS minutes
FROM users u
LEFT JOIN (
    SELECT c.listener_id, count(*) AS minutes
    FROM ledger l JOIN calls c ON c.call_id = l.call_id
    WHERE l.tx_type = 'spend' AND l.created_at >= $1 AND l.created_at < $2
    GROUP BY c.listener_id
) m ON m.listener_id = u.user_id
WHERE u.role = 'listener'
"""

UPSERT_SQL = """
INSERT INTO listener_badges (listener_id, day, tier, minutes)
SELECT * FROM unnest($1::bigint[], $2::date[], $3::text[], $4::int[])
ON CONFLICT (listener_id, day)
DO UPDATE SET tier = EXCLUDED.tier, minutes = EXCLUDED.minutes, assigned_at = now()
"""


async def assign_daily_badges(
    pool: asyncpg.Pool, today: dt.date, timezone: str, thresholds: BadgeThresholds
) -> dict:
    """One row per listener and day (running it again writes the same rows). A listener whose
    row cannot be written counts in `errors`; the others are still assigned."""
    start, end = day_window(today, timezone)
    rows = await pool.fetch(MINUTES_SQL, start, end)
    tiers = [(r["listener_id"], today, thresholds.tier(r["minutes"]), r["minutes"]) for r in rows]
    errors = 0
    try:
        if tiers:
            await pool.execute(UPSERT_SQL, *map(list, zip(*tiers, strict=True)))
        written = tiers
    except asyncpg.PostgresError as e:
        # Find the rows at fault one by one, each in its own savepoint.
        log.warning("badge batch refused (%s); writing listeners one by one", e)
        written = []
        async with pool.acquire() as conn, conn.transaction():
            for t in tiers:
                try:
                    async with conn.transaction():
                        await conn.execute(UPSERT_SQL, [t[0]], [t[1]], [t[2]], [t[3]])
                    written.append(t)
                except asyncpg.PostgresError as row_error:
                    errors += 1
                    log.error(
                        "badge for listener %d not written: %s",
                        t[0],
                        row_error,
                        extra={"listener_id": t[0]},
                    )
    stats = {
        "total_listeners": len(tiers),
        "basic_assigned": 0,
        "bronze_assigned": 0,
        "silver_assigned": 0,
        "gold_assigned": 0,
        "errors": errors,
    }
    for _, _, tier, _ in written:
        stats[f"{tier}_assigned"] += 1
    return stats


async def assigned(pool: asyncpg.Pool, day: dt.date) -> bool:
    """Has the daily run for `day` written its rows?"""
    return await pool.fetchval("SELECT EXISTS (SELECT 1 FROM listener_badges WHERE day = $1)", day)
