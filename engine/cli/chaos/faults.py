"""The faults of a chaos run: actors killed (Ray restarts them), PostgreSQL or Redis cut and
restored through a proxy, the clock jumping, and crashes placed in the windows that hurt (after
a tick and before its commit; inside a hang-up), each followed by the request that would show
the damage."""

from __future__ import annotations

import asyncio

from engine.cli.chaos.model import ModelCall
from engine.cli.chaos.workload import STEP_SECONDS
from engine.runtime import cluster
from engine.runtime.raycalls import WRITER_NAME, call_name, shard_name, shard_of, wallet_name

CLOCK_JUMP_MINUTES = (2, 12)
OUTAGE_SECONDS = (0.2, 2.0)  # how long PostgreSQL or Redis stays cut
FAULT_PROBABILITY = 0.5  # of a fault in a step, besides the late and duplicate deliveries
COVERING_STEPS_MAX = 60  # steps that may go to injecting each kind of fault once
# Crashes that land in the windows that hurt, each followed by the request that would show it.
CRASH_KINDS = ("crash_after_tick", "crash_after_hangup", "crash_inside_money_back")


class Faults:
    """Mixed into `Chaos`: which faults a run injects, and how."""

    def fault_kinds(self) -> list[str]:
        kinds = ["kill_writer", "postgres_restart", "redis_restart", "clock_jump", *CRASH_KINDS]
        if self.engine.config.placement == "sharded":
            kinds += ["kill_shard"]
        else:
            kinds += ["kill_call_actor", "kill_wallet_actor"]
        # Last: it needs an ended call or a pending payout, which a run has only after a while.
        kinds.remove("crash_inside_money_back")
        return kinds + ["crash_inside_money_back"]

    def _payer_host(self, user: int) -> str:
        if self.engine.config.placement == "sharded":
            return shard_name(shard_of(user, self.engine.config.shards))
        return wallet_name(user)

    def _kill(self, name: str) -> bool:
        """Kill a named actor of the engine (Ray restarts it); False if it is gone already."""
        return cluster.kill_actor(name, self.engine.config.namespace)

    async def crash(self, kind: str, fresh: list[ModelCall]) -> None:
        """A crash where it hurts, then the request that would see its damage.

        `crash_after_tick`: the payer's host (shard or wallet actor) dies right after a pass
        billed minutes it has not written yet; the clock may move past more minute starts with
        no tick; then that payer asks for something (a top-up or a spend), and sometimes hangs
        up. The answer must come from state brought up to the request's time.
        `crash_after_hangup`: the payer's host dies a few milliseconds after a hang-up is
        sent; once the hang-up is answered, the listener's host must show the credit and the
        listener free.
        `crash_inside_money_back`: a host dies inside a refund or a payout's settling
        (`ChaosMoneyBack.crash_inside_money_back`)."""
        rng = self.rng
        if kind == "crash_inside_money_back":
            await self.crash_inside_money_back()
            return
        ongoing = [c for c in self.model.calls.values() if c.status == "ongoing"]
        if not ongoing:
            return
        c = rng.choice(ongoing)
        if kind == "crash_after_tick":
            fresh = [f for f in fresh if f.status == "ongoing"]
            c = rng.choice(fresh) if fresh else c
            if not self._kill(self._payer_host(c.user)):
                return
            self.result.faults_injected[kind] += 1
            self.engine.clock.advance(rng.choice((0.0, rng.uniform(1, 2 * STEP_SECONDS))))
            roll = rng.random()
            if roll < 0.3:
                await self.external(c.user, "purchase", rng.randint(5, 60), self.key())
            elif roll < 0.5:
                await self.external(c.user, "spend", rng.randint(1, 40), self.key())
            else:
                # Just more than the payer has once the minutes due are billed: a host that
                # forgot a billed minute would accept it.
                self.model.bill(self.engine.clock.now())
                amount = self.model.coins[c.user] + rng.randint(1, c.rate_coins)
                await self.external(c.user, "spend", amount, self.key())
            if self.engine.config.placement != "sharded" or rng.random() < 0.5:
                await self.end_call(c.call_id)
            return
        # A listener on another host than its payer: a lost release strands their credit.
        apart = [o for o in ongoing if self._payer_host(o.listener) != self._payer_host(o.user)]
        c = rng.choice(apart) if apart else c
        hang_up = asyncio.ensure_future(self.end_call(c.call_id))
        # Somewhere inside the hang-up: before its commit, between the commit and the release
        # of the listener, or after.
        await asyncio.sleep(rng.uniform(0, self._hang_up_s))
        if self._kill(self._payer_host(c.user)):
            self.result.faults_injected[kind] += 1
        await hang_up
        await self.check_listener(c.listener)

    async def inject(self, kind: str) -> None:
        await asyncio.sleep(self.rng.random() * 0.05)
        if kind in ("postgres_restart", "redis_restart"):
            proxy = self.pg if kind == "postgres_restart" else self.redis
            await proxy.cut()
            await asyncio.sleep(self.rng.uniform(*OUTAGE_SECONDS))
            await proxy.restore()
        else:
            name = self._victim(kind)
            if name is None or not self._kill(name):
                return
        self.result.faults_injected[kind] += 1

    def _victim(self, kind: str) -> str | None:
        rng = self.rng
        if kind == "kill_writer":
            return WRITER_NAME
        if kind == "kill_shard":
            return shard_name(rng.randrange(self.engine.config.shards))
        ongoing = [c for c in self.model.calls.values() if c.status == "ongoing"]
        if not ongoing:
            return None
        c = rng.choice(ongoing)
        return call_name(c.call_id) if kind == "kill_call_actor" else wallet_name(c.user)

    def _missing_kind(self) -> str | None:
        if self.result.steps >= COVERING_STEPS_MAX:
            return None
        return next((k for k in self.fault_kinds() if not self.result.faults_injected[k]), None)
