"""Offers as PostgreSQL has them: their terms and budgets, each start's claim on one (made and
released here, settled with the call's end in `commit.APPLY_ENDS_SQL`), listeners' opt-in, and
what each offer cost, in one query.

A claim is one transaction: the user's claims are taken in turn (an advisory lock on the user,
so that "first call" holds however many of their starts run at once), and the budget is taken
by one UPDATE whose condition PostgreSQL checks again on the row it locked: no start, on any
host, takes minutes another has taken.
"""

from __future__ import annotations

import asyncpg

from actors import offers
from actors.errors import IdempotencyConflict, InvalidInput, UnknownOffer, UnknownUser

# A claim whose call never got a row (its start failed without an answer, and no retry came)
# gives its minutes back after this long: by then no write of that start can still be on its
# way to PostgreSQL.
CLAIM_UNCONFIRMED_S = 120.0
CLAIM_LOCK_CLASS = 0x6F66  # pg_advisory_xact_lock(class, user_id): one user's claims in turn
OFFERS_PAGE_MAX = 100

TERMS = ("free_minutes", "eligible", "code", "call_types", "valid_from", "valid_until",
         "budget_minutes", "per_user_max", "pays_listener")  # fmt: skip

OFFER_SQL = """
SELECT o.offer_id, o.free_minutes, o.eligible, o.code, o.call_types,
       extract(epoch FROM o.valid_from)::float8 AS valid_from,
       extract(epoch FROM o.valid_until)::float8 AS valid_until,
       o.budget_minutes, o.per_user_max, o.pays_listener, o.minutes_reserved, o.minutes_used,
       extract(epoch FROM o.created_at)::float8 AS created_at,
       coalesce(s.calls, 0) AS calls, coalesce(s.granted, 0) AS coins_granted,
       coalesce(s.returned, 0) AS coins_returned, coalesce(s.paise, 0) AS earnings_paid_paise
FROM offers o LEFT JOIN LATERAL (
    SELECT count(*) AS calls, sum(g.amount)::bigint AS granted,
           sum(-r.amount)::bigint AS returned, sum(c.offer_earnings_paise)::bigint AS paise
    FROM calls c
    LEFT JOIN ledger g ON g.transfer_id = 'offer:' || c.call_id
    LEFT JOIN ledger r ON r.transfer_id = 'offer_return:' || c.call_id
    WHERE c.offer_id = o.offer_id
) s ON true
"""

INSERT_SQL = """
INSERT INTO offers (free_minutes, eligible, code, call_types, valid_from, valid_until,
                    budget_minutes, per_user_max, pays_listener, created_at, idempotency_key)
VALUES ($1, $2, $3, $4, to_timestamp($5), to_timestamp($6), $7, $8, $9, to_timestamp($10), $11)
ON CONFLICT DO NOTHING
RETURNING offer_id
"""

# The offers a start may take, best first (most free minutes; of as many, the code the start
# named; then the oldest): in their window and call type, with budget left, by code only with
# it; who is eligible is checked per offer (`claim`).
CANDIDATES_SQL = """
SELECT offer_id, free_minutes, eligible, per_user_max, pays_listener FROM offers
WHERE valid_from <= to_timestamp($1) AND to_timestamp($1) < valid_until
  AND $2 = ANY(call_types) AND minutes_reserved + minutes_used < budget_minutes
  AND (eligible <> 'code' OR code = $3)
ORDER BY free_minutes DESC, eligible = 'code' DESC, offer_id
"""
LEFT_SQL = """
SELECT budget_minutes - minutes_reserved - minutes_used FROM offers WHERE offer_id = $1
FOR UPDATE
"""


