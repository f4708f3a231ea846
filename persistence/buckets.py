"""Buckets of coins that expire, as PostgreSQL has them: loaded with their wallet (each bucket's
state as of its last checkpoint, then the minutes and spends committed since drawn again,
`actors.buckets.replay`), and read whole for the audit."""

from __future__ import annotations

import datetime as dt

from actors import buckets as bk
from persistence.audit_offers import RESUMED_MINUTE
from persistence.commit import EPOCH
from persistence.schema import call_minutes

LIVE_SQL = """
SELECT bucket_id, user_id, tx_type, coins_left,
       round(extract(epoch FROM expires_at) * 1000)::bigint AS expires_ms, as_of
FROM buckets WHERE user_id = ANY($1::bigint[]) AND NOT expired
"""

# The coins each user's minutes and outside spends took from their `since` on ($1 the users,
# $2 their times), each with its time in ms, whether it was an outside input (a spend, or a
# call's minute 1) and whether it drew as one (those, and a minute a credit paid in its grace,
# after that credit): a call's minutes are one range of the primary key, a spend is in
# `ledger_statement`. An offer's free minutes drew on its grant, not on the payer's coins.
DEBITS_SQL = f"""
SELECT u.user_id, round(extract(epoch FROM l.created_at) * 1000)::bigint AS at_ms,
       -l.amount AS coins, l.minute_no = 1 AS outside,
       l.minute_no = 1 OR {RESUMED_MINUTE} AS as_outside
FROM unnest($1::bigint[], $2::timestamptz[]) AS u(user_id, since)
JOIN calls c ON c.user_id = u.user_id AND (c.ended_at IS NULL OR c.ended_at >= u.since)
CROSS JOIN LATERAL (
    SELECT created_at, billed_at, amount, minute_no, call_id FROM ledger l
    WHERE {call_minutes("c.call_id", "l")} AND l.created_at >= u.since
      AND l.minute_no > c.offer_minutes
) l
UNION ALL
SELECT l.user_id, round(extract(epoch FROM l.created_at) * 1000)::bigint, -l.amount, true, true
FROM unnest($1::bigint[], $2::timestamptz[]) AS u(user_id, since)
JOIN ledger l ON l.user_id = u.user_id AND l.tx_type = 'spend' AND l.call_id IS NULL
             AND l.created_at >= u.since
"""
SINCE_EVER = EPOCH - dt.timedelta(days=1)


async def debits(conn, since_ms: dict[int, int | None]) -> dict[int, tuple[list, int]]:
    """For each user, their debits from `since_ms` (None: ever) as (position, coins) in
    position order, and the time of the last outside one (0: none). Nobody asked: no query."""
    if not since_ms:
        return {}
    users = list(since_ms)
    since = [SINCE_EVER if ms is None else EPOCH + dt.timedelta(milliseconds=ms)
             for ms in since_ms.values()]  # fmt: skip
    positions: dict[int, list] = {u: [] for u in users}
    last_ms = dict.fromkeys(users, 0)
    for r in await conn.fetch(DEBITS_SQL, users, since):
        u, rank = r["user_id"], bk.OUTSIDE if r["as_outside"] else bk.MINUTE
        positions[u].append((bk.position(r["at_ms"], rank), r["coins"]))
        if r["outside"]:
            last_ms[u] = max(last_ms[u], r["at_ms"])
    return {u: (sorted(positions[u]), last_ms[u]) for u in users}


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
    if not user_ids:
        return {}
    rows = await conn.fetch(LIVE_SQL, user_ids)
    by_user: dict[int, list[list]] = {}
    for r in rows:
        bucket = [r["bucket_id"], r["tx_type"], r["coins_left"], r["expires_ms"], r["as_of"]]
        by_user.setdefault(r["user_id"], []).append(bucket)
    taken = await debits(conn, {u: min(b[bk.AS_OF] for b in bs) // 4 for u, bs in by_user.items()})
    out = {}
    for user_id, buckets in by_user.items():
        positions, last_ms = taken[user_id]
        bk.replay(buckets, positions)
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
    taken = await debits(conn, dict.fromkeys(by_user))
    bad = 0
    for user_id, granted in by_user.items():
        buckets = [
            [r["bucket_id"], r["tx_type"], r["coins"], r["expires_ms"],
             bk.position(r["created_ms"], bk.OUTSIDE) - 1]
            for r in granted
        ]  # fmt: skip
        bk.replay(buckets, taken[user_id][0])
        left = {b[bk.ID]: b[bk.LEFT] for b in buckets}
        for r in granted:
            expired = r["expired_coins"]
            if r["expired"] and (expired or 0) != left[r["bucket_id"]]:
                bad += 1  # its rest was not what the draws left of it
            elif not r["expired"] and expired is not None:
                bad += 1
    return bad
