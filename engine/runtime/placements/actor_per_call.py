"""Placement `actor-per-call`: a Ray actor per ongoing call (`call:{id}`, its timer) and one per
wallet (`wallet:{id}`, the wallet and the calls it pays), at most `actors_per_node_max` per node.
Settled call actors and idle wallet actors are retired (`reap`); every fan-out to them is bounded
by FANOUT_MAX remote calls in flight."""

from __future__ import annotations

import asyncio
import logging

import ray

from actors.errors import CapacityExceeded, UnknownUser
from engine.config import Config
from engine.operations import EndCall, InspectWallet, Operation, ReadCall, StartCall
from engine.runtime.ray_actors.per_call import CallActor, WalletActor
from engine.runtime.raycalls import (
    ACTOR_OPTIONS,
    CALL,
    WALLET,
    actor_or_none,
    ask_host,
    call_name,
    fan_out,
    named_actors,
    remote,
    wallet_name,
)
from persistence import store
from persistence.db import get_pool

log = logging.getLogger("billing.placement")

# Rounds of 50 ms to wait for a retired actor's name to be released.
RETIRE_WAIT_ROUNDS_MAX = 100


class ActorPerCallPlacement:
    name = "actor-per-call"

    def __init__(
        self, config: Config, database_url: str, redis_url: str | None, attach: bool = False
    ) -> None:
        self.config = config
        self.database_url = database_url
        self.redis_url = redis_url
        self.attached = attach
        self.calls: dict[int, object] = {}
        self.wallets: dict[int, object] = {}
        self._inflight: dict[int, int] = {}  # engine requests under way, per wallet actor
        self._touched: dict[int, int] = {}  # requests ever made, per wallet actor
        self._retiring: dict[int, asyncio.Task] = {}

    def _capacity(self) -> int:
        nodes = max(1, sum(1 for n in ray.nodes() if n.get("Alive")))
        return self.config.actors_per_node_max * nodes

    def actors(self) -> int:
        return len(self.calls) + len(self.wallets)

    async def _wallet_actor(self, user_id: int):
        retiring = self._retiring.get(user_id)
        if retiring is not None:
            await retiring  # its name must be free before a successor takes it
        h = self.wallets.get(user_id)
        if h is None:
            # An actor costs ~96 MB: none is made for an id that names nobody.
            if user_id not in await store.roles(await get_pool(self.database_url), [user_id]):
                raise UnknownUser(f"no user with id {user_id}")
            # A concurrent request may have made it meanwhile. A second handle from
            # get_if_exists would replace the owner's, and the actor would die with it.
            h = self.wallets.get(user_id)
            if h is not None:
                return h
            if self.actors() + 1 > self._capacity():
                raise CapacityExceeded(self._full_message(1))
            h = (
                ray.remote(WalletActor)
                .options(
                    name=wallet_name(user_id),
                    namespace=self.config.namespace,
                    get_if_exists=True,
                    **ACTOR_OPTIONS,
                )
                .remote(user_id, self.config, self.database_url, self.redis_url)
            )
            self.wallets[user_id] = h
        return h

    async def _host(self, user_id: int):
        """The person's wallet actor; requests under way are counted, so that one is never
        retired with a request on its way (see `reap`)."""
        self._touched[user_id] = self._touched.get(user_id, 0) + 1
        return await self._wallet_actor(user_id)

    def _full_message(self, needed: int) -> str:
        nodes = self._capacity() // self.config.actors_per_node_max
        return (
            f"placement actor-per-call is full: {self.actors()} Ray actors running, "
            f"{needed} more needed, at most {self.config.actors_per_node_max} per node "
            f"(BILLING_ACTORS_PER_NODE_MAX) on {nodes} node(s); "
            "end calls first, or use --placement sharded for this load"
        )

    def _discover(self) -> None:
        """Attached to a running engine: its call actors, by name."""
        for call_id, name in named_actors(self.config.namespace, CALL).items():
            if call_id not in self.calls:
                self.calls[call_id] = actor_or_none(name, self.config.namespace)
        self.calls = {c: h for c, h in self.calls.items() if h is not None}

    async def start(self) -> None:
        """Recovery: an actor for every call PostgreSQL says is ongoing, and for its parties."""
        if self.attached:
            self._discover()
            return
        calls = await store.load_ongoing_calls(
            await get_pool(self.database_url),
            self.config.minute_seconds,
            self.config.max_call_minutes,
        )
        for c in calls:
            await self._wallet_actor(c.user_id)
            await self._wallet_actor(c.listener_id)
            self._spawn_call(c.state())
        await self.upkeep()

    async def _busy(self, user_id: int, work):
        """`work` on a wallet actor, counted as in flight so that `reap` leaves it alone."""
        self._inflight[user_id] = self._inflight.get(user_id, 0) + 1
        try:
            return await work
        finally:
            self._inflight[user_id] -= 1
            if not self._inflight[user_id]:
                del self._inflight[user_id]

    async def ask(self, op: Operation):
        """`op` on the wallet actor of the person it is routed by; a start also makes the call
        its actor (its timer), and an end or read that finds the call settled retires it."""
        if isinstance(op, StartCall):
            return await self._start(op)
        out = await self._busy(op.routed_by, self._on_host(op))
        if isinstance(op, EndCall | ReadCall) and out is not None and out["ended_at"] is not None:
            await self._retire(op.call_id)
        return out

    async def _on_host(self, op: Operation):
        return await ask_host(await self._host(op.routed_by), op)

    async def _start(self, op: StartCall) -> dict:
        """The payer's wallet actor holds the listener on theirs and opens the call: both must
        exist (and fit) first; the call's own actor follows."""
        r = op.request
        needed = 1 + (r.user_id not in self.wallets) + (r.listener_id not in self.wallets)
        if self.actors() + needed > self._capacity():
            raise CapacityExceeded(self._full_message(needed))
        # The listener's actor too is busy until the start is answered: `reap` must not retire
        # it between its making and the payer's host holding the listener there.
        await self._host(r.listener_id)
        state = await self._busy(r.listener_id, self._busy(r.user_id, self._on_host(op)))
        self._spawn_call(state)
        await remote(self.calls[r.call_id].ping.remote())
        return state

    def _spawn_call(self, state: dict) -> None:
        """The actor of an ongoing call (its timer), from the call as it started."""
        self.calls[state["call_id"]] = (
            ray.remote(CallActor)
            .options(name=call_name(state["call_id"]), namespace=self.config.namespace,
                     **ACTOR_OPTIONS)
            .remote(state, self.config, self.database_url)
        )  # fmt: skip

    async def bill_due(self, now: float) -> int:
        """Each call actor ticks now; returns once the calls that ended are settled."""
        if self.attached:
            self._discover()
        ids = list(self.calls)
        handles = [self.calls[c] for c in ids]
        states = await fan_out(
            (lambda c=c, h=h: self._tick(c, h, now) for c, h in zip(ids, handles, strict=True)),
            return_exceptions=True,
        )
        billed = 0
        for c, st in zip(ids, states, strict=True):
            if isinstance(st, BaseException):
                # Retired meanwhile (a hang-up here, or by the engine this one attached to).
                if actor_or_none(call_name(c), self.config.namespace) is not None:
                    raise st
                self.calls.pop(c, None)
                continue
            billed += st["billed_now"]
            if st["ended_at"] is not None:
                await self._retire(c)
        return billed

    async def _tick(self, call_id: int, handle, now: float) -> dict:
        return await remote(handle.bill_due.remote(now))

    async def _retire(self, call_id: int) -> None:
        h = self.calls.pop(call_id, None)
        if h is not None:
            ray.kill(h, no_restart=True)

    async def reap(self) -> None:
        """Retire settled call actors and idle wallet actors."""
        ids = list(self.calls)
        handles = [self.calls[c] for c in ids]
        states = await fan_out(
            (lambda h=h: remote(h.ping.remote()) for h in handles), return_exceptions=True
        )
        for c, st in zip(ids, states, strict=True):
            if st in ("completed", "dropped"):
                await self._retire(c)
        # A request in flight now may reach the actor after its idle answer: skip those.
        users = [u for u in self.wallets if u not in self._inflight]
        touched = [self._touched.get(u, 0) for u in users]
        handles = [self.wallets[u] for u in users]
        idle = await fan_out(
            (lambda h=h: remote(h.idle.remote()) for h in handles), return_exceptions=True
        )
        for u, t, is_idle in zip(users, touched, idle, strict=True):
            # Idle, and untouched since it said so. No await between this check and the kill,
            # so no request can slip in between.
            untouched = self._touched.get(u, 0) == t and u not in self._inflight
            if is_idle is True and untouched and u in self.wallets:
                h = self.wallets.pop(u)
                self._touched.pop(u, None)
                ray.kill(h, no_restart=True)
                self._retiring[u] = asyncio.get_running_loop().create_task(self._gone(u))

    async def _gone(self, user_id: int) -> None:
        """Wait (bounded) until a killed wallet actor's name is free again."""
        try:
            for _ in range(RETIRE_WAIT_ROUNDS_MAX):
                if actor_or_none(wallet_name(user_id), self.config.namespace) is None:
                    return
                await asyncio.sleep(0.05)
        finally:
            self._retiring.pop(user_id, None)

    async def upkeep(self) -> None:
        """Retire settled call actors and idle wallet actors."""
        await self.reap()

    async def sync(self) -> None:
        await fan_out(lambda w=w: remote(w.sync.remote()) for w in list(self.wallets.values()))

    async def forget_tiers(self) -> None:
        """A badge run wrote the day's tiers: every wallet actor reads them again, this
        process's and those of the engine it may be attached to (by name)."""
        names = named_actors(self.config.namespace, WALLET).values()
        handles = [actor_or_none(n, self.config.namespace) for n in names]
        await fan_out(
            (lambda h=h: remote(h.forget_tiers.remote()) for h in handles if h is not None),
            return_exceptions=True,  # one retired meanwhile has nothing to forget
        )

    async def processes(self, now: float) -> dict[int, str]:
        """The process of each call and wallet actor, by pid."""
        pids = {}
        for call_id, h in list(self.calls.items()):
            pids[(await remote(h.state.remote(now)))["pid"]] = call_name(call_id)
        for uid, h in list(self.wallets.items()):
            pids[(await ask_host(h, InspectWallet(now=now, user_id=uid)))["pid"]] = wallet_name(uid)
        return pids

    async def inspect(self) -> list[dict]:
        return [
            {
                "placement": self.name,
                # Every engine's in the namespace, this process's and one it attached to.
                "call_actors": len(named_actors(self.config.namespace, CALL)),
                "wallet_actors": len(named_actors(self.config.namespace, WALLET)),
                "capacity": self._capacity(),
            }
        ]

    async def stop(self) -> None:
        await self.sync()
        if self.attached:
            return
        for h in [*self.calls.values(), *self.wallets.values()]:
            ray.kill(h, no_restart=True)
        self.calls.clear()
        self.wallets.clear()
