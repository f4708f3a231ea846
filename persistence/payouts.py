"""Payouts and refunds as PostgreSQL has them: the reads their hosts and the Engine make off the
hot path (each a primary-key or index read). The rows are written by the writer, with the
transfers they belong to (`persistence.commit.ROW_SQL`)."""

from __future__ import annotations

import asyncpg

from actors.errors import UnknownPayout

PAYOUTS_PAGE_MAX = 200
UNFINISHED_REFUNDS_MAX = 1_000  # refunds a cleanup run finishes at most

PAYOUT_COLUMNS = """payout_id, listener_id, amount_paise, transfer_id, status, reason,
    extract(epoch FROM created_at)::float8 AS created_at,
    extract(epoch FROM settled_at)::float8 AS settled_at"""
REFUND_COLUMNS = """refund_id, call_id, user_id, listener_id, minutes, coins, paise,
    listener_pays, reason, extract(epoch FROM created_at)::float8 AS created_at,
    extract(epoch FROM refunded_at)::float8 AS refunded_at"""


async def payout(pool: asyncpg.Pool, payout_id: int) -> dict:
    row = await pool.fetchrow(
        f"SELECT {PAYOUT_COLUMNS} FROM payouts WHERE payout_id = $1", payout_id
    )
    if row is None:
        raise UnknownPayout(f"no payout with id {payout_id}")
    return dict(row)


async def payout_of_transfer(pool: asyncpg.Pool, transfer_id: str) -> dict | None:
    """The payout a withdraw transfer holds for."""
    row = await pool.fetchrow(
        f"SELECT {PAYOUT_COLUMNS} FROM payouts WHERE transfer_id = $1", transfer_id
    )
    return None if row is None else dict(row)


async def payouts_of(
    pool: asyncpg.Pool, listener_id: int, limit: int, before: int | None
) -> list[dict]:
    """A listener's payouts, newest first, `limit` at a time, below the id `before`."""
    rows = await pool.fetch(
        f"""SELECT {PAYOUT_COLUMNS} FROM payouts
            WHERE listener_id = $1 AND payout_id < $2
            ORDER BY payout_id DESC LIMIT $3""",
        listener_id,
        before or 2**62,
        limit,
    )
    return [dict(r) for r in rows]


async def refund(pool: asyncpg.Pool, refund_id: str) -> dict | None:
    sql = f"SELECT {REFUND_COLUMNS} FROM refunds WHERE refund_id = $1"
    row = await pool.fetchrow(sql, refund_id)
    return None if row is None else dict(row)


async def refunded(pool: asyncpg.Pool, call_id: int) -> tuple[int, int]:
    """(minutes, coins) refunded of the call so far."""
    row = await pool.fetchrow(
        "SELECT coalesce(sum(minutes), 0)::int, coalesce(sum(coins), 0)::bigint FROM refunds "
        "WHERE call_id = $1",
        call_id,
    )
    return row[0], row[1]


async def unfinished_refunds(pool: asyncpg.Pool) -> list[dict]:
    """Refunds whose claw-back is committed and whose coins are not (a host that died
    between the two steps), oldest first."""
    rows = await pool.fetch(
        f"""SELECT {REFUND_COLUMNS} FROM refunds WHERE refunded_at IS NULL
            ORDER BY created_at LIMIT $1""",
        UNFINISHED_REFUNDS_MAX,
    )
    return [dict(r) for r in rows]
