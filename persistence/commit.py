"""One flush of the writer as one PostgreSQL transaction: the calls started, the transfers (COPY,
or the staging table for a batch that repeats one), the accounts they move, the calls ended and
their events. Every statement's columns come from the records' own field lists (`CALL_FIELDS`,
`END_FIELDS`, `Transfer`)."""

from __future__ import annotations

import datetime as dt
import json

import asyncpg

from actors.call import CALL_FIELDS
from actors.errors import InvariantViolation
from actors.money import (
    AMOUNT_AT,
    AT_MS_AT,
    BILLED_MS_AT,
    UNIT_AT,
    USER_AT,
    Transfer,
    is_call_minute,
)
from actors.settlement import END_FIELDS
from persistence.db import STAGING_TABLE
from persistence.records import (
    BUCKET,
    BUCKET_FIELDS,
    BUCKET_STATES,
    PAYOUT,
    PAYOUT_FIELDS,
    PAYOUT_SETTLED,
    PAYOUT_SETTLED_FIELDS,
    PRICES,
    PRICES_FIELDS,
    REFUND,
    REFUND_FIELDS,
    REFUNDED,
    REFUNDED_FIELDS,
    Batch,
)
from persistence.schema import call_minutes

# A transfer's fields as the ledger stores them; the staging table keeps the millisecond stamp.
# (`committed_at` is the commit transaction's own time, the column's default.)
LEDGER_COLUMNS = (*Transfer._fields[:AT_MS_AT], "created_at", "billed_at")
STAGING_COLUMNS = Transfer._fields
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

# The slow path, for a batch that repeats a transfer already committed (a batch sent again after
# a restart): only the rows actually inserted come back, and only they move balances.
INSERT_NEW_TRANSFERS_SQL = f"""
INSERT INTO ledger (transfer_id, user_id, unit, amount, tx_type, call_id, minute_no, created_at,
                    billed_at)
SELECT transfer_id, user_id, unit, amount, tx_type, call_id, minute_no,
       to_timestamp(at_ms / 1000.0), to_timestamp(billed_ms / 1000.0)
FROM {STAGING_TABLE}
ON CONFLICT (transfer_id) DO NOTHING
RETURNING transfer_id, user_id, unit, amount, tx_type, call_id
"""

# Every transfer but a call's minute moves its account at once; the count says whether each
# account named exists.
APPLY_DELTAS_SQL = """
WITH d AS (
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[]) AS d(user_id, unit, delta)
), w AS (
    UPDATE wallets x SET settled_coins = x.settled_coins + d.delta
    FROM d WHERE d.unit = 'coins' AND x.user_id = d.user_id RETURNING 1
), e AS (
    UPDATE listener_earnings x SET earnings_paise = x.earnings_paise + d.delta
    FROM d WHERE d.unit = 'paise' AND x.listener_id = d.user_id RETURNING 1
)
SELECT (SELECT count(*) FROM w) + (SELECT count(*) FROM e)
"""

# PostgreSQL's type of each field a record carries; the SQL below is built from the records'
# field lists (a field without a type here fails at import).
FIELD_TYPES = {
    "call_id": "bigint",
    "user_id": "bigint",
    "listener_id": "bigint",
    "call_type": "text",
    "tier": "text",
    "rate_coins": "bigint",
    "rate_paise": "bigint",
    "connected_ms": "bigint",
    "minute_ms": "int",
    "max_minutes": "int",
    "start_key": "text",
    "status": "text",
    "end_reason": "text",
    "billed_minutes": "int",
    "coins_spent": "bigint",
    "earnings_paise": "bigint",
    "ended_ms": "bigint",
    "payout_id": "bigint",
    "amount_paise": "bigint",
    "transfer_id": "text",
    "created_ms": "bigint",
    "reason": "text",
    "settled_ms": "bigint",
    "refund_id": "text",
    "minutes": "int",
    "coins": "bigint",
    "paise": "bigint",
    "listener_pays": "boolean",
    "refunded_ms": "bigint",
    "tx_type": "text",
    "expires_ms": "bigint",
    "as_of": "bigint",
    "bucket_id": "text",
    "increment_s": "int",
    "free_s": "int",
    "earnings_rule": "text",
    "share_pct": "int",
    "coin_value_paise": "bigint",
    "price_source": "text",
    "rate_card_id": "bigint",
    "clamped_from": "bigint",
    "coins_charged": "bigint",
    "coins_returned": "bigint",
    "charged_seconds": "bigint",
    "platform_paise": "bigint",
    "prices": "text",
    "bounds": "text",
    "set_ms": "bigint",
    "idempotency_key": "text",
    "offer_id": "bigint",
    "offer_minutes": "int",
    "offer_pays": "text",
    "offer_minutes_used": "int",
    "offer_coins_returned": "bigint",
    "offer_earnings_paise": "bigint",
    "grace_s": "int",
}
# Columns of `calls` kept as timestamps, from a record's milliseconds.
AS_TIMESTAMP = {"connected_ms": "connected_at", "ended_ms": "ended_at"}


