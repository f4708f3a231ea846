"""The actors of placement `actor-per-call` (`actor_per_call.py` places them): one per wallet,
one per ongoing call.

`wallet:{user_id}` hosts one person's wallet and the calls they pay (the same `WalletHost` a
shard uses): it alone decides how far a call is billed, so a call and its wallet can never
disagree. `call:{call_id}` is the call's own timer: it ticks when the call's next minute falls
due and asks the payer's wallet actor to bring the call up to now. Both reload from PostgreSQL
when Ray restarts them, and a wallet actor catches up to the time of a request before answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time

from actors.errors import EngineUnavailable, UnknownUser
from actors.money import LIVE_STATUSES
from aio.once import LoadOnce
from aio.retry import Retry, retrying
from engine.config import Config
from engine.logs import about
from engine.operations import Operation, ReadCall, ReleaseListener
from engine.runtime.ray_actors.host_actor import HostActor, host_in_actor
from engine.runtime.ray_actors.writer_actor import WriterActorLink
from engine.runtime.raycalls import (
    actor,
    actor_or_none,
    ask_host,
    call_name,
    is_transient,
    wallet_name,
)
from persistence import store
from persistence.db import get_pool

log = logging.getLogger("billing.per_call")

# Reaching another wallet actor that is restarting: tries and pauses.
PEER_RETRY = Retry(attempts_max=8, delay_min_s=0.05, delay_max_s=1.0)


class WalletPeers:
    """The other wallet actors, as a wallet actor's host reaches them
    (`engine.host.peers.Peers`)."""

    def __init__(self, user_id: int, config: Config) -> None:
        self.user_id = user_id
        self.namespace = config.namespace

    def is_local(self, user_id: int) -> bool:
        return user_id == self.user_id

    def _peer(self, user_id: int):
        return actor(wallet_name(user_id), self.namespace)

    async def ask(self, op: Operation):
        if isinstance(op, ReleaseListener):
            return await self._release(op)
        if isinstance(op, ReadCall):
            if actor_or_none(wallet_name(op.routed_by), self.namespace) is None:
                return None  # a payer with no actor pays no ongoing call: PostgreSQL decides
            return await retrying(lambda: ask_host(self._peer(op.routed_by), op), PEER_RETRY)
        return await ask_host(self._peer(op.routed_by), op)

    async def _release(self, op: ReleaseListener) -> None:
        try:
            await retrying(lambda: ask_host(self._peer(op.listener_id), op), PEER_RETRY)
        except (EngineUnavailable, ValueError) as e:  # ValueError: no such actor now
            log.warning(
                "wallet %d: release of call %d's listener %d not delivered: %s",
                self.user_id,
                op.call_id,
                op.listener_id,
                e,
                extra=about(user_id=self.user_id, call_id=op.call_id),
            )


class WalletActor(HostActor):
    def __init__(
        self, user_id: int, config: Config, database_url: str, redis_url: str | None = None
    ) -> None:
        self.user_id = user_id
        self.name = wallet_name(user_id)
        self.config = config
        link = WriterActorLink(config.namespace)
        self.host = host_in_actor(config, database_url, redis_url, WalletPeers(user_id, config),
                                  link)  # fmt: skip
        self.client = self.host.client
        self._load_once = LoadOnce(self._load)

    async def _loaded(self) -> None:
        await self._load_once()

    async def _load(self) -> None:
        """The wallet and the calls it pays, as PostgreSQL has them once the writer committed
        what this actor's predecessor handed it."""
        # The placement makes no actor for an unknown id; if one is asked, each request says so.
        with contextlib.suppress(UnknownUser):
            await self.host.wallet(self.user_id)

    async def idle(self) -> bool:
        """No call, no reservation, nothing unwritten: safe to retire."""
        try:
            await self._loaded()
            w = await self.host.wallet(self.user_id)
        except UnknownUser:
            return True
        busy = bool(w.calls) or w.listener_call_id is not None or self.host.settling()
        return not busy and self.client.pending == 0

    async def sync(self) -> None:
        await self._loaded()
        await self.host.wait_settled()
        await self.client.wait_committed()

    def about(self) -> dict:
        return {
            "actor": self.name,
            "pid": os.getpid(),
            "writer_client": self.client.state(),
        }


class CallActor:
    """A call's timer. The money of the call lives in its payer's wallet actor."""

    def __init__(self, started: dict, config: Config, database_url: str):
        self.call_id = started["call_id"]
        self.config = config
        self.database_url = database_url
        self._payer_id = started["user_id"]
        self._payer = actor(wallet_name(self._payer_id), config.namespace)
        self._last: dict = started  # the call as last heard of
        self._loop_task: asyncio.Task | None = None
        self._load_once = LoadOnce(self._load)

    async def _load(self) -> None:
        if self.config.clock == "real":
            self._loop_task = asyncio.get_running_loop().create_task(self._loop())

    async def _read(self, now: float) -> dict:
        """The payer's answer for this call; its stored row once the payer no longer has it
        (settled and done)."""
        await self._load_once()
        op = ReadCall(now=now, user_id=self._payer_id, call_id=self.call_id)
        out = await ask_host(self._payer, op)
        if out is None:
            out = await store.read_call(await get_pool(self.database_url), self.call_id)
        self._last = out
        return out

    async def bill_due(self, now: float) -> dict:
        before = self._last.get("billed_minutes", 0)
        out = await self._read(now)
        return out | {"billed_now": max(0, out["billed_minutes"] - before)}

    async def state(self, now: float) -> dict:
        out = await self._read(now)
        return out | {"actor": call_name(self.call_id), "pid": os.getpid()}

    async def _loop(self) -> None:
        interval_s = self.config.timer_interval_ms / 1000
        while self._last["status"] in LIVE_STATUSES:
            due = self._last.get("next_tick_at") or time.time()
            await asyncio.sleep(min(max(0.0, due - time.time()), interval_s))
            try:
                await self.bill_due(time.time())
            except Exception as e:  # noqa: BLE001 - the timer outlives a restarting payer
                if not is_transient(e):
                    log.warning(
                        "call %d: tick failed: %s",
                        self.call_id,
                        e,
                        extra=about(call_id=self.call_id),
                    )
                await asyncio.sleep(interval_s)

    async def ping(self) -> str:
        """The call's status as last heard: "ongoing" until it is settled and done."""
        await self._load_once()
        return self._last["status"]
