"""Hosts wallets and the calls they pay in one process, and keeps their history in time order.

A shard hosts the wallets of many people; a wallet actor hosts one. Either way the code is this
class: the logic lives in `actors` (Wallet, Call, timeline), the writes go through one
`WriterClient`. External inputs (top-ups, withdrawals, call start, call end) are written
through: the method returns after PostgreSQL committed them. Call minutes are appended and
written behind.

Rule 9 (time order) lives here. Every operation on a wallet at time t first bills every minute
and applies every drop due by t for the calls the wallet pays (`_payer_ready`), and for a
listener first asks the host of the call's payer to do the same for that call
(`_listener_ready`). A host that restarted reloads from PostgreSQL and then does the same before
its first answer, so no answer is computed from state behind the clock or behind PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from actors.call import Call, Settlement
from actors.errors import BillingError, InvalidInput, InvariantViolation, UnknownUser
from actors.money import WITHDRAW, to_ms
from actors.timeline import bill_call_through, catch_up
from actors.wallet import Wallet, check_external, external_transfer_id
from engine.runtime import metrics
from engine.runtime.loading import LoadOnce
from engine.runtime.raycalls import answerable
from persistence import badges, store
from persistence.batching import Batcher, BatchLimits
from persistence.client import WriterClient
from persistence.db import get_pool
from persistence.presence import Presence
from persistence.records import (
    call_start_record,
    call_started_event,
    low_balance_event,
    settlement_records,
    transfer_record,
)

log = logging.getLogger("billing.host")

# A reservation whose call never got a row (its start failed without an answer) lapses after
# this long: by then no write of that start can still be on its way to PostgreSQL.
RESERVATION_UNCONFIRMED_S = 30.0
# Exit code of an actor that found a rule of money broken: Ray restarts it, and it reloads.
INVARIANT_EXIT_CODE = 70
# Wallets read from PostgreSQL in one query when a host loads many.
LOAD_CHUNK_WALLETS = 10_000
# Wallets of people with no ongoing call a host keeps loaded. Past it, those unused for
# WALLET_IDLE_S are evicted, oldest first (they reload from PostgreSQL when next asked); a
# wallet that pays or serves a call is never evicted, so a host holds at most its calls' people
# plus this many.
WALLETS_IDLE_MAX = 100_000
WALLET_IDLE_S = 600.0
# Reads of PostgreSQL that concurrent requests share (wallets to load, idempotency keys from
# before a load, listeners' tiers): one query per batch of ids, two queries at a time, since a
# query costs about the same for one id as for hundreds.
READS_BATCH = BatchLimits(size_max=1_000, in_flight_max=2, queued_max=100_000)

# (listener_id, call_id, earnings_paise) of settled calls, for the listeners' hosts.
Releases = list[tuple[int, int, int]]


@dataclass(frozen=True)
class CallRequest:
    """A call to connect, before its listener is held: the listener's host answers the tier,
    and the tier picks the rates."""

    call_id: int
    user_id: int
    listener_id: int
    call_type: str
    rates: dict[str, tuple[int, int]]  # tier -> (coins, paise) per minute
    minute_seconds: float
    max_minutes: int

    def call(self, tier: str, now: float) -> Call:
        coins, paise = self.rates[tier]
        return Call(
            self.call_id,
            self.user_id,
            self.listener_id,
            self.call_type,
            tier,
            coins,
            paise,
            now,
            self.minute_seconds,
            self.max_minutes,
        )


async def connect(
    request: CallRequest,
    hold: Callable[[], Awaitable[str]],
    open_call: Callable[[Call], Awaitable[dict]],
    release: Callable[[], Awaitable[None]],
    now: float,
) -> dict:
    """A start: hold the listener (learning their tier), then open the call on the payer's
    host. Refused before anything was written, the listener is free again; a failure without
    an answer keeps the hold, since the start may yet be committed (the listener's host frees
    it once PostgreSQL shows otherwise)."""
    tier = await hold()
    try:
        return await open_call(request.call(tier, now))
    except BillingError:
        await release()
        raise


class WalletHost:
    def __init__(
        self,
        database_url: str,
        client: WriterClient,
        user_calls_max: int,
        *,
        presence: Presence | None = None,
        low_balance_minutes: int = 2,
        is_local: Callable[[int], bool] = lambda user_id: True,
        release_elsewhere: Callable[[Releases], Awaitable[None]] | None = None,
        ask_payer: Callable[[int, int, float], Awaitable[dict | None]] | None = None,
        before_load: Callable[[], Awaitable[None]] | None = None,
        on_call_added: Callable[[Call], None] | None = None,
        call_defaults: tuple[float, int] = (60.0, 240),
        badge_timezone: str = "UTC",
    ) -> None:
        self.database_url = database_url
        self.badge_timezone = badge_timezone
        self._tiers: dict[int, tuple[object, str]] = {}  # listener -> (day, tier that day)
        self._tiers_generation = 0  # badge runs seen (`forget_tiers`)
        # Awaited once before the first read of PostgreSQL (Ray actors: the writer's drain).
        self._before_load = LoadOnce(before_load) if before_load is not None else None
        self.client = client
        self.user_calls_max = user_calls_max
        self.presence = presence
        self.low_balance_minutes = low_balance_minutes
        self.is_local = is_local
        self._release_elsewhere = release_elsewhere
        self._ask_payer = ask_payer
        self._on_call_added = on_call_added
        # Minute length (s) and maximum minutes of a stored call that does not record its own.
        self.call_defaults = call_defaults
        self.wallets: dict[int, Wallet] = {}
        self.calls: dict[int, Call] = {}  # the ongoing calls the wallets hosted here pay
        self._settling: dict[int, asyncio.Future] = {}
        self._notices: list[dict] = []  # low-balance notices waiting to be published
        self._reserved_at: dict[int, float] = {}  # listener -> when its reservation was made
        self._loading: dict[int, asyncio.Future] = {}
        self._used_at: dict[int, float] = {}  # wallet -> when a request last asked for it
        self.stats = {"minutes_billed": 0, "calls_settled": 0, "wallets_evicted": 0}
        self._loads = Batcher(self._load_batch, READS_BATCH, "wallet loads")
        self._externals = Batcher(self._externals_batch, READS_BATCH, "idempotency key reads")
        self._tier_reads = Batcher(self._tiers_batch, READS_BATCH, "tier reads")

    def batches(self) -> dict:
        """How this host's shared reads batched (for `inspect`)."""
        return {
            "wallet_loads": self._loads.state(),
            "idempotency_key_reads": self._externals.state(),
            "tier_reads": self._tier_reads.state(),
        }

    async def _before_first_read(self) -> None:
        if self._before_load is not None:
            await self._before_load()

    async def pool(self):
        return await get_pool(self.database_url)

    # -- loading -------------------------------------------------------------------------------

    def add_call(self, call: Call) -> None:
        """Host a call its payer's wallet pays. A wallet already loaded is the authority on
        how far its calls are billed (both were read from PostgreSQL, or both moved here)."""
        w = self.wallets.get(call.user_id)
        entry = None if w is None else w.calls.get(call.call_id)
        if entry is not None:
            call.billed_minutes = entry[1]
        self.calls[call.call_id] = call
        if self._on_call_added is not None:
            self._on_call_added(call)

    async def preload(self, user_ids: list[int]) -> None:
        """Load wallets in bulk (recovery); wallets already here are kept as they are."""
        await self._before_first_read()
        missing = [u for u in set(user_ids) if u not in self.wallets]
        for start in range(0, len(missing), LOAD_CHUNK_WALLETS):
            await self._load_wallets(missing[start : start + LOAD_CHUNK_WALLETS])

    async def _load_batch(self, user_ids: list[int]) -> list[None]:
        await self._before_first_read()
        await self._load_wallets(user_ids)
        return [None] * len(user_ids)

    async def _externals_batch(self, transfer_ids: list[str]) -> list:
        committed = await store.external_transfers(await self.pool(), transfer_ids)
        return [committed.get(t) for t in transfer_ids]

    async def _tiers_batch(self, asked: list[tuple[int, object]]) -> list[str | None]:
        found: dict[tuple[int, object], str] = {}
        for day in {d for _, d in asked}:
            ids = [listener for listener, d in asked if d == day]
            tiers = await store.listener_tiers(await self.pool(), ids, day)
            found |= {(listener, day): tier for listener, tier in tiers.items()}
        return [found.get(a) for a in asked]

    async def _load_wallets(self, user_ids: list[int]) -> None:
        pool = await self.pool()
        loaded = await store.load_wallets(pool, user_ids, self.call_defaults[0])
        self._evict_idle()
        for uid, w in loaded.items():
            self.wallets.setdefault(uid, w)
            self._touch(uid)
        # The calls they pay that this host does not hold yet (a wallet actor's first load).
        unknown = [c for w in loaded.values() for c in w.calls if c not in self.calls]
        if unknown:
            for call in await store.load_ongoing_calls(pool, *self.call_defaults, call_ids=unknown):
                self.add_call(call)

    def _evict_idle(self) -> None:
        """Keep at most WALLETS_IDLE_MAX wallets of people in no call: drop those unused for
        WALLET_IDLE_S, oldest first. Only while nothing this host wrote is unconfirmed, so no
        request is between changing a wallet and its commit."""
        excess = len(self.wallets) - len(self.calls) - WALLETS_IDLE_MAX
        if excess <= 0 or self.client.pending:
            return
        idle_before = time.monotonic() - WALLET_IDLE_S
        for uid, used_at in list(self._used_at.items()):  # oldest use first
            if excess <= 0 or used_at > idle_before:
                break
            w = self.wallets.get(uid)
            if w is not None and not w.calls and w.listener_call_id is None:
                del self.wallets[uid]
                self.stats["wallets_evicted"] += 1
                excess -= 1
            del self._used_at[uid]

    def _touch(self, user_id: int) -> None:
        self._used_at.pop(user_id, None)  # to the end: the map stays in order of last use
        self._used_at[user_id] = time.monotonic()

    async def wallet(self, user_id: int) -> Wallet:
        """The wallet, loaded from PostgreSQL the first time it is needed."""
        w = self.wallets.get(user_id)
        if w is not None:
            self._touch(user_id)
            return w
        pending = self._loading.get(user_id)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._loading[user_id] = pending
            try:
                await self._loads.submit(user_id)
                pending.set_result(None)
            except BaseException as e:
                pending.set_exception(e)
                pending.exception()  # retrieved: the raise below reports it
                raise
            finally:
                del self._loading[user_id]
        else:
            await pending
        w = self.wallets.get(user_id)
        if w is None:
            raise UnknownUser(f"no user with id {user_id}")
        return w

    # -- time order (rule 9) -------------------------------------------------------------------

    async def _payer_ready(self, user_id: int, now: float) -> tuple[Wallet, int]:
        """The wallet, with every minute and drop due by `now` applied to the calls it pays.
        Returns it and the time of the operation (never before what the wallet already did)."""
        w = await self.wallet(user_id)
        now_ms = w.stamp(to_ms(now))
        if w.calls:
            self._catch_up(w, now_ms)
        return w, now_ms

    async def _ready(self, user_id: int, now: float) -> tuple[Wallet, int]:
        """`_payer_ready`, and for a listener in a call, that call brought up to `now` by its
        payer's host: ended calls credited and freed here before anything is answered."""
        w, now_ms = await self._payer_ready(user_id, now)
        if w.listener_call_id is not None:
            await self._listener_ready(w, now_ms)
        return w, w.stamp(now_ms)

    def _catch_up(self, w: Wallet, now_ms: int) -> list[Settlement]:
        calls = [self.calls[c] for c in w.calls if c in self.calls]
        if len(calls) != len(w.calls):
            missing = [c for c in w.calls if c not in self.calls]
            raise InvariantViolation(f"wallet {w.user_id} pays calls {missing} not hosted here")
        records: list = []
        settled = catch_up(w, calls, now_ms, records)
        self._after_billing(w, calls, records, settled)
        return settled

    def _after_billing(
        self, w: Wallet, calls: list[Call], records: list, settled: list[Settlement]
    ) -> None:
        minutes = len(records)
        self._note_low_balance(w, calls, records)
        self.client.append(records)  # before the settlements they lead to
        self.stats["minutes_billed"] += minutes
        metrics.billed(minutes)
        if settled:
            self._settle(settled, urgent=False)
        else:
            self.publish_notices()

    def _note_low_balance(self, w: Wallet, calls, records: list) -> None:
        """The one low-balance notice of each ongoing call whose payer's coins now run low:
        published, and its event written with the minutes that ran them low (`records`)."""
        for c in calls:
            if c.settlement is None:
                notice = c.low_balance(w.balance_coins, self.low_balance_minutes)
                if notice is not None:
                    self._notices.append(notice)
                    records.append(low_balance_event(notice, w.clock_ms))

    async def _listener_ready(self, w: Wallet, now_ms: int) -> None:
        call_id, payer_id = w.listener_call_id, w.listener_payer_id
        outcome = None
        if payer_id is not None:
            if self.is_local(payer_id):
                outcome = await self.bill_call(call_id, now_ms / 1000)
            elif self._ask_payer is not None:
                outcome = await self._ask_payer(payer_id, call_id, now_ms / 1000)
        if outcome is None:
            # Neither ongoing nor settled on its payer's host: PostgreSQL decides.
            await self._release_if_settled(w)
        elif outcome["status"] != "ongoing":
            self._release(w, call_id, outcome["earnings_paise"])

    # -- external inputs, written through ------------------------------------------------------

    async def apply_external(
        self, user_id: int, tx_type: str, amount: int, key: str, now: float
    ) -> dict:
        check_external(tx_type, amount)  # bad input is refused before any read
        w, now_ms = await self._ready(user_id, now)
        transfer_id = external_transfer_id(user_id, key)
        if transfer_id not in w.external:
            # A key from before this wallet was loaded is in the ledger, if anywhere (what a
            # predecessor handed the writer was committed before the first read).
            committed = await self._externals.submit(transfer_id)
            if committed is not None:
                w.recall_external(transfer_id, *committed)
        if tx_type == WITHDRAW and amount > w.earnings_paise and w.listener_call_id is not None:
            await self._listener_ready(w, now_ms)  # a credit that settled meanwhile
        await self.client.room()
        # Awaits above let other operations in; whatever they did is at or before this stamp.
        t = w.apply_external(key, tx_type, amount, w.stamp(now_ms))
        if t is not None:
            await self.client.durable([transfer_record(t)])
        else:
            # A repeat: answer once the original is committed, with nothing applied again.
            await self.client.wait_committed()
        return {
            "transfer_id": transfer_id,
            "applied": t is not None,
            "user_id": user_id,
            "balance_coins": w.balance_coins,
            "earnings_paise": w.earnings_paise,
        }

    # -- the payer's side of calls -------------------------------------------------------------

    async def open_call(self, call: Call, now: float, start_key: str | None = None) -> dict:
        """Charge minute 1 and record the call's start, both committed before returning. The
        call connects when its payer's host opens it: never before the payer's last event."""
        w, now_ms = await self._payer_ready(call.user_id, now)
        await self.client.room()
        call.connected_ms = max(call.connected_ms, w.stamp(now_ms))
        first = w.open_call(
            call.call_id, call.rate_coins, self.user_calls_max, call.connected_ms, call.minute_ms
        )
        call.after_billing_ms(1, False, call.connected_ms)
        self.add_call(call)
        await self.client.durable(
            [call_start_record(call, start_key), transfer_record(first), call_started_event(call)]
        )
        metrics.billed(1, started=1)
        return call.state()

    def tick(self, call_ids: list[int], now: float) -> int:
        """Bill the calls `call_ids` through `now` (a timer's pass; written behind). Returns
        the minutes billed. A payer with more than one call has all of them billed in due
        order."""
        now_ms = to_ms(now)
        records: list = []
        events: list = []
        settled: list[Settlement] = []
        calls, wallets = self.calls, self.wallets
        for call_id in call_ids:
            call = calls.get(call_id)
            if call is None or call.settlement is not None:
                continue
            w = wallets.get(call.user_id)
            if w is None:
                raise InvariantViolation(f"call {call_id}: payer {call.user_id} not hosted here")
            w.stamp(now_ms)
            if len(w.calls) == 1:  # the hot path: catch_up's own, without building lists
                payer_calls: tuple | list = (call,)
                s = bill_call_through(w, call, call.due_minute_ms(now_ms), now_ms, records)
                if s is not None:
                    settled.append(s)
            else:
                payer_calls = [calls[c] for c in w.calls]
                settled += catch_up(w, payer_calls, now_ms, records)
            self._note_low_balance(w, payer_calls, events)
        minutes = len(records)
        records += events
        self.client.append(records)  # before the settlements of this pass
        self.stats["minutes_billed"] += minutes
        metrics.billed(minutes)
        if settled:
            self._settle(settled, urgent=False)
        return minutes

    async def end_call(self, call_id: int, now: float, reason: str) -> dict | None:
        """End a call: bill what is due, settle once, return after the settlement committed
        and the listener was freed. None when the call is not (or no longer) here."""
        call = self.calls.get(call_id)
        if call is None:
            return None
        w, now_ms = await self._payer_ready(call.user_id, now)
        if call.settlement is None:
            s = call.end(reason, now_ms / 1000)
            self._settle([s], urgent=True)
        return await self._settled(call)

    async def bill_call(self, call_id: int, now: float) -> dict | None:
        """The call brought up to `now`: its state, or, if it ended, its settlement once
        committed and its listener freed. None when it is not here."""
        call = self.calls.get(call_id)
        if call is None:
            return None
        await self._payer_ready(call.user_id, now)
        if call.settlement is None:
            return call.state()
        return await self._settled(call)

    async def _settled(self, call: Call) -> dict:
        pending = self._settling.get(call.call_id)
        if pending is not None:
            await self.client.wait_committed(urgent=True)  # someone waits: flush now
            await asyncio.shield(pending)
        return call.state()

    def user_in_call(self, user_id: int) -> bool:
        w = self.wallets.get(user_id)
        return bool(w and w.calls)

    # -- settlements ---------------------------------------------------------------------------

    def _settle(self, settlements: list[Settlement], urgent: bool) -> None:
        loop = asyncio.get_running_loop()
        seq = 0
        for s in settlements:
            self._settling[s.call_id] = loop.create_future()
            w = self.wallets.get(s.user_id)
            last = None if w is None else w.close_call(s.call_id)
            if last is not None and last != s.billed_minutes:
                raise InvariantViolation(
                    f"call {s.call_id}: wallet billed {last} minutes, call says {s.billed_minutes}"
                )
            seq = self.client.append(settlement_records(s))
        loop.create_task(self._finish(settlements, seq, urgent))
        self.publish_notices()

    async def _finish(self, settlements: list[Settlement], seq: int, urgent: bool) -> None:
        """After the settlements committed: free listeners (here, or batched per host),
        clear presence, answer anyone waiting on them."""
        try:
            await self.client.wait_committed(seq, urgent=urgent)
            elsewhere: Releases = []
            for s in settlements:
                item = (s.listener_id, s.call_id, s.earnings_paise)
                if self.is_local(s.listener_id):
                    await self.release_listeners([item])
                else:
                    elsewhere.append(item)
            if elsewhere and self._release_elsewhere is not None:
                # Not delivered (the listener's host restarting): that host frees the listener
                # from PostgreSQL before it next answers for them.
                await self._release_elsewhere(elsewhere)
            for s in settlements:
                self.calls.pop(s.call_id, None)
                if self.presence is not None:
                    await self.presence.call_settled(s.as_dict(), self.user_in_call(s.user_id))
            self.stats["calls_settled"] += len(settlements)
            metrics.settled([s.end_reason for s in settlements])
            for s in settlements:
                self._settling.pop(s.call_id).set_result(s)
        except BaseException as e:
            for s in settlements:
                fut = self._settling.pop(s.call_id, None)
                if fut is not None and not fut.done():
                    fut.set_exception(e)
                    fut.exception()  # retrieved: a waiter may never come
            raise

    async def wait_settled(self) -> None:
        """Until every settlement under way here is committed and its listener freed."""
        if self._settling:
            await self.client.wait_committed(urgent=True)
            await asyncio.gather(*self._settling.values(), return_exceptions=True)

    def publish_notices(self) -> None:
        if self._notices and self.presence is not None:
            notices, self._notices = self._notices, []
            asyncio.get_running_loop().create_task(self.presence.publish_low_balance(notices))

    # -- the listener's side -------------------------------------------------------------------

    async def reserve_listener(
        self, listener_id: int, call_id: int, payer_id: int | None, now: float
    ) -> str:
        """Hold the listener for call `call_id`; returns the listener's tier today."""
        w, _ = await self._ready(listener_id, now)
        tier = await self._tier(listener_id, now)
        w.reserve_listener(call_id, payer_id)
        self._reserved_at[listener_id] = time.monotonic()
        return tier

    async def _tier(self, listener_id: int, now: float) -> str:
        """The listener's tier for the day of `now`, read once per listener and day: the day's
        badge row, once written, is final, and before it is written the tier is `basic`. The
        badge run makes every host forget what it read (`forget_tiers`), so its tiers apply to
        the next start."""
        day = badges.local_day(now, self.badge_timezone)
        known = self._tiers.get(listener_id)
        if known is not None and known[0] == day:
            return known[1]
        await self._before_first_read()
        asked_in = self._tiers_generation
        tier = await self._tier_reads.submit((listener_id, day)) or "basic"
        if asked_in == self._tiers_generation:  # a read from before a run is not kept
            if len(self._tiers) >= WALLETS_IDLE_MAX:
                self._tiers.clear()
            self._tiers[listener_id] = (day, tier)
        return tier

    def forget_tiers(self) -> None:
        self._tiers.clear()
        self._tiers_generation += 1

    async def connect(self, r: CallRequest, now: float, start_key: str | None) -> dict:
        """A start whose payer and listener are both hosted here: one message, not two."""
        return await connect(
            r,
            lambda: self.reserve_listener(r.listener_id, r.call_id, r.user_id, now),
            lambda call: self.open_call(call, now, start_key),
            lambda: self.cancel_reservation(r.listener_id, r.call_id),
            now,
        )

    async def cancel_reservation(self, listener_id: int, call_id: int) -> None:
        w = await self.wallet(listener_id)
        w.cancel_reservation(call_id)
        if w.listener_call_id is None:
            self._reserved_at.pop(listener_id, None)

    def _release(self, w: Wallet, call_id: int, earned_paise: int) -> bool:
        released = w.release_listener(call_id, earned_paise)
        if released:
            self._reserved_at.pop(w.user_id, None)
        return released

    async def _release_if_settled(self, w: Wallet) -> None:
        """Free a listener whose call settled while the message that frees it was lost (the
        payer's host died after the commit, or this one restarted before it arrived).

        PostgreSQL decides: the call ended and its credit is committed, so the credit is
        mirrored here once (release_listener only frees the call the listener is in). A call
        with no row is a start that failed without an answer: its reservation lapses after
        RESERVATION_UNCONFIRMED_S, when no write of it can still be in flight."""
        call_id = w.listener_call_id
        if call_id is None:
            return
        outcome = await store.call_outcome(await self.pool(), call_id)
        if outcome is None:
            age = time.monotonic() - self._reserved_at.get(w.user_id, 0.0)
            if age > RESERVATION_UNCONFIRMED_S:
                w.cancel_reservation(call_id)
                self._reserved_at.pop(w.user_id, None)
        elif outcome["status"] != "ongoing":
            self._release(w, call_id, outcome["earnings_paise"])

    async def release_listeners(self, items: Releases) -> int:
        """Free listeners of settled calls, mirroring the credit already committed."""
        released = 0
        for listener_id, call_id, earned in items:
            released += self._release(await self.wallet(listener_id), call_id, earned)
        return released

    # -- reads ---------------------------------------------------------------------------------

    async def balance(self, user_id: int, now: float) -> dict:
        w, _ = await self._ready(user_id, now)
        return {
            "user_id": user_id,
            "balance_coins": w.balance_coins,
            "earnings_paise": w.earnings_paise,
        }

    async def inspect_wallet(self, user_id: int, now: float) -> dict:
        w, _ = await self._ready(user_id, now)
        return w.state()


