"""A person's statement: their transfers in time order, each with the balance after it, a page at
a time. Every transfer but a call's minutes is one row (an index range, `ledger_statement`); a
call's minutes are one row too, `minutes`, when the call ends and moves its payer's wallet (an
index range over the payer's calls, `calls_by_payer_end`), so the hot path's minutes stay
without an index of their own. An ongoing call's minutes join the statement when it ends; its
live cost is in `get_call` and `balance`.

A page starts after a cursor (`next_after` of the page before, exact to the microsecond) and
its balances from what the ledger held up to it: the opening balance plus two sums over the
same index ranges before the cursor.
"""

from __future__ import annotations

import datetime as dt
import re

import asyncpg

from actors import offers
from actors.errors import InvalidInput, UnknownUser
from persistence.commit import EPOCH

STATEMENT_PAGE_MAX = 200

# The two streams of a statement after a cursor ($2 time, $3 id), merged in time order.
PAGE_SQL = """
SELECT * FROM (
    (SELECT l.created_at AS at, l.transfer_id AS id, l.tx_type AS kind, l.amount, l.unit,
            l.call_id, NULL::int AS minutes, NULL::bigint AS offer_id, 0 AS offer_minutes
     FROM ledger l
     WHERE l.user_id = $1 AND NOT (l.tx_type = 'spend' AND l.call_id IS NOT NULL)
       AND (l.created_at, l.transfer_id) > ($2, $3)
     ORDER BY l.created_at, l.transfer_id LIMIT $4)
    UNION ALL
    (SELECT c.ended_at, ('call:' || c.call_id) COLLATE "C", 'minutes', -c.coins_spent, 'coins',
            c.call_id, c.billed_minutes, c.offer_id, c.offer_minutes
     FROM calls c
     WHERE c.user_id = $1 AND c.ended_at IS NOT NULL AND c.billed_minutes > 0
       AND (c.ended_at, ('call:' || c.call_id) COLLATE "C") > ($2, $3)
     ORDER BY c.ended_at, 2 LIMIT $4)
) rows
ORDER BY at, id LIMIT $4
"""

# The balances at a cursor: the opening ones, and what every row up to it moved.
BALANCES_SQL = """
SELECT w.opening_coins
       + coalesce((SELECT sum(l.amount) FROM ledger l
                   WHERE l.user_id = $1 AND l.unit = 'coins'
                     AND NOT (l.tx_type = 'spend' AND l.call_id IS NOT NULL)
                     AND (l.created_at, l.transfer_id) <= ($2, $3)), 0)::bigint
       - coalesce((SELECT sum(c.coins_spent) FROM calls c
                   WHERE c.user_id = $1 AND c.ended_at IS NOT NULL
                     AND (c.ended_at, ('call:' || c.call_id) COLLATE "C") <= ($2, $3)),
                  0)::bigint AS coins,
       coalesce(e.opening_paise, 0)
       + coalesce((SELECT sum(l.amount) FROM ledger l
                   WHERE l.user_id = $1 AND l.unit = 'paise'
                     AND (l.created_at, l.transfer_id) <= ($2, $3)), 0)::bigint AS paise
FROM wallets w LEFT JOIN listener_earnings e ON e.listener_id = w.user_id
WHERE w.user_id = $1
"""


# A cursor: the row's time in microseconds since 1970 (at most 16 digits: within the years a
# datetime holds), a slash, its id (no NUL: PostgreSQL stores none).
CURSOR_PATTERN = r"^[0-9]{1,16}/[^\x00]+$"


def cursor_of(at: dt.datetime, row_id: str) -> str:
    """An opaque cursor for the row at (`at`, `row_id`): its time in microseconds, its id."""
    return f"{(at - EPOCH) // dt.timedelta(microseconds=1)}/{row_id}"


def parse_cursor(after: str | None) -> tuple[dt.datetime, str]:
    if after is None:
        return EPOCH - dt.timedelta(days=1), ""
    if not isinstance(after, str) or not re.fullmatch(CURSOR_PATTERN, after):
        raise InvalidInput(f"after must be a cursor a statement page gave (next_after), {after!r}")
    micros, _, row_id = after.partition("/")
    return EPOCH + dt.timedelta(microseconds=int(micros)), row_id


async def statement_page(pool: asyncpg.Pool, user_id: int, after: str | None, limit: int) -> dict:
    """`{"transfers", "next_after"}`: up to `limit` rows after the cursor, oldest first, each
    `{"transfer_id", "kind", "amount", "unit", "call_id", "minutes", "at", "balance_after"}`
    (`at` in epoch seconds); `next_after` is None on the last page."""
    at, row_id = parse_cursor(after)
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        balances = await conn.fetchrow(BALANCES_SQL, user_id, at, row_id)
        if balances is None:
            raise UnknownUser(f"no user with id {user_id}")
        rows = await conn.fetch(PAGE_SQL, user_id, at, row_id, limit + 1)
    held = {"coins": balances["coins"], "paise": balances["paise"]}
    out = []
    for r in rows[:limit]:
        held[r["unit"]] += r["amount"]
        out.append(
            {
                "transfer_id": r["id"],
                "kind": r["kind"],
                "amount": r["amount"],
                "unit": r["unit"],
                "call_id": r["call_id"],
                "minutes": r["minutes"],
                "offer": offers.view(r["offer_id"], r["offer_minutes"]),
                "at": r["at"].timestamp(),
                "balance_after": held[r["unit"]],
            }
        )
    more = len(rows) > limit
    last = rows[limit - 1] if more else None
    return {"transfers": out, "next_after": cursor_of(last["at"], last["id"]) if more else None}
