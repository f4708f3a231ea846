"""The write-behind ledger writer: batches of records in, one PostgreSQL transaction per flush.

Each `write` call returns once its records are committed. The writer groups the writes of many
producers into one transaction, flushing when the batch reaches `batch_size_max` records, when
its oldest record is `flush_interval_ms` old, or at once if a producer waits on a write-through.

Inside a flush, transfers are COPYed straight into the ledger; if the batch repeats a transfer
already committed, that COPY is undone and the batch goes through a staging table with ON
CONFLICT DO NOTHING instead, so a replayed transfer moves nothing. Each account is moved by the
rows actually inserted, in the same transaction, except for call minutes: those move the payer's
wallet once, when the call's end is written (`wallet_balances` shows them before that). The
database always holds a consistent prefix of what the actors did.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from collections import deque
from dataclasses import dataclass

import asyncpg

from actors.errors import InvariantViolation
from actors.money import SPEND, Transfer
from persistence.db import STAGING_TABLE, get_pool, mask_url
from persistence.records import Batch, unpack
from persistence.retry import Retry, retrying
from persistence.schema import call_minutes
from persistence.waiting import wait_event

log = logging.getLogger("billing.writer")

# A transfer's fields as the ledger stores them; the staging table keeps the millisecond stamp.
LEDGER_COLUMNS = (*Transfer._fields[:7], "created_at")
STAGING_COLUMNS = Transfer._fields
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

# The slow path, for a batch that repeats a transfer already committed (a batch sent again after
# a restart): only the rows actually inserted come back, and only they move balances.
INSERT_NEW_TRANSFERS_SQL = f"""
INSERT INTO ledger (transfer_id, user_id, unit, amount, tx_type, call_id, minute_no, created_at)
SELECT transfer_id, user_id, unit, amount, tx_type, call_id, minute_no,
       to_timestamp(at_ms / 1000.0)
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

INSERT_STARTS_SQL = """
INSERT INTO calls (call_id, user_id, listener_id, call_type, tier, rate_coins, rate_paise,
                   status, connected_at, minute_ms, max_minutes, start_key)
SELECT v.call_id, v.user_id, v.listener_id, v.call_type, v.tier, v.rate_coins, v.rate_paise,
       'ongoing', to_timestamp(v.connected_ms / 1000.0), v.minute_ms, v.max_minutes, v.start_key
FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::bigint[],
            $7::bigint[], $8::bigint[], $9::int[], $10::int[], $11::text[])
     AS v(call_id, user_id, listener_id, call_type, tier, rate_coins, rate_paise, connected_ms,
          minute_ms, max_minutes, start_key)
ON CONFLICT (call_id) DO NOTHING
"""

# A call that ends moves its payer's wallet by the minutes the ledger holds for it (one range
# of the primary key), once: only a call still ongoing ends. The ledger must agree with the
# call's own totals, or the batch is refused.
APPLY_ENDS_SQL = f"""
WITH v AS (
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::int[], $5::bigint[],
                         $6::bigint[], $7::bigint[])
        AS v(call_id, status, reason, billed, coins, earnings, ended_ms)
), ended AS (
    UPDATE calls c SET status = v.status, end_reason = v.reason, billed_minutes = v.billed,
           coins_spent = v.coins, earnings_paise = v.earnings,
           ended_at = to_timestamp(v.ended_ms / 1000.0)
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
)
SELECT (SELECT count(DISTINCT user_id) FROM minutes) AS payers,
       (SELECT count(*) FROM w) AS updated,
       (SELECT string_agg(format('call %s: %s minutes and %s coins in the ledger, '
                                 '%s and %s in its settlement',
                                 call_id, n, coins, billed_minutes, coins_spent), '; ')
        FROM minutes WHERE n <> billed_minutes OR coins <> coins_spent) AS disagree
"""

# A replayed event (same key) is the row already there; ids follow the batch's order.
INSERT_EVENTS_SQL = """
INSERT INTO events (event_key, type, call_id, user_id, at, data)
SELECT k, t, c, u, to_timestamp(a / 1000.0), d::jsonb
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::text[])
     WITH ORDINALITY AS e(k, t, c, u, a, d, n)
ORDER BY n
ON CONFLICT (event_key) DO NOTHING
"""

