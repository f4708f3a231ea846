"""The faults of a chaos run: actors killed (Ray restarts them), PostgreSQL or Redis cut and
restored through a proxy, the clock jumping, and crashes placed in the windows that hurt (after
a tick and before its commit; inside a hang-up), each followed by the request that would show
the damage."""

from __future__ import annotations

import asyncio

from engine.cli.chaos.answers import ChaosRequests
from engine.cli.chaos.model import ModelCall
from engine.cli.chaos.payouts_refunds import PayoutsAndRefunds
from engine.cli.chaos.workload import STEP_SECONDS
from engine.cli.proxy import Proxy
from engine.runtime import cluster
from engine.runtime.raycalls import WRITER_NAME, call_name, shard_name, shard_of, wallet_name

CLOCK_JUMP_MINUTES = (2, 12)
OUTAGE_SECONDS = (0.2, 2.0)  # how long PostgreSQL or Redis stays cut
FAULT_PROBABILITY = 0.5  # of a fault in a step, besides the late and duplicate deliveries
COVERING_STEPS_MAX = 60  # steps that may go to injecting each kind of fault once
# Crashes that land in the windows that hurt, each followed by the request that would show it.
CRASH_KINDS = ("crash_after_tick", "crash_after_hangup", "crash_inside_money_back")


class Faults:
    """Which faults a run injects, and how: through the run's requests (to place a crash and
    then ask what would show its damage) and the proxies in front of PostgreSQL and Redis."""

    def __init__(
        self, requests: ChaosRequests, payouts: PayoutsAndRefunds, pg: Proxy, redis: Proxy
    ) -> None:
        self.requests, self.payouts = requests, payouts
        self.pg, self.redis = pg, redis
        self.engine, self.rng = requests.engine, requests.rng
        self.model, self.result = requests.model, requests.result

    def fault_kinds(self) -> list[str]:
        kinds = ["kill_writer", "postgres_restart", "redis_restart", "clock_jump", *CRASH_KINDS]
        if self.engine.config.placement == "sharded":
            kinds += ["kill_shard"]
        else:
            kinds += ["kill_call_actor", "kill_wallet_actor"]
        # Last: it needs an ended call or a pending payout, which a run has only after a while.
        kinds.remove("crash_inside_money_back")
        return kinds + ["crash_inside_money_back"]

    def payer_host(self, user: int) -> str:
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
        `crash_inside_money_back`: a host dies inside a refund or a payout's settling."""
        rng, r = self.rng, self.requests
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
            if not self._kill(self.payer_host(c.user)):
                return
            self.result.faults_injected[kind] += 1
            self.engine.clock.advance(rng.choice((0.0, rng.uniform(1, 2 * STEP_SECONDS))))
            roll = rng.random()
            if roll < 0.3:
                await r.external(c.user, "purchase", rng.randint(5, 60), r.key())
            elif roll < 0.5:
                await r.external(c.user, "spend", rng.randint(1, 40), r.key())
            else:
                # Just more than the payer has once the minutes due are billed: a host that
                # forgot a billed minute would accept it.
                self.model.bill(self.engine.clock.now())
                amount = self.model.coins[c.user] + rng.randint(1, c.rate_coins)
                await r.external(c.user, "spend", amount, r.key())
            if self.engine.config.placement != "sharded" or rng.random() < 0.5:
                await r.end_call(c.call_id)
            return
        # A listener on another host than its payer: a lost release strands their credit.
        apart = [o for o in ongoing if self.payer_host(o.listener) != self.payer_host(o.user)]
        c = rng.choice(apart) if apart else c
        hang_up = asyncio.ensure_future(r.end_call(c.call_id))
        # Somewhere inside the hang-up: before its commit, between the commit and the release
        # of the listener, or after.
        await asyncio.sleep(rng.uniform(0, r.hang_up_s))
        if self._kill(self.payer_host(c.user)):
            self.result.faults_injected[kind] += 1
        await hang_up
        await r.check_listener(c.listener)

    async def crash_inside_money_back(self) -> None:
        """A refund or a payout's settling with a host killed inside it: the listener's (the
        claw-back, the settle) or the payer's (the coins). Retried with its key, it happens
        once; then both parties' hosts must show what the model says."""
        rng, m, r, mb = self.rng, self.model, self.requests, self.payouts
        # Calls the pass just dropped settle behind it: a refund needs their settlement.
        for _ in range(2):
            await r.must(self.engine.sync, "sync")
            await r.must(self.engine.bill_due, "bill again")
        pending = [p for p, (_, _, status) in m.payouts.items() if status == "pending"]
        calls = [c for u in r.users if u not in m.in_call for c in mb.refundable(u)]
        if calls and (not pending or rng.random() < 0.6):
            c = rng.choice(calls)
            victim = self.payer_host(rng.choice((c.user, c.listener)))
            work = mb.refund(c.call_id, None, True, r.key())
            parties = (c.user, c.listener)
        elif pending:
            payout_id = rng.choice(pending)
            listener = m.payouts[payout_id][0]
            victim = self.payer_host(listener)
            work = mb.settle(payout_id, rng.choice(("paid", "rejected")))
            parties = (listener,)
        else:
            return
        task = asyncio.ensure_future(work)
        # Somewhere inside it: before the first commit, between the steps, or after.
        await asyncio.sleep(rng.uniform(0, 1.5 * mb.lately_s))
        if self._kill(victim):
            self.result.faults_injected["crash_inside_money_back"] += 1
        await task
        for who in parties:
            await r.check_balance(who)

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

    def missing_kind(self) -> str | None:
        if self.result.steps >= COVERING_STEPS_MAX:
            return None
        return next((k for k in self.fault_kinds() if not self.result.faults_injected[k]), None)
