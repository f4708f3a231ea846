"""The Engine: one async API, served the same by both placements."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import uuid

import ray

from actors.call import Call
from actors.errors import InvalidInput, UnknownCall
from actors.money import (
    CALL_TYPES,
    ROLES,
    TOP_UP_TYPES,
    WITHDRAW,
    entity_id,
    one_of,
    positive_amount,
)
from engine.clock import make_clock
from engine.config import Config, from_env
from engine.embedded import Embedded, start_embedded
from engine.placement import call_spec, make_placement
from engine.raycalls import WRITER_NAME, remote
from engine.writer_actor import WriterActor
from persistence import store
from persistence.db import close_pools, get_pool, mask_url
from persistence.presence import Presence

log = logging.getLogger("billing.engine")

IDEMPOTENCY_KEY_CHARS_MAX = 128
NAME_CHARS_MAX = 200
KEEPER_INTERVAL_S = 1.0


def _key(value: object) -> str:
    if value is None:
        return uuid.uuid4().hex
    if not isinstance(value, str) or not value or len(value) > IDEMPOTENCY_KEY_CHARS_MAX:
        raise InvalidInput(
            f"idempotency_key must be a non-empty string of at most "
            f"{IDEMPOTENCY_KEY_CHARS_MAX} characters, got {value!r}"
        )
    return value


class Engine:
    """Start it, use it, stop it:

    engine = Engine(from_env())
    await engine.start()
    ...
    await engine.stop()
    """

    def __init__(self, config: Config | None = None) -> None:
        self.config = config or from_env()
        self.clock = make_clock(self.config.clock)
        self.embedded: Embedded | None = None
        self.database_url: str | None = self.config.database_url
        self.redis_url: str | None = self.config.redis_url
        self.placement = None
        self.writer = None
        self.presence: Presence | None = None
        self._keeper: asyncio.Task | None = None
        self._started_ray = False

    # -- life cycle --------------------------------------------------------------------------

    async def start(self) -> Engine:
        cfg = self.config
        if cfg.database_url is None or cfg.redis_url is None:
            self.embedded = await asyncio.to_thread(
                start_embedded, cfg.data_dir, cfg.database_url is None, cfg.redis_url is None
            )
            self.database_url = cfg.database_url or self.embedded.database_url
            self.redis_url = cfg.redis_url or self.embedded.redis_url
        await get_pool(self.database_url)  # migrates the schema
        self.presence = Presence(self.redis_url)
        if not ray.is_initialized():
            ray.init(
                address=cfg.ray_address,
                namespace=cfg.namespace,
                include_dashboard=False,
                logging_level=logging.WARNING,
                log_to_driver=os.environ.get("BILLING_LOG_ACTORS") == "1",
            )
            self._started_ray = True
        self.writer = (
            ray.remote(WriterActor)
            .options(
                name=WRITER_NAME,
                namespace=cfg.namespace,
                max_restarts=-1,
                max_concurrency=1000,
                num_cpus=0,
            )
            .remote(self.database_url, cfg.writer)
        )
        await remote(self.writer.ping.remote())
        self.placement = make_placement(cfg, self.database_url, self.redis_url)
        await self.placement.start()
        if cfg.clock == "real":
            self._keeper = asyncio.get_running_loop().create_task(self._keep())
        log.info("engine started: %s", cfg.public())
        return self

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(KEEPER_INTERVAL_S)
            try:
                await self.placement.keep()
            except Exception as e:  # noqa: BLE001 - the keeper must outlive a bad round
                log.warning("keeper round failed: %s", e)

    async def stop(self) -> None:
        """Drain every buffer into PostgreSQL, then stop the actors."""
        if self._keeper is not None:
            self._keeper.cancel()
        if self.placement is not None:
            await self.placement.stop()
        if self.writer is not None:
            await remote(self.writer.drain.remote())
            ray.kill(self.writer, no_restart=True)
        if self.presence is not None:
            await self.presence.close()
        await close_pools()
        if self._started_ray:
            ray.shutdown()
        if self.embedded is not None:
            self.embedded.stop()

    async def __aenter__(self) -> Engine:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def _pool(self):
        return await get_pool(self.database_url)

    # -- people and money --------------------------------------------------------------------

    async def create_user(self, name: str, role: str = "user") -> int:
        if not isinstance(name, str) or not name.strip() or len(name) > NAME_CHARS_MAX:
            raise InvalidInput(f"name must be a non-empty string of at most {NAME_CHARS_MAX} chars")
        one_of(role, ROLES, "role")
        return await store.create_user(await self._pool(), name, role)

    async def create_listener(self, name: str) -> int:
        return await self.create_user(name, "listener")

    async def top_up(
        self,
        user_id: int,
        amount: int,
        tx_type: str = "purchase",
        idempotency_key: str | None = None,
    ) -> dict:
        """Add coins (purchase, bonus, referral_bonus). Applied once per idempotency key;
        returns after the transfer is committed."""
        entity_id(user_id, "user_id")
        positive_amount(amount, "amount")
        one_of(tx_type, TOP_UP_TYPES, "tx_type")
        key = _key(idempotency_key)
        now = self.clock.now()
        return await self.placement.wallet(
            user_id, "apply_external", user_id, tx_type, amount, key, now
        )

    async def withdraw(
        self, listener_id: int, amount_paise: int, idempotency_key: str | None = None
    ) -> dict:
        entity_id(listener_id, "listener_id")
        positive_amount(amount_paise, "amount_paise")
        key = _key(idempotency_key)
        now = self.clock.now()
        return await self.placement.wallet(
            listener_id, "apply_external", listener_id, WITHDRAW, amount_paise, key, now
        )

    async def balance(self, user_id: int) -> dict:
        entity_id(user_id, "user_id")
        return await self.placement.wallet(user_id, "balance", user_id)

    # -- calls -------------------------------------------------------------------------------

    async def start_call(self, user_id: int, listener_id: int, call_type: str = "audio") -> dict:
        """Connect a call: minute 1 is charged now. Returns after the start is committed."""
        entity_id(user_id, "user_id")
        entity_id(listener_id, "listener_id")
        one_of(call_type, CALL_TYPES, "call_type")
        pool = await self._pool()
        await store.require_role(pool, user_id, "user")
        await store.require_role(pool, listener_id, "listener")
        now = self.clock.now()
        day = dt.datetime.fromtimestamp(now, dt.UTC).date()
        tier = await store.listener_tier(pool, listener_id, day)
        rate_coins, rate_paise = self.config.rate_card.rates(call_type, tier)
        call = Call(
            await store.next_call_id(pool),
            user_id,
            listener_id,
            call_type,
            tier,
            rate_coins,
            rate_paise,
            now,
            self.config.minute_seconds,
            self.config.max_call_minutes,
        )
        await self.placement.wallet(listener_id, "reserve_listener", listener_id, call.call_id)
        try:
            state = await self.placement.start_call(call, call_spec(call), now)
        except BaseException:
            await self.placement.wallet(
                listener_id, "cancel_reservation", listener_id, call.call_id
            )
            raise
        await self.presence.call_started(
            {k: state[k] for k in ("call_id", "user_id", "listener_id", "call_type")}
            | {"connected_at": now}
        )
        return state

    async def end_call(self, call_id: int) -> dict:
        """Hang up. Idempotent: ending an ended call returns its settlement unchanged."""
        entity_id(call_id, "call_id")
        row = await store.read_call(await self._pool(), call_id)
        if row["status"] == "ongoing":
            out = await self.placement.end_call(call_id, row["user_id"], self.clock.now())
            if out is not None:
                return out
            row = await store.read_call(await self._pool(), call_id)
        return {k: row[k] for k in SETTLEMENT_KEYS}

    async def get_call(self, call_id: int) -> dict:
        """The live state of an ongoing call, or the stored row of an ended one."""
        entity_id(call_id, "call_id")
        row = await store.read_call(await self._pool(), call_id)
        if row["status"] == "ongoing":
            live = await self.placement.call_state(call_id, row["user_id"], self.clock.now())
            if live is not None:
                return live
        return row

    async def heartbeat(self, user_id: int) -> bool:
        entity_id(user_id, "user_id")
        return await self.presence.heartbeat(user_id, self.clock.now())

    # -- time, flushing, inspection ----------------------------------------------------------

    async def advance(self, seconds: float) -> int:
        """Manual clock only: move time and bill whatever became due."""
        if not self.clock.manual:
            raise InvalidInput("advance() needs the manual clock (clock='manual')")
        now = self.clock.advance(seconds)
        return await self.placement.run_due(now)

    async def sync(self) -> None:
        """Wait until everything produced so far is committed in PostgreSQL."""
        await self.placement.sync()

    async def inspect(self, kind: str, ident: int | None = None) -> dict | list:
        one_of(kind, ("call", "wallet", "writer", "shards", "config"), "inspect kind")
        if kind == "writer":
            return await remote(self.writer.state.remote())
        if kind == "shards":
            return await self.placement.inspect()
        if kind == "config":
            return self.config.public() | {"database": mask_url(self.database_url)}
        entity_id(ident, f"{kind} id")
        if kind == "wallet":
            return await self.placement.wallet(ident, "inspect_wallet", ident)
        return await self.get_call(ident)


SETTLEMENT_KEYS = (
    "call_id",
    "user_id",
    "listener_id",
    "status",
    "end_reason",
    "billed_minutes",
    "coins_spent",
    "earnings_paise",
    "ended_at",
)

__all__ = ["Engine", "UnknownCall"]