async def create(pool: asyncpg.Pool, terms: offers.Terms, now: float, key: str | None) -> dict:
    """Store an offer; with a key, a repeat answers the offer that key made (the same terms),
    and another offer's code is refused."""
    values = [getattr(terms, f) for f in TERMS]
    values[3] = list(terms.call_types)
    async with pool.acquire() as conn, conn.transaction():
        offer_id = await conn.fetchval(INSERT_SQL, *values, now, key)
        if offer_id is None:  # the key's offer, or a code another offer has
            before = None
            if key is not None:
                before = await conn.fetchrow(f"{OFFER_SQL} WHERE o.idempotency_key = $1", key)
            if before is None:
                raise InvalidInput(f"code {terms.code!r} is another offer's")
            if [before[f] for f in TERMS] != values:
                raise IdempotencyConflict(
                    f"idempotency key {key!r} created offer {before['offer_id']} with other terms"
                )
            return _view(before)
        return _view(await conn.fetchrow(f"{OFFER_SQL} WHERE o.offer_id = $1", offer_id))


async def read(pool: asyncpg.Pool, offer_id: int) -> dict:
    row = await pool.fetchrow(f"{OFFER_SQL} WHERE o.offer_id = $1", offer_id)
    if row is None:
        raise UnknownOffer(f"no offer with id {offer_id}")
    return _view(row)


async def listing(pool: asyncpg.Pool, limit: int, before: int | None) -> list[dict]:
    rows = await pool.fetch(
        f"{OFFER_SQL} WHERE o.offer_id < $1 ORDER BY o.offer_id DESC LIMIT $2",
        before or 2**63 - 1,
        limit,
    )
    return [_view(r) for r in rows]


async def any_until(pool: asyncpg.Pool, since: float) -> bool:
    """Is any offer in its window after `since`?"""
    return await pool.fetchval(
        "SELECT EXISTS (SELECT 1 FROM offers WHERE valid_until > to_timestamp($1))", since
    )


async def code_exists(pool: asyncpg.Pool, code: str) -> bool:
    return bool(await pool.fetchval("SELECT true FROM offers WHERE code = $1", code))


def _view(row) -> dict:
    out = dict(row)
    out["call_types"] = list(row["call_types"])
    out["minutes_left"] = row["budget_minutes"] - row["minutes_reserved"] - row["minutes_used"]
    return out


async def claim(
    pool: asyncpg.Pool, call_id: int, user_id: int, listener_id: int, call_type: str,
    code: str | None, start_key: str | None, now: float, minutes_max: int,
) -> dict | None:  # fmt: skip
    """The best offer the start of call `call_id` may take, its minutes taken from the budget
    (at most `minutes_max`, and what is left of the budget); None if none. A start retried
    with its key gets the claim it made before, once (moved to its new call id)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, $2::bigint::int)",
                           CLAIM_LOCK_CLASS, user_id % 2**31)  # fmt: skip
        if start_key is not None:
            before = await conn.fetchrow(
                """UPDATE offer_claims k SET call_id = $3
                   FROM offers o WHERE o.offer_id = k.offer_id
                     AND k.user_id = $1 AND k.start_key = $2 AND NOT k.settled
                   RETURNING k.offer_id, k.minutes, o.pays_listener""",
                user_id, start_key, call_id,
            )  # fmt: skip
            if before is not None:
                return dict(before)
        for o in await conn.fetch(CANDIDATES_SQL, now, call_type, code):
            if not await _eligible(conn, o, user_id, listener_id):
                continue
            # The row locked, then read: what another start took is seen here.
            left = await conn.fetchval(LEFT_SQL, o["offer_id"])
            taken = min(o["free_minutes"], minutes_max, left)
            if taken <= 0:
                continue
            await conn.execute(
                "UPDATE offers SET minutes_reserved = minutes_reserved + $2 WHERE offer_id = $1",
                o["offer_id"], taken,
            )  # fmt: skip
            await conn.execute(
                """INSERT INTO offer_claims (call_id, offer_id, user_id, listener_id, minutes,
                                             start_key, claimed_at)
                   VALUES ($1, $2, $3, $4, $5, $6, to_timestamp($7))""",
                call_id, o["offer_id"], user_id, listener_id, taken, start_key, now,
            )  # fmt: skip
            return {"offer_id": o["offer_id"], "minutes": taken,
                    "pays_listener": o["pays_listener"]}  # fmt: skip
    return None


async def _eligible(conn: asyncpg.Connection, o, user_id: int, listener_id: int) -> bool:
    """Is the user (their claims taken in turn) eligible for offer `o` with this listener?"""
    uses = await conn.fetchval(
        "SELECT count(*) FROM offer_claims WHERE user_id = $1 AND offer_id = $2",
        user_id, o["offer_id"],
    )  # fmt: skip
    if uses >= o["per_user_max"]:
        return False
    if o["pays_listener"] == offers.NOBODY:
        opted = await conn.fetchval(
            "SELECT free_minutes FROM listener_offer_optins WHERE listener_id = $1", listener_id
        )
        if not opted:
            return False
    if o["eligible"] == offers.CODE:
        return True
    with_listener = o["eligible"] == offers.FIRST_WITH_LISTENER
    # A call before, or a start under way (its claim), with anyone or with this listener.
    return not await conn.fetchval(
        """SELECT EXISTS (SELECT 1 FROM calls WHERE user_id = $1
                          AND (NOT $3 OR listener_id = $2))
               OR EXISTS (SELECT 1 FROM offer_claims WHERE user_id = $1
                          AND (NOT $3 OR listener_id = $2))""",
        user_id, listener_id, with_listener,
    )  # fmt: skip


async def release(pool: asyncpg.Pool, call_id: int) -> None:
    """Give back the minutes of a claim whose call did not start (it was refused)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(RELEASE_SQL, [call_id], float(2**40))


