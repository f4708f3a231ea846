"""One retry loop for everything that waits on something restarting: exponential backoff with
full jitter (each pause drawn from zero to the current bound), a named number of tries."""

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
    attempts_max: int = 8
    delay_min_s: float = 0.05
    delay_max_s: float = 2.0

    def delays(self):
        """The pause before each try after the first: full jitter under a doubling bound."""
        bound = self.delay_min_s
        for _ in range(self.attempts_max - 1):
            yield random.uniform(0, bound)
            bound = min(bound * 2, self.delay_max_s)


async def retrying(
    attempt: Callable[[], Awaitable[T]],
    policy: Retry,
    transient: Callable[[BaseException], bool] = lambda e: isinstance(e, EngineUnavailable),
) -> T:
    """`attempt()`'s answer; a transient failure is tried again up to `policy.attempts_max`
    times in all, and the last one is raised."""
    delays = policy.delays()
    while True:
        try:
            return await attempt()
        except Exception as e:
            if not transient(e):
                raise
            delay = next(delays, None)
            if delay is None:
                raise
            await asyncio.sleep(delay)
