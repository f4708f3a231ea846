"""Placement `sharded`: a fixed set of shard actors (`Config.shards`, at most SHARDS_MAX), each
hosting the wallets of the people `shard_of` gives it and the calls they pay. Operations from
this process to one shard travel together, one lane per shard and kind (`shard.ShardLanes`); a
start is one message to the payer's shard, which holds the listener on theirs."""

from __future__ import annotations

import ray

from engine.config import Config
from engine.operations import Operation
from engine.runtime.ray_actors.shard import Shard, ShardLanes
from engine.runtime.raycalls import ACTOR_OPTIONS, actor, fan_out, remote, shard_name


class ShardedPlacement:
    name = "sharded"

    def __init__(
        self, config: Config, database_url: str, redis_url: str | None, attach: bool = False
    ) -> None:
        self.config = config
        self.attached = attach
        if attach:  # a running engine's shards, by name
            self.shards = [actor(shard_name(i), config.namespace) for i in range(config.shards)]
        else:
            self.shards = self._create(config, database_url, redis_url)
        self._lanes = ShardLanes(self.shards.__getitem__, len(self.shards))

    @staticmethod
    def _create(config: Config, database_url: str, redis_url: str | None) -> list:
        cls = ray.remote(Shard)
        # SPREAD: on a cluster the shards go to different nodes, so one lost node stops only
        # its shards; Ray restarts them on the nodes left and they reload from PostgreSQL.
        options = {"namespace": config.namespace, "scheduling_strategy": "SPREAD"}
        return [
            cls.options(name=shard_name(i), **options, **ACTOR_OPTIONS).remote(
                i, config, database_url, redis_url
            )
            for i in range(config.shards)
        ]

    async def ask(self, op: Operation):
        """Operations to one shard travel together: one Ray message per batch (`handle`)."""
        return await self._lanes.ask(op)

    async def start(self) -> None:
        await fan_out(lambda s=s: remote(s.start.remote()) for s in self.shards)

    async def bill_due(self, now: float) -> int:
        """Bill every shard's due minutes; returns once the calls that ended are settled."""
        billed = await fan_out(
            lambda s=s: remote(s.bill_due.remote(now, True)) for s in self.shards
        )
        return sum(billed)

    async def sync(self) -> None:
        await fan_out(lambda s=s: remote(s.sync.remote()) for s in self.shards)

    async def forget_tiers(self) -> None:
        """A badge run wrote the day's tiers: the shards read them again."""
        await fan_out(lambda s=s: remote(s.forget_tiers.remote()) for s in self.shards)

    async def upkeep(self) -> None:
        """Wake shards Ray restarted, so that they reload and bill again."""
        await fan_out(lambda s=s: remote(s.ping.remote()) for s in self.shards)

    async def inspect(self) -> list[dict]:
        return await fan_out(lambda s=s: remote(s.state.remote()) for s in self.shards)

    async def processes(self, now: float) -> dict[int, str]:
        """The process of each shard, by pid."""
        return {st["pid"]: shard_name(st["shard"]) for st in await self.inspect()}

    async def stop(self) -> None:
        await self.sync()
        if not self.attached:
            for s in self.shards:
                ray.kill(s)
