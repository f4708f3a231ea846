"""Listeners' own prices as stored (`listener_prices`, migration 13): one row per change, the
whole set of prices with the tier and bounds it was checked against; their prices now are the
latest row."""

from __future__ import annotations

import json

import asyncpg

from persistence.store import to_epoch

COLUMNS = "change_id, listener_id, prices, tier, rate_card_id, bounds, set_at, idempotency_key"
HISTORY_MAX = 20  # changes a read shows, newest first


def _row(r) -> dict:
    return {
        "listener_id": r["listener_id"],
        "prices": json.loads(r["prices"]),
        "tier": r["tier"],
        "rate_card_id": r["rate_card_id"],
        "bounds": json.loads(r["bounds"]),
        "set_at": to_epoch(r["set_at"]),
    }


async def latest(pool: asyncpg.Pool, listener_ids: list[int]) -> dict[int, dict[str, int]]:
    """Each listener's prices now (a listener who never set any is not in the answer)."""
    rows = await pool.fetch(
        """SELECT DISTINCT ON (listener_id) listener_id, prices FROM listener_prices
           WHERE listener_id = ANY($1::bigint[]) ORDER BY listener_id, change_id DESC""",
        listener_ids,
    )
    return {r["listener_id"]: json.loads(r["prices"]) for r in rows}


async def by_key(pool: asyncpg.Pool, listener_id: int, key: str) -> dict | None:
    row = await pool.fetchrow(
        f"SELECT {COLUMNS} FROM listener_prices WHERE listener_id = $1 AND idempotency_key = $2",
        listener_id,
        key,
    )
    return None if row is None else _row(row)


async def history(pool: asyncpg.Pool, listener_id: int) -> list[dict]:
    rows = await pool.fetch(
        f"""SELECT {COLUMNS} FROM listener_prices WHERE listener_id = $1
            ORDER BY change_id DESC LIMIT {HISTORY_MAX}""",
        listener_id,
    )
    return [_row(r) for r in rows]