def exit_on_violation(e: InvariantViolation, who: str) -> None:
    """A rule of money broke inside a Ray actor: answer it, then die so that Ray restarts the
    actor and it reloads from PostgreSQL, instead of answering the same error forever."""
    log.critical("%s: %s; exiting to be rebuilt from PostgreSQL", who, e)
    asyncio.get_running_loop().call_later(0.05, os._exit, INVARIANT_EXIT_CODE)


# The methods of a host that a batch from the Engine may carry (`WalletMethods.many`).
BATCHED_METHODS = frozenset(
    {
        "apply_external",
        "balance",
        "inspect_wallet",
        "reserve_listener",
        "cancel_reservation",
        "open_call",
        "connect",
        "end_call",
        "bill_call",
    }
)


class WalletMethods:
    """The wallet methods a Ray actor hosting a `WalletHost` serves (a shard, a wallet
    actor). `_ready()` is where a host loads what it must first; `_guard` turns a broken rule of
    money into a restart."""

    host: WalletHost
    name: str = "host"
    in_ray: bool = True

    async def _ready(self) -> None:
        return None

    async def _guard(self, work: Callable[[], Awaitable]):
        try:
            await self._ready()
            return await work()
        except InvariantViolation as e:
            if self.in_ray:
                exit_on_violation(e, self.name)
            raise

    async def many(self, requests: list[tuple[str, tuple]]) -> list:
        """Requests the Engine grouped for this host (`persistence.batching`): run together,
        so that their writes share one commit, and answered in order, each with its result or
        the error its caller is to see."""

        async def one(method: str, args: tuple):
            if method not in BATCHED_METHODS:
                return InvalidInput(f"{method!r} cannot be batched; one of {BATCHED_METHODS}")
            try:
                return await getattr(self, method)(*args)
            except Exception as e:  # noqa: BLE001 - the error goes back to its own caller
                return answerable(e) or RuntimeError(f"{self.name}: {type(e).__name__}: {e}")

        return await asyncio.gather(*(one(method, args) for method, args in requests))

    async def apply_external(self, user_id, tx_type, amount, key, now) -> dict:
        return await self._guard(
            lambda: self.host.apply_external(user_id, tx_type, amount, key, now)
        )

    async def balance(self, user_id: int, now: float) -> dict:
        return await self._guard(lambda: self.host.balance(user_id, now))

    async def reserve_listener(self, listener_id, call_id, payer_id, now) -> str:
        return await self._guard(
            lambda: self.host.reserve_listener(listener_id, call_id, payer_id, now)
        )

    async def forget_tiers(self) -> None:
        self.host.forget_tiers()

    async def cancel_reservation(self, listener_id: int, call_id: int) -> None:
        await self._guard(lambda: self.host.cancel_reservation(listener_id, call_id))

    async def release_listeners(self, items: Releases) -> int:
        return await self._guard(lambda: self.host.release_listeners(items))

    async def open_call(self, spec: dict, now: float, start_key: str | None = None) -> dict:
        call = Call.from_spec(spec)
        return await self._guard(lambda: self.host.open_call(call, now, start_key))

    async def connect(self, request: CallRequest, now: float, start_key: str | None) -> dict:
        return await self._guard(lambda: self.host.connect(request, now, start_key))

    async def end_call(self, call_id: int, now: float, reason: str = "hangup") -> dict | None:
        return await self._guard(lambda: self.host.end_call(call_id, now, reason))

    async def bill_call(self, call_id: int, now: float) -> dict | None:
        return await self._guard(lambda: self.host.bill_call(call_id, now))

    async def inspect_wallet(self, user_id: int, now: float) -> dict:
        return await self._guard(lambda: self.host.inspect_wallet(user_id, now))
