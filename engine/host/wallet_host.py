"""Hosts wallets and the calls they pay in one process, and keeps their history in time order.

A shard hosts the wallets of many people; a wallet actor hosts one. Either way the code is this
class: the logic lives in `actors` (Wallet, Call, timeline), the wallets in a `WalletCache`,
the writes go through one `WriterClient`, and the hosts beside this one are reached through
`Peers`. External inputs (top-ups, withdrawals, call start, call end) are written through: the
method returns after PostgreSQL committed them. Call minutes are appended and written behind.

Rule 9 (time order) lives here. Every operation on a wallet at time t first bills every minute
and applies every drop due by t for the calls the wallet pays (`_payer_caught_up`), and for a
listener first asks the host of the call's payer to do the same for that call
(`_listener_caught_up`). A host that restarted reloads from PostgreSQL and then does the same
before its first answer, so no answer is computed from state behind the clock or behind
PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from actors.call import Call, CallRequest, Settlement
from actors.errors import BillingError, InvariantViolation
from actors.money import WITHDRAW, to_ms
from actors.timeline import bill_call_through, catch_up
from actors.transfer_ids import external_transfer_id
from actors.wallet import Wallet, check_external
from engine.host.expiries import Expiring
from engine.host.listener_desk import ListenerSide
from engine.host.payouts_refunds import MoneyBack, payout_records
from engine.host.peers import Alone, Peers
from engine.host.settlements import Settling
from engine.host.wallet_cache import WalletCache
from engine.runtime import metrics
from persistence.client import WriterClient
from persistence.presence import Presence
from persistence.records import (
    call_start_record,
    call_started_event,
    low_balance_event,
)


@dataclass(frozen=True)
class HostSettings:
    """The parts of the engine's configuration a host bills by."""

    user_calls_max: int
    low_balance_minutes: int = 2
    call_defaults: tuple[float, int] = (60.0, 240)  # minute length (s), maximum minutes
    badge_timezone: str = "UTC"

    @classmethod
    def of(cls, config) -> HostSettings:
        return cls(
            config.user_calls_max,
            config.low_balance_minutes,
            (config.minute_seconds, config.max_call_minutes),
            config.badge_timezone,
        )


