"""Rules of money that the database can show, each a query counting its violations."""

from __future__ import annotations

import asyncpg

from actors.money import TX_UNIT_SIGN
from persistence.audit_offers import (
    OFFER_CHECKS,
    OFFER_FREE_MINUTE,
    OFFER_RETURN_AS_SPENT,
    RESUMED_MINUTE,
)
from persistence.buckets import BUCKETS_CHECK, audit_buckets
from persistence.schema import call_minutes

# Rule 9 in SQL. Minutes a call had started by its end: floor((end - start) / minute) + 1, at
# most the call's maximum; the exact interval arithmetic of timestamps in milliseconds.
STARTED_BY_END = """least(
    floor(extract(epoch FROM (c.ended_at - c.connected_at)) * 1000 / c.minute_ms)::bigint + 1,
    coalesce(c.max_minutes, c.billed_minutes))"""
BOUNDARY_OF_UNPAID = "c.connected_at + c.billed_minutes * c.minute_ms * interval '1 millisecond'"
# A call ended (hung up, or expired by the cleanup) while the minute after its last was waiting
# in its grace: it ended then with the minutes paid, as if dropped at that boundary.
GRACE = "c.grace_s * c.minute_ms / 60 * interval '1 millisecond'"
ENDED_IN_GRACE = f"""(c.grace_s > 0 AND c.end_reason IN ('hangup', 'expired')
     AND c.billed_minutes = {STARTED_BY_END} - 1
     AND c.ended_at < {BOUNDARY_OF_UNPAID} + {GRACE})"""

# A payer's coins as things happened: every coin transfer by its time (a minute carries the time
# it started, a top-up or spend the time it was applied), and each drop for coins at its
# boundary. At one instant, a bucket's expiry comes first, then minutes that fell due, then
# drops, then outside inputs (top-ups, spends, a call's start with its minute 1; credits before
# debits): an operation at time t sees everything due by t. `balance` is the running balance
# after each event (kind -1 expiry, 0 minute due, 1 drop, 2 outside input).
# A minute a credit paid in its grace is ordered as that credit's outside input is
# (`RESUMED_MINUTE`).
TRANSFER_KIND = f"""CASE WHEN l.tx_type = 'expire' THEN -1
     WHEN l.tx_type = 'spend' AND l.call_id IS NOT NULL AND l.minute_no <> 1
          AND NOT {RESUMED_MINUTE} THEN 0 ELSE 2 END"""
# Each transaction type's unit and sign, as actors/money.py says them.
UNIT_AND_SIGN = " OR ".join(
    f"(tx_type = '{t}' AND unit = '{unit}' AND amount {'>' if sign > 0 else '<'} 0)"
    for t, (unit, sign) in TX_UNIT_SIGN.items()
)
COINS_IN_TIME_ORDER = f"""
SELECT ev.kind, ev.rate_coins, ev.user_id, ev.at,
       w.opening_coins + sum(ev.amount) OVER (
           PARTITION BY ev.user_id ORDER BY ev.at, ev.kind, ev.amount DESC, ev.id
           ROWS UNBOUNDED PRECEDING) AS balance
FROM (
    SELECT user_id, created_at AS at,
           {TRANSFER_KIND} AS kind,
           CASE WHEN tx_type = 'offer_return' THEN {OFFER_RETURN_AS_SPENT} ELSE amount END
               AS amount,
           NULL::bigint AS rate_coins, transfer_id AS id
    FROM ledger l WHERE unit = 'coins' AND tx_type <> 'offer_grant'
      AND NOT (tx_type = 'spend' AND call_id IS NOT NULL AND {OFFER_FREE_MINUTE})
    UNION ALL
    SELECT c.user_id, {BOUNDARY_OF_UNPAID}, 1, 0, c.rate_coins, c.call_id::text
    FROM calls c
    WHERE c.minute_ms IS NOT NULL AND (
          (c.status = 'dropped' AND c.end_reason = 'insufficient_coins'
           AND c.ended_at = {BOUNDARY_OF_UNPAID}) OR {ENDED_IN_GRACE})
) ev JOIN wallets w ON w.user_id = ev.user_id
"""

# A settled call with what its recorded price charges for its length (actors/price_plan.py's
# `charge`, in SQL): `e_ms` from its recorded connect to its end, `free` under its free seconds.
ELAPSED = """round(extract(epoch FROM c.ended_at) * 1000)::bigint
             - round(extract(epoch FROM c.connected_at) * 1000)::bigint"""
