"""The Engine: one async API, served the same by both placements."""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid

from actors.call import END_REASONS, SETTLEMENT_KEYS
from actors.errors import (
    EngineUnavailable,
    IdempotencyConflict,
    InvalidInput,
    UnknownCall,
)
from actors.money import (
    CALL_TYPES,
    IDEMPOTENCY_KEY_CHARS_MAX,
    NAME_CHARS_MAX,
    ROLES,
    SPEND,
    TIERS,
    TOP_UP_TYPES,
    WITHDRAW,
    entity_id,
    one_of,
    positive_amount,
    text_value,
)
from engine.clock import make_clock
from engine.config import Config, from_env
from engine.embedded import Embedded, embedded_for
from engine.jobs import JOBS, next_daily, run_job_here
from engine.runtime import cluster
from engine.runtime.host import CallRequest
from engine.runtime.placement import make_placement
from engine.runtime.scheduler import Scheduler, run_as_task
from persistence import badges, store
from persistence.db import close_pools, get_pool, mask_url
from persistence.events import READ_LIMIT_MAX, Relay, read_events
from persistence.presence import Presence
from persistence.presence_sweeps import PresenceSweeps
from persistence.writer import TRANSIENT_ERRORS

log = logging.getLogger("billing.engine")

KEEPER_INTERVAL_S = 1.0
READY_WRITER_LAG_MS_MAX = 5_000  # /readyz fails while the writer's oldest write waits longer
READY_WAIT_S = 2.0  # each readiness probe's bound
BUSY_FOR_S_MAX = 7 * 24 * 3600
# Payers of the calls this process started, so that an end or a read goes to the payer's host
# without reading the call's row first. Past the cap the oldest entry goes (that call's next
# request reads its row, as a call started by another process does).
CALL_PAYERS_MAX = 200_000

# The clock of each engine this process started, by its writer's actor id: an engine that
# attaches from the same process (the older API, in another event loop) shares it, so all time
# comes from one clock object, the manual one of a test included.
_local_clocks: dict = {}


def retryable(method):
    """An Engine method whose failures to reach PostgreSQL or Redis from this process are
    raised as the one retryable `EngineUnavailable` (Ray's own are turned so in `remote`)."""

    @functools.wraps(method)
    async def wrapper(*args, **kwargs):
        try:
            return await method(*args, **kwargs)
        except TRANSIENT_ERRORS as e:
            if isinstance(e, EngineUnavailable):
                raise
            raise EngineUnavailable(f"PostgreSQL or Redis unreachable: {e}") from e

    return wrapper


def _key(value: object) -> str:
    if value is None:
        return uuid.uuid4().hex
    return text_value(value, "idempotency_key", IDEMPOTENCY_KEY_CHARS_MAX)


