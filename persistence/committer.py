"""One PostgreSQL transaction per batch of records: the batch checked (`records.Batch`), then
committed (`commit.commit_batch`) on the pool, or on the one connection that holds its
producer's fence. No queue and no retry of its own: the writer (`writer.LedgerWriter`) queues
and retries around it, and a shard's client (`client.WriterClient`) does both for the shard,
which writes through a Committer (a `link.WriterLink`).

A producer's fence: a writer that commits one producer's records in that producer's process
holds a session advisory lock keyed by the producer on the connection it commits on. A
successor (Ray restarts a shard that died) takes it before it first reads PostgreSQL, and
PostgreSQL frees it only when the predecessor's connection has ended, after any commit it had
under way: so the successor reads everything its predecessor committed, and nothing of it
commits later. Waiting for it is bounded by FENCE_WAIT_S (`FenceHeld`, transient: retried).
"""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg

from actors.errors import InvariantViolation
from persistence.commit import commit_batch
from persistence.db import connect, get_pool, mask_url
from persistence.records import Batch

log = logging.getLogger("billing.writer")

FENCE_LOCK_CLASS = 0x6269  # the first key of pg_advisory_lock(int, int) for producer fences
FENCE_WAIT_S = 30.0
FENCE_POLL_S = 0.05

# Errors that mean "PostgreSQL is not reachable right now": retry with backoff, keep the batch.
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


class FenceHeld(TimeoutError):
    """Another connection still holds this producer's fence (transient: retried)."""


class Committer:
    def __init__(self, database_url: str, observe=None, fence: int | None = None) -> None:
        self.database_url = database_url
        # The producer whose fence this holds; None: commits on the process's pool.
        self.fence = fence
        # observe(records, seconds, lag_ms) after each commit, observe(None, 0, 0) on a failed
        # attempt that will be tried again.
        self.observe = observe
        self._conn: asyncpg.Connection | None = None
        self._connecting = asyncio.Lock()
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

    @staticmethod
    def is_transient(exc: BaseException) -> bool:
        return isinstance(exc, TRANSIENT_ERRORS)

    async def commit(self, batch: Batch, lag_ms: float = 0.0) -> None:
        """One transaction for `batch`, once. A transient failure is counted and raised (the
        caller tries again); any other is a broken rule of money: `InvariantViolation`."""
        started = time.monotonic()
        try:
            if self.fence is not None:
                inserted, repeating = await self._commit_fenced(batch)
            else:
                async with (await get_pool(self.database_url)).acquire() as conn:
                    inserted, repeating = await commit_batch(conn, batch)
        except TRANSIENT_ERRORS as exc:
            self.stats["retries"] += 1
            self.stats["last_error"] = f"{type(exc).__name__}: {exc}"
            if self.observe is not None:
                self.observe(None, 0.0, 0.0)
            raise
        except (asyncpg.PostgresError, InvariantViolation) as exc:
            # A CHECK or constraint refused the batch: a broken rule of money, not load.
            self.failed(exc)
            raise InvariantViolation(f"ledger batch refused: {exc}") from exc
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
            self.observe(n, elapsed_ms / 1000, lag_ms)

    def failed(self, exc: BaseException) -> None:
        log.error("ledger batch failed: %s", exc)
        self.stats["failed_batches"] += 1
        self.stats["last_error"] = str(exc)

    async def fenced(self) -> asyncpg.Connection:
        """The connection this commits on, holding its producer's fence (taken, on a new
        connection, once the predecessor's has ended; FenceHeld after FENCE_WAIT_S)."""
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

    async def close(self) -> None:
        """Let go of the fenced connection (and so the fence)."""
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close()

    def state(self) -> dict:
        return {"database": mask_url(self.database_url), "fence": self.fence, **self.stats}

    # -- as a shard's link (`link.WriterLink`): its client queues and retries ----------------

    async def write(self, batch: list[list], urgent: bool = False) -> None:
        checked = Batch()
        try:
            checked.add(batch)
        except InvariantViolation as exc:
            self.failed(exc)
            raise
        await self.commit(checked)

    async def hurry(self) -> None:
        return None  # nothing is held here: each batch commits as it comes

    async def drain(self) -> None:
        return None

    async def take_over(self) -> None:
        if self.fence is not None:
            await self.fenced()
