"""The Engine's request API: people, money, calls, events, presence, jobs; one async API,
served the same by both placements. Importing it does not import Ray (`engine.lifecycle`)."""

from __future__ import annotations

import asyncio
import logging

from actors.buckets import BUCKET_LIFETIME_S_MAX, check_expiring, minutes_affordable
from actors.call import END_REASONS, SETTLEMENT_KEYS, CallRequest
from actors.errors import (
    IdempotencyConflict,
    InvalidInput,
)
from actors.money import (
    CALL_TYPES,
    NAME_CHARS_MAX,
    ROLES,
    SPEND,
    TIERS,
    TOP_UP_TYPES,
    WITHDRAW,
    entity_id,
    key_of,
    one_of,
    positive_amount,
    text_value,
    to_ms,
)
from engine.config import Config
from engine.jobs import JOBS, badges_missed, expire_calls, run_job_here
from engine.lifecycle import EngineLifecycle
from engine.money_back_requests import PAYOUT_ID_BLOCK, MoneyBackRequests
from engine.operator import Operations
from engine.retryable import retryable
from persistence import badges, store
from persistence.events import READ_LIMIT_MAX, read_events
from persistence.statement import STATEMENT_PAGE_MAX, statement_page

log = logging.getLogger("billing.engine")

BUSY_FOR_S_MAX = 7 * 24 * 3600
# Payers of the calls this process started, so that an end or a read goes to the payer's host
# without reading the call's row first. Past the cap the oldest entry goes (that call's next
# request reads its row, as a call started by another process does).
CALL_PAYERS_MAX = 200_000
# What the answer for a call that ended adds to its stored row.
STORED = {
    "next_tick_at": None,
    "minutes_affordable": None,
    "paid_until": None,
    "answered_from": "stored",
}


