"""An Engine's life: joining Ray, starting its actors or attaching to the ones running, keeping
them, and stopping. Ray is imported here only when an engine starts, so that a client that only
wants the error types (`from engine import InsufficientCoins`) does not pay for it.
"""

from __future__ import annotations

import asyncio
import logging

from actors.errors import NotRunning
from engine.clock import make_clock
from engine.config import Config, from_env
from engine.embedded import Embedded, embedded_for
from engine.rate_cards import RateCards
from persistence.db import close_pools, get_pool
from persistence.events import Relay
from persistence.presence import Presence
from persistence.presence_sweeps import PresenceSweeps

log = logging.getLogger("billing.engine")

KEEPER_INTERVAL_S = 1.0

# The clock of each engine this process started, by its writer's actor id: an engine that
# attaches from the same process (the older API, in another event loop) shares it, so all time
# comes from one clock object, the manual one of a test included.
_local_clocks: dict = {}


class Lifecycle:
    """An Engine's running parts, and their life: `start()` joins Ray and attaches to the
    engine running in the namespace (its `writer` actor answers there) or starts one; `stop()`
    drains and stops what it started (an attached engine's parts keep running). It owns the
    configuration, the clock, the placement, the writer, presence and the scheduler; the
    Engine's other parts use them through it. `owner` is the Engine it runs (what the
    scheduler's jobs run against)."""

    def __init__(self, config: Config | None, owner) -> None:
        self.owner = owner
        self.config = config or from_env()
        self.clock = make_clock(self.config.clock)
        self.embedded: Embedded | None = None
        self.database_url: str | None = self.config.database_url
        self.redis_url: str | None = self.config.redis_url
        self.placement = None
        self.writer = None
        self.presence: Presence | None = None
        self.attached = False
        self.scheduler = None
        self.cards = RateCards(self.config.rate_card, self.pool, self.clock)
        self._sweeps: PresenceSweeps | None = None
        self._relay: Relay | None = None
        self._webhooks = None  # the Dispatcher, and its task, in an owner on the real clock
        self._webhooks_task: asyncio.Task | None = None
        self._keeper: asyncio.Task | None = None
        self._started_ray = False
        self._own_ray = False
        self._record: str | None = None  # where this engine recorded its cluster, if it did
        self._stopped = False

    async def start(self, attach_only: bool = False):
        """Join Ray, then attach to the engine running in the namespace, or start one (with
        `attach_only`, refuse naming the namespace and address instead)."""
        from engine.runtime import cluster

        cfg = self.config
        found = cluster.find(cfg.ray_address, cfg.namespace, cfg.data_dir)
        if found.via == "own" and cfg.database_url is not None and not attach_only:
            # No cluster to join, so this engine starts one: a database it cannot reach is
            # refused (EngineUnavailable naming it) before a Ray is started for nothing.
            await get_pool(cfg.database_url)
        joined = cluster.join(
            None, cfg.namespace, cfg.data_dir, cfg.dashboard, found, cfg.metrics_on_network
        )
        self._started_ray = joined.started
        self._own_ray = joined.via == "own"
        if joined.namespace != cfg.namespace:
            self.config = cfg.replace(namespace=joined.namespace)
        running = cluster.Writer.running(self.config.namespace)
        if running is not None:
            await self._attach(running)
        elif attach_only:
            if self._started_ray:
                cluster.leave()
            raise NotRunning(
                f"no billing engine is running in Ray namespace {self.config.namespace!r} "
                f"at {joined.address}"
            )
        else:
            await self._start_own()
        self.presence = Presence(self.redis_url)
        log.info("engine %s: %s", "attached" if self.attached else "started", self.config.public())

    async def _attach(self, writer) -> None:
        from engine.runtime.placements.placement import make_placement

        meta = await writer.describe()
        clock = self.config.clock
        self.config = meta["config"].replace(clock=clock)
        self.database_url, self.redis_url = meta["database_url"], meta["redis_url"]
        self.clock = _local_clocks.get(writer.key, self.clock)
        # Card 0 is the running engine's BILLING_RATE_CARD, not this process's.
        self.cards = RateCards(self.config.rate_card, self.pool, self.clock)
        self.writer = writer
        self.attached = True
        self.placement = make_placement(self.config, self.database_url, self.redis_url, True)
        await self.placement.start()

    async def _start_own(self) -> None:
        from engine.runtime import cluster
        from engine.runtime.placements.placement import make_placement
        from engine.runtime.scheduler import Scheduler

        cfg = self.config
        filled, self.embedded = await asyncio.to_thread(embedded_for, cfg)
        self.database_url, self.redis_url = filled.database_url, filled.redis_url
        await get_pool(self.database_url)  # migrates the schema
        meta = {"database_url": self.database_url, "redis_url": self.redis_url, "config": cfg}
        self.writer = await cluster.Writer.start(self.database_url, cfg.writer, meta, cfg.namespace)
        _local_clocks[self.writer.key] = self.clock
        if self._started_ray and cfg.clock == "real":
            # The cluster is ours: say where it is, for a second process on this data dir.
            # The embedded database's URL (a local socket, no password) lets `audit` read it.
            embedded_db = self.embedded is not None and cfg.database_url is None
            more = {"database_url": self.database_url} if embedded_db else {}
            self._record = cluster.write_record(cfg.data_dir, cfg.namespace, **more)
        self.placement = make_placement(cfg, self.database_url, self.redis_url)
        await self.placement.start()
        if cfg.clock == "real":
            from engine.webhooks import Dispatcher

            loop = asyncio.get_running_loop()
            self._keeper = loop.create_task(self._keep())
            self._webhooks = Dispatcher(self.pool, cfg.webhooks)
            self._webhooks_task = loop.create_task(self._webhooks.run())
            if cfg.scheduler:
                self.scheduler = Scheduler(self.owner, type(self.owner).attach)
                self.scheduler.start()

    @property
    def owns_ray(self) -> bool:
        """Did this engine start the Ray it runs in (so stopping it stops all of Ray)?"""
        return self._own_ray

    def is_current(self) -> bool:
        """Is this engine still the one running in its namespace (not one stopped since)?"""
        return self.writer is not None and self.writer.is_current(self.config.namespace)

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(KEEPER_INTERVAL_S)
            try:
                await self.placement.upkeep()
                await self.relay_events()
            except Exception as e:  # noqa: BLE001 - the keeper must outlive a bad round
                log.warning("keeper round failed: %s", e)

    async def relay_events(self) -> int:
        """Copy committed call events to the Redis Stream `billing:events` (the engine's owner
        does this every KEEPER_INTERVAL_S); returns how many it added."""
        if self._relay is None:
            self._relay = Relay(self.redis_url)
        return await self._relay.relay_once(await self.pool())

    async def stop(self) -> None:
        """Drain every buffer into PostgreSQL, then stop the actors (unless attached). A second
        stop does nothing."""
        from engine.runtime import cluster

        if self._stopped:
            return
        self._stopped = True
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self._keeper is not None:
            self._keeper.cancel()
        if self._webhooks_task is not None:
            self._webhooks_task.cancel()
            await asyncio.gather(self._webhooks_task, return_exceptions=True)
            await self._webhooks.close()
        if self.placement is not None:
            await self.placement.stop()
        if self.writer is not None and not self.attached:
            await self.writer.drain()
            self.writer.stop()
            _local_clocks.pop(self.writer.key, None)
        if self.presence is not None:
            await self.presence.close()
        if self._sweeps is not None:
            await self._sweeps.close()
        if self._relay is not None:
            await self._relay.close()
        await close_pools()
        if self._record is not None:
            cluster.remove_record(self.config.data_dir)
        if self._started_ray:
            cluster.leave()
        if self.embedded is not None:
            self.embedded.stop()

    async def pool(self):
        """The process's asyncpg pool for the engine's database."""
        return await get_pool(self.database_url)

    def sweeps(self) -> PresenceSweeps:
        if self._sweeps is None:
            self._sweeps = PresenceSweeps(self.redis_url)
        return self._sweeps