async def start_call(
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


class WalletHost(ListenerSide, Settling, MoneyBack, Expiring):
    def __init__(
        self,
        database_url: str,
        client: WriterClient,
        settings: HostSettings,
        *,
        presence: Presence | None = None,
        peers: Peers | None = None,
        before_first_read: Callable[[], Awaitable[None]] | None = None,
        on_call_added: Callable[[Call], None] | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.presence = presence
        self.peers: Peers = peers or Alone()
        self._on_call_added = on_call_added
        self.calls: dict[int, Call] = {}  # the ongoing calls the wallets hosted here pay
        self.cache = WalletCache(
            database_url,
            self,
            settings.call_defaults,
            settings.badge_timezone,
            before_first_read,
        )
        self.wallets = self.cache.wallets
        self._settling: dict[int, asyncio.Future] = {}
        self._refunding = asyncio.Lock()  # refunds are decided one at a time (money_back.py)
        self._notices: list[dict] = []  # low-balance notices waiting to be published
        self._reserved_at: dict[int, float] = {}  # listener -> when its reservation was made
        self.counts = {"minutes_billed": 0, "calls_started": 0, "calls_settled": 0}
        self.ends: dict[str, int] = {}  # calls settled here, by end reason

    @property
    def stats(self) -> dict:
        return self.counts | {"wallets_evicted": self.cache.evicted, "ends": dict(self.ends)}

    def writes_pending(self) -> bool:
        return bool(self.client.pending)

    def settling(self) -> bool:
        """Is a settlement under way here (committed or freeing its listener)?"""
        return bool(self._settling)

    async def pool(self):
        return await self.cache.pool()

    async def wallet(self, user_id: int) -> Wallet:
        return await self.cache.wallet(user_id)

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

    # -- time order (rule 9) -------------------------------------------------------------------

    async def _payer_caught_up(self, user_id: int, now: float) -> tuple[Wallet, int]:
        """The wallet, with every minute and drop due by `now` applied to the calls it pays.
        Returns it and the time of the operation (never before what the wallet already did)."""
        w = await self.wallet(user_id)
        now_ms = w.stamp(to_ms(now))
        if w.calls:
            self._catch_up(w, now_ms)
        self.expire_due(w, now_ms)
        return w, now_ms

    async def _caught_up(self, user_id: int, now: float) -> tuple[Wallet, int]:
        """`_payer_caught_up`, and for a listener in a call, that call brought up to `now` by its
        payer's host: ended calls credited and freed here before anything is answered."""
        w, now_ms = await self._payer_caught_up(user_id, now)
        if w.listener_call_id is not None:
            await self._listener_caught_up(w, now_ms)
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
        self.counts["minutes_billed"] += minutes
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
                notice = c.low_balance(w.balance_coins, self.settings.low_balance_minutes)
                if notice is not None:
                    self._notices.append(notice)
                    records.append(low_balance_event(notice, w.clock_ms))

    # -- external inputs, written through ------------------------------------------------------

    async def apply_external(
        self,
        user_id: int,
        tx_type: str,
        amount: int,
        key: str,
        now: float,
        payout_id: int | None = None,
        expires_ms: int | None = None,
    ) -> dict:
        """A top-up, spend or withdrawal, once per key. A withdrawal holds `payout_id`'s
        earnings: the payout is pending until `settle_payout`; a bonus with `expires_ms` is a
        bucket, granted after every debit before it (`Wallet.grant_ms`)."""
        check_external(tx_type, amount)  # bad input is refused before any read
        w, now_ms = await self._caught_up(user_id, now)
        transfer_id = external_transfer_id(user_id, key)
        await self.recalled(w, transfer_id)
        if tx_type == WITHDRAW and amount > w.earnings_paise and w.listener_call_id is not None:
            await self._listener_caught_up(w, now_ms)  # a credit that settled meanwhile
        await self.client.room()
        # Awaits above let other operations in; whatever they did is at or before this stamp.
        at_ms = w.stamp(now_ms)
        if expires_ms is not None and transfer_id not in w.external:
            at_ms = self.grant_at(w, at_ms)
        t = w.apply_external(key, tx_type, amount, at_ms, payout_id, expires_ms)
        if t is not None:
            if payout_id:
                records = payout_records(payout_id, t)
            elif expires_ms is not None:
                records = [self.granted_record(w, t, expires_ms)]
            else:
                records = [t]
            await self.client.durable(records)
        else:
            # A repeat: answer once the original is committed, with nothing applied again.
            await self.client.wait_committed()
        out = {
            "transfer_id": transfer_id,
            "applied": t is not None,
            "user_id": user_id,
            "balance_coins": w.balance_coins,
            "earnings_paise": w.earnings_paise,
        }
        if tx_type == WITHDRAW:
            out |= await self.withdrawn(transfer_id, payout_id if t is not None else None)
        return out

    async def recalled(self, w: Wallet, transfer_id: str) -> None:
        """`w` knows whether `transfer_id` was applied: an id from before this wallet was loaded
        is in the ledger, if anywhere (what a predecessor handed the writer was committed before
        the first read)."""
        if transfer_id not in w.external:
            committed = await self.cache.committed_external(transfer_id)
            if committed is not None:
                w.recall_external(transfer_id, *committed)

    # -- the payer's side of calls -------------------------------------------------------------

    async def open_call(self, call: Call, now: float, start_key: str | None = None) -> dict:
        """Charge minute 1 and record the call's start, both committed before returning, and
        the call in Redis. The call connects when its payer's host opens it: never before the
        payer's last event."""
        w, now_ms = await self._payer_caught_up(call.user_id, now)
        await self.client.room()
        call.connected_ms = max(call.connected_ms, w.stamp(now_ms))
        first = w.open_call(
            call.call_id,
            call.rate_coins,
            self.settings.user_calls_max,
            call.connected_ms,
            call.minute_ms,
        )
        call.after_billing_ms(1, False, call.connected_ms)
        self.add_call(call)
        await self.client.durable(
            [call_start_record(call, start_key), first, call_started_event(call)]
        )
        self.counts["calls_started"] += 1
        metrics.billed(1, started=1)
        state = call.state(w.balance_coins, w.buckets)
        if self.presence is not None:
            # The call cached in Redis, and connecting counts as a heartbeat of both parties:
            # in this host's pipeline, with the other starts and ends of its batch.
            cached = ("call_id", "user_id", "listener_id", "call_type", "connected_at")
            await self.presence.call_started({k: state[k] for k in cached}, seen_at=now)
        return state

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
                s = bill_call_through(w, call, call.minute_at_ms(now_ms), now_ms, records)
                if s is not None:
                    settled.append(s)
            else:
                payer_calls = [calls[c] for c in w.calls]
                settled += catch_up(w, payer_calls, now_ms, records)
            self._note_low_balance(w, payer_calls, events)
            if w.expiring:
                events += self.expired_records(w)
        minutes = len(records)
        records += events
        self.client.append(records)  # before the settlements of this pass
        self.counts["minutes_billed"] += minutes
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
        w, now_ms = await self._payer_caught_up(call.user_id, now)
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
        w, _ = await self._payer_caught_up(call.user_id, now)
        if call.settlement is None:
            return call.state(w.balance_coins, w.buckets)
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

    # -- the listener's side -------------------------------------------------------------------

    def forget_tiers(self) -> None:
        self.cache.forget_tiers()

    async def start_call(self, r: CallRequest, now: float, start_key: str | None) -> dict:
        """A start on the payer's host, in one message from the Engine: the listener is held
        here, or by their own host, asked from here."""
        there = self if self.peers.is_local(r.listener_id) else self.peers
        return await start_call(
            r,
            lambda: there.reserve_listener(r.listener_id, r.call_id, r.user_id, now),
            lambda call: self.open_call(call, now, start_key),
            lambda: there.cancel_reservation(r.listener_id, r.call_id),
            now,
        )

    # -- reads ---------------------------------------------------------------------------------

    async def balance(self, user_id: int, now: float) -> dict:
        w, _ = await self._caught_up(user_id, now)
        return {
            "user_id": user_id,
            "balance_coins": w.balance_coins,
            "earnings_paise": w.earnings_paise,
            "buckets": w.bucket_view(),
        }

    async def inspect_wallet(self, user_id: int, now: float) -> dict:
        w, _ = await self._caught_up(user_id, now)
        return w.state()