class Engine(EngineLifecycle, Operations, MoneyBackRequests):
    """The engine's API: people, money, calls, events, presence and the jobs, on either
    placement. Its life (start, attach, stop) is `EngineLifecycle`'s; what an operator asks of
    it (time, flushing, readiness, `inspect`), `Operations`'."""

    def __init__(self, config: Config | None = None) -> None:
        super().__init__(config)
        self._starting: dict[tuple[int, str], asyncio.Future] = {}  # keyed starts under way
        self._call_ids = store.SequenceIds()
        self._payout_ids = store.SequenceIds(PAYOUT_ID_BLOCK, "payouts_payout_id_seq")
        self._payers: dict[int, int] = {}  # call id -> payer, for CALL_PAYERS_MAX calls
        self._rates_by_type: dict[str, dict[str, tuple[int, int]]] = {}

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
        expires_at: float | None = None,
    ) -> dict:
        """Add coins (purchase, bonus, referral_bonus). Applied once per idempotency key;
        returns after the transfer is committed. A bonus or referral bonus with `expires_at`
        (epoch seconds) is a bucket: spent before coins that never expire, and what is left
        of it leaves the wallet at that time (`actors/buckets.py`)."""
        one_of(tx_type, TOP_UP_TYPES, "tx_type")
        expires_ms = None if expires_at is None else self._expiry(tx_type, expires_at)
        return await self._external(
            user_id, "user_id", tx_type, amount, idempotency_key, expires_ms
        )

    def _expiry(self, tx_type: str, expires_at: object) -> int:
        check_expiring(tx_type)
        now = self.clock.now()
        if (
            not isinstance(expires_at, int | float)
            or isinstance(expires_at, bool)
            or not now < expires_at <= now + BUCKET_LIFETIME_S_MAX
        ):
            raise InvalidInput(
                f"expires_at must be a time after now and at most {BUCKET_LIFETIME_S_MAX} s "
                f"ahead, got {expires_at!r}"
            )
        return to_ms(expires_at)

    @retryable
    async def spend(self, user_id: int, amount: int, idempotency_key: str | None = None) -> dict:
        """Take coins outside a call (never below zero)."""
        return await self._external(user_id, "user_id", SPEND, amount, idempotency_key)

    async def _external(
        self, who: int, what: str, tx_type: str, amount: int, key, expires_ms: int | None = None
    ) -> dict:
        entity_id(who, what)
        positive_amount(amount, "amount_paise" if tx_type == WITHDRAW else "amount")
        key = key_of(key)
        payout_id = await self._payout_ids.next(await self.pool()) if tx_type == WITHDRAW else None
        now = self.clock.now()
        return await self.placement.apply_external(
            who, tx_type, amount, key, now, payout_id, expires_ms
        )

    @retryable
    async def balance(self, user_id: int, call_type: str | None = None) -> dict:
        """`{"user_id", "balance_coins", "earnings_paise", "minutes_affordable"}` now: every
        minute due billed, and a listener's ended call credited, before it is answered.
        `minutes_affordable`: how many minutes of a `call_type` call the coins pay (null
        without `call_type`), as CGRateS's GetMaxUsage answers before a call."""
        entity_id(user_id, "user_id")
        if call_type is not None:
            one_of(call_type, CALL_TYPES, "call_type")
        now = self.clock.now()
        out = await self.placement.balance(user_id, now)
        if call_type is None:
            return out | {"minutes_affordable": None}
        rate = self.config.rate_card.coins_per_minute[call_type]
        held = [
            [b["bucket_id"], b["tx_type"], b["coins"], to_ms(b["expires_at"]), 0]
            for b in out["buckets"]
        ]
        limit = self.config.max_call_minutes
        minutes = minutes_affordable(
            out["balance_coins"], held, rate, to_ms(now), to_ms(self.config.minute_seconds), limit
        )
        return out | {"minutes_affordable": minutes}

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
        key = None if idempotency_key is None else key_of(idempotency_key)
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
        state = await self.placement.start_call(request, now, key)
        if len(self._payers) >= CALL_PAYERS_MAX:
            del self._payers[next(iter(self._payers))]
        self._payers[call_id] = user_id
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
                return row | STORED
            payer = row["user_id"]
        live = await ask(call_id, payer, self.clock.now())
        if live is None or live["status"] != "ongoing":
            self._payers.pop(call_id, None)
        if live is not None:
            return live
        row = await store.read_call(await self.pool(), call_id)
        return row | STORED

    @retryable
    async def get_call(self, call_id: int) -> dict:
        """The call now: an ongoing call's live state, brought up to now (every minute due
        billed, a drop due applied), or the stored row of an ended one."""
        out = await self._live_or_stored(call_id, self.placement.bill_call)
        out.pop("answered_from", None)
        return out

    # The older API's name for the same thing: bill what is due of one call now.
    bill_call = get_call

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
    async def statement(self, user_id: int, after: str | None = None, limit: int = 50) -> dict:
        """The person's transfers in time order, each with the balance after it, `limit` (at
        most STATEMENT_PAGE_MAX) a page: `{"transfers", "next_after"}`; pass `next_after` as
        `after` for the next page. A call's minutes are one row (`kind` "minutes", with
        `minutes`), when the call ends (`persistence/statement.py`)."""
        entity_id(user_id, "user_id")
        if type(limit) is not int or not 1 <= limit <= STATEMENT_PAGE_MAX:
            raise InvalidInput(
                f"limit must be an integer in [1, {STATEMENT_PAGE_MAX}], got {limit!r}"
            )
        return await statement_page(await self.pool(), user_id, after, limit)

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
        return await expire_calls(self)

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
        """Today's badge run was due and has not happened (see `jobs.badges_missed`)."""
        return await badges_missed(self)

    async def run_job(self, name: str) -> dict:
        """Run one job here and now: `presence`, `cleanup`, `badges` or `deduct`."""
        return await run_job_here(self, name)

    async def run_job_task(self, name: str) -> dict:
        """Run one job now as a Ray task attached to this engine, as the scheduler does."""
        one_of(name, JOBS, "job")
        from engine.runtime.scheduler import run_as_task

        return await run_as_task(name, self.config.namespace, type(self).attached)
