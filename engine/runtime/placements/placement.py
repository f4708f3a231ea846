"""Where wallets and calls live. Both placements implement `Placement`, the seam the Engine
calls: every operation on a wallet or a call is a value (`engine.operations`) that `ask` sends
to the host of the person it is routed by; the rest is the placement's own life. `sharded`
(`sharded.py`) hosts wallets on a fixed set of shard actors; `actor-per-call`
(`actor_per_call.py`) a Ray actor per ongoing call and one per wallet.
"""

from __future__ import annotations

from typing import Protocol

from engine.config import Config
from engine.operations import Operation
from engine.runtime.placements.actor_per_call import ActorPerCallPlacement
from engine.runtime.placements.sharded import ShardedPlacement


class Placement(Protocol):
    """What a placement does for the Engine, and all the Engine calls."""

    name: str

    async def ask(self, op: Operation):
        """`op` done by the host of the person it is routed by: its answer, or its error."""
        ...

    async def bill_due(self, now: float) -> int:
        """Every minute due by `now` billed; returns once the calls that ended are settled."""
        ...

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def upkeep(self) -> None:
        """The keeper's round, every second: what the placement tends to (restarted shards
        woken; settled call actors and idle wallet actors retired)."""
        ...

    async def sync(self) -> None: ...
    async def inspect(self) -> list[dict]: ...
    async def processes(self, now: float) -> dict[int, str]: ...
    async def forget_tiers(self) -> None: ...


def make_placement(
    config: Config, database_url: str, redis_url: str | None, attach: bool = False
) -> Placement:
    cls: type = ShardedPlacement if config.placement == "sharded" else ActorPerCallPlacement
    return cls(config, database_url, redis_url, attach)