# Errors that mean "PostgreSQL is not reachable right now": retry with backoff, keep the buffer.
TRANSIENT_ERRORS = (
    OSError,
    ConnectionError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
)


@dataclass(frozen=True)
class WriterLimits:
    batch_size_max: int = 20_000
    flush_interval_ms: int = 200
    buffer_records_max: int = 200_000
    retry_backoff_min_ms: int = 50
    retry_backoff_max_ms: int = 5_000


class _Entry:
    __slots__ = ("records", "future", "enqueued_at", "urgent")

    def __init__(self, records: list[list], future: asyncio.Future, urgent: bool) -> None:
        self.records = records
        self.future = future
        self.enqueued_at = time.monotonic()
        self.urgent = urgent


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
        if batch.events:
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
    for t in inserted:  # by position: transfer_id, user_id, unit, amount, tx_type, call_id
        if t[4] != SPEND or t[5] is None:  # a call's minutes wait for its end
            account = (t[1], t[2])
            deltas[account] = deltas.get(account, 0) + t[3]
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
    """Transfers as ledger rows: the millisecond stamp becomes a timestamp (one per instant:
    the minutes of a pass share theirs)."""
    stamps: dict[int, dt.datetime] = {}
    rows = []
    for t in transfers:
        at_ms = t[7]
        at = stamps.get(at_ms)
        if at is None:
            at = stamps[at_ms] = EPOCH + dt.timedelta(milliseconds=at_ms)
        rows.append((*t[:7], at))
    return rows