def unnest(fields: tuple[str, ...]) -> str:
    """`unnest($1::t1[], ...) AS v(f1, ...)`: a batch's records, one array per field."""
    arrays = ", ".join(f"${i}::{FIELD_TYPES[f]}[]" for i, f in enumerate(fields, 1))
    return f"unnest({arrays}) AS v({', '.join(fields)})"


def column(f: str) -> tuple[str, str]:
    """(the `calls` column a record's field goes to, its value from `v`)."""
    if f in AS_TIMESTAMP:
        return AS_TIMESTAMP[f], f"to_timestamp(v.{f} / 1000.0)"
    return f, f"v.{f}"


START_FIELDS = (*CALL_FIELDS, "start_key")
INSERT_STARTS_SQL = f"""
INSERT INTO calls (status, {", ".join(column(f)[0] for f in START_FIELDS)})
SELECT 'ongoing', {", ".join(column(f)[1] for f in START_FIELDS)}
FROM {unnest(START_FIELDS)}
ON CONFLICT (call_id) DO NOTHING
"""
_ENDED = ", ".join(f"{c} = {v}" for c, v in map(column, END_FIELDS) if c != "call_id")

# A call that ends moves its payer's wallet by the minutes the ledger holds for it (one range
# of the primary key), once: only a call still ongoing ends. The ledger must agree with the
# call's own totals, or the batch is refused. Its offer's claim settles with it: the minutes it
# held go back to the budget, less those it used.
APPLY_ENDS_SQL = f"""
WITH v AS (
    SELECT * FROM {unnest(END_FIELDS)}
), ended AS (
    UPDATE calls c SET {_ENDED}
    FROM v WHERE c.call_id = v.call_id AND c.status = 'ongoing'
    RETURNING c.call_id, c.user_id, c.billed_minutes, c.coins_spent
), minutes AS (
    SELECT e.*, m.n, m.coins FROM ended e CROSS JOIN LATERAL (
        SELECT count(*) AS n, coalesce(-sum(amount), 0)::bigint AS coins FROM ledger
        WHERE {call_minutes("e.call_id")}
    ) m
), w AS (
    UPDATE wallets x SET settled_coins = x.settled_coins - p.coins
    FROM (SELECT user_id, sum(coins)::bigint AS coins FROM minutes GROUP BY user_id) p
    WHERE x.user_id = p.user_id RETURNING 1
), claims AS (
    UPDATE offer_claims k SET settled = true
    FROM ended e WHERE k.call_id = e.call_id AND NOT k.settled
    RETURNING k.call_id, k.offer_id, k.minutes
), budgets AS (
    UPDATE offers o SET minutes_reserved = o.minutes_reserved - b.held,
                        minutes_used = o.minutes_used + b.used
    FROM (SELECT k.offer_id, sum(k.minutes) AS held, sum(v.offer_minutes_used) AS used
          FROM claims k JOIN v USING (call_id) GROUP BY k.offer_id) b
    WHERE o.offer_id = b.offer_id RETURNING 1
)
SELECT (SELECT count(DISTINCT user_id) FROM minutes) AS payers,
       (SELECT count(*) FROM w) AS updated,
       (SELECT string_agg(format('call %s: %s minutes and %s coins in the ledger, '
                                 '%s and %s in its settlement',
                                 call_id, n, coins, billed_minutes, coins_spent), '; ')
        FROM minutes WHERE n <> billed_minutes OR coins <> coins_spent) AS disagree
"""


