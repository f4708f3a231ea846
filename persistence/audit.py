"""Rules of money that the database can show, each a query counting its violations."""

from __future__ import annotations

import asyncpg

from persistence.schema import call_minutes

CHECKS: list[tuple[str, str]] = [
    (
        "coin balance = opening + transfers",
        """SELECT count(*) FROM wallet_balances w
           LEFT JOIN (SELECT user_id, sum(amount) AS s FROM ledger WHERE unit = 'coins'
                      GROUP BY user_id) l USING (user_id)
           WHERE w.balance_coins <> w.opening_coins + coalesce(l.s, 0)""",
    ),
    (
        "earnings = opening + transfers",
        """SELECT count(*) FROM listener_earnings e
           LEFT JOIN (SELECT user_id, sum(amount) AS s FROM ledger WHERE unit = 'paise'
                      GROUP BY user_id) l ON l.user_id = e.listener_id
           WHERE e.earnings_paise <> e.opening_paise + coalesce(l.s, 0)""",
    ),
    (
        "transfers to accounts that do not exist",
        """SELECT count(*) FROM ledger l WHERE
             (l.unit = 'coins' AND NOT EXISTS (SELECT 1 FROM wallets w
                                               WHERE w.user_id = l.user_id))
          OR (l.unit = 'paise' AND NOT EXISTS (SELECT 1 FROM listener_earnings e
                                               WHERE e.listener_id = l.user_id))""",
    ),
    (
        "balances below zero",
        """SELECT (SELECT count(*) FROM wallet_balances WHERE balance_coins < 0)
                + (SELECT count(*) FROM listener_earnings WHERE earnings_paise < 0)""",
    ),
    (
        "transfers with the wrong unit or sign for their type",
        """SELECT count(*) FROM ledger WHERE NOT (
             (tx_type IN ('purchase', 'bonus', 'referral_bonus') AND unit = 'coins' AND amount > 0)
          OR (tx_type = 'spend' AND unit = 'coins' AND amount < 0)
          OR (tx_type = 'earn' AND unit = 'paise' AND amount > 0)
          OR (tx_type = 'withdraw' AND unit = 'paise' AND amount < 0))""",
    ),
    (
        "call minutes not billed exactly once, 1..n, at the call's rate",
        """SELECT count(*) FROM calls c
           LEFT JOIN (SELECT call_id, count(*) AS n, count(DISTINCT minute_no) AS d,
                             max(minute_no) AS mx, min(minute_no) AS mn, -sum(amount) AS coins
                      FROM ledger WHERE tx_type = 'spend' GROUP BY call_id) m USING (call_id)
           WHERE coalesce(m.n, 0) <> coalesce(m.d, 0)
              OR coalesce(m.mx, 0) <> coalesce(m.n, 0)
              OR (m.n > 0 AND m.mn <> 1)
              OR coalesce(m.coins, 0) <> coalesce(m.n, 0) * c.rate_coins
              OR (c.status <> 'ongoing' AND c.billed_minutes <> coalesce(m.n, 0))""",
    ),
    (
        "settled calls whose totals disagree with minutes and rates",
        """SELECT count(*) FROM calls WHERE status <> 'ongoing' AND (
              coins_spent <> billed_minutes * rate_coins
           OR earnings_paise <> billed_minutes * rate_paise)""",
    ),
    (
        "settled calls not credited to their listener exactly once",
        """SELECT count(*) FROM calls c
           LEFT JOIN (SELECT call_id, count(*) AS n, sum(amount) AS paise, min(user_id) AS lid
                      FROM ledger WHERE tx_type = 'earn' GROUP BY call_id) e USING (call_id)
           WHERE (c.status <> 'ongoing' AND c.earnings_paise > 0
                  AND (e.n IS DISTINCT FROM 1 OR e.paise <> c.earnings_paise
                       OR e.lid <> c.listener_id))
              OR (c.status = 'ongoing' AND e.n IS NOT NULL)""",
    ),
    (
        "listeners in more than one ongoing call",
        """SELECT count(*) FROM (SELECT listener_id FROM calls WHERE status = 'ongoing'
                                 GROUP BY listener_id HAVING count(*) > 1) x""",
    ),
]


# Ongoing calls billed less far than elapsed time allows: a minute that should have been billed
# `lag_minutes_max` minutes ago and was not. ($1 now as epoch s, $2 minute_seconds, $3 the
# maximum call minutes, $4 lag_minutes_max.)
LAGGING_SQL = f"""
SELECT count(*) FROM calls c
LEFT JOIN LATERAL (
    SELECT max(l.minute_no) AS last FROM ledger l WHERE {call_minutes("c.call_id", "l")}
) m ON true
WHERE c.status = 'ongoing'
  AND least(floor(($1 - extract(epoch FROM c.connected_at)) / $2)::int + 1, $3)
      - coalesce(m.last, 0) > $4
"""


async def run_audit(
    pool: asyncpg.Pool,
    now: float | None = None,
    minute_seconds: float = 60.0,
    max_call_minutes: int = 240,
    lag_minutes_max: int = 2,
) -> list[tuple[str, int]]:
    """Each check with its count of violations; all zero means the ledger is sound. With `now`,
    ongoing calls lagging more than `lag_minutes_max` minutes behind elapsed time count too."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        out = [(name, await conn.fetchval(sql)) for name, sql in CHECKS]
        if now is not None:
            lagging = await conn.fetchval(
                LAGGING_SQL, now, float(minute_seconds), max_call_minutes, lag_minutes_max
            )
            out.append((f"ongoing calls more than {lag_minutes_max} minutes behind", lagging))
        return out


async def ledger_totals(pool: asyncpg.Pool) -> dict:
    row = await pool.fetchrow(
        """SELECT
             coalesce(sum(amount) FILTER (WHERE tx_type IN
                        ('purchase', 'bonus', 'referral_bonus')), 0) AS coins_in,
             coalesce(-sum(amount) FILTER (WHERE tx_type = 'spend'), 0) AS coins_spent,
             coalesce(sum(amount) FILTER (WHERE tx_type = 'earn'), 0) AS paise_earned,
             coalesce(-sum(amount) FILTER (WHERE tx_type = 'withdraw'), 0) AS paise_withdrawn,
             count(*) AS transfers
           FROM ledger"""
    )
    held = await pool.fetchval("SELECT coalesce(sum(balance_coins), 0) FROM wallet_balances")
    opening = await pool.fetchval("SELECT coalesce(sum(opening_coins), 0) FROM wallets")
    out = dict(row)
    out["coins_held"] = held
    out["coins_conserved"] = held == opening + out["coins_in"] - out["coins_spent"]
    return out
