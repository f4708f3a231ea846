"""Where wallets and calls live. Both placements implement `Placement`, the seam the Engine
calls: one method per operation, with its real parameters."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

import ray

from actors.call import Call
from actors.errors import CapacityExceeded, UnknownUser
from engine.config import Config
from engine.runtime.host import CallRequest, connect
from engine.runtime.per_call import CallActor, WalletActor
from engine.runtime.raycalls import (
    actor,
    actor_or_none,
    call_name,
    remote,
    shard_name,
    shard_of,
    wallet_name,
)
from engine.runtime.shard import Shard
from persistence import store
from persistence.batching import Batcher, BatchLimits
from persistence.db import get_pool

log = logging.getLogger("billing.placement")

# Rounds of 50 ms to wait for a retired actor's name to be released.
RETIRE_WAIT_ROUNDS_MAX = 100
# Requests from this process to one shard, per method: one Ray message carries up to `size_max`
# of them (`WalletMethods.many`), one message in flight, so that what arrives meanwhile goes
# together; a lone request goes at once.
SHARD_REQUESTS = BatchLimits(size_max=256, in_flight_max=1, queued_max=10_000)
ACTOR_OPTIONS = {"max_restarts": -1, "max_concurrency": 1000, "num_cpus": 0}


class Placement(Protocol):
    """What a placement does for the Engine. Every operation on a wallet or a call carries the
    time it happens at (`now`): the host applies everything due by then first (rule 9)."""

    name: str

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def keep(self) -> None: ...
    async def sync(self) -> None: ...
    async def inspect(self) -> list[dict]: ...

    async def apply_external(
        self, user_id: int, tx_type: str, amount: int, key: str, now: float
    ) -> dict: ...
    async def balance(self, user_id: int, now: float) -> dict: ...
    async def inspect_wallet(self, user_id: int, now: float) -> dict: ...
    async def reserve_listener(
        self, listener_id: int, call_id: int, payer_id: int, now: float
    ) -> str: ...
    async def cancel_reservation(self, listener_id: int, call_id: int) -> None: ...
    async def forget_tiers(self) -> None: ...

    async def start_call(self, call: Call, now: float, start_key: str | None) -> dict: ...
    async def connect(self, request: CallRequest, now: float, start_key: str | None) -> dict: ...
    async def end_call(
        self, call_id: int, user_id: int, now: float, reason: str
    ) -> dict | None: ...
    async def bill_call(self, call_id: int, user_id: int, now: float) -> dict | None: ...
    async def run_due(self, now: float) -> int: ...
    async def processes(self, now: float) -> dict[int, str]: ...


class HostedWallets:
    """The wallet operations, the same on both placements: each goes to the Ray actor that
    hosts the person (`_host`), as one message (`_ask`)."""

    async def _host(self, user_id: int):
        raise NotImplementedError

    async def _ask(self, user_id: int, method: str, *args):
        """`method(*args)` on the host of `user_id`."""
        return await remote(getattr(await self._host(user_id), method).remote(*args))

    async def apply_external(
        self, user_id: int, tx_type: str, amount: int, key: str, now: float
    ) -> dict:
        return await self._ask(user_id, "apply_external", user_id, tx_type, amount, key, now)

    async def balance(self, user_id: int, now: float) -> dict:
        return await self._ask(user_id, "balance", user_id, now)

    async def inspect_wallet(self, user_id: int, now: float) -> dict:
        return await self._ask(user_id, "inspect_wallet", user_id, now)

    async def reserve_listener(
        self, listener_id: int, call_id: int, payer_id: int, now: float
    ) -> str:
        """Hold the listener for the call on their host; returns their tier today."""
        return await self._ask(listener_id, "reserve_listener", listener_id, call_id, payer_id, now)

    async def cancel_reservation(self, listener_id: int, call_id: int) -> None:
        await self._ask(listener_id, "cancel_reservation", listener_id, call_id)

    async def connect(self, request: CallRequest, now: float, start_key: str | None) -> dict:
        """A start: the hold on the listener's host, then the call opened on the payer's."""
        return await connect(
            request,
            lambda: self.reserve_listener(
                request.listener_id, request.call_id, request.user_id, now
            ),
            lambda call: self.start_call(call, now, start_key),
            lambda: self.cancel_reservation(request.listener_id, request.call_id),
            now,
        )


class ShardedPlacement(HostedWallets):
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
        # One lane per shard and method: a shard answers a batch when all of it is done, so a
        # hold (no write) must not wait in one batch with starts and ends waiting for commits.
        self._batchers: dict[tuple[int, str], Batcher] = {}

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

    def _batcher(self, index: int, method: str) -> Batcher:
        lane = self._batchers.get((index, method))
        if lane is None:
            shard = self.shards[index]

            async def send(requests: list[tuple[str, tuple]]) -> list:
                return await remote(shard.many.remote(requests))

            name = f"{method} requests to {shard_name(index)}"
            lane = self._batchers[(index, method)] = Batcher(send, SHARD_REQUESTS, name)
        return lane

    def _shard(self, user_id: int):
        return self.shards[shard_of(user_id, len(self.shards))]

    async def _ask(self, user_id: int, method: str, *args):
        """Requests to one shard travel together: one Ray message per batch (`many`)."""
        index = shard_of(user_id, len(self.shards))
        return await self._batcher(index, method).submit((method, args))

    async def _host(self, user_id: int):
        return self._shard(user_id)

    async def start(self) -> None:
        await asyncio.gather(*(remote(s.start.remote()) for s in self.shards))

    async def start_call(self, call: Call, now: float, start_key: str | None) -> dict:
        return await self._ask(call.user_id, "open_call", call.spec(), now, start_key)

    async def connect(self, request: CallRequest, now: float, start_key: str | None) -> dict:
        """Both parties on one shard (1 start in `shards`): the hold and the opening travel
        in one message."""
        if self._shard(request.user_id) is self._shard(request.listener_id):
            return await self._ask(request.user_id, "connect", request, now, start_key)
        return await super().connect(request, now, start_key)

    async def end_call(self, call_id: int, user_id: int, now: float, reason: str) -> dict | None:
        return await self._ask(user_id, "end_call", call_id, now, reason)

    async def bill_call(self, call_id: int, user_id: int, now: float) -> dict | None:
        return await self._ask(user_id, "bill_call", call_id, now)

    async def run_due(self, now: float) -> int:
        """Bill every shard's due minutes; returns once the calls that ended are settled."""
        billed = await asyncio.gather(*(remote(s.run_due.remote(now, True)) for s in self.shards))
        return sum(billed)

    async def sync(self) -> None:
        await asyncio.gather(*(remote(s.sync.remote()) for s in self.shards))

    async def forget_tiers(self) -> None:
        """A badge run wrote the day's tiers: the shards read them again."""
        await asyncio.gather(*(remote(s.forget_tiers.remote()) for s in self.shards))

    async def keep(self) -> None:
        """Wake shards Ray restarted, so that they reload and tick again."""
        await asyncio.gather(*(remote(s.ping.remote()) for s in self.shards))

    async def inspect(self) -> list[dict]:
        return await asyncio.gather(*(remote(s.state.remote()) for s in self.shards))

    async def processes(self, now: float) -> dict[int, str]:
        """The process of each shard, by pid."""
        return {st["pid"]: shard_name(st["shard"]) for st in await self.inspect()}

    async def stop(self) -> None:
        await self.sync()
        if not self.attached:
            for s in self.shards:
                ray.kill(s)


