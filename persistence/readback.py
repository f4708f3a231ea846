"""What the database holds, read back whole for the checks that compare it with a model (chaos,
the demo): balances, outside transfers, calls, their minutes and credits."""

from __future__ import annotations

import asyncpg


async def snapshot(pool: asyncpg.Pool) -> dict:
    """Every account's live balance, every outside transfer, every call with its minute count
    and credit, every payout's status and refund, in one repeatable-read transaction."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        coins = dict(await conn.fetch("SELECT user_id, balance_coins FROM wallet_balances"))
        paise = dict(await conn.fetch("SELECT listener_id, earnings_paise FROM listener_earnings"))
        externals = {
            r["transfer_id"]: (r["user_id"], r["tx_type"], abs(r["amount"]))
            for r in await conn.fetch(
                "SELECT transfer_id, user_id, tx_type, amount FROM ledger "
                "WHERE transfer_id LIKE 'ext:%'"
            )
        }
        calls = {r["call_id"]: dict(r) for r in await conn.fetch("SELECT * FROM calls")}
        minutes = dict(
            await conn.fetch(
                "SELECT call_id, count(*) FROM ledger WHERE tx_type = 'spend' "
                "AND call_id IS NOT NULL GROUP BY call_id"
            )
        )
        earned = dict(await conn.fetch("SELECT call_id, amount FROM ledger WHERE tx_type = 'earn'"))
        returned = dict(
            await conn.fetch("SELECT call_id, amount FROM ledger WHERE tx_type = 'unused'")
        )
        payouts = dict(await conn.fetch("SELECT payout_id, status FROM payouts"))
        refunds = {
            r["refund_id"]: (r["minutes"], r["listener_pays"], r["done"])
            for r in await conn.fetch(
                "SELECT refund_id, minutes, listener_pays, refunded_at IS NOT NULL AS done "
                "FROM refunds"
            )
        }
        buckets = dict(
            await conn.fetchrow(
                """SELECT count(*) AS buckets,
                          (SELECT count(*) FROM ledger WHERE tx_type = 'expire') AS expiries
                   FROM buckets"""
            )
        )
    return {
        "buckets": buckets,
        "payouts": payouts,
        "refunds": refunds,
        "coins": coins,
        "paise": paise,
        "externals": externals,
        "calls": calls,
        "minutes": minutes,
        "earned": earned,
        "returned": returned,
    }


async def calls_of(pool: asyncpg.Pool, user_ids: list[int]) -> list[dict]:
    """The calls these users pay, with `connected_at` in epoch seconds."""
    rows = await pool.fetch(
        "SELECT call_id, user_id, listener_id, rate_coins, rate_paise, increment_s, free_s, "
        "earnings_rule, share_pct, coin_value_paise, offer_minutes, grace_s, "
        "extract(epoch FROM connected_at)::float8 AS connected_at FROM calls "
        "WHERE user_id = ANY($1::bigint[])",
        user_ids,
    )
    return [dict(r) for r in rows]


async def users_count(pool: asyncpg.Pool) -> int:
    return await pool.fetchval("SELECT count(*) FROM users")


async def minutes_committed(pool: asyncpg.Pool, call_ids: list[int]) -> int:
    """The minutes of the calls `call_ids` in the ledger (minute 1, billed at the start,
    included)."""
    return await pool.fetchval(
        "SELECT count(*) FROM ledger WHERE tx_type = 'spend' AND call_id = ANY($1::bigint[])",
        call_ids,
    )


async def offers_state(pool: asyncpg.Pool) -> dict:
    """Each call's offer minutes (those with an offer), each offer's budget counters, and how
    many times calls were suspended in their grace and resumed."""
    calls = await pool.fetch("SELECT call_id, offer_minutes FROM calls WHERE offer_id IS NOT NULL")
    offers = await pool.fetch(
        "SELECT offer_id, budget_minutes, minutes_reserved, minutes_used FROM offers"
    )
    grace = await pool.fetch(
        "SELECT type, count(*) AS n FROM events "
        "WHERE type IN ('call_suspended', 'call_resumed') GROUP BY type"
    )
    return {
        "offer_minutes": {r["call_id"]: r["offer_minutes"] for r in calls},
        "offers": [dict(r) for r in offers],
        "grace": {r["type"]: r["n"] for r in grace},
    }
