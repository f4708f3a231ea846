"""Time the jobs at scale: a presence sweep over 100,000 users with 1,000 expired, and a badge
run over 10,000 listeners.

    DATABASE_URL=... REDIS_URL=... python -m bench.jobs_probe
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import time

from persistence import keys
from persistence.badges import BadgeThresholds, assign_daily_badges
from persistence.db import get_pool
from persistence.presence import redis_client
from persistence.presence_sweeps import PresenceSweeps

NOW = time.time()


async def presence(redis_url: str, users: int, expired: int) -> dict:
    r = redis_client(redis_url, socket_timeout_s=30)
    await r.delete(keys.ONLINE, keys.LAST_SEEN)
    ids = [str(i) for i in range(1, users + 1)]
    for i in range(0, users, 10_000):
        chunk = ids[i : i + 10_000]
        await r.sadd(keys.ONLINE, *chunk)
        await r.zadd(keys.LAST_SEEN, {u: NOW - (600 if int(u) <= expired else 10) for u in chunk})
    sweeps = PresenceSweeps(redis_url)
    t = time.perf_counter()
    n = await sweeps.mark_inactive_offline(NOW - 300)
    sweep_ms = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    again = await sweeps.mark_inactive_offline(NOW - 300)
    idle_ms = (time.perf_counter() - t) * 1000
    await r.delete(keys.ONLINE, keys.LAST_SEEN)
    await sweeps.close()
    await r.aclose()
    return {
        "users": users,
        "expired": n,
        "sweep_ms": round(sweep_ms, 2),
        "second_sweep_expired": again,
        "second_sweep_ms": round(idle_ms, 2),
    }


async def badges(database_url: str, listeners: int, minutes_each_max: int) -> dict:
    pool = await get_pool(database_url)
    base = 900_000_000
    yesterday = dt.datetime.now(dt.UTC).replace(hour=12, minute=0) - dt.timedelta(days=1)
    first, last = base + 1, base + listeners
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """INSERT INTO users (user_id, name, role)
               SELECT g, 'bench-listener-' || g, 'listener'
               FROM generate_series($1::bigint, $2::bigint) g""",
            first,
            last,
        )
        await conn.execute(
            "INSERT INTO users (user_id, name, role) VALUES ($1, 'payer', 'user')", base
        )
        await conn.execute("INSERT INTO wallets (user_id) VALUES ($1)", base)
        await conn.execute(
            """INSERT INTO calls (call_id, user_id, listener_id, call_type, tier, rate_coins,
                                  rate_paise, status, end_reason, connected_at, ended_at)
               SELECT g, $3, g, 'audio', 'basic', 10, 100, 'completed', 'hangup', $4, $4
               FROM generate_series($1::bigint, $2::bigint) g""",
            first,
            last,
            base,
            yesterday,
        )
        # Minute rows straight into the ledger (no balances to keep: this is a timing probe).
        await conn.execute(
            """INSERT INTO ledger (transfer_id, user_id, unit, amount, tx_type, call_id,
                                   minute_no, created_at)
               SELECT 'call:' || c || ':' || m, $3, 'coins', -10, 'spend', c, m,
                      $4::timestamptz + m * interval '1 minute'
               FROM generate_series($1::bigint, $2::bigint) c,
                    LATERAL generate_series(1, ((c * 7919) % $5)::int + 1) m""",
            base + 1,
            base + listeners,
            base,
            yesterday,
            minutes_each_max,
        )
    rows = await pool.fetchval("SELECT count(*) FROM ledger WHERE call_id > $1", base)
    t = time.perf_counter()
    stats = await assign_daily_badges(
        pool, dt.datetime.now(dt.UTC).date(), "UTC", BadgeThresholds()
    )
    run_s = time.perf_counter() - t
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("DELETE FROM listener_badges WHERE listener_id > $1", base)
        await conn.execute("DELETE FROM ledger WHERE call_id > $1", base)
        await conn.execute("DELETE FROM calls WHERE call_id > $1", base)
        await conn.execute("DELETE FROM wallets WHERE user_id >= $1", base)
        await conn.execute("DELETE FROM users WHERE user_id >= $1", base)
    return {"listeners": listeners, "minute_rows": rows, "run_s": round(run_s, 3), "stats": stats}


async def main() -> None:
    out = {
        "presence": await presence(os.environ["REDIS_URL"], 100_000, 1_000),
        "badges": await badges(os.environ["DATABASE_URL"], 10_000, 600),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
