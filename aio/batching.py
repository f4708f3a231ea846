"""Group commit for requests: many callers, one message.

A `Batcher` stands in front of something that costs the same for one item as for many (a Ray
message to a host, a PostgreSQL read by a list of ids, a Redis pipeline). Callers `submit` one
item each and await its own outcome; the batcher sends what has queued as one batch.

- A lone item is not kept waiting for company: it goes out on the next turn of the event loop
  (so the items submitted in the same turn, by one `gather`, go together).
- While `in_flight_max` batches are under way, new items queue; the next batch takes up to
  `size_max` of them as soon as one returns. Under load the batches grow by themselves, with no
  timer to tune: the wait is the round trip already being paid.
- At most `queued_max` items wait; past it `submit` refuses with `CapacityExceeded`, an error
  the caller may retry, instead of the queue growing.

`send(items)` returns one outcome per item, in order; an outcome that is an exception is raised
to that item's caller alone. If `send` itself raises, every item of the batch gets the error.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from actors.errors import CapacityExceeded, InvariantViolation

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class BatchLimits:
    size_max: int = 256  # items in one batch
    in_flight_max: int = 2  # batches sent and not yet answered
    queued_max: int = 10_000  # items waiting for a batch


class Batcher(Generic[T, R]):
    def __init__(
        self,
        send: Callable[[list[T]], Awaitable[list[R | BaseException]]],
        limits: BatchLimits | None = None,
        name: str = "batch",
    ) -> None:
        self._send = send
        self.limits = limits or BatchLimits()
        self.name = name
        self._queue: deque[tuple[T, asyncio.Future]] = deque()
        self._in_flight = 0
        self._scheduled = False
        self.stats = {"items": 0, "batches": 0, "largest_batch": 0}

    async def submit(self, item: T) -> R:
        if len(self._queue) >= self.limits.queued_max:
            raise CapacityExceeded(
                f"{self.name}: {len(self._queue)} requests already queued "
                f"(at most {self.limits.queued_max}); retry shortly"
            )
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append((item, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._pump)
        return await future

    def _pump(self) -> None:
        self._scheduled = False
        loop = asyncio.get_running_loop()
        while self._queue and self._in_flight < self.limits.in_flight_max:
            n = min(len(self._queue), self.limits.size_max)
            batch = [self._queue.popleft() for _ in range(n)]
            self._in_flight += 1
            loop.create_task(self._deliver(batch))

    async def _deliver(self, batch: list[tuple[T, asyncio.Future]]) -> None:
        self.stats["items"] += len(batch)
        self.stats["batches"] += 1
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(batch))
        try:
            outcomes = await self._send([item for item, _ in batch])
            if len(outcomes) != len(batch):
                raise InvariantViolation(
                    f"{self.name}: {len(outcomes)} outcomes for a batch of {len(batch)}"
                )
        except asyncio.CancelledError:  # the loop is shutting down: its callers go with it
            self._in_flight -= 1
            for _, future in batch:
                future.cancel()
            raise
        except Exception as e:  # noqa: BLE001 - every waiter gets the batch's error
            outcomes = [e] * len(batch)
        self._in_flight -= 1
        self._pump()
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():  # its caller stopped waiting
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    def state(self) -> dict:
        return {"queued": len(self._queue), "in_flight": self._in_flight, **self.stats}
