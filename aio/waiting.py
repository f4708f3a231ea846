"""Small asyncio helpers shared by the writer and its clients."""

from __future__ import annotations

import asyncio
import contextlib


async def wait_event(event: asyncio.Event, timeout_s: float | None) -> None:
    """Wait for `event` at most `timeout_s` seconds (forever when None), then clear it."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=timeout_s)
    event.clear()
