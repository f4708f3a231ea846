"""Placement `actor-per-call`: a Ray actor per ongoing call and one per wallet.

`wallet:{user_id}` hosts one person's wallet (the same `WalletHost` a shard uses);
`call:{call_id}` holds one `Call`, ticks on its own timer and bills against its payer's wallet
actor with one Ray call per due minute or batch of minutes. Both reload from PostgreSQL when Ray
restarts them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from actors.call import Call, Settlement
from actors.errors import InvariantViolation, UnknownUser
from engine.config import Config
from engine.host import WalletHost, WalletMethods
from engine.loading import LoadOnce
from engine.raycalls import actor, is_transient, remote, wallet_name, writer_drainer, writer_sender
from persistence import store
from persistence.client import WriterClient
from persistence.db import get_pool
from persistence.presence import Presence

log = logging.getLogger("billing.per_call")


class WalletActor(WalletMethods):
    def __init__(self, user_id: int, config: Config, database_url: str) -> None:
        self.user_id = user_id
        self.config = config
        self.client = WriterClient(writer_sender(config.namespace), config.client, is_transient)
        self.host = WalletHost(
            database_url, self.client, config.user_calls_max, writer_drainer(config.namespace)
        )

    async def open_call(self, spec: dict, now: float) -> dict:
        call = Call(**spec)
        await self.host.open_call(call, now)
        return call.state()

    async def bill(self, call_id: int, through_minute: int, now: float) -> tuple[int, bool, int]:
        await self.host.wallet(self.user_id)
        await self.client.room()
        return self.host.bill(self.user_id, call_id, through_minute, now)

    async def close_call(self, s: Settlement) -> bool:
        """Record the settlement; returns once committed, and whether the user is still in a
        call (for presence)."""
        await self.host.wallet(self.user_id)
        await self.client.wait_committed(self.host.close_call(s), urgent=True)
        return self.host.user_in_call(self.user_id)

    async def idle(self) -> bool:
        """No call, no reservation, nothing unwritten: safe to retire."""
        try:
            w = await self.host.wallet(self.user_id)  # as PostgreSQL has it, if not loaded yet
        except UnknownUser:
            return True
        busy = bool(w.calls) or w.listener_call_id is not None
        return not busy and self.client.pending == 0

    async def sync(self) -> None:
        await self.client.wait_committed()

    async def inspect_wallet(self, user_id: int) -> dict:
        out = await self.host.inspect_wallet(user_id)
        out["actor"] = wallet_name(user_id)
        out["pid"] = os.getpid()
        out["writer_client"] = self.client.state()
        return out


class CallActor:
    def __init__(self, spec: dict, config: Config, database_url: str, redis_url: str | None):
        self.spec = spec
        self.config = config
        self.database_url = database_url
        self.presence = Presence(redis_url)
        self.call = Call(**spec)
        self._lock = asyncio.Lock()  # a tick and a hang-up never interleave (rule 7)
        self._load_once = LoadOnce(self._load)
        self._loop_task: asyncio.Task | None = None
        self._payer = None
        self._listener = None
        self._finished = False  # settled, committed, listener released: safe to retire

    async def _ready(self) -> None:
        await self._load_once()
        if (
            self.config.clock == "real"
            and self.call.settlement is None
            and (self._loop_task is None or self._loop_task.done())
        ):
            self._loop_task = asyncio.get_running_loop().create_task(self._loop())

    async def _load(self) -> None:
        """On a (re)start: PostgreSQL says how far the call got, once the writer committed
        what this actor's predecessor and the payer's had handed it."""
        await writer_drainer(self.config.namespace)()
        pool = await get_pool(self.database_url)
        row = await store.read_call(pool, self.call.call_id)
        last = await store.last_billed_minutes(pool, [self.call.call_id])
        self.call.billed_minutes = last[self.call.call_id]
        self._payer = actor(wallet_name(self.call.user_id), self.config.namespace)
        self._listener = actor(wallet_name(self.call.listener_id), self.config.namespace)
        if row["status"] != "ongoing":
            # Restarted after the settlement committed: finish its steps again; each one is
            # idempotent (by call id and transfer id).
            self.call.billed_minutes = row["billed_minutes"]
            await self._settled(self.call.settle(row["status"], row["end_reason"], row["ended_at"]))

    async def _bill(self, now: float, settling: bool = False) -> Settlement | None:
        """Ask the payer's wallet to bill through the minute due. Before a settlement it is
        asked even when nothing is due: a wallet actor that restarted may have lost minutes
        it billed but had not yet committed, and bills them again here (same transfer ids)."""
        due = self.call.due_minute(now)
        if due <= self.call.billed_minutes and now < self.call.expires_at() and not settling:
            return None
        last, short, coins = await remote(self._payer.bill.remote(self.call.call_id, due, now))
        s = self.call.after_billing(last, short, now)
        if s is None:
            notice = self.call.low_balance(coins, self.config.low_balance_minutes)
            if notice is not None:
                await self.presence.publish_low_balance([notice])
        return s

    async def _settled(self, s: Settlement) -> None:
        still = await remote(self._payer.close_call.remote(s))
        try:
            await remote(
                self._listener.release_listeners.remote(
                    [(s.listener_id, s.call_id, s.earnings_paise)]
                )
            )
        except Exception as e:  # noqa: BLE001 - sorted below
            if not is_transient(e):
                raise
            # The listener's wallet actor is restarting: it reloads from PostgreSQL, or frees
            # the listener from there when next asked.
            log.warning("call %d: listener release not delivered: %s", s.call_id, e)
        await self.presence.call_settled(s.as_dict(), still)
        self._finished = True

    async def run_due(self, now: float) -> dict:
        await self._ready()
        async with self._lock:
            before = self.call.billed_minutes
            if self.call.settlement is None:
                s = await self._bill(now)
                if s is not None:
                    await self._settled(s)
        return self.call.state(now) | {"billed_now": self.call.billed_minutes - before}

    async def end(self, now: float, reason: str = "hangup") -> dict:
        await self._ready()
        async with self._lock:
            if self.call.settlement is None:
                s = await self._bill(now, settling=True) or self.call.end(reason, now)
                await self._settled(s)
        return self.call.settlement.as_dict()

    async def _loop(self) -> None:
        try:
            while self.call.settlement is None:
                delay = max(0.0, self.call.next_due_at() - time.time())
                await asyncio.sleep(min(delay, self.config.shard_loop_interval_ms / 1000))
                await self.run_due(time.time())
        except InvariantViolation as e:
            log.critical("call %d: %s; exiting to be rebuilt", self.call.call_id, e)
            os._exit(70)

    async def state(self, now: float) -> dict:
        await self._ready()
        out = self.call.state(now)
        out["actor"] = f"call:{self.call.call_id}"
        out["pid"] = os.getpid()
        return out

    async def ping(self) -> str:
        """The call's status, but "ongoing" until its settlement is fully done."""
        await self._ready()
        return self.call.status if self._finished else "ongoing"