def ms_to_ts(f: str) -> str:
    return f"to_timestamp(v.{f} / 1000.0)"


# Payouts and refunds, each row with the transfer it belongs to; a replayed row changes nothing.
_PAYOUT_COLUMNS = ", ".join(PAYOUT_FIELDS[:-1])
_REFUND_COLUMNS = ", ".join(REFUND_FIELDS[:-1])
ROW_SQL = {
    PAYOUT: f"""
INSERT INTO payouts ({_PAYOUT_COLUMNS}, status, created_at)
SELECT {", ".join(f"v.{f}" for f in PAYOUT_FIELDS[:-1])}, 'pending', {ms_to_ts("created_ms")}
FROM {unnest(PAYOUT_FIELDS)}
ON CONFLICT (payout_id) DO NOTHING""",
    PAYOUT_SETTLED: f"""
UPDATE payouts p SET status = v.status, reason = v.reason, settled_at = {ms_to_ts("settled_ms")}
FROM {unnest(PAYOUT_SETTLED_FIELDS)}
WHERE p.payout_id = v.payout_id AND p.status = 'pending'""",
    REFUND: f"""
INSERT INTO refunds ({_REFUND_COLUMNS}, created_at)
SELECT {", ".join(f"v.{f}" for f in REFUND_FIELDS[:-1])}, {ms_to_ts("created_ms")}
FROM {unnest(REFUND_FIELDS)}
ON CONFLICT (refund_id) DO NOTHING""",
    REFUNDED: f"""
UPDATE refunds r SET refunded_at = {ms_to_ts("refunded_ms")}
FROM {unnest(REFUNDED_FIELDS)}
WHERE r.refund_id = v.refund_id AND r.refunded_at IS NULL""",
}
ROW_SQL[BUCKET] = f"""
INSERT INTO buckets (bucket_id, user_id, tx_type, coins, expires_at, created_at, coins_left, as_of)
SELECT v.bucket_id, v.user_id, v.tx_type, v.coins, {ms_to_ts("expires_ms")},
       to_timestamp((v.as_of + 1) / 4 / 1000.0), v.coins, v.as_of
FROM {unnest(BUCKET_FIELDS)}
ON CONFLICT (bucket_id) DO NOTHING"""
# A checkpoint newer than the row's (a replayed or an older one changes nothing).
ROW_SQL[BUCKET_STATES] = """
UPDATE buckets b SET coins_left = v.coins_left, as_of = v.as_of, expired = v.expired
FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::boolean[])
     AS v(bucket_id, coins_left, as_of, expired)
WHERE b.bucket_id = v.bucket_id AND b.as_of < v.as_of"""
ROW_SQL[PRICES] = f"""
INSERT INTO listener_prices (listener_id, prices, tier, rate_card_id, bounds, set_at,
                             idempotency_key)
SELECT v.listener_id, v.prices::jsonb, v.tier, v.rate_card_id, v.bounds::jsonb,
       {ms_to_ts("set_ms")}, v.idempotency_key
FROM {unnest(PRICES_FIELDS)}
ON CONFLICT (listener_id, idempotency_key) DO NOTHING"""
# A row is written before its update; a record of lists (BUCKET_STATES) is one row per index.
ROW_ORDER = (PAYOUT, PAYOUT_SETTLED, REFUND, REFUNDED, BUCKET, BUCKET_STATES, PRICES)
LISTED = frozenset({BUCKET_STATES})

# Event ids are read in order (`events.read_events`, the relay's cursor), so they must become
# visible in order although several writers commit at once (each shard commits its own): a
# transaction takes this lock before its events get their ids, and holds it until it commits.
EVENTS_LOCK_SQL = "SELECT pg_advisory_xact_lock($1, 0)"
EVENTS_LOCK_CLASS = 0x6265
# A replayed event (same key) is the row already there; ids follow the batch's order.
INSERT_EVENTS_SQL = """
INSERT INTO events (event_key, type, call_id, user_id, at, data)
SELECT k, t, c, u, to_timestamp(a / 1000.0), d::jsonb
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::text[])
     WITH ORDINALITY AS e(k, t, c, u, a, d, n)
ORDER BY n
ON CONFLICT (event_key) DO NOTHING
"""


