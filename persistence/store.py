"""Queries outside the hot path: users, recovery loads, call reads, database totals."""

from __future__ import annotations

import asyncio
import datetime as dt

import asyncpg

from actors import buckets as bk
from actors import offers
from actors import price_plan as plan
from actors.call import CALL_FIELDS, Call
from actors.errors import InvariantViolation, UnknownCall
from actors.money import to_ms
from actors.settlement import ENDED_KEYS
from actors.wallet import Wallet
from persistence.buckets import load_buckets
from persistence.schema import call_minutes


def to_epoch(ts: dt.datetime | None) -> float | None:
    return None if ts is None else ts.timestamp()


async def create_user(pool: asyncpg.Pool, name: str, role: str) -> int:
    """A user (payer) or listener, with its empty wallet (and earnings account)."""
    async with pool.acquire() as conn, conn.transaction():
        user_id = await conn.fetchval(
            "INSERT INTO users (name, role) VALUES ($1, $2) RETURNING user_id", name, role
        )
        await conn.execute("INSERT INTO wallets (user_id) VALUES ($1)", user_id)
        if role == "listener":
            await conn.execute("INSERT INTO listener_earnings (listener_id) VALUES ($1)", user_id)
    return user_id


async def roles(pool: asyncpg.Pool, user_ids: list[int]) -> dict[int, str]:
    rows = await pool.fetch("SELECT user_id, role FROM users WHERE user_id = ANY($1)", user_ids)
    return {r["user_id"]: r["role"] for r in rows}


CALL_ID_BLOCK = 64  # call ids a process takes from the sequence at a time


class SequenceIds:
    """Ids from a sequence, `block` at a time: a start reads PostgreSQL once per block, not once
    per call. Ids are unique, not gapless (a process that stops leaves the rest of its block
    unused), and increase within a process."""

    def __init__(self, block: int = CALL_ID_BLOCK, sequence: str = "calls_call_id_seq") -> None:
        self.block = block
        self.sequence = sequence
        self._ids: list[int] = []
        self._lock = asyncio.Lock()

    async def next(self, pool: asyncpg.Pool) -> int:
        if not self._ids:
            async with self._lock:
                if not self._ids:
                    rows = await pool.fetch(
                        "SELECT nextval($1::text::regclass) AS id FROM generate_series(1, $2)",
                        self.sequence,
                        self.block,
                    )
                    self._ids = sorted((r["id"] for r in rows), reverse=True)
        return self._ids.pop()


async def listener_tiers(
    pool: asyncpg.Pool, listener_ids: list[int], day: dt.date
) -> dict[int, str]:
    """The tiers the day's badge run gave these listeners; a listener is absent before the
    run."""
    rows = await pool.fetch(
        "SELECT listener_id, tier FROM listener_badges WHERE listener_id = ANY($1::bigint[])"
        " AND day = $2",
        listener_ids,
        day,
    )
    return {r["listener_id"]: r["tier"] for r in rows}


LAST_MINUTES_SQL = f"""
SELECT c.call_id,
       coalesce((SELECT max(l.minute_no) FROM ledger l
                 WHERE {call_minutes("c.call_id", "l")}), 0) AS last_minute
FROM unnest($1::bigint[]) AS c(call_id)
"""


async def last_billed_minutes(conn, call_ids: list[int]) -> dict[int, int]:
    """Last minute committed in the ledger per call (a primary-key range per call)."""
    if not call_ids:
        return {}
    rows = await conn.fetch(LAST_MINUTES_SQL, call_ids)
    return {r["call_id"]: r["last_minute"] for r in rows}


# A wallet's row, and whether its person is in an ongoing call, holds a pending payout or has
# a bucket not expired: index-only probes of calls_ongoing_by_user,
# calls_one_ongoing_per_listener, payouts_pending and buckets_live per person (as scalar
# subqueries: PostgreSQL plans an EXISTS as a hash of every ongoing call).
LOAD_WALLETS_SQL = """
SELECT u.user_id, u.role, w.balance_coins, coalesce(e.earnings_paise, 0) AS earn,
       coalesce((SELECT true FROM calls c WHERE c.status = 'ongoing' AND c.user_id = u.user_id
                 LIMIT 1), (SELECT true FROM calls c
                            WHERE c.status = 'ongoing' AND c.listener_id = u.user_id), false)
           AS in_call,
       coalesce((SELECT true FROM payouts p
                 WHERE p.status = 'pending' AND p.listener_id = u.user_id LIMIT 1), false) AS held,
       coalesce((SELECT true FROM buckets b WHERE b.user_id = u.user_id AND NOT b.expired
                 LIMIT 1), false) AS bucketed
FROM users u JOIN wallet_balances w USING (user_id)
LEFT JOIN listener_earnings e ON e.listener_id = u.user_id
WHERE u.user_id = ANY($1)
"""
ONGOING_OF_SQL = """
SELECT call_id, user_id, listener_id, rate_coins, connected_at, minute_ms, offer_minutes
FROM calls
WHERE status = 'ongoing' AND (user_id = ANY($1) OR listener_id = ANY($1))
"""
PENDING_PAYOUTS_SQL = """
SELECT payout_id, listener_id, amount_paise FROM payouts
WHERE status = 'pending' AND listener_id = ANY($1)
"""


