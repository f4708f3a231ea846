"""The write-behind ledger writer: the writes of many producers in, one PostgreSQL transaction
per flush (`committer.Committer`), queued, grouped and retried here.

Each `write` call returns once its records are committed. The writer groups the writes of many
producers into one transaction, flushing when the batch reaches `batch_size_max` records, when
its oldest record is `flush_interval_ms` old, or at once if a producer waits on a write-through.

Inside a flush, transfers are COPYed straight into the ledger; if the batch repeats a transfer
already committed, that COPY is undone and the batch goes through a staging table with ON
CONFLICT DO NOTHING instead, so a replayed transfer moves nothing. Each account is moved by the
rows actually inserted, in the same transaction, except for call minutes: those move the payer's
wallet once, when the call's end is written (`wallet_balances` shows them before that). The
database always holds a consistent prefix of what the actors did. A LedgerWriter is a
`link.WriterLink`: a producer's client can write through one in its own process (a test's).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass

from actors.errors import InvariantViolation
from aio.flushing import backoff, due_in, flush_when_due
from aio.retry import retrying
from persistence.committer import TRANSIENT_ERRORS, Committer, FenceHeld
from persistence.db import mask_url
from persistence.records import Batch, unpack

log = logging.getLogger("billing.writer")


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
        # One transaction per flush: on the pool, or under the fence of producer `fence`.
        self.committer = Committer(database_url, observe, fence)
        self._queue: deque[_Entry] = deque()
        self._queued_records = 0
        self._wake = asyncio.Event()
        self._room = asyncio.Condition()
        self._admission = asyncio.Lock()  # FIFO: writers get room in arrival order
        self._flushing = asyncio.Lock()  # one transaction at a time keeps the prefix ordered
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._hurried = False

    @property
    def stats(self) -> dict:
        return self.committer.stats

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

    async def hurry(self) -> None:
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
            self.committer.failed(exc)
            await self._fail(entries, exc)
            return

        def retried(exc: BaseException, delay_s: float) -> None:
            # PostgreSQL is away: keep the batch, wait, retry. Producers block on the bounded
            # buffer meanwhile (rule 6).
            log.warning("ledger flush failed, retrying in %.0f ms: %s", delay_s * 1000, exc)

        policy = backoff(self.limits.retry_backoff_min_ms, self.limits.retry_backoff_max_ms)
        try:
            await retrying(
                lambda: self.committer.commit(batch, self.lag()["oldest_queued_ms"]),
                policy,
                self.committer.is_transient,
                retried,
            )
        except InvariantViolation as exc:
            await self._fail(entries, exc)
            return
        await self._release(entries)
        for e in entries:
            if not e.future.done():
                e.future.set_result(None)

    async def fenced(self):
        """The connection this writer commits on, holding its producer's fence."""
        return await self.committer.fenced()

    async def _release(self, entries: list[_Entry]) -> None:
        async with self._room:
            self._queued_records -= sum(len(e.records) for e in entries)
            self._room.notify_all()

    async def _fail(self, entries: list[_Entry], exc: Exception) -> None:
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
        await self.committer.close()

    # -- as a producer's link in its own process (`link.WriterLink`) -------------------------

    async def take_over(self) -> None:
        await self.drain()

    @staticmethod
    def is_transient(exc: BaseException) -> bool:
        return False  # it retries what is transient itself, for ever


__all__ = ["TRANSIENT_ERRORS", "FenceHeld", "LedgerWriter", "WriterLimits", "combined"]
