"""What the ledger says about one call and its payer, for `explain`: the call's minutes, and the
payer's coin transfers from the call's start until now (outside transfers, and the minutes of
their calls), each with when it happened, was billed and was committed.

Every row read is a primary-key range (a call's minutes: `call:{id}:`), an index range (the
payer's other coin transfers since the start, `ledger_statement`: top-ups, spends, refunds,
returns, expiries) or an index read (the payer's calls that were still ongoing at the start),
so explaining a call costs what the call and its payer did since, not their history.
"""

from __future__ import annotations

import datetime as dt

import asyncpg

from persistence.audit import TRANSFER_KIND
from persistence.schema import call_minutes

# Rows of a payer read for one explanation: past it, the oldest are left out (and it says so).
TIMELINE_ROWS_MAX = 10_000

_COLUMNS = f"""l.transfer_id, l.tx_type, l.amount, l.call_id, l.minute_no,
       {TRANSFER_KIND} AS kind,
       extract(epoch FROM l.created_at)::float8 AS at,
       extract(epoch FROM l.billed_at)::float8 AS billed_at,
       extract(epoch FROM l.committed_at)::float8 AS committed_at"""

PAYER_ROWS_SQL = f"""
WITH calls_then AS (
    SELECT call_id FROM calls
    WHERE user_id = $1 AND (ended_at IS NULL OR ended_at >= $2)
)
SELECT * FROM (
    SELECT {_COLUMNS} FROM ledger l
    WHERE l.user_id = $1 AND NOT (l.tx_type = 'spend' AND l.call_id IS NOT NULL)
      AND l.unit = 'coins' AND l.created_at >= $2
    UNION ALL
    SELECT {_COLUMNS} FROM calls_then c CROSS JOIN LATERAL (
        SELECT * FROM ledger l WHERE {call_minutes("c.call_id", "l")} AND l.created_at >= $2
    ) l
) rows
ORDER BY at DESC, kind DESC, amount, transfer_id DESC
LIMIT {TIMELINE_ROWS_MAX + 1}
"""


async def read(pool: asyncpg.Pool, call_id: int, payer_id: int, since: float) -> dict:
    """In one snapshot: the payer's coin transfers from `since` (epoch s) until now, oldest
    first (in the audit's time order: at one instant, minutes that fell due, then outside
    transfers and a call's minute 1, credits before debits); the payer's
    balance now as the ledger has it (`wallet_balances`); and the call's own terms:
    `{"rows", "balance_now", "cut", "minute_ms", "max_minutes", "grace_s", "offer"}` (`offer`: the
    call's offer, its terms and, once ended, what it paid). `cut`: more than
    TIMELINE_ROWS_MAX rows, the oldest left out."""
    start = dt.datetime.fromtimestamp(since, dt.UTC)
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        rows = await conn.fetch(PAYER_ROWS_SQL, payer_id, start)
        balance = await conn.fetchval(
            "SELECT balance_coins FROM wallet_balances WHERE user_id = $1", payer_id
        )
        terms = await conn.fetchrow(
            """SELECT c.minute_ms, c.max_minutes, c.grace_s, c.offer_id, o.eligible,
                      o.pays_listener,
                      c.offer_minutes_used AS minutes_used,
                      c.offer_coins_returned AS coins_returned,
                      c.offer_earnings_paise AS earnings_paise
               FROM calls c LEFT JOIN offers o USING (offer_id) WHERE c.call_id = $1""",
            call_id,
        )
    return {
        "rows": [dict(r) for r in reversed(rows[:TIMELINE_ROWS_MAX])],
        "balance_now": balance or 0,
        "cut": len(rows) > TIMELINE_ROWS_MAX,
        "minute_ms": None if terms is None else terms["minute_ms"],
        "max_minutes": None if terms is None else terms["max_minutes"],
        "grace_s": 0 if terms is None else terms["grace_s"],
        "offer": None if terms is None or terms["offer_id"] is None else dict(terms),
    }
