"""One retry loop for everything that waits on something restarting or unreachable (the writer
on PostgreSQL, a producer on the writer, a shard on its peer): exponential backoff with full
jitter (each pause drawn from zero to a bound that doubles up to its maximum)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from actors.errors import EngineUnavailable

T = TypeVar("T")


@dataclass(frozen=True)
class Retry:
    """`attempts_max` tries in all, or None: until it succeeds (for what must not be dropped,
    rule 6: the writer keeps its batch while PostgreSQL is away, and producers wait)."""

    attempts_max: int | None = 8
    delay_min_s: float = 0.05
    delay_max_s: float = 2.0


async def retrying(
    attempt: Callable[[], Awaitable[T]],
    policy: Retry,
    transient: Callable[[BaseException], bool] = lambda e: isinstance(e, EngineUnavailable),
    on_retry: Callable[[BaseException, float], None] | None = None,
) -> T:
    """`attempt()`'s answer. A transient failure is tried again after a pause (`on_retry` is
    told of it first); past `policy.attempts_max` tries, the last failure is raised."""
    bound_s, tries = policy.delay_min_s, 1
    while True:
        try:
            return await attempt()
        except Exception as e:
            if not transient(e):
                raise
            if policy.attempts_max is not None and tries >= policy.attempts_max:
                raise
            delay_s = random.uniform(0, bound_s)
            if on_retry is not None:
                on_retry(e, delay_s)
            await asyncio.sleep(delay_s)
            bound_s = min(bound_s * 2, policy.delay_max_s)
            tries += 1
