"""Buckets of coins that expire, as PostgreSQL has them: loaded with their wallet (each bucket's
state as of its last checkpoint, then the minutes and spends committed since drawn again,
`actors.buckets.replay`), and read whole for the audit."""

from __future__ import annotations

import datetime as dt

from actors import buckets as bk
from persistence.commit import EPOCH
from persistence.schema import call_minutes

LIVE_SQL = """
SELECT bucket_id, user_id, tx_type, coins_left,
       round(extract(epoch FROM expires_at) * 1000)::bigint AS expires_ms, as_of
FROM buckets WHERE user_id = ANY($1::bigint[]) AND NOT expired
"""

# The coins a user's minutes and outside spends took from `$2` (a time) on, each with its time
# in ms and whether it was an outside input (a spend, or a call's minute 1).
DEBITS_SQL = f"""
SELECT round(extract(epoch FROM l.created_at) * 1000)::bigint AS at_ms, -l.amount AS coins,
       coalesce(l.minute_no, 1) = 1 AS outside
FROM calls c CROSS JOIN LATERAL (
    SELECT created_at, amount, minute_no FROM ledger l
    WHERE {call_minutes("c.call_id", "l")} AND l.created_at >= $2
) l
WHERE c.user_id = $1 AND (c.ended_at IS NULL OR c.ended_at >= $2)
UNION ALL
SELECT round(extract(epoch FROM created_at) * 1000)::bigint, -amount, true
FROM ledger
WHERE user_id = $1 AND tx_type = 'spend' AND call_id IS NULL AND created_at >= $2
"""


def debit_positions(rows) -> list[tuple[int, int]]:
    out = [
        (bk.position(r["at_ms"], bk.OUTSIDE if r["outside"] else bk.MINUTE), r["coins"])
        for r in rows
    ]
    out.sort()
    return out


EXPIRED_UNAPPLIED_MAX = 1_000  # wallets a cleanup run asks at most


async def expired_unapplied(pool, now: float) -> list[int]:
    """People with a bucket past its expiry that their host has not expired yet (nobody asked
    their wallet since)."""
    rows = await pool.fetch(
        """SELECT DISTINCT user_id FROM buckets
           WHERE NOT expired AND expires_at <= to_timestamp($1) LIMIT $2""",
        now,
        EXPIRED_UNAPPLIED_MAX,
    )
    return [r["user_id"] for r in rows]


async def load_buckets(conn, user_ids: list[int]) -> dict[int, tuple[list[list], int]]:
    """Each user's buckets not expired, as the wallet held them after its last committed
    debit (the checkpoint of each, then the debits committed after it drawn again), and the
    time of the last outside debit since (or of the checkpoint): a grant comes after it."""
    rows = await conn.fetch(LIVE_SQL, user_ids)
    by_user: dict[int, list[list]] = {}
    for r in rows:
        bucket = [r["bucket_id"], r["tx_type"], r["coins_left"], r["expires_ms"], r["as_of"]]
        by_user.setdefault(r["user_id"], []).append(bucket)
    out = {}
    for user_id, buckets in by_user.items():
        since_ms = min(b[bk.AS_OF] for b in buckets) // 4
        debits = await conn.fetch(DEBITS_SQL, user_id, EPOCH + dt.timedelta(milliseconds=since_ms))
        bk.replay(buckets, debit_positions(debits))
        last_ms = max([r["at_ms"] for r in debits if r["outside"]], default=0)
        out[user_id] = (buckets, max(last_ms, max(b[bk.AS_OF] for b in buckets) // 4))
    return out


BUCKETS_CHECK = "buckets not drawn earliest expiry first, or whose rest did not expire exactly"
AUDIT_BUCKETS_SQL = """
SELECT bucket_id, user_id, tx_type, coins, expired,
       round(extract(epoch FROM expires_at) * 1000)::bigint AS expires_ms,
       round(extract(epoch FROM created_at) * 1000)::bigint AS created_ms,
       (SELECT -amount FROM ledger WHERE transfer_id = 'expire:' || bucket_id) AS expired_coins
FROM buckets ORDER BY user_id
"""
AUDIT_DEBITS_SQL = """
SELECT c.user_id, round(extract(epoch FROM l.created_at) * 1000)::bigint AS at_ms,
       -l.amount AS coins, l.minute_no = 1 AS outside
FROM ledger l JOIN calls c ON c.call_id = l.call_id
WHERE l.tx_type = 'spend' AND c.user_id = ANY($1::bigint[])
UNION ALL
SELECT user_id, round(extract(epoch FROM created_at) * 1000)::bigint, -amount, true
FROM ledger WHERE tx_type = 'spend' AND call_id IS NULL AND user_id = ANY($1::bigint[])
"""


async def audit_buckets(conn) -> int:
    """Draw every debit of every person with buckets again from their grants, earliest expiry
    first, none from a bucket past its expiry: each bucket's expired rest must be what is left
    of it (none expired while it had coins and no expire transfer, none with coins taken after
    it expired, its coins conserved). Returns the buckets that disagree."""
    rows = await conn.fetch(AUDIT_BUCKETS_SQL)
    if not rows:
        return 0
    by_user: dict[int, list] = {}
    for r in rows:
        by_user.setdefault(r["user_id"], []).append(r)
    debits: dict[int, list] = {}
    for d in await conn.fetch(AUDIT_DEBITS_SQL, list(by_user)):
        debits.setdefault(d["user_id"], []).append(d)
    bad = 0
    for user_id, granted in by_user.items():
        buckets = [
            [r["bucket_id"], r["tx_type"], r["coins"], r["expires_ms"],
             bk.position(r["created_ms"], bk.OUTSIDE) - 1]
            for r in granted
        ]  # fmt: skip
        bk.replay(buckets, debit_positions(debits.get(user_id, [])))
        left = {b[bk.ID]: b[bk.LEFT] for b in buckets}
        for r in granted:
            expired = r["expired_coins"]
            if r["expired"] and (expired or 0) != left[r["bucket_id"]]:
                bad += 1  # its rest was not what the draws left of it
            elif not r["expired"] and expired is not None:
                bad += 1
    return bad