class LedgerWriter:
    """Buffered, bounded, retrying writer. Runs inside whatever process hosts it."""

    def __init__(self, database_url: str, limits: WriterLimits | None = None, observe=None) -> None:
        self.database_url = database_url
        self.limits = limits or WriterLimits()
        # observe(records, seconds, lag_ms) after each commit, observe(None, 0, 0) on a retry.
        self.observe = observe
        self._queue: deque[_Entry] = deque()
        self._queued_records = 0
        self._wake = asyncio.Event()
        self._room = asyncio.Condition()
        self._admission = asyncio.Lock()  # FIFO: writers get room in arrival order
        self._flushing = asyncio.Lock()  # one transaction at a time keeps the prefix ordered
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._hurried = False
        self.stats = {
            "batches_committed": 0,
            "records_committed": 0,
            "ledger_rows_inserted": 0,
            "batches_repeating": 0,
            "last_flush_records": 0,
            "last_flush_ms": 0.0,
            "flush_ms_max": 0.0,
            "retries": 0,
            "failed_batches": 0,
            "last_error": None,
        }

    def _ensure_started(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def write(self, records: list[list] | bytes, urgent: bool = False) -> None:
        """Queue records and return once they are committed (backpressure: waits for room)."""
        if isinstance(records, bytes | bytearray):
            records = unpack(records)
        if not records:
            return
        self._ensure_started()
        future = asyncio.get_running_loop().create_future()
        async with self._admission, self._room:
            await self._room.wait_for(
                lambda: (
                    self._queued_records == 0
                    or self._queued_records + len(records) <= self.limits.buffer_records_max
                )
            )
            self._queue.append(_Entry(records, future, urgent))
            self._queued_records += len(records)
        self._wake.set()
        await future

    def hurry(self) -> None:
        """Commit what is queued now, and the next write if none is: a producer has someone
        waiting on a write it sent as write-behind (it sends one write at a time, so the
        waiting one is stuck behind it for up to flush_interval_ms otherwise)."""
        self._hurried = True
        self._wake.set()

    def lag(self) -> dict:
        oldest = self._queue[0].enqueued_at if self._queue else None
        return {
            "queued_writes": len(self._queue),
            "queued_records": self._queued_records,
            "oldest_queued_ms": 0.0 if oldest is None else (time.monotonic() - oldest) * 1000,
        }

    def state(self) -> dict:
        return {
            "database": mask_url(self.database_url),
            "limits": self.limits.__dict__,
            **self.lag(),
            **self.stats,
        }

    def _due(self) -> float | None:
        """Seconds until the next flush is due, 0 for now, None when there is nothing."""
        if not self._queue:
            return None
        if self._stopping or self._queued_records >= self.limits.batch_size_max:
            return 0.0
        if self._hurried or any(e.urgent for e in self._queue):
            return 0.0
        age = time.monotonic() - self._queue[0].enqueued_at
        return max(0.0, self.limits.flush_interval_ms / 1000 - age)

    async def _run(self) -> None:
        while True:
            due = self._due()
            if due is None or due > 0:
                await wait_event(self._wake, due)
                continue
            await self._flush_once()

    def _take(self) -> list[_Entry]:
        self._hurried = False
        taken: list[_Entry] = []
        count = 0
        while self._queue and (
            not taken or count + len(self._queue[0].records) <= self.limits.batch_size_max
        ):
            entry = self._queue.popleft()
            taken.append(entry)
            count += len(entry.records)
        return taken

    async def _flush_once(self) -> None:
        async with self._flushing:
            if self._queue:
                await self._flush_taken(self._take())

    async def _flush_taken(self, entries: list[_Entry]) -> None:
        batch = Batch()
        try:
            for e in entries:
                batch.add(e.records)
        except InvariantViolation as exc:
            await self._fail(entries, exc)
            return
        await self._commit_with_retry(entries, batch)

    async def _commit_with_retry(self, entries: list[_Entry], batch: Batch) -> None:
        started = time.monotonic()

        async def commit() -> tuple[int, bool]:
            nonlocal started
            started = time.monotonic()
            pool = await get_pool(self.database_url)
            async with pool.acquire() as conn:
                return await commit_batch(conn, batch)

        def retried(exc: BaseException, delay_s: float) -> None:
            # PostgreSQL is away: keep the batch, wait, retry. Producers block on the bounded
            # buffer meanwhile (rule 6).
            self.stats["retries"] += 1
            self.stats["last_error"] = f"{type(exc).__name__}: {exc}"
            if self.observe is not None:
                self.observe(None, 0.0, 0.0)
            log.warning("ledger flush failed, retrying in %.0f ms: %s", delay_s * 1000, exc)

        policy = Retry(
            None, self.limits.retry_backoff_min_ms / 1000, self.limits.retry_backoff_max_ms / 1000
        )
        try:
            inserted, repeating = await retrying(
                commit, policy, lambda e: isinstance(e, TRANSIENT_ERRORS), retried
            )
        except (asyncpg.PostgresError, InvariantViolation) as exc:
            # A CHECK or constraint refused the batch: a broken rule of money, not load.
            await self._fail(entries, InvariantViolation(f"ledger batch refused: {exc}"))
            return
        elapsed_ms = (time.monotonic() - started) * 1000
        n = len(batch)
        self.stats["batches_committed"] += 1
        self.stats["records_committed"] += n
        self.stats["ledger_rows_inserted"] += inserted
        self.stats["batches_repeating"] += repeating
        self.stats["last_flush_records"] = n
        self.stats["last_flush_ms"] = round(elapsed_ms, 2)
        self.stats["flush_ms_max"] = round(max(self.stats["flush_ms_max"], elapsed_ms), 2)
        if self.observe is not None:
            self.observe(n, elapsed_ms / 1000, self.lag()["oldest_queued_ms"])
        await self._release(entries)
        for e in entries:
            if not e.future.done():
                e.future.set_result(None)

    async def _release(self, entries: list[_Entry]) -> None:
        async with self._room:
            self._queued_records -= sum(len(e.records) for e in entries)
            self._room.notify_all()

    async def _fail(self, entries: list[_Entry], exc: Exception) -> None:
        log.error("ledger batch failed: %s", exc)
        self.stats["failed_batches"] += 1
        self.stats["last_error"] = str(exc)
        await self._release(entries)
        for e in entries:
            if not e.future.done():
                e.future.set_exception(exc)

    async def drain(self) -> None:
        """Flush everything queued (a clean stop, or `Engine.sync`)."""
        self._stopping = True
        self._wake.set()
        while self._queue:
            await self._flush_once()
        async with self._flushing:
            pass  # a flush already under way commits before this returns
        self._stopping = False