class ActorPerCallPlacement(HostedWallets):
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
        for a in ray.util.list_named_actors(all_namespaces=True):
            if a.get("namespace") == self.config.namespace and a["name"].startswith("call:"):
                call_id = int(a["name"].split(":")[1])
                if call_id not in self.calls:
                    self.calls[call_id] = actor_or_none(a["name"], self.config.namespace)
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
            self._spawn_call(c)
        await self.keep()

    async def _busy(self, user_id: int, work):
        """`work` on a wallet actor, counted as in flight so that `reap` leaves it alone."""
        self._inflight[user_id] = self._inflight.get(user_id, 0) + 1
        try:
            return await work
        finally:
            self._inflight[user_id] -= 1
            if not self._inflight[user_id]:
                del self._inflight[user_id]

    async def apply_external(self, user_id, tx_type, amount, key, now) -> dict:
        return await self._busy(user_id, super().apply_external(user_id, tx_type, amount, key, now))

    async def balance(self, user_id: int, now: float) -> dict:
        return await self._busy(user_id, super().balance(user_id, now))

    async def reserve_listener(self, listener_id, call_id, payer_id, now) -> str:
        return await self._busy(
            listener_id, super().reserve_listener(listener_id, call_id, payer_id, now)
        )

    def _spawn_call(self, call: Call) -> None:
        self.calls[call.call_id] = (
            ray.remote(CallActor)
            .options(name=call_name(call.call_id), namespace=self.config.namespace, **ACTOR_OPTIONS)
            .remote(call.spec(), self.config, self.database_url, self.redis_url)
        )

    async def start_call(self, call: Call, now: float, start_key: str | None) -> dict:
        needed = 1 + (call.user_id not in self.wallets) + (call.listener_id not in self.wallets)
        if self.actors() + needed > self._capacity():
            raise CapacityExceeded(self._full_message(needed))
        payer = await self._host(call.user_id)
        opened = payer.open_call.remote(call.spec(), now, start_key)
        state = await self._busy(call.user_id, remote(opened))
        self._spawn_call(call)
        await remote(self.calls[call.call_id].ping.remote())
        return state

    async def _on_payer(self, call_id: int, user_id: int, ask) -> dict | None:
        payer = await self._host(user_id)
        out = await self._busy(user_id, remote(ask(payer)))
        if out is not None and out["status"] != "ongoing":
            await self._retire(call_id)
        return out

    async def end_call(self, call_id: int, user_id: int, now: float, reason: str) -> dict | None:
        return await self._on_payer(
            call_id, user_id, lambda p: p.end_call.remote(call_id, now, reason)
        )

    async def bill_call(self, call_id: int, user_id: int, now: float) -> dict | None:
        return await self._on_payer(call_id, user_id, lambda p: p.bill_call.remote(call_id, now))

    async def run_due(self, now: float) -> int:
        """Each call actor ticks now; returns once the calls that ended are settled."""
        if self.attached:
            self._discover()
        ids = list(self.calls)
        states = await asyncio.gather(
            *(self._tick(c, self.calls[c], now) for c in ids), return_exceptions=True
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
            if st["status"] != "ongoing":
                await self._retire(c)
        return billed

    async def _tick(self, call_id: int, handle, now: float) -> dict:
        return await remote(handle.run_due.remote(now))

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

    async def forget_tiers(self) -> None:
        """A badge run wrote the day's tiers: every wallet actor reads them again, this
        process's and those of the engine it may be attached to (by name)."""
        names = [
            a["name"]
            for a in ray.util.list_named_actors(all_namespaces=True)
            if a.get("namespace") == self.config.namespace and a["name"].startswith("wallet:")
        ]
        handles = [actor_or_none(n, self.config.namespace) for n in names]
        await asyncio.gather(
            *(remote(h.forget_tiers.remote()) for h in handles if h is not None),
            return_exceptions=True,  # one retired meanwhile has nothing to forget
        )

    async def processes(self, now: float) -> dict[int, str]:
        """The process of each call and wallet actor, by pid."""
        pids = {}
        for call_id, h in list(self.calls.items()):
            pids[(await remote(h.state.remote(now)))["pid"]] = call_name(call_id)
        for uid, h in list(self.wallets.items()):
            pids[(await remote(h.inspect_wallet.remote(uid, now)))["pid"]] = wallet_name(uid)
        return pids

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


def make_placement(
    config: Config, database_url: str, redis_url: str | None, attach: bool = False
) -> Placement:
    cls = ShardedPlacement if config.placement == "sharded" else ActorPerCallPlacement
    return cls(config, database_url, redis_url, attach)
