"""Where wallets and calls live. Both placements serve the same methods to the Engine."""

from __future__ import annotations

import asyncio
import logging

import ray
from ray.exceptions import ActorDiedError

from actors.call import Call
from actors.errors import CapacityExceeded, UnknownUser
from engine.config import Config
from engine.per_call import CallActor, WalletActor
from engine.raycalls import actor, actor_or_none, call_name, remote, shard_name, wallet_name
from engine.shard import Shard
from persistence import store
from persistence.db import get_pool

log = logging.getLogger("billing.placement")

# Rounds of 50 ms to wait for a retired actor's name to be released.
RETIRE_WAIT_ROUNDS_MAX = 100
ACTOR_OPTIONS = {"max_restarts": -1, "max_concurrency": 1000, "num_cpus": 0}


class ShardedPlacement:
    name = "sharded"

    def __init__(
        self, config: Config, database_url: str, redis_url: str | None, attach: bool = False
    ) -> None:
        self.config = config
        self.attached = attach
        if attach:  # a running engine's shards, by name
            self.shards = [actor(shard_name(i), config.namespace) for i in range(config.shards)]
            return
        cls = ray.remote(Shard)
        # SPREAD: on a cluster the shards go to different nodes, so one lost node stops only
        # its shards; Ray restarts them on the nodes left and they reload from PostgreSQL.
        options = {"namespace": config.namespace, "scheduling_strategy": "SPREAD"}
        self.shards = [
            cls.options(name=shard_name(i), **options, **ACTOR_OPTIONS).remote(
                i, config, database_url, redis_url
            )
            for i in range(config.shards)
        ]

    def _shard(self, user_id: int):
        return self.shards[user_id % len(self.shards)]

    async def start(self) -> None:
        await asyncio.gather(*(remote(s.start.remote()) for s in self.shards))

    async def wallet(self, user_id: int, method: str, *args):
        return await remote(getattr(self._shard(user_id), method).remote(*args))

    async def start_call(self, call: Call, now: float) -> dict:
        return await remote(self._shard(call.user_id).start_call.remote(call_spec(call), now))

    async def end_call(self, call_id: int, user_id: int, now: float, reason: str) -> dict | None:
        return await remote(self._shard(user_id).end_call.remote(call_id, now, reason))

    async def bill_call(self, call_id: int, user_id: int, now: float) -> dict | None:
        return await remote(self._shard(user_id).bill_call.remote(call_id, now))

    async def call_state(self, call_id: int, user_id: int, now: float) -> dict | None:
        return await remote(self._shard(user_id).inspect_call.remote(call_id, now))

    async def run_due(self, now: float) -> int:
        billed = await asyncio.gather(*(remote(s.run_due.remote(now)) for s in self.shards))
        return sum(billed)

    async def sync(self) -> None:
        await asyncio.gather(*(remote(s.sync.remote()) for s in self.shards))

    async def keep(self) -> None:
        """Wake shards Ray restarted, so that they reload and tick again."""
        await asyncio.gather(*(remote(s.ping.remote()) for s in self.shards))

    async def inspect(self) -> list[dict]:
        return await asyncio.gather(*(remote(s.state.remote()) for s in self.shards))

    async def stop(self) -> None:
        await self.sync()
        if not self.attached:
            for s in self.shards:
                ray.kill(s)


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
                .remote(user_id, self.config, self.database_url)
            )
            self.wallets[user_id] = h
        return h

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
        for a in ray.util.list_named_actors(all_namespaces=True):
            if a.get("namespace") == self.config.namespace and a["name"].startswith("call:"):
                call_id = int(a["name"].split(":")[1])
                if call_id not in self.calls:
                    self.calls[call_id] = actor_or_none(a["name"], self.config.namespace)
        self.calls = {c: h for c, h in self.calls.items() if h is not None}

    async def start(self) -> None:
        """Recovery: an actor for every call PostgreSQL says is ongoing."""
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
            self._spawn_call(c)
        await self.keep()

    async def wallet(self, user_id: int, method: str, *args):
        self._inflight[user_id] = self._inflight.get(user_id, 0) + 1
        self._touched[user_id] = self._touched.get(user_id, 0) + 1
        try:
            h = await self._wallet_actor(user_id)
            return await remote(getattr(h, method).remote(*args))
        finally:
            self._inflight[user_id] -= 1
            if not self._inflight[user_id]:
                del self._inflight[user_id]

    def _spawn_call(self, call: Call) -> None:
        self.calls[call.call_id] = (
            ray.remote(CallActor)
            .options(name=call_name(call.call_id), namespace=self.config.namespace, **ACTOR_OPTIONS)
            .remote(call_spec(call), self.config, self.database_url, self.redis_url)
        )

    async def start_call(self, call: Call, now: float) -> dict:
        needed = 1 + (call.user_id not in self.wallets) + (call.listener_id not in self.wallets)
        if self.actors() + needed > self._capacity():
            raise CapacityExceeded(self._full_message(needed))
        state = await self.wallet(call.user_id, "open_call", call_spec(call), now)
        call.billed_minutes = state["billed_minutes"]
        self._spawn_call(call)
        await remote(self.calls[call.call_id].ping.remote())
        return state

    def _call_handle(self, call_id: int):
        return self.calls.get(call_id) or actor_or_none(call_name(call_id), self.config.namespace)

    async def _on_call(self, call_id: int, method: str, *args) -> dict | None:
        """Ask a call's actor; None when it is gone. Call actors are killed only once settled
        (by whichever engine saw it first), so a gone actor means: read the stored row."""
        h = self._call_handle(call_id)
        if h is None:
            return None
        try:
            out = await remote(getattr(h, method).remote(*args))
        except ActorDiedError:
            self.calls.pop(call_id, None)
            return None
        if out["status"] != "ongoing":
            await self._retire(call_id)
        return out

    async def end_call(self, call_id: int, user_id: int, now: float, reason: str) -> dict | None:
        return await self._on_call(call_id, "end", now, reason)

    async def bill_call(self, call_id: int, user_id: int, now: float) -> dict | None:
        return await self._on_call(call_id, "run_due", now)

    async def call_state(self, call_id: int, user_id: int, now: float) -> dict | None:
        h = self.calls.get(call_id)
        return None if h is None else await remote(h.state.remote(now))

    async def run_due(self, now: float) -> int:
        if self.attached:
            self._discover()
        ids = list(self.calls)
        states = await asyncio.gather(*(self._on_call(c, "run_due", now) for c in ids))
        return sum(st.get("billed_now", 0) for st in states if st is not None)

    async def _retire(self, call_id: int) -> None:
        h = self.calls.pop(call_id, None)
        if h is not None:
            ray.kill(h, no_restart=True)

    async def reap(self) -> None:
        """Retire settled call actors and idle wallet actors."""
        ids = list(self.calls)
        states = await asyncio.gather(
            *(remote(self.calls[c].ping.remote()) for c in ids), return_exceptions=True
        )
        for c, st in zip(ids, states, strict=True):
            if st in ("completed", "dropped"):
                await self._retire(c)
        # A request in flight now may reach the actor after its idle answer: skip those.
        users = [u for u in self.wallets if u not in self._inflight]
        touched = [self._touched.get(u, 0) for u in users]
        idle = await asyncio.gather(
            *(remote(self.wallets[u].idle.remote()) for u in users), return_exceptions=True
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

    async def keep(self) -> None:
        await self.reap()

    async def sync(self) -> None:
        await asyncio.gather(*(remote(w.sync.remote()) for w in self.wallets.values()))

    async def inspect(self) -> list[dict]:
        return [
            {
                "placement": self.name,
                "call_actors": len(self.calls),
                "wallet_actors": len(self.wallets),
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


SPEC_FIELDS = (
    "call_id",
    "user_id",
    "listener_id",
    "call_type",
    "tier",
    "rate_coins",
    "rate_paise",
    "connected_at",
    "minute_seconds",
    "max_minutes",
)


def call_spec(call: Call) -> dict:
    return {k: getattr(call, k) for k in SPEC_FIELDS}


def make_placement(config: Config, database_url: str, redis_url: str | None, attach: bool = False):
    cls = ShardedPlacement if config.placement == "sharded" else ActorPerCallPlacement
    return cls(config, database_url, redis_url, attach)
