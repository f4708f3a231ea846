"""A shard: one Ray actor hosting the wallets of many people and the calls they pay for, and
committing their writes itself.

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

from actors.call import Call
from actors.errors import EngineUnavailable, InvariantViolation
from actors.money import to_ms
from aio.batching import Batcher, BatchLimits
from aio.once import LoadOnce
from aio.retry import Retry, retrying
from aio.waiting import wait_event
from engine import logs
from engine.config import Config, tune_gc_for_hot_path
from engine.host.timers import TimerWheel
from engine.operations import Operation, ReadCall, ReleaseListener
from engine.runtime import metrics
from engine.runtime.ray_actors.host_actor import HostActor, exit_on_violation, host_in_actor
from engine.runtime.raycalls import actor, remote, shard_name, shard_of
from persistence import store
from persistence.committer import Committer
from persistence.link import WriterLink

log = logging.getLogger("billing.shard")

# Calls billed per slice of a pass before yielding to requests and checking backpressure.
TICK_SLICE_MAX = 1_000
# Ongoing calls read from PostgreSQL at a time when a shard recovers.
RECOVERY_CHUNK_CALLS = 20_000
# Reaching a peer shard that is restarting (freeing a listener, asking about a listener's call):
# tries and pauses. Ray restarts a shard in about a second here.
RELEASE_RETRY = Retry(attempts_max=8, delay_min_s=0.05, delay_max_s=1.0)
# Listener releases to one peer shard: up to size_max in one message, two messages at a time.
RELEASES = BatchLimits(size_max=1_000, in_flight_max=2, queued_max=100_000)
# Operations to one shard, per type (from the Engine, or a shard reserving its listeners): one
# Ray message carries up to `size_max` of them (`HostActor.handle`), one message in flight, so
# that what arrives meanwhile goes together; a lone request goes at once.
SHARD_REQUESTS = BatchLimits(size_max=256, in_flight_max=1, queued_max=10_000)
# Lateness of timer-billed minutes, counted in buckets of this width up to LATENESS_MS_MAX.
LATENESS_BUCKET_MS = 10
LATENESS_MS_MAX = 10_000
LATENESS_BUCKETS = LATENESS_MS_MAX // LATENESS_BUCKET_MS


class Shard(HostActor):
    def __init__(
        self,
        index: int,
        config: Config,
        database_url: str,
        redis_url: str | None,
        link: WriterLink | None = None,
    ) -> None:
        tune_gc_for_hot_path()
        self.index = index
        self.name = shard_name(index)
        self.n_shards = config.shards
        self.config = config
        # A `link` lets a test run a shard in-process, writing through a LedgerWriter of its
        # own, without Ray.
        self.in_ray = link is None
        if self.in_ray:
            logs.configure()
        self.timers = TimerWheel()
        # Wheel entries of calls that left (taken or purged later), and calls a pass ended
        # whose entry it took: what `inspect` must not count as timers of calls here.
        self._stale = 0
        self._unscheduled: set[int] = set()
        self.peers = ShardPeers(index, config)
        # A shard commits its own writes (one hop from a request to its commit), fenced by its
        # index: its client's buffer is the one between a minute and its COPY, and each batch
        # the client sends is one transaction.
        self.committer = None
        if self.in_ray:
            observe = metrics.writer_observer(self.name)
            link = self.committer = Committer(database_url, observe, fence=index)
        self.host = host_in_actor(
            config,
            database_url,
            redis_url,
            self.peers,
            link,
            on_call_added=self._add_timer,
            on_call_removed=self._drop_timer,
        )
        self.client, self.presence = self.host.client, self.host.presence
        self._load_once = LoadOnce(self._load)
        self._loop_task: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None
        self.stats = {"passes": 0, "recovered_calls": 0}
        # Minutes the timer billed, by how late (LATENESS_BUCKET_MS buckets; the last: later).
        self.late_minutes: dict[int, int] = {}

    # -- plumbing ----------------------------------------------------------------------------

    async def _loaded(self) -> None:
        await self._load_once()
        if self.config.clock == "real" and (self._loop_task is None or self._loop_task.done()):
            self._wake = asyncio.Event()
            self._loop_task = asyncio.get_running_loop().create_task(self._loop())

    async def _load(self) -> None:
        """Recovery: the ongoing calls of this shard's payers, as PostgreSQL has them, read
        RECOVERY_CHUNK_CALLS at a time. Each is billed up to the time of the first request or
        pass that reaches it, before that is answered (rule 9)."""
        await self.host.cache.before_first_read()
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
            for c in calls:  # held before their wallets load, so those do not load them again
                self.host.book.calls[c.call_id] = c
            await self.host.cache.preload([c.user_id for c in calls])
            for c in calls:  # the wallets just loaded say how far each call is billed
                self.host.add_call(c)
            recovered += len(calls)
            after = calls[-1].call_id
        self.stats["recovered_calls"] = recovered
        # What recovery loaded lives as long as the calls: out of the collector's way.
        gc.freeze()

    def _add_timer(self, call: Call) -> None:
        self.timers.add(call.wake_at(), call.call_id)
        if self._wake is not None:
            self._wake.set()

    def _drop_timer(self, call: Call) -> None:
        """A call left: its wheel entry, if it has one, is stale until taken or purged."""
        if call.call_id in self._unscheduled:
            self._unscheduled.discard(call.call_id)  # taken by the pass that ended it
        else:
            self._stale += 1

    async def start(self) -> dict:
        await self._loaded()
        return await self.state()

    # -- calls -------------------------------------------------------------------------------

    async def bill_due(self, now: float, wait: bool = False) -> int:
        """Bill every minute due by `now`; returns the number of minutes billed. With `wait`,
        return only once the calls this pass ended are settled everywhere (their listeners
        freed and credited), as a manual clock's `advance()` promises."""
        await self._loaded()
        billed = 0
        self.stats["passes"] += 1
        try:
            while True:
                await self.client.room()
                oldest_at = self.timers.first_at()
                # Due by `now` as the ledger counts time, in whole ms: a clock's float sum can fall
                # a hair short of a due time that its ms already reached.
                due = self.timers.take(to_ms(now) / 1000, TICK_SLICE_MAX)
                if not due:
                    break
                minutes = self.host.bill_due(due, now)
                self._count_lateness(now - (oldest_at or now), minutes)
                billed += minutes
                for call_id in due:
                    call = self.host.book.calls.get(call_id)
                    if call is None:
                        self._stale -= 1  # the entry of a call that left
                    elif call.settlement is None:
                        self.timers.add(call.wake_at(), call_id)
                    else:
                        self._unscheduled.add(call_id)  # ended by this pass: no entry left
                await asyncio.sleep(0)
        except InvariantViolation as e:
            if self.in_ray:
                exit_on_violation(e, self.name)
            raise
        self.host.publish_notices()
        if wait:
            await self.host.wait_settled()
        return billed

    def _count_lateness(self, late_s: float, minutes: int) -> None:
        """How late the timer billed minutes: each minute of a slice counts as late as the
        slice's oldest bucket opened (an upper bound, by at most TIMER_BUCKET_S), in buckets of
        LATENESS_BUCKET_MS up to LATENESS_MS_MAX."""
        if minutes:
            bucket = min(max(0, int(late_s * 1000)) // LATENESS_BUCKET_MS, LATENESS_BUCKETS)
            self.late_minutes[bucket] = self.late_minutes.get(bucket, 0) + minutes

    async def _loop(self) -> None:
        interval_s = self.config.timer_interval_ms / 1000
        while True:
            await self.bill_due(time.time())
            metrics.ongoing(self.name, len(self.host.book.calls))
            delay = interval_s
            first = self.timers.first_at()
            if first is not None:
                # a bucket already open holds only calls due within its width
                delay = min(delay, max(first - time.time(), self.timers.width_s))
            await wait_event(self._wake, delay)

    # -- flushing and looking inside ---------------------------------------------------------

    async def sync(self) -> None:
        """Wait until everything this shard produced is committed."""
        await self._loaded()
        await self.host.wait_settled()
        await self.client.wait_committed()

    def about(self) -> dict:
        return {"shard": self.index}

    async def state(self) -> dict:
        return {
            "shard": self.index,
            "name": self.name,
            "pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id() if self.in_ray else None,
            "ongoing_calls": len(self.host.book.calls),
            "wallets_loaded": len(self.host.wallets),
            **self._timers_state(),
            "writer_client": self.client.state(),
            "writer": None if self.committer is None else self.committer.state(),
            "presence": self.presence.state(),
            "batches": self.host.cache.batches() | self.peers.batches(),
            **self.host.stats,
            **self.stats,
            "late_minutes": {
                b * LATENESS_BUCKET_MS: n for b, n in sorted(self.late_minutes.items())
            },
        }

    def _timers_state(self) -> dict:
        """The wheel as it is for the calls still here: the entries of calls that left are
        purged from its front first, and not counted."""
        self._stale -= self.timers.purge_front(self.host.book.calls.__contains__)
        live = len(self.timers) - self._stale
        return {"timer_entries": live, "next_tick_at": self.timers.first_at() if live else None}

    async def ping(self) -> bool:
        await self._loaded()
        return True


class ShardLanes:
    """Operations to the shards, one lane per shard and kind of operation, each a `Batcher` of
    `handle` messages: a shard answers a batch when all of it is done, so a reservation (no
    write) must not wait in one batch with starts and ends waiting for commits."""

    def __init__(self, handle, n_shards: int) -> None:
        self._handle = handle  # index -> the shard's actor handle
        self.n_shards = n_shards
        self._lanes: dict[tuple[int, type], Batcher] = {}

    def lanes(self) -> dict[str, dict]:
        """Each lane's batching so far, by name (`inspect shards`)."""
        return {b.name: b.state() for b in self._lanes.values()}

    async def ask(self, op: Operation):
        """`op` on the shard of the person it is routed by, in the next message of its lane."""
        index = shard_of(op.routed_by, self.n_shards)
        lane = self._lanes.get((index, type(op)))
        if lane is None:

            async def send(ops: list[Operation]) -> list:
                return await remote(self._handle(index).handle.remote(ops))

            name = f"{type(op).__name__} to {shard_name(index)}"
            lane = self._lanes[(index, type(op))] = Batcher(send, SHARD_REQUESTS, name)
        return await lane.submit(op)


class ShardPeers:
    """The other shards, as a shard's host reaches them (`engine.host.peers.Peers`):
    operations in lanes per shard and kind, listener releases batched per shard and retried
    while it restarts, and a listener's call brought up to time on its payer's shard."""

    def __init__(self, index: int, config: Config) -> None:
        self.index = index
        self.n_shards = config.shards
        self.namespace = config.namespace
        self._handles: dict[int, object] = {}
        self._asks = ShardLanes(self._peer, self.n_shards)
        self._releases = [
            Batcher(self._release_on(i), RELEASES, f"releases to {shard_name(i)}")
            for i in range(self.n_shards)
        ]

    def is_local(self, user_id: int) -> bool:
        return shard_of(user_id, self.n_shards) == self.index

    def batches(self) -> dict:
        return {
            "releases": [b.state() for b in self._releases],
            "peer_requests": self._asks.lanes(),
        }

    def _peer(self, index: int):
        """A peer shard's handle, looked up once (a lookup is a round trip to Ray's GCS; the
        handle of a restarted actor stays valid)."""
        handle = self._handles.get(index)
        if handle is None:
            handle = self._handles[index] = actor(shard_name(index), self.namespace)
        return handle

    async def ask(self, op: Operation):
        if isinstance(op, ReleaseListener):
            # The releases of concurrent settlements go to each shard together.
            return await self._releases[shard_of(op.routed_by, self.n_shards)].submit(op)
        if isinstance(op, ReadCall):  # retried while the payer's shard restarts
            return await retrying(lambda: self._asks.ask(op), RELEASE_RETRY)
        return await self._asks.ask(op)

    def _release_on(self, index: int):
        """A `send` for the releases batched to shard `index`: retried while it restarts. If
        it never answers, the listeners' host frees them from PostgreSQL before it next answers
        for them."""

        async def send(ops: list[ReleaseListener]) -> list[None]:
            try:
                await retrying(lambda: remote(self._peer(index).handle.remote(ops)), RELEASE_RETRY)
            except EngineUnavailable as e:
                log.warning("shard %d: release on shard %d not delivered: %s", self.index, index, e)
            return [None] * len(ops)

        return send