async def load_wallets(
    pool: asyncpg.Pool, user_ids: list[int], minute_seconds_default: float
) -> dict[int, Wallet]:
    """Wallets as PostgreSQL has them: balances, ongoing calls with their last billed
    minute, the call a listener is in, their pending payouts and buckets of expiring coins.
    Idempotency keys stay in the ledger until a request names one (`external_transfer`): a
    wallet's history is not held in memory."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(LOAD_WALLETS_SQL, user_ids)
        # Most people are in no call, hold no payout and have no bucket: their wallet is one
        # round trip. The rest are read for those who have them.
        in_call = [r["user_id"] for r in rows if r["in_call"]]
        calls = await conn.fetch(ONGOING_OF_SQL, in_call) if in_call else []
        last = await last_billed_minutes(conn, [c["call_id"] for c in calls])
        held_by = [r["user_id"] for r in rows if r["held"]]
        held = await conn.fetch(PENDING_PAYOUTS_SQL, held_by) if held_by else []
        buckets = await load_buckets(conn, [r["user_id"] for r in rows if r["bucketed"]])
    wallets = {
        r["user_id"]: Wallet(r["user_id"], r["role"], r["balance_coins"], r["earn"]) for r in rows
    }
    for p in held:
        wallets[p["listener_id"]].hold_payout(p["payout_id"], p["amount_paise"])
    for user_id, (held_buckets, debit_ms) in buckets.items():
        w = wallets[user_id]
        w.buckets, w.debit_ms = held_buckets, debit_ms
        if sum(b[bk.LEFT] for b in held_buckets) > w.balance_coins:
            raise InvariantViolation(f"wallet {user_id}: buckets hold more than its balance")
    for c in calls:
        payer = wallets.get(c["user_id"])
        if payer is not None:
            minute_ms = c["minute_ms"] or to_ms(minute_seconds_default)
            first_ms = to_ms(c["connected_at"].timestamp())
            rate, billed, free = c["rate_coins"], last[c["call_id"]], c["offer_minutes"]
            payer.pay_for(c["call_id"], [rate, billed, first_ms, minute_ms, free])
            # The view's balance holds the offer's grant not drawn yet: not the payer's to spend.
            payer.balance_coins -= offers.credit_left(free, billed, rate)
        listener = wallets.get(c["listener_id"])
        if listener is not None:
            listener.listener_call_id = c["call_id"]
            listener.listener_payer_id = c["user_id"]
    return wallets


async def external_transfers(
    pool: asyncpg.Pool, transfer_ids: list[str]
) -> dict[str, tuple[str, int]]:
    """(tx_type, amount) of the committed external transfers among `transfer_ids` (the
    primary key); an id not committed is absent."""
    rows = await pool.fetch(
        "SELECT transfer_id, tx_type, amount FROM ledger WHERE transfer_id = ANY($1::text[])",
        transfer_ids,
    )
    return {r["transfer_id"]: (r["tx_type"], r["amount"]) for r in rows}


CALL_COLUMNS = f"""call_id, user_id, listener_id, call_type, tier, rate_coins, rate_paise, status,
    end_reason, connected_at, ended_at, billed_minutes, coins_spent, earnings_paise,
    {", ".join((*ENDED_KEYS, *plan.PLAN_FIELDS, "offer_id", "offer_minutes"))}"""
# What a stored row may lack (it is from before price plans or offers): their defaults.
OPTIONAL_FIELDS = (*plan.PLAN_FIELDS, *offers.OFFER_FIELDS, "grace_s")


# A stored call's CALL_FIELDS as recovery reads them: its start as epoch milliseconds.
RECOVERY_COLUMNS = ", ".join(
    "round(extract(epoch FROM connected_at) * 1000)::bigint AS connected_ms"
    if f == "connected_ms"
    else f
    for f in CALL_FIELDS
)


def call_from_row(row, minute_seconds: float, max_minutes: int, billed: int) -> Call:
    """A stored call (RECOVERY_COLUMNS), billed through `billed`; the minute length and maximum
    it recorded, or the given ones for a call stored before calls recorded theirs."""
    # A Record or a dict; a row from before price plans has no plan fields (the defaults).
    spec = {f: row.get(f) for f in CALL_FIELDS if f not in OPTIONAL_FIELDS or f in row}
    spec["minute_ms"] = spec["minute_ms"] or to_ms(minute_seconds)
    spec["max_minutes"] = spec["max_minutes"] or max_minutes
    return Call.from_spec(spec, billed)


async def load_ongoing_calls(
    pool: asyncpg.Pool,
    minute_seconds: float,
    max_minutes: int,
    shard: tuple[int, int] | None = None,
    call_ids: list[int] | None = None,
    after_call_id: int = 0,
    limit: int | None = None,
) -> list[Call]:
    """Ongoing calls, all or those of one shard (user_id % n = i) or of the given ids; with
    `limit`, at most that many, the next ones by call id after `after_call_id` (recovery
    reads a million calls in pieces, so what it holds at once stays bounded)."""
    where = "status = 'ongoing' AND call_id > $1"
    args: list = [after_call_id]
    if shard is not None:
        where += " AND user_id % $2 = $3"
        args += [shard[1], shard[0]]
    elif call_ids is not None:
        where += " AND call_id = ANY($2)"
        args += [call_ids]
    if limit is not None:
        where += f" ORDER BY call_id LIMIT {int(limit)}"
    async with pool.acquire() as conn:
        rows = await conn.fetch(f"SELECT {RECOVERY_COLUMNS} FROM calls WHERE {where}", *args)
        last = await last_billed_minutes(conn, [r["call_id"] for r in rows])
    return [call_from_row(r, minute_seconds, max_minutes, last[r["call_id"]]) for r in rows]


def call_row_dict(row) -> dict:
    """A stored call as answers show it (`Call.state`'s keys): its price as `price`."""
    out = dict(row)
    out["connected_at"] = to_epoch(row["connected_at"])
    out["ended_at"] = to_epoch(row["ended_at"])
    out["price"] = plan.view(plan.price_of(row), row["rate_card_id"])
    out["offer"] = offers.view(out.pop("offer_id"), out.pop("offer_minutes"))
    for f in plan.PLAN_FIELDS:
        del out[f]
    return out


async def read_call(pool: asyncpg.Pool, call_id: int) -> dict:
    row = await pool.fetchrow(f"SELECT {CALL_COLUMNS} FROM calls WHERE call_id = $1", call_id)
    if row is None:
        raise UnknownCall(f"no call with id {call_id}")
    return call_row_dict(row)


async def ping(pool: asyncpg.Pool) -> None:
    """PostgreSQL answers a query (readiness)."""
    await pool.fetchval("SELECT 1")


CALLS_PAGE_MAX = 100
CALL_ID_MAX = 2**63 - 1  # above every call id: the first page
# One ordered index scan per role (a person has one role, so one of the two is empty).
CALLS_OF_SQL = f"""
SELECT * FROM (
    (SELECT {CALL_COLUMNS} FROM calls WHERE user_id = $1 AND call_id < $2
     ORDER BY call_id DESC LIMIT $3)
    UNION ALL
    (SELECT {CALL_COLUMNS} FROM calls WHERE listener_id = $1 AND call_id < $2
     ORDER BY call_id DESC LIMIT $3)
) AS theirs ORDER BY call_id DESC LIMIT $3
"""


async def calls_of(
    pool: asyncpg.Pool, user_id: int, limit: int = 20, before: int | None = None
) -> list[dict]:
    """A person's calls, as payer or listener, newest first; `before` a call id pages on.
    Ongoing calls show their stored row (minutes billed so far are in the ledger)."""
    rows = await pool.fetch(
        CALLS_OF_SQL,
        user_id,
        CALL_ID_MAX if before is None else before,
        min(limit, CALLS_PAGE_MAX),
    )
    return [call_row_dict(r) for r in rows]


async def call_outcome(pool: asyncpg.Pool, call_id: int) -> dict | None:
    """A call's status and what its listener earned; None when the call has no row. A call's
    end and its listener's credit commit in one transaction, so an ended call's credit is in."""
    row = await pool.fetchrow(
        "SELECT status, earnings_paise FROM calls WHERE call_id = $1", call_id
    )
    return None if row is None else dict(row)


async def call_by_start_key(pool: asyncpg.Pool, user_id: int, key: str) -> dict | None:
    """The call a user started with this idempotency key, if any."""
    row = await pool.fetchrow(
        f"SELECT {CALL_COLUMNS} FROM calls WHERE user_id = $1 AND start_key = $2", user_id, key
    )
    return None if row is None else call_row_dict(row)


async def ongoing_calls(pool: asyncpg.Pool) -> list[dict]:
    """Every ongoing call's parties and start (the expired-call cleanup reads them)."""
    rows = await pool.fetch(
        "SELECT call_id, user_id, listener_id, connected_at FROM calls WHERE status = 'ongoing'"
    )
    return [dict(r) | {"connected_at": to_epoch(r["connected_at"])} for r in rows]


async def totals(pool: asyncpg.Pool, call_ids: list[int]) -> dict:
    """What the database says about the calls `call_ids`, by status and reason (the demo's
    table)."""
    by_reason = await pool.fetch(
        """SELECT status, coalesce(end_reason, '-') AS reason, count(*) AS calls,
                  sum(billed_minutes)::bigint AS minutes, sum(coins_spent)::bigint AS coins,
                  sum(earnings_paise)::bigint AS earnings
           FROM calls WHERE call_id = ANY($1::bigint[]) GROUP BY 1, 2 ORDER BY 1, 2""",
        call_ids,
    )
    return {"by_reason": [dict(r) for r in by_reason]}
