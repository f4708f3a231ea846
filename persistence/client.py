"""The producer's side of the writer: a bounded local buffer and one write in flight.

Each process that changes money (a shard, a wallet actor, a call actor) owns one client. Records
are appended synchronously, in the order the money moved; a background task sends them to the
writer in batches, one batch at a time so that the writer commits them in that order. A batch
stays here until the writer says it is committed: if the writer dies, the batch is sent again
to its successor, and the ledger's ON CONFLICT makes the repeat harmless.
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
from persistence.link import WriterLink

log = logging.getLogger("billing.client")


@dataclass(frozen=True)
class ClientLimits:
    batch_size_max: int = 10_000
    flush_interval_ms: int = 50
    pending_records_max: int = 100_000
    retry_backoff_min_ms: int = 50
    retry_backoff_max_ms: int = 2_000


class WriterClient:
    def __init__(self, link: WriterLink, limits: ClientLimits | None = None) -> None:
        # Where the batches go (`link.WriterLink`): the writer actor, or a shard's own
        # Committer; it says which of its failures are worth sending again.
        self.link = link
        # The batch under way was sent as write-behind and the writer has not been hurried.
        self._in_flight_behind = False
        self.limits = limits or ClientLimits()
        self._buffer: deque[list] = deque()
        self._appended = 0  # records ever appended; a record's position is its sequence number
        self._committed = 0
        self._oldest_at: float | None = None
        self._urgent_through = 0
        self._waiters: list[tuple[int, asyncio.Future]] = []
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._task: asyncio.Task | None = None
        self.failed: BaseException | None = None
        self.stats = {"batches_sent": 0, "send_retries": 0, "last_send_ms": 0.0}

    def _ensure_started(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    @property
    def pending(self) -> int:
        return self._appended - self._committed

    def has_room(self) -> bool:
        return self.pending < self.limits.pending_records_max

    async def room(self) -> None:
        """Wait until the buffer is below its bound (backpressure on the producer)."""
        self._raise_if_failed()
        while not self.has_room():
            self._room.clear()
            await self._room.wait()
            self._raise_if_failed()

    def append(self, records: list[list]) -> int:
        """Queue records in order; returns the sequence number of the last one."""
        self._raise_if_failed()
        if not records:
            return self._appended
        self._ensure_started()
        if self._oldest_at is None:
            self._oldest_at = time.monotonic()
        was_empty = not self._buffer
        self._buffer.extend(records)
        self._appended += len(records)
        if was_empty or len(self._buffer) >= self.limits.batch_size_max:
            # The sender sleeps without a deadline while the buffer is empty: start its clock.
            self._wake.set()
        return self._appended

    async def durable(self, records: list[list]) -> None:
        """Write-through: return once these records (and all before them) are committed."""
        await self.wait_committed(self.append(records), urgent=True)

    async def wait_committed(self, seq: int | None = None, urgent: bool = True) -> None:
        seq = self._appended if seq is None else seq
        if seq <= self._committed:
            return
        self._raise_if_failed()
        self._ensure_started()
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((seq, future))
        if urgent:
            self._urgent_through = max(self._urgent_through, seq)
            self._wake.set()
            if self._in_flight_behind:
                # Someone waits behind a write-behind batch the writer may hold for its flush
                # interval: ask it to commit now (once per batch).
                self._in_flight_behind = False
                asyncio.get_running_loop().create_task(self._hurry_writer())
        await future

    async def _hurry_writer(self) -> None:
        try:
            await self.link.hurry()
        except Exception as e:  # noqa: BLE001 - only a wait shortened: the batch is sent anyway
            log.debug("writer not hurried: %s", e)

    def _raise_if_failed(self) -> None:
        if self.failed is not None:
            raise InvariantViolation(f"ledger writes failed, state must be reloaded: {self.failed}")

    def _due(self) -> float | None:
        urgent = self._urgent_through > self._committed
        limits = self.limits
        return due_in(
            len(self._buffer),
            limits.batch_size_max,
            urgent,
            self._oldest_at,
            limits.flush_interval_ms,
        )

    async def _run(self) -> None:
        await flush_when_due(
            self._due, self._wake, self._send_one_batch, lambda: self.failed is None
        )

    async def _send_one_batch(self) -> None:
        n = min(len(self._buffer), self.limits.batch_size_max)
        batch = [self._buffer[i] for i in range(n)]
        urgent = self._urgent_through > self._committed

        async def send() -> float:
            started = time.monotonic()
            await self.link.write(batch, urgent)
            return started

        def retried(exc: BaseException, delay_s: float) -> None:
            self.stats["send_retries"] += 1
            log.warning("writer unreachable, resending in %.0f ms: %s", delay_s * 1000, exc)

        policy = backoff(self.limits.retry_backoff_min_ms, self.limits.retry_backoff_max_ms)
        self._in_flight_behind = not urgent
        try:
            started = await retrying(send, policy, self.link.is_transient, retried)
        except Exception as exc:  # noqa: BLE001 - not transient: the producer must reload
            self._fail(exc)
            return
        finally:
            self._in_flight_behind = False
        self.stats["batches_sent"] += 1
        self.stats["last_send_ms"] = round((time.monotonic() - started) * 1000, 2)
        for _ in range(n):
            self._buffer.popleft()
        self._committed += n
        self._oldest_at = time.monotonic() if self._buffer else None
        if self.has_room():
            self._room.set()
        still: list[tuple[int, asyncio.Future]] = []
        for seq, fut in self._waiters:
            if seq <= self._committed:
                if not fut.done():
                    fut.set_result(None)
            else:
                still.append((seq, fut))
        self._waiters = still

    def _fail(self, exc: BaseException) -> None:
        log.error("ledger write refused: %s", exc)
        self.failed = exc
        self._room.set()
        for _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(InvariantViolation(f"ledger write refused: {exc}"))
        self._waiters = []

    def state(self) -> dict:
        return {
            "pending_records": self.pending,
            "committed_records": self._committed,
            "oldest_pending_ms": 0.0
            if self._oldest_at is None
            else round((time.monotonic() - self._oldest_at) * 1000, 1),
            "failed": None if self.failed is None else str(self.failed),
            **self.stats,
        }