async def commit_batch(conn: asyncpg.Connection, batch: Batch) -> tuple[int, bool]:
    """Write one batch in one transaction. Returns the number of ledger rows inserted, and
    whether the batch repeated a transfer already committed (it took the slow path)."""
    inserted, repeating = 0, False
    async with conn.transaction():
        if batch.starts:
            cols = list(zip(*batch.starts, strict=True))
            await conn.execute(INSERT_STARTS_SQL, *cols)
        if batch.transfers:
            inserted, repeating = await _insert_transfers(conn, batch.transfers)
        if batch.ends:
            cols = list(zip(*batch.ends, strict=True))
            row = await conn.fetchrow(APPLY_ENDS_SQL, *cols)
            if row["disagree"] is not None:
                raise InvariantViolation(f"settlements disagree with the ledger: {row['disagree']}")
            if row["payers"] != row["updated"]:
                raise InvariantViolation("a settled call's payer has no wallet")
        for kind in ROW_ORDER:
            rows = batch.rows.get(kind)
            if rows:
                cols = list(zip(*rows, strict=True))
                if kind in LISTED:
                    cols = [[x for listed in col for x in listed] for col in cols]
                await conn.execute(ROW_SQL[kind], *cols)
        if batch.events:
            await conn.execute(EVENTS_LOCK_SQL, EVENTS_LOCK_CLASS)
            keys, kinds, calls, users, at_ms, data = zip(*batch.events, strict=True)
            data = [json.dumps(d, separators=(",", ":")) for d in data]
            await conn.execute(INSERT_EVENTS_SQL, keys, kinds, calls, users, at_ms, data)
    return inserted, repeating


async def _insert_transfers(conn: asyncpg.Connection, transfers: list[tuple]) -> tuple[int, bool]:
    """Insert transfers and move the accounts of all but call minutes. The fast path COPYs
    straight into the ledger; a batch that repeats a committed transfer id fails there and is
    inserted again through the staging table, skipping what is already in."""
    try:
        async with conn.transaction():  # a savepoint: a repeat undoes only the COPY
            await conn.copy_records_to_table(
                "ledger", records=ledger_rows(transfers), columns=LEDGER_COLUMNS
            )
        inserted = transfers
        repeating = False
    except asyncpg.UniqueViolationError:
        repeating = True
        await conn.copy_records_to_table(STAGING_TABLE, records=transfers, columns=STAGING_COLUMNS)
        inserted = await conn.fetch(INSERT_NEW_TRANSFERS_SQL)  # laid out as Transfer's fields
    deltas: dict[tuple[int, str], int] = {}
    for t in inserted:
        if not is_call_minute(t):  # a call's minutes wait for its end
            account = (t[USER_AT], t[UNIT_AT])
            deltas[account] = deltas.get(account, 0) + t[AMOUNT_AT]
    if deltas:
        users, units = zip(*deltas, strict=True)
        moved = await conn.fetchval(APPLY_DELTAS_SQL, users, units, list(deltas.values()))
        if moved != len(deltas):
            raise InvariantViolation(
                f"transfers for {len(deltas)} accounts moved only {moved}: "
                "a transfer names an account that does not exist"
            )
    return len(inserted), repeating


def ledger_rows(transfers: list[tuple]) -> list[tuple]:
    """Transfers as ledger rows: the millisecond stamps become timestamps (one object per
    instant: the minutes of a pass share theirs)."""
    stamps: dict[int, dt.datetime] = {}
    rows = []
    for t in transfers:
        at_ms, billed_ms = t[AT_MS_AT], t[BILLED_MS_AT]
        at = stamps.get(at_ms)
        if at is None:
            at = stamps[at_ms] = EPOCH + dt.timedelta(milliseconds=at_ms)
        billed = stamps.get(billed_ms)
        if billed is None and billed_ms is not None:  # a transfer made before billed_ms had none
            billed = stamps[billed_ms] = EPOCH + dt.timedelta(milliseconds=billed_ms)
        rows.append((*t[:AT_MS_AT], at, billed))
    return rows