class Engine:
    """Start it, use it, stop it:

        engine = await Engine(from_env()).start()
        ...
        await engine.stop()

    If an engine already runs in the Ray cluster (its `writer` actor answers in the namespace),
    `start()` attaches to it instead of starting another, and `stop()` leaves it running."""

    def __init__(self, config: Config | None = None) -> None:
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
        self._sweeps: PresenceSweeps | None = None
        self._relay: Relay | None = None
        self._keeper: asyncio.Task | None = None
        self._started_ray = False
        self._own_ray = False
        self._record: str | None = None  # where this engine recorded its cluster, if it did
        self._starting: dict[tuple[int, str], asyncio.Future] = {}  # keyed starts under way
        self._call_ids = store.CallIds()
        self._payers: dict[int, int] = {}  # call id -> payer, for CALL_PAYERS_MAX calls
        self._rates_by_type: dict[str, dict[str, tuple[int, int]]] = {}

    # -- life cycle --------------------------------------------------------------------------

    async def start(self) -> Engine:
        cfg = self.config
        joined = cluster.join(cfg.ray_address, cfg.namespace, cfg.data_dir, cfg.dashboard)
        self._started_ray = joined.started
        self._own_ray = joined.via == "own"
        if joined.namespace != cfg.namespace:
            self.config = cfg.replace(namespace=joined.namespace)
        running = cluster.Writer.running(self.config.namespace)
        if running is not None:
            await self._attach(running)
        else:
            await self._start_own()
        self.presence = Presence(self.redis_url)
        log.info("engine %s: %s", "attached" if self.attached else "started", self.config.public())
        return self

    async def _attach(self, writer: cluster.Writer) -> None:
        meta = await writer.describe()
        clock = self.config.clock
        self.config = meta["config"].replace(clock=clock)
        self.database_url, self.redis_url = meta["database_url"], meta["redis_url"]
        self.clock = _local_clocks.get(writer.key, self.clock)
        self.writer = writer
        self.attached = True
        self.placement = make_placement(self.config, self.database_url, self.redis_url, True)
        await self.placement.start()

    async def _start_own(self) -> None:
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
            self._keeper = asyncio.get_running_loop().create_task(self._keep())
            if cfg.scheduler:
                self.scheduler = Scheduler(self, attached_engine)
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
                await self.placement.keep()
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
        """Drain every buffer into PostgreSQL, then stop the actors (unless attached)."""
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self._keeper is not None:
            self._keeper.cancel()
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

    async def __aenter__(self) -> Engine:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def pool(self):
        """The process's asyncpg pool for the engine's database."""
        return await get_pool(self.database_url)

    def sweeps(self) -> PresenceSweeps:
        if self._sweeps is None:
            self._sweeps = PresenceSweeps(self.redis_url)
        return self._sweeps

    # -- people and money --------------------------------------------------------------------

    @retryable
    async def create_user(self, name: str, role: str = "user") -> int:
        text_value(name, "name", NAME_CHARS_MAX)
        one_of(role, ROLES, "role")
        return await store.create_user(await self.pool(), name, role)

    async def create_listener(self, name: str) -> int:
        return await self.create_user(name, "listener")

    @retryable
    async def top_up(
        self,
        user_id: int,
        amount: int,
        tx_type: str = "purchase",
        idempotency_key: str | None = None,
    ) -> dict:
        """Add coins (purchase, bonus, referral_bonus). Applied once per idempotency key;
        returns after the transfer is committed."""
        one_of(tx_type, TOP_UP_TYPES, "tx_type")
        return await self._external(user_id, "user_id", tx_type, amount, idempotency_key)

    @retryable
    async def spend(self, user_id: int, amount: int, idempotency_key: str | None = None) -> dict:
        """Take coins outside a call (never below zero)."""
        return await self._external(user_id, "user_id", SPEND, amount, idempotency_key)

    @retryable
    async def withdraw(
        self, listener_id: int, amount_paise: int, idempotency_key: str | None = None
    ) -> dict:
        return await self._external(
            listener_id, "listener_id", WITHDRAW, amount_paise, idempotency_key
        )

    async def _external(self, who: int, what: str, tx_type: str, amount: int, key) -> dict:
        entity_id(who, what)
        positive_amount(amount, "amount_paise" if tx_type == WITHDRAW else "amount")
        key = _key(key)
        now = self.clock.now()
        return await self.placement.apply_external(who, tx_type, amount, key, now)

    @retryable
    async def balance(self, user_id: int) -> dict:
        """`{"user_id", "balance_coins", "earnings_paise"}` now: every minute due billed, and
        a listener's ended call credited, before it is answered."""
        entity_id(user_id, "user_id")
        return await self.placement.balance(user_id, self.clock.now())

    # -- calls -------------------------------------------------------------------------------

    @retryable
    async def start_call(
        self,
        user_id: int,
        listener_id: int,
        call_type: str = "audio",
        idempotency_key: str | None = None,
    ) -> dict:
        """Connect a call: minute 1 is charged now. Returns the call's state after the start
        is committed. With an idempotency key, a repeat returns the call that key started, and
        the key used for another listener or call type is refused."""
        entity_id(user_id, "user_id")
        entity_id(listener_id, "listener_id")
        one_of(call_type, CALL_TYPES, "call_type")
        key = None if idempotency_key is None else _key(idempotency_key)
        if key is None:
            return await self._start_call(user_id, listener_id, call_type, None)
        # One start per key at a time in this process; a repeat waits for the first.
        slot = (user_id, key)
        while (running := self._starting.get(slot)) is not None:
            await asyncio.wait([running])
        # The task frees its slot when it ends, even if this caller stops waiting.
        task = asyncio.ensure_future(self._start_keyed(user_id, listener_id, call_type, key))
        self._starting[slot] = task
        return await asyncio.shield(task)

    async def _start_keyed(self, user_id, listener_id, call_type, key) -> dict:
        try:
            before = await store.call_by_start_key(await self.pool(), user_id, key)
            if before is None:
                return await self._start_call(user_id, listener_id, call_type, key)
            if (before["listener_id"], before["call_type"]) != (listener_id, call_type):
                raise IdempotencyConflict(
                    f"idempotency key {key!r} started call {before['call_id']} with listener "
                    f"{before['listener_id']} ({before['call_type']}), not listener "
                    f"{listener_id} ({call_type})"
                )
            return await self.get_call(before["call_id"])
        finally:
            self._starting.pop((user_id, key), None)

    def _rates(self, call_type: str) -> dict[str, tuple[int, int]]:
        """(coins, paise) per minute of `call_type` by tier, from this engine's rate card."""
        rates = self._rates_by_type.get(call_type)
        if rates is None:
            card = self.config.rate_card
            rates = self._rates_by_type[call_type] = {t: card.rates(call_type, t) for t in TIERS}
        return rates

    async def _start_call(self, user_id, listener_id, call_type, key: str | None) -> dict:
        # Nothing here that memory can answer is read from PostgreSQL: the call id comes from
        # a block taken from the sequence; each party's role is checked by their own host (the
        # listener's when it holds them, the payer's when it opens the call), and the
        # listener's tier today comes back with the hold.
        call_id = await self._call_ids.next(await self.pool())
        now = self.clock.now()
        request = CallRequest(
            call_id,
            user_id,
            listener_id,
            call_type,
            self._rates(call_type),
            self.config.minute_seconds,
            self.config.max_call_minutes,
        )
        state = await self.placement.connect(request, now, key)
        if len(self._payers) >= CALL_PAYERS_MAX:
            del self._payers[next(iter(self._payers))]
        self._payers[call_id] = user_id
        # The call is cached in Redis, and connecting counts as a heartbeat of both parties.
        await self.presence.call_started(
            {k: state[k] for k in ("call_id", "user_id", "listener_id", "call_type")}
            | {"connected_at": state["connected_at"]},
            seen_at=now,
        )
        return state

    @retryable
    async def end_call(self, call_id: int, reason: str = "hangup") -> dict:
        """End a call (hang-up by default). Idempotent: ending an ended call returns its
        settlement unchanged. When it returns, the settlement is committed and the listener
        is free and credited on their host."""
        one_of(reason, END_REASONS, "reason")

        async def end(call_id, user_id, now):
            return await self.placement.end_call(call_id, user_id, now, reason)

        settled = await self._live_or_stored(call_id, end)
        if settled.get("answered_from") == "stored":
            # Settled before (or by a host that died before freeing the listener): the
            # listener's host catches up from PostgreSQL before this returns.
            await self.placement.balance(settled["listener_id"], self.clock.now())
        return {k: settled[k] for k in SETTLEMENT_KEYS}

    async def _live_or_stored(self, call_id: int, ask) -> dict:
        """What the payer's host answers while the call is ongoing (brought up to now), else
        its stored row (marked `answered_from: stored`)."""
        entity_id(call_id, "call_id")
        payer = self._payers.get(call_id)
        if payer is None:  # not started here: its row names the payer
            row = await store.read_call(await self.pool(), call_id)
            if row["status"] != "ongoing":
                return row | {"next_tick_at": None, "answered_from": "stored"}
            payer = row["user_id"]
        live = await ask(call_id, payer, self.clock.now())
        if live is None or live["status"] != "ongoing":
            self._payers.pop(call_id, None)
        if live is not None:
            return live
        row = await store.read_call(await self.pool(), call_id)
        return row | {"next_tick_at": None, "answered_from": "stored"}

    @retryable
    async def get_call(self, call_id: int) -> dict:
        """The call now: an ongoing call's live state, brought up to now (every minute due
        billed, a drop due applied), or the stored row of an ended one."""
        out = await self._live_or_stored(call_id, self.placement.bill_call)
        out.pop("answered_from", None)
        return out

    @retryable
    async def calls_of(self, user_id: int, limit: int = 20, before: int | None = None) -> list:
        """A person's calls as payer or listener, newest first, `limit` (at most
        CALLS_PAGE_MAX) at a time; pass the last call id seen as `before` for the next page.
        Rows as stored: an ongoing call's minutes are billed live (see `get_call`)."""
        entity_id(user_id, "user_id")
        if type(limit) is not int or not 1 <= limit <= store.CALLS_PAGE_MAX:
            raise InvalidInput(
                f"limit must be an integer in [1, {store.CALLS_PAGE_MAX}], got {limit!r}"
            )
        if before is not None:
            entity_id(before, "before")
        return await store.calls_of(await self.pool(), user_id, limit, before)

    @retryable
    async def bill_due(self) -> int:
        """Bill every minute due now, for every ongoing call, and return once the calls that
        ended are settled. The calls' own timers bill the same minutes; the transfer ids make
        whichever comes second a no-op."""
        return await self.placement.run_due(self.clock.now())

    @retryable
    async def bill_call(self, call_id: int) -> dict:
        """Bill the minutes of one call due now."""
        out = await self._live_or_stored(call_id, self.placement.bill_call)
        out.pop("answered_from", None)
        return out

    # -- events ------------------------------------------------------------------------------

    @retryable
    async def events(
        self, after: int = 0, limit: int = 100, user_id: int | None = None
    ) -> list[dict]:
        """Committed call events (`call_started`, `low_balance`, `call_dropped`,
        `call_settled`) with an id above `after`, oldest first; of one party with `user_id`.
        Each is `{"id", "type", "call_id", "user_id", "at", "data"}`; a consumer keeps the last
        id it handled and asks again after it (delivery is at least once)."""
        if type(after) is not int or after < 0:
            raise InvalidInput(f"after must be a non-negative integer event id, got {after!r}")
        if type(limit) is not int or not 1 <= limit <= READ_LIMIT_MAX:
            raise InvalidInput(f"limit must be an integer in [1, {READ_LIMIT_MAX}], got {limit!r}")
        if user_id is not None:
            entity_id(user_id, "user_id")
        return await read_events(await self.pool(), after, limit, user_id)

    # -- presence ----------------------------------------------------------------------------

    @retryable
    async def heartbeat(self, user_id: int) -> bool:
        entity_id(user_id, "user_id")
        return await self.presence.heartbeat(user_id, now=self.clock.now())

    @retryable
    async def set_busy_for(self, user_id: int, seconds: float) -> bool:
        """Mark a user busy for a while (not in a call); cleared when the time passes."""
        entity_id(user_id, "user_id")
        if not isinstance(seconds, int | float) or not 0 < seconds <= BUSY_FOR_S_MAX:
            raise InvalidInput(f"seconds must be in (0, {BUSY_FOR_S_MAX}], got {seconds!r}")
        return await self.sweeps().set_busy_until(user_id, self.clock.now() + seconds)

    @retryable
    async def mark_inactive_users_offline(self, inactive_minutes: int = 5) -> int:
        if type(inactive_minutes) is not int or inactive_minutes < 0:
            raise InvalidInput(
                f"inactive_minutes must be a non-negative integer, got {inactive_minutes!r}"
            )
        cutoff = self.clock.now() - inactive_minutes * 60
        return await self.sweeps().mark_inactive_offline(cutoff)

    @retryable
    async def cleanup_expired_busy_status(self) -> int:
        return await self.sweeps().clear_expired_busy(self.clock.now())

    @retryable
    async def online_users_count(self) -> int:
        return await self.sweeps().online_count()

    # -- jobs --------------------------------------------------------------------------------

    @retryable
    async def cleanup_expired_calls(self) -> int:
        """End as dropped/expired every call past its maximum duration, or whose parties sent
        no heartbeat within the timeout. Returns how many it ended."""
        now = self.clock.now()
        rows = await store.ongoing_calls(await self.pool())
        if not rows:
            return 0
        parties = sorted({r["user_id"] for r in rows} | {r["listener_id"] for r in rows})
        try:
            seen = await self.sweeps().last_seen(parties)
        except ConnectionError as e:
            log.warning("heartbeats unknown (%s): expiring by duration only", e)
            seen = None
        max_s = self.config.max_call_minutes * self.config.minute_seconds
        stale_before = now - self.config.heartbeat_timeout_s
        ended = 0
        for r in rows:
            too_long = now >= r["connected_at"] + max_s
            # Connecting counts as a heartbeat of both parties: a call whose start is committed
            # and whose heartbeat is not yet in Redis (or was lost with it) is not silent.
            silent = seen is not None and any(
                max(seen.get(p) or 0, r["connected_at"]) < stale_before
                for p in (r["user_id"], r["listener_id"])
            )
            if too_long or silent:
                s = await self.end_call(r["call_id"], "expired")
                ended += s["end_reason"] == "expired"
        return ended

    @retryable
    async def assign_daily_badges(self, today=None) -> dict:
        day = today or badges.local_day(self.clock.now(), self.config.badge_timezone)
        out = await badges.assign_daily_badges(
            await self.pool(), day, self.config.badge_timezone, self.config.badge_thresholds
        )
        await self.placement.forget_tiers()  # the hosts read tiers once per day: again now
        return out

    @retryable
    async def badges_missed(self) -> bool:
        """Today's badge run was due (at `badges_at`) and has not happened: no engine ran then.
        The scheduler makes it up when it starts, so listeners are not paid at `basic` all day."""
        cfg = self.config
        now = self.clock.now()
        last_due = next_daily(now - 86_400, cfg.badges_at, cfg.badge_timezone)
        today = badges.local_day(now, cfg.badge_timezone)
        if last_due > now or badges.local_day(last_due, cfg.badge_timezone) != today:
            return False
        return not await badges.assigned(await self.pool(), today)

    async def run_job(self, name: str) -> dict:
        """Run one job here and now: `presence`, `cleanup`, `badges` or `deduct`."""
        return await run_job_here(self, name)

    async def run_job_task(self, name: str) -> dict:
        """Run one job now as a Ray task attached to this engine, as the scheduler does."""
        one_of(name, JOBS, "job")
        return await run_as_task(name, self.config.namespace, attached_engine)

    # -- time, flushing, inspection ----------------------------------------------------------

    @retryable
    async def advance(self, seconds: float) -> int:
        """Manual clock only: move time and bill whatever became due; returns the minutes
        billed, once the calls that ended are settled everywhere.

        If it raises (an actor restarting: `EngineUnavailable`), the clock has moved and some
        hosts may not have billed yet. Nothing is lost: every request after it brings the
        wallets it touches up to the new time first, and calling `bill_due()` (or `advance(0)`)
        again finishes the pass; the transfer ids make a repeat harmless."""
        if not self.clock.manual:
            raise InvalidInput("advance() needs the manual clock (clock='manual')")
        self.clock.advance(seconds)
        return await self.bill_due()

    @retryable
    async def sync(self) -> None:
        """Wait until everything produced so far is committed in PostgreSQL, including what an
        actor that has since died had already handed to the writer."""
        await self.placement.sync()
        await self.writer.drain()

    async def readiness(self) -> dict:
        """Can the engine answer now? The writer answers with its oldest queued write younger
        than READY_WRITER_LAG_MS_MAX, and PostgreSQL and Redis answer within READY_WAIT_S."""
        checks: dict[str, str] = {}
        lag_ms = None

        async def check(name: str, probe) -> None:
            try:
                await asyncio.wait_for(probe(), READY_WAIT_S)
                checks[name] = "ok"
            except Exception as e:  # noqa: BLE001 - any failure is "not ready", named
                checks[name] = f"{type(e).__name__}: {e}"[:200]

        async def writer() -> None:
            nonlocal lag_ms
            lag_ms = round((await self.writer.state())["oldest_queued_ms"], 1)
            if lag_ms > READY_WRITER_LAG_MS_MAX:
                raise EngineUnavailable(f"writer lag {lag_ms} ms > {READY_WRITER_LAG_MS_MAX}")

        async def postgres() -> None:
            await store.ping(await self.pool())

        await asyncio.gather(
            check("writer", writer),
            check("postgres", postgres),
            check("redis", self.sweeps().ping),
        )
        ready = all(v == "ok" for v in checks.values())
        return {"ready": ready, "checks": checks, "writer_lag_ms": lag_ms}

    async def processes(self) -> dict[int, str]:
        """The engine's Ray actor processes, by pid: what each hosts (for memory reports)."""
        pids = {(await self.writer.state())["pid"]: "writer"}
        return pids | await self.placement.processes(self.clock.now())

    @retryable
    async def inspect(self, kind: str, ident: int | None = None) -> dict | list:
        one_of(kind, ("call", "wallet", "writer", "shards", "config", "jobs"), "inspect kind")
        if kind == "writer":
            return await self.writer.state()
        if kind == "shards":
            return await self.placement.inspect()
        if kind == "config":
            return self.config.public() | {"database": mask_url(self.database_url)}
        if kind == "jobs":
            return {} if self.scheduler is None else self.scheduler.state()
        entity_id(ident, f"{kind} id")
        if kind == "wallet":
            return await self.placement.inspect_wallet(ident, self.clock.now())
        return await self.get_call(ident)


__all__ = ["Engine", "UnknownCall"]


async def attached_engine(namespace: str) -> Engine:
    """An Engine attached to the one running in `namespace` (a job's Ray task uses it)."""
    from engine.config import Config

    engine = await Engine(Config(namespace=namespace)).start()
    if not engine.attached:
        await engine.stop()
        raise RuntimeError(f"no billing engine runs in Ray namespace {namespace!r}")
    return engine


def join_cluster(address: str | None, data_dir: str, namespace: str = "billing") -> str:
    """Join the Ray cluster an engine runs in, as `Engine.start()` does: `address`, else the
    engine recorded in `data_dir`, else a local Ray of this process's own. Returns the address
    joined."""
    return cluster.join(address, namespace, data_dir).address
