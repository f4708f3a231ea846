"""A shard: one Ray actor hosting the wallets of many people and the calls they pay for.

A call lives on its payer's shard, so a tick is a local method call. Each shard keeps a timer
wheel of due ticks and bills whatever is due in one pass; listener releases that belong to other
shards go out in one message per shard and pass.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time

import ray

from actors.call import Call, Settlement
from actors.errors import InvariantViolation
from engine.config import Config, tune_gc_for_hot_path
from engine.host import WalletHost, WalletMethods
from engine.loading import LoadOnce
from engine.raycalls import actor, is_transient, remote, shard_name, writer_drainer, writer_sender
from engine.timers import TimerWheel
from persistence import store
from persistence.client import WriterClient
from persistence.presence import Presence
from persistence.waiting import wait_event

log = logging.getLogger("billing.shard")

# Calls billed per slice of a pass before yielding to requests and checking backpressure.
TICK_SLICE_MAX = 5_000
# Ongoing calls read from PostgreSQL at a time when a shard recovers.
RECOVERY_CHUNK_CALLS = 20_000
# Freeing a listener hosted by a shard that is restarting: tries, and the first pause.
RELEASE_ATTEMPTS_MAX = 8
RELEASE_RETRY_DELAY_S = 0.05


class Shard(WalletMethods):
    def __init__(
        self,
        index: int,
        config: Config,
        database_url: str,
        redis_url: str | None,
        send=None,
    ) -> None:
        tune_gc_for_hot_path()
        self.index = index
        self.n_shards = config.shards
        self.config = config
        # `send` lets a test run a shard in-process against a LedgerWriter, without Ray.
        self.client = WriterClient(
            send or writer_sender(config.namespace), config.client, is_transient
        )
        drain = None if send else writer_drainer(config.namespace)
        self.host = WalletHost(database_url, self.client, config.user_calls_max, drain)
        self.presence = Presence(redis_url)
        self.calls: dict[int, Call] = {}
        self.timers = TimerWheel()
        self._settling: dict[int, asyncio.Future] = {}
        self._notices: list[dict] = []  # low-balance notices waiting to be published
        self._load_once = LoadOnce(self._load)
        self._loop_task: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None
        self.stats = {"minutes_billed": 0, "calls_settled": 0, "passes": 0, "recovered_calls": 0}

    # -- plumbing ----------------------------------------------------------------------------

    async def _ready(self) -> None:
        await self._load_once()
        if self.config.clock == "real" and (self._loop_task is None or self._loop_task.done()):
            self._wake = asyncio.Event()
            self._loop_task = asyncio.get_running_loop().create_task(self._loop())

    async def _load(self) -> None:
        """Recovery: the ongoing calls of this shard's payers, as PostgreSQL has them, read
        RECOVERY_CHUNK_CALLS at a time."""
        pool = await self.host.pool()
        after, recovered = 0, 0
        while True:
            calls = await store.load_ongoing_calls(
                pool,
                self.config.minute_seconds,
                self.config.max_call_minutes,
                shard=(self.index, self.n_shards),
                after_call_id=after,
                limit=RECOVERY_CHUNK_CALLS,
            )
            if not calls:
                break
            await self.host.preload([c.user_id for c in calls])
            for c in calls:
                self._add(c)
            recovered += len(calls)
            after = calls[-1].call_id
        self.stats["recovered_calls"] = recovered
        # What recovery loaded lives as long as the calls: out of the collector's way.
        gc.freeze()

    def _add(self, call: Call) -> None:
        self.calls[call.call_id] = call
        self.timers.add(call.next_due_at(), call.call_id)
        if self._wake is not None:
            self._wake.set()

    async def start(self) -> dict:
        await self._ready()
        return await self.state()

    # -- calls -------------------------------------------------------------------------------

    async def start_call(self, spec: dict, now: float) -> dict:
        await self._ready()
        call = Call(**spec)
        await self.host.open_call(call, now)
        self._add(call)
        return call.state()

    async def end_call(self, call_id: int, now: float, reason: str = "hangup") -> dict | None:
        """End a call: bill what is due, settle once, return after the settlement committed.
        None when the call is not (or no longer) on this shard."""
        await self._ready()
        pending = self._settling.get(call_id)
        if pending is None:
            call = self.calls.get(call_id)
            if call is None:
                return None
            settlements: list[Settlement] = []
            self.stats["minutes_billed"] += self._bill_one(call, now, settlements)
            if not settlements:
                settlements.append(call.end(reason, now))
            self._settle(settlements, urgent=True)
            self._publish_notices()
            pending = self._settling[call_id]
        return (await asyncio.shield(pending)).as_dict()

    async def bill_call(self, call_id: int, now: float) -> dict | None:
        """Bill one call's due minutes now (the older API's per-call deduction)."""
        await self._ready()
        call = self.calls.get(call_id)
        if call is None or call.settlement is not None:
            return None
        settlements: list[Settlement] = []
        self.stats["minutes_billed"] += self._bill_one(call, now, settlements)
        if settlements:
            self._settle(settlements, urgent=True)
            await asyncio.shield(self._settling[call_id])
        self._publish_notices()
        return call.state(now)

    async def run_due(self, now: float) -> int:
        """Bill every minute due by `now`; returns the number of minutes billed."""
        await self._ready()
        billed = 0
        self.stats["passes"] += 1
        while True:
            await self.client.room()
            due = self.timers.take(now, TICK_SLICE_MAX)
            if not due:
                break
            settlements: list[Settlement] = []
            billed += self._tick_slice(due, now, settlements)
            if settlements:
                self._settle(settlements, urgent=False)
            await asyncio.sleep(0)
        self.stats["minutes_billed"] += billed
        self._publish_notices()
        return billed

    def _bill_one(
        self, call: Call, now: float, settlements: list[Settlement], out: list | None = None
    ) -> int:
        """Bill a call through its due minute; returns minutes billed. A settlement, if the
        payer ran short or the call ran out of time, goes into `settlements`; the transfers
        into `out` if given (see WalletHost.bill)."""
        before = call.billed_minutes
        last, short, coins = self.host.bill(
            call.user_id, call.call_id, call.due_minute(now), now, out
        )
        s = call.after_billing(last, short, now)
        if s is not None:
            settlements.append(s)
        else:
            notice = call.low_balance(coins, self.config.low_balance_minutes)
            if notice is not None:
                self._notices.append(notice)
        return last - before

    def _tick_slice(self, due: list[int], now: float, settlements: list[Settlement]) -> int:
        calls, timers = self.calls, self.timers
        billed = 0
        records: list = []
        for call_id in due:
            call = calls.get(call_id)
            if call is None or call.settlement is not None:
                continue
            billed += self._bill_one(call, now, settlements, records)
            if call.settlement is None:
                timers.add(call.next_due_at(), call_id)
        self.client.append(records)  # before the settlements of this slice
        return billed

    def _publish_notices(self) -> None:
        if self._notices:
            notices, self._notices = self._notices, []
            asyncio.get_running_loop().create_task(self.presence.publish_low_balance(notices))

    def _settle(self, settlements: list[Settlement], urgent: bool) -> None:
        loop = asyncio.get_running_loop()
        seq = 0
        for s in settlements:
            self._settling[s.call_id] = loop.create_future()
            seq = self.host.close_call(s)
        loop.create_task(self._finish(settlements, seq, urgent))

    async def _finish(self, settlements: list[Settlement], seq: int, urgent: bool) -> None:
        """After the settlements committed: free listeners (batched per shard), clear
        presence, answer anyone waiting on them."""
        try:
            await self.client.wait_committed(seq, urgent=urgent)
            by_shard: dict[int, list[tuple[int, int, int]]] = {}
            for s in settlements:
                self.calls.pop(s.call_id, None)
                item = (s.listener_id, s.call_id, s.earnings_paise)
                by_shard.setdefault(s.listener_id % self.n_shards, []).append(item)
            sends = []
            for index, items in by_shard.items():
                if index == self.index:
                    await self.host.release_listeners(items)
                else:
                    sends.append(self._release_on(index, items))
            await asyncio.gather(*sends)
            for s in settlements:
                await self.presence.call_settled(s.as_dict(), self.host.user_in_call(s.user_id))
            self.stats["calls_settled"] += len(settlements)
            for s in settlements:
                self._settling.pop(s.call_id).set_result(s)
        except BaseException as e:
            for s in settlements:
                fut = self._settling.pop(s.call_id, None)
                if fut is not None and not fut.done():
                    fut.set_exception(e)
            raise

    async def _release_on(self, index: int, items: list[tuple[int, int, int]]) -> None:
        """Free listeners hosted by another shard, retrying while it restarts. If it never
        answers, the listeners' host frees them from PostgreSQL when they are next needed."""
        delay_s = RELEASE_RETRY_DELAY_S
        for attempt in range(1, RELEASE_ATTEMPTS_MAX + 1):
            try:
                peer = actor(shard_name(index), self.config.namespace)
                await remote(peer.release_listeners.remote(items))
                return
            except Exception as e:  # noqa: BLE001 - sorted below
                if not (is_transient(e) or isinstance(e, ValueError)):
                    raise
                if attempt == RELEASE_ATTEMPTS_MAX:
                    log.warning(
                        "shard %d: release on shard %d not delivered: %s", self.index, index, e
                    )
                    return
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, 1.0)

    async def _loop(self) -> None:
        interval_s = self.config.shard_loop_interval_ms / 1000
        try:
            while True:
                await self.run_due(time.time())
                delay = interval_s
                first = self.timers.first_at()
                if first is not None:
                    # a bucket already open holds only calls due within its width
                    delay = min(delay, max(first - time.time(), self.timers.width_s))
                await wait_event(self._wake, delay)
        except InvariantViolation as e:
            # A broken rule of money: die, and let Ray rebuild this shard from PostgreSQL.
            log.critical("shard %d: %s; exiting to be rebuilt", self.index, e)
            os._exit(70)

    # -- flushing and looking inside ---------------------------------------------------------

    async def sync(self) -> None:
        """Wait until everything this shard produced is committed."""
        await self._ready()
        await asyncio.gather(*self._settling.values(), return_exceptions=True)
        await self.client.wait_committed()

    async def inspect_call(self, call_id: int, now: float) -> dict | None:
        await self._ready()
        call = self.calls.get(call_id)
        if call is None:
            return None
        out = call.state(now)
        out["shard"] = self.index
        return out

    async def inspect_wallet(self, user_id: int) -> dict:
        await self._ready()
        out = await self.host.inspect_wallet(user_id)
        out["shard"] = self.index
        return out

    async def state(self) -> dict:
        return {
            "shard": self.index,
            "pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "ongoing_calls": len(self.calls),
            "wallets_loaded": len(self.host.wallets),
            "timer_entries": len(self.timers),
            "next_tick_at": self.timers.first_at(),
            "settling": len(self._settling),
            "writer_client": self.client.state(),
            "presence": self.presence.state(),
            **self.stats,
        }

    async def ping(self) -> bool:
        await self._ready()
        return True