RELEASE_SQL = """
WITH gone AS (
    DELETE FROM offer_claims k
    WHERE k.call_id = ANY($1) AND NOT k.settled AND k.claimed_at <= to_timestamp($2)
      AND NOT EXISTS (SELECT 1 FROM calls c WHERE c.call_id = k.call_id)
    RETURNING k.offer_id, k.minutes
)
UPDATE offers o SET minutes_reserved = o.minutes_reserved - g.minutes
FROM (SELECT offer_id, sum(minutes) AS minutes FROM gone GROUP BY offer_id) g
WHERE o.offer_id = g.offer_id
"""


async def release_unconfirmed(pool: asyncpg.Pool, now: float) -> int:
    """Give back the minutes of claims whose call never got a row within CLAIM_UNCONFIRMED_S
    (a start that failed without an answer, never retried). Returns how many."""
    async with pool.acquire() as conn, conn.transaction():
        ids = await conn.fetch(
            """SELECT k.call_id FROM offer_claims k
               WHERE NOT k.settled AND k.claimed_at < to_timestamp($1)
                 AND NOT EXISTS (SELECT 1 FROM calls c WHERE c.call_id = k.call_id)
               LIMIT 1000""",
            now - CLAIM_UNCONFIRMED_S,
        )
        if ids:
            await conn.execute(RELEASE_SQL, [r["call_id"] for r in ids], now)
    return len(ids)


async def set_optin(pool: asyncpg.Pool, listener_id: int, free_minutes: bool, now: float) -> dict:
    role = await pool.fetchval("SELECT role FROM users WHERE user_id = $1", listener_id)
    if role is None:
        raise UnknownUser(f"no user with id {listener_id}")
    if role != "listener":
        raise InvalidInput(f"user {listener_id} is not a listener")
    await pool.execute(
        """INSERT INTO listener_offer_optins (listener_id, free_minutes, set_at)
           VALUES ($1, $2, to_timestamp($3))
           ON CONFLICT (listener_id) DO UPDATE SET free_minutes = $2, set_at = to_timestamp($3)""",
        listener_id, free_minutes, now,
    )  # fmt: skip
    return await optin(pool, listener_id)


async def optin(pool: asyncpg.Pool, listener_id: int) -> dict:
    row = await pool.fetchrow(
        """SELECT free_minutes, extract(epoch FROM set_at)::float8 AS set_at
           FROM listener_offer_optins WHERE listener_id = $1""",
        listener_id,
    )
    return {"listener_id": listener_id, "free_minutes": bool(row and row["free_minutes"]),
            "set_at": row and row["set_at"]}  # fmt: skip
