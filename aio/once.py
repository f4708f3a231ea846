"""Loading an actor's state from PostgreSQL once, on its first request after a (re)start."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class LoadOnce:
    """Awaiting it runs `load` once; concurrent callers share that run. A load that failed
    (PostgreSQL away while the actor restarted) is run again by the next caller, rather than
    its error being answered forever."""

    def __init__(self, load: Callable[[], Awaitable[None]]) -> None:
        self._load = load
        self._task: asyncio.Task | None = None

    async def __call__(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._load())
        task = self._task
        try:
            await asyncio.shield(task)
        except Exception:
            if task.done() and self._task is task:
                self._task = None
            raise
