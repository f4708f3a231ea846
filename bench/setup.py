"""Bulk set-up for benchmarks: N ongoing calls written straight into PostgreSQL, each with its
payer, listener, wallet and minute 1 billed, as if N start_call() had committed (minute 1 is
in the ledger; the wallet row moves when the call settles)."""

from __future__ import annotations

import datetime as dt

import asyncpg

from persistence.schema import TABLES

RATE_COINS = 10
RATE_PAISE = 100


async def reset(pool: asyncpg.Pool) -> None:
    await pool.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
    await pool.execute("DROP TABLE IF EXISTS bench_ledger, bench_calls")


async def people(conn, first: int, n: int, coins_each: int, bought: dt.datetime) -> None:
    """Payers first..first+n-1, each with `coins_each` coins bought at `bought`, and listeners
    first+n..first+2n-1, with their wallets and earnings rows."""
    mid, last = first + n, first + 2 * n - 1
    await conn.execute(
        """INSERT INTO users (user_id, name, role)
           SELECT g, 'u' || g, CASE WHEN g < $2 THEN 'user' ELSE 'listener' END
           FROM generate_series($1::bigint, $3::bigint) g""",
        first,
        mid,
        last,
    )
    await conn.execute(
        """INSERT INTO wallets (user_id, settled_coins)
           SELECT g, CASE WHEN g < $2 THEN $4::bigint ELSE 0 END
           FROM generate_series($1::bigint, $3::bigint) g""",
        first,
        mid,
        last,
        coins_each,
    )
    await conn.execute(
        "INSERT INTO listener_earnings (listener_id) "
        "SELECT g FROM generate_series($1::bigint, $2::bigint) g",
        mid,
        last,
    )
    await conn.execute(
        """INSERT INTO ledger (transfer_id, user_id, unit, amount, tx_type, created_at)
           SELECT 'ext:' || g || ':seed', g, 'coins', $3::bigint, 'purchase', $4
           FROM generate_series($1::bigint, $2::bigint) g""",
        first,
        mid - 1,
        coins_each,
        bought,
    )


async def ongoing_calls(
    pool: asyncpg.Pool,
    calls: int,
    coins_each: int,
    connected_at: float,
    increment_s: int = 60,
    free_s: int = 0,
):
    """Users 1..N pay, listeners N+1..2N listen, call i is user i with listener N+i; each call
    priced at `increment_s` and `free_s` (by default, whole minutes)."""
    at = dt.datetime.fromtimestamp(connected_at, dt.UTC)
    bought = at - dt.timedelta(seconds=1)  # the coins were bought before the call
    async with pool.acquire() as conn, conn.transaction():
        await people(conn, 1, calls, coins_each, bought)
        await conn.execute(
            """INSERT INTO ledger (transfer_id, user_id, unit, amount, tx_type, call_id,
                                   minute_no, created_at)
               SELECT 'call:' || g || ':1', g, 'coins', -$2::bigint, 'spend', g, 1, $3::timestamptz
               FROM generate_series(1, $1) g""",
            calls,
            RATE_COINS,
            at,
        )
        await conn.execute(
            """INSERT INTO calls (call_id, user_id, listener_id, call_type, tier, rate_coins,
                                  rate_paise, status, connected_at, increment_s, free_s)
               SELECT g, g, $1 + g, 'audio', 'basic', $3, $4, 'ongoing', $2::timestamptz, $5, $6
               FROM generate_series(1, $1) g""",
            calls,
            at,
            RATE_COINS,
            RATE_PAISE,
            increment_s,
            free_s,
        )
        await conn.execute("SELECT setval('calls_call_id_seq', $1)", calls)
        await conn.execute("SELECT setval('users_user_id_seq', 2 * $1)", calls)
    await pool.execute("ANALYZE")