CHARGED_S = """CASE WHEN e.minute_ms IS NULL THEN 60 * e.billed_minutes
     WHEN e.e_ms * 60 < e.free_s * e.minute_len THEN 0
     ELSE least(60 * e.billed_minutes,
                e.increment_s * (e.e_ms * 60 / (e.minute_len * e.increment_s) + 1)) END"""
# With an offer (actors/offers.py): `offered` is what its grant paid of the charge, and the
# payer's part earns the listener what it always does; the offer's part earns them as usual if
# the platform pays, nothing if nobody does.
CHARGED = f"""
SELECT t.*, CASE WHEN t.offer_pays = 'nobody' THEN t.payer_paise ELSE t.full_paise END
                AS want_paise,
       CASE WHEN t.offer_pays = 'platform' THEN t.full_paise - t.payer_paise ELSE 0 END
                AS want_offer_paise
FROM (SELECT u.*,
             CASE WHEN u.earnings_rule = 'tier' THEN u.rate_paise * u.want_s / 60
                  ELSE u.want_coins * u.coin_value_paise * u.share_pct / 100 END AS full_paise,
             CASE WHEN u.earnings_rule = 'tier'
                  THEN u.rate_paise * greatest(0, u.want_s - 60 * u.offer_minutes) / 60
                  ELSE (u.want_coins - u.offered) * u.coin_value_paise * u.share_pct / 100
             END AS payer_paise
      FROM (SELECT s.*, (s.rate_coins * s.want_s + 59) / 60 AS want_coins,
                   least((s.rate_coins * s.want_s + 59) / 60, s.offer_minutes * s.rate_coins)
                       AS offered
            FROM (SELECT e.*, {CHARGED_S} AS want_s
                  FROM (SELECT c.*, {ELAPSED} AS e_ms,
                               coalesce(c.minute_ms, 60000)::bigint AS minute_len
                        FROM calls c WHERE c.status <> 'ongoing') e) s) u) t"""

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
        f"SELECT count(*) FROM ledger WHERE NOT ({UNIT_AND_SIGN})",
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
        "settled calls whose charge, return or earnings disagree with their price and length",
        f"""SELECT count(*) FROM ({CHARGED}) c WHERE status <> 'ongoing' AND (
              coins_spent <> billed_minutes * rate_coins
           OR charged_seconds IS DISTINCT FROM want_s
           OR coins_charged IS DISTINCT FROM want_coins
           OR coins_returned IS DISTINCT FROM coins_spent - want_coins
           OR earnings_paise <> want_paise
           OR offer_earnings_paise <> want_offer_paise
           OR offer_coins_returned <> offer_minutes * rate_coins - offered
           OR offer_minutes_used <> least(billed_minutes, offer_minutes)
           OR platform_paise IS DISTINCT FROM
              (want_coins - offered) * coin_value_paise - want_paise)""",
    ),
    (
        "prepaid coins not returned exactly when due, or returns without their call",
        """SELECT (SELECT count(*) FROM calls c
                   LEFT JOIN ledger u ON u.transfer_id = 'unused:' || c.call_id
                   WHERE c.status <> 'ongoing'
                     AND ((u.transfer_id IS NOT NULL) <> (c.coins_returned > 0)
                          OR u.amount <> c.coins_returned OR u.user_id <> c.user_id
                          OR u.call_id <> c.call_id OR u.created_at <> c.ended_at))
                + (SELECT count(*) FROM ledger l WHERE l.tx_type = 'unused' AND NOT EXISTS
                     (SELECT 1 FROM calls c WHERE l.transfer_id = 'unused:' || c.call_id
                      AND c.status <> 'ongoing'))""",
    ),
    (
        "calls on a card before its date, or on a card that does not exist",
        """SELECT count(*) FROM calls c LEFT JOIN rate_cards r USING (rate_card_id)
           WHERE c.rate_card_id <> 0
             AND (r.rate_card_id IS NULL OR c.connected_at < r.effective_at)""",
    ),
    (
        "rate cards dated before they were scheduled",
        "SELECT count(*) FROM rate_cards WHERE effective_at < created_at",
    ),
    (
        "listener prices outside the bounds of their card and tier when set",
        """SELECT count(*) FROM listener_prices p
           CROSS JOIN LATERAL jsonb_each(p.prices) AS x(call_type, price)
           LEFT JOIN rate_cards r ON r.rate_card_id = p.rate_card_id
           WHERE NOT (p.bounds ? x.call_type)
              OR x.price::bigint < (p.bounds -> x.call_type ->> 0)::bigint
              OR x.price::bigint > (p.bounds -> x.call_type ->> 1)::bigint
              OR (p.rate_card_id <> 0 AND (r.rate_card_id IS NULL
                  OR r.card -> 'price_bounds' -> x.call_type -> p.tier
                     IS DISTINCT FROM p.bounds -> x.call_type
                  OR r.effective_at > p.set_at))""",
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
    # -- the billing policy, wherever the database can show it ---------------------------------
    # A call recording its minute length (minute_ms) is checked against its own start, end
    # and reason: a hang-up or an expiry bills every minute started by its end (no more than
    # the maximum); a drop for coins ends at the boundary of the minute it could not pay (or,
    # ended by an outside check, bills every minute started by then).
    (
        "ended calls whose billed minutes disagree with their start, end and reason",
        f"""SELECT count(*) FROM calls c
           WHERE c.status <> 'ongoing' AND c.minute_ms IS NOT NULL AND NOT CASE
             WHEN c.end_reason = 'hangup' THEN
               c.status = 'completed'
               AND (c.billed_minutes = {STARTED_BY_END} OR {ENDED_IN_GRACE})
             WHEN c.end_reason = 'expired' THEN
               c.status = 'dropped'
               AND (c.billed_minutes = {STARTED_BY_END} OR {ENDED_IN_GRACE})
             WHEN c.end_reason = 'insufficient_coins' THEN
               c.status = 'dropped' AND c.billed_minutes >= 1
               AND (c.ended_at = {BOUNDARY_OF_UNPAID} OR c.billed_minutes = {STARTED_BY_END})
             ELSE false END""",
    ),
    (
        "call minutes not dated when they started (or, waiting in their grace, when a credit "
        "paid them), or dated after their call ended",
        f"""SELECT count(*) FROM ledger l JOIN calls c ON c.call_id = l.call_id
           CROSS JOIN LATERAL (SELECT c.connected_at
                     + (l.minute_no - 1) * c.minute_ms * interval '1 millisecond' AS due) d
           WHERE l.tx_type = 'spend' AND c.minute_ms IS NOT NULL
             AND ((l.created_at <> d.due AND NOT (
                     c.grace_s > 0 AND l.created_at > d.due AND l.created_at < d.due + {GRACE}
                     AND EXISTS (SELECT 1 FROM ledger p WHERE p.user_id = c.user_id
                                 AND p.unit = 'coins' AND p.amount > 0
                                 AND p.tx_type <> 'offer_grant'
                                 AND p.created_at = l.created_at)))
                  OR (c.status <> 'ongoing' AND l.created_at > c.ended_at))""",
    ),
    (
        "coin transfers that take a balance below zero in time order",
        f"""SELECT count(*) FROM ({COINS_IN_TIME_ORDER}) r WHERE kind <> 1 AND balance < 0""",
    ),
    (
        "calls dropped for coins when the payer could pay the next minute",
        f"""SELECT count(*) FROM ({COINS_IN_TIME_ORDER}) r
           WHERE kind = 1 AND balance >= rate_coins""",
    ),
    (
        "calls dropped for coins although a credit within their grace could pay the minute",
        f"""WITH r AS MATERIALIZED ({COINS_IN_TIME_ORDER})
           SELECT count(*) FROM calls c
           WHERE c.grace_s > 0 AND c.status = 'dropped' AND c.end_reason = 'insufficient_coins'
             AND c.minute_ms IS NOT NULL AND EXISTS (
               SELECT 1 FROM r WHERE r.user_id = c.user_id AND r.kind = 2
                 AND r.at >= {BOUNDARY_OF_UNPAID} AND r.at < {BOUNDARY_OF_UNPAID} + {GRACE}
                 AND r.balance >= c.rate_coins)""",
    ),
    (
        "withdrawals that take earnings below zero in time order",
        """SELECT count(*) FROM (
             SELECT e.opening_paise + sum(l.amount) OVER (
                      PARTITION BY l.user_id
                      ORDER BY l.created_at, l.amount DESC, l.transfer_id
                      ROWS UNBOUNDED PRECEDING) AS earned
             FROM ledger l JOIN listener_earnings e ON e.listener_id = l.user_id
             WHERE l.unit = 'paise') r
           WHERE earned < 0""",
    ),
    # -- payouts and refunds -------------------------------------------------------------------
    (
        "payouts without exactly their hold, or holds without their payout",
        """SELECT (SELECT count(*) FROM payouts p
                   LEFT JOIN ledger l ON l.transfer_id = p.transfer_id
                   WHERE l.transfer_id IS NULL OR l.tx_type <> 'withdraw'
                      OR l.user_id <> p.listener_id OR -l.amount <> p.amount_paise
                      OR l.created_at <> p.created_at)
                + (SELECT count(*) FROM ledger l WHERE l.tx_type = 'withdraw' AND NOT EXISTS
                     (SELECT 1 FROM payouts p WHERE p.transfer_id = l.transfer_id))""",
    ),
    (
        "payout holds not released exactly when the payout was rejected",
        """SELECT (SELECT count(*) FROM payouts p
                   LEFT JOIN ledger v ON v.transfer_id = 'payout:' || p.payout_id || ':void'
                   WHERE (p.status = 'rejected') <> (v.transfer_id IS NOT NULL)
                      OR v.tx_type <> 'payout_void' OR v.user_id <> p.listener_id
                      OR v.amount <> p.amount_paise OR v.created_at < p.created_at
                      OR v.created_at <> p.settled_at)
                + (SELECT count(*) FROM ledger l WHERE l.tx_type = 'payout_void' AND NOT EXISTS
                     (SELECT 1 FROM payouts p
                      WHERE l.transfer_id = 'payout:' || p.payout_id || ':void'))""",
    ),
    (
        "refunds of more minutes than their call billed, or of a call not ended",
        """SELECT count(*) FROM (SELECT call_id, sum(minutes) AS minutes FROM refunds
                                 GROUP BY call_id) r JOIN calls c USING (call_id)
           WHERE c.status = 'ongoing' OR r.minutes > c.billed_minutes""",
    ),
    (
        "refunds whose coins or earnings disagree with their call's parties and rates",
        """SELECT count(*) FROM (
               SELECT r.*, coalesce(sum(r.coins) OVER (PARTITION BY r.call_id
                   ORDER BY r.created_at, r.refund_id
                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before
               FROM refunds r) r JOIN calls c USING (call_id)
           WHERE r.coins <> least(r.minutes * c.rate_coins, c.coins_charged - r.before)
              OR r.paise <> CASE WHEN r.listener_pays
                                 THEN r.coins * c.earnings_paise / c.coins_charged ELSE 0 END
              OR r.user_id <> c.user_id OR r.listener_id <> c.listener_id
              OR r.created_at < c.ended_at""",
    ),
    (
        "refunds not moved by exactly their transfers, or refund transfers without a refund",
        """SELECT (SELECT count(*) FROM refunds r
                   LEFT JOIN ledger m ON m.transfer_id = r.refund_id
                   LEFT JOIN ledger k ON k.transfer_id = r.refund_id || ':clawback'
                   WHERE (m.transfer_id IS NOT NULL) <> (r.refunded_at IS NOT NULL)
                      OR m.tx_type <> 'refund' OR m.user_id <> r.user_id
                      OR m.amount <> r.coins OR m.call_id <> r.call_id
                      OR (k.transfer_id IS NOT NULL) <> (r.paise > 0)
                      OR k.tx_type <> 'clawback' OR k.user_id <> r.listener_id
                      OR k.amount <> -r.paise OR k.call_id <> r.call_id)
                + (SELECT count(*) FROM ledger l
                   WHERE l.tx_type IN ('refund', 'clawback') AND NOT EXISTS
                     (SELECT 1 FROM refunds r
                      WHERE l.transfer_id IN (r.refund_id, r.refund_id || ':clawback')))""",
    ),
    (
        "buckets without their top-up, or expiries without their bucket or not at its expiry",
        """SELECT (SELECT count(*) FROM buckets b LEFT JOIN ledger l ON l.transfer_id = b.bucket_id
                   WHERE l.transfer_id IS NULL OR l.user_id <> b.user_id
                      OR l.amount <> b.coins OR l.tx_type <> b.tx_type)
                + (SELECT count(*) FROM ledger l LEFT JOIN buckets b
                     ON l.transfer_id = 'expire:' || b.bucket_id
                   WHERE l.tx_type = 'expire' AND (b.bucket_id IS NULL OR NOT b.expired
                      OR l.user_id <> b.user_id OR l.created_at <> b.expires_at
                      OR -l.amount > b.coins))""",
    ),
    (
        "listeners in more than one ongoing call",
        """SELECT count(*) FROM (SELECT listener_id FROM calls WHERE status = 'ongoing'
                                 GROUP BY listener_id HAVING count(*) > 1) x""",
    ),
    *OFFER_CHECKS,
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
        out.append((BUCKETS_CHECK, await audit_buckets(conn)))
        if now is not None:
            lagging = await conn.fetchval(
                LAGGING_SQL, now, float(minute_seconds), max_call_minutes, lag_minutes_max
            )
            out.append((f"ongoing calls more than {lag_minutes_max} minutes behind", lagging))
        return out
