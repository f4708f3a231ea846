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
import logging
import time
from collections import deque
from dataclasses import dataclass

import asyncpg

from actors.errors import InvariantViolation
from aio.flushing import backoff, due_in, flush_when_due
from aio.retry import retrying
from persistence.commit import commit_batch
from persistence.db import connect, get_pool, mask_url
from persistence.records import Batch, unpack

log = logging.getLogger("billing.writer")

# Errors that mean "PostgreSQL is not reachable right now": retry with backoff, keep the buffer.
TRANSIENT_ERRORS = (
    OSError,
    ConnectionError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    # Two writers' transactions that waited on each other's rows (a deadlock) or snapshots: the
    # whole batch is undone, and committing it again is what a retry does.
    asyncpg.TransactionRollbackError,
)

# A writer that commits one producer's records, in that producer's process (a shard commits its
# own), holds a session advisory lock keyed by the producer on the one connection it commits on:
# the producer's fence. A successor (Ray restarts a shard that died) takes it before it first
# reads PostgreSQL, and PostgreSQL frees it only when the predecessor's connection has ended,
# after any commit it had under way: so the successor reads everything its predecessor
# committed, and nothing of it commits later. Waiting for it is bounded by FENCE_WAIT_S, then
# retried (a process that still holds it is alive: it is not ours to write for).
FENCE_LOCK_CLASS = 0x6269  # the first key of pg_advisory_lock(int, int) for producer fences
FENCE_WAIT_S = 30.0
FENCE_POLL_S = 0.05


class FenceHeld(TimeoutError):
    """Another connection still holds this producer's fence (transient: retried)."""


@dataclass(frozen=True)
class WriterLimits:
    batch_size_max: int = 20_000
    flush_interval_ms: int = 200
    buffer_records_max: int = 200_000
    retry_backoff_min_ms: int = 50
    retry_backoff_max_ms: int = 5_000


# Of several writers' `state()`: what adds up, and what is the worst of them.
SUMMED = (
    "batches_committed",
    "records_committed",
    "ledger_rows_inserted",
    "batches_repeating",
    "retries",
    "failed_batches",
    "queued_writes",
    "queued_records",
)
WORST = ("oldest_queued_ms", "flush_ms_max")


def combined(first: dict, others: dict[str, dict]) -> dict:
    """The states of an engine's writers as one: `first`'s (the writer actor's: its process,
    limits, last flush), its counts summed with `others`' and its lags the worst of them, and
    each writer's own state under `writers`."""
    every = [first, *others.values()]
    out = dict(first)
    for name in SUMMED:
        out[name] = sum(w.get(name, 0) for w in every)
    for name in WORST:
        out[name] = max(w.get(name, 0.0) for w in every)
    out["last_error"] = next((w["last_error"] for w in every if w.get("last_error")), None)
    out["writers"] = {"writer": first, **others}
    return out


class _Entry:
    __slots__ = ("records", "future", "enqueued_at", "urgent")

    def __init__(self, records: list[list], future: asyncio.Future, urgent: bool) -> None:
        self.records = records
        self.future = future
        self.enqueued_at = time.monotonic()
        self.urgent = urgent


class LedgerWriter:
    """Buffered, bounded, retrying writer. Runs inside whatever process hosts it."""

    def __init__(
        self,
        database_url: str,
        limits: WriterLimits | None = None,
        observe=None,
        fence: int | None = None,
    ) -> None:
        self.database_url = database_url
        self.limits = limits or WriterLimits()
        # The producer whose fence this writer holds; None: commits on the process's pool.
        self.fence = fence
        self._conn: asyncpg.Connection | None = None
        self._connecting = asyncio.Lock()
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
        now = self._stopping or self._hurried or any(e.urgent for e in self._queue)
        limits = self.limits
        oldest_at = self._queue[0].enqueued_at
        return due_in(
            self._queued_records, limits.batch_size_max, now, oldest_at, limits.flush_interval_ms
        )

    async def _run(self) -> None:
        await flush_when_due(self._due, self._wake, self._flush_once)

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
            if self.fence is not None:
                return await self._commit_fenced(batch)
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

        policy = backoff(self.limits.retry_backoff_min_ms, self.limits.retry_backoff_max_ms)
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

    async def fenced(self) -> asyncpg.Connection:
        """The connection this writer commits on, holding its producer's fence (taken, on a
        new connection, once the predecessor's has ended; FenceHeld after FENCE_WAIT_S)."""
        async with self._connecting:
            if self._conn is not None and not self._conn.is_closed():
                return self._conn
            conn = await connect(self.database_url)
            try:
                deadline = time.monotonic() + FENCE_WAIT_S
                while not await conn.fetchval(
                    "SELECT pg_try_advisory_lock($1, $2)", FENCE_LOCK_CLASS, self.fence
                ):
                    if time.monotonic() > deadline:
                        raise FenceHeld(
                            f"producer {self.fence}'s fence on {mask_url(self.database_url)} is "
                            f"still held by another connection after {FENCE_WAIT_S:.0f} s"
                        )
                    await asyncio.sleep(FENCE_POLL_S)
            except BaseException:
                conn.terminate()
                raise
            self._conn = conn
            return conn

    async def _commit_fenced(self, batch: Batch) -> tuple[int, bool]:
        conn = await self.fenced()
        try:
            return await commit_batch(conn, batch)
        except TRANSIENT_ERRORS as e:
            if not isinstance(e, asyncpg.TransactionRollbackError):
                conn.terminate()  # lost or unknown: a new connection takes the fence again
            raise

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

    async def close(self) -> None:
        """Let go of the fenced connection (and so the fence)."""
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close()
