"""Where wallets and calls live. Both placements implement `Placement`, the seam the Engine
calls: one method per operation, with its real parameters. `sharded` (`sharded.py`) hosts
wallets on a fixed set of shard actors; `actor-per-call` (`actor_per_call.py`) a Ray actor per
ongoing call and one per wallet.
"""

from __future__ import annotations

from typing import Protocol

from actors.call import CallRequest
from engine.config import Config
from engine.runtime.placements.actor_per_call import ActorPerCallPlacement
from engine.runtime.placements.sharded import ShardedPlacement


class Placement(Protocol):
    """What a placement does for the Engine, and all the Engine calls. Every operation on a
    wallet or a call carries the time it happens at (`now`): the host applies everything due by
    then first (rule 9)."""

    name: str

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def keep(self) -> None: ...
    async def sync(self) -> None: ...
    async def inspect(self) -> list[dict]: ...
    async def processes(self, now: float) -> dict[int, str]: ...

    async def apply_external(
        self,
        user_id: int,
        tx_type: str,
        amount: int,
        key: str,
        now: float,
        payout_id: int | None = None,
        expires_ms: int | None = None,
    ) -> dict: ...
    async def settle_payout(
        self, listener_id: int, payout_id: int, outcome: str, reason: str | None, now: float
    ) -> dict: ...
    async def claw_back(self, listener_id: int, ask: dict, now: float) -> dict: ...
    async def refund_coins(self, user_id: int, refund: dict, now: float) -> dict: ...
    async def balance(self, user_id: int, now: float) -> dict: ...
    async def inspect_wallet(self, user_id: int, now: float) -> dict: ...
    async def forget_tiers(self) -> None: ...

    async def start_call(self, request: CallRequest, now: float, start_key: str | None) -> dict: ...
    async def end_call(
        self, call_id: int, user_id: int, now: float, reason: str
    ) -> dict | None: ...
    async def bill_call(self, call_id: int, user_id: int, now: float) -> dict | None: ...
    async def run_due(self, now: float) -> int: ...


def make_placement(
    config: Config, database_url: str, redis_url: str | None, attach: bool = False
) -> Placement:
    cls: type = ShardedPlacement if config.placement == "sharded" else ActorPerCallPlacement
    return cls(config, database_url, redis_url, attach)
