"""When a buffer of records is flushed, and the loop that flushes it: the one rule the producers'
clients (`client.WriterClient`) and the writer (`writer.LedgerWriter`) share. A buffer is due at
once when it is full or someone waits on it, else when its oldest record is the flush interval
old; a flush that cannot reach the other side is retried with backoff, for ever, keeping what it
holds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aio.retry import Retry
from aio.waiting import wait_event


def due_in(
    records: int, records_max: int, now: bool, oldest_at: float | None, interval_ms: int
) -> float | None:
    """Seconds until a buffer of `records` is due (0: now), None when it is empty. `now`: someone
    waits on it; `oldest_at`: when its oldest record arrived (time.monotonic)."""
    if not records:
        return None
    if now or records >= records_max:
        return 0.0
    age = time.monotonic() - (oldest_at or time.monotonic())
    return max(0.0, interval_ms / 1000 - age)


async def flush_when_due(
    due: Callable[[], float | None],
    wake: asyncio.Event,
    flush: Callable[[], Awaitable[None]],
    going: Callable[[], bool] = lambda: True,
) -> None:
    """While `going()`: sleep until the buffer is due (or `wake` is set), then `flush()`."""
    while going():
        seconds = due()
        if seconds is None or seconds > 0:
            await wait_event(wake, seconds)
            continue
        await flush()


def backoff(min_ms: int, max_ms: int) -> Retry:
    """Retries without end, from `min_ms` doubling up to `max_ms` between tries."""
    return Retry(None, min_ms / 1000, max_ms / 1000)
