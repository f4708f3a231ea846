"""Dated rate cards as stored (`rate_cards`, migration 13): card 0, the configured one, is not
stored; each stored card takes effect at its `effective_at`."""

from __future__ import annotations

import json

import asyncpg

from persistence.store import to_epoch

COLUMNS = "rate_card_id, effective_at, card, created_at"
# Every card, oldest date first: a card is small and few are ever scheduled.
CARDS_MAX = 10_000


def _row(r) -> dict:
    return {
        "rate_card_id": r["rate_card_id"],
        "effective_at": to_epoch(r["effective_at"]),
        "card": json.loads(r["card"]),
        "created_at": to_epoch(r["created_at"]),
    }


async def cards(pool: asyncpg.Pool) -> list[dict]:
    rows = await pool.fetch(
        f"SELECT {COLUMNS} FROM rate_cards ORDER BY effective_at, rate_card_id LIMIT {CARDS_MAX}"
    )
    return [_row(r) for r in rows]


async def by_key(pool: asyncpg.Pool, key: str) -> dict | None:
    row = await pool.fetchrow(f"SELECT {COLUMNS} FROM rate_cards WHERE idempotency_key = $1", key)
    return None if row is None else _row(row)


async def schedule(
    pool: asyncpg.Pool, effective_ms: int, card: dict, created_ms: int, key: str | None
) -> dict:
    """Store a card; with a key another request stored first, that one."""
    row = await pool.fetchrow(
        f"""INSERT INTO rate_cards (effective_at, card, created_at, idempotency_key)
            VALUES (to_timestamp($1 / 1000.0), $2::jsonb, to_timestamp($3 / 1000.0), $4)
            ON CONFLICT (idempotency_key) DO NOTHING RETURNING {COLUMNS}""",
        effective_ms,
        json.dumps(card),
        created_ms,
        key,
    )
    return _row(row) if row is not None else await by_key(pool, key)
