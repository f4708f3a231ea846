"""Calls on their payer's host: a start (the listener reserved on their host, minute 1 charged and
the start recorded, written through), an end (billed to its time, settled once), and a read
(the call brought up to now, or its settlement once committed)."""

from __future__ import annotations

from actors import offers
from actors.call import Call
from actors.errors import BillingError
from engine.host.book import CallBook
from engine.host.meter import Meter
from engine.host.router import Router
from engine.host.settlements import Settlements
from engine.host.time_order import TimeOrder
from engine.operations import CancelReservation, EndCall, ReadCall, ReserveListener, StartCall
from persistence.client import WriterClient
from persistence.presence import Presence
from persistence.records import call_start_record, call_started_event

# What of a call's state Redis caches while it is ongoing.
CACHED = ("call_id", "user_id", "listener_id", "call_type", "connected_at")


class PayerCalls:
    def __init__(
        self,
        time: TimeOrder,
        book: CallBook,
        client: WriterClient,
        settlements: Settlements,
        router: Router,
        presence: Presence | None,
        meter: Meter,
        user_calls_max: int,
    ) -> None:
        self.time = time
        self.book = book
        self.client = client
        self.settlements = settlements
        self.router = router
        self.presence = presence
        self.meter = meter
        self.user_calls_max = user_calls_max

    async def start(self, op: StartCall) -> dict:
        """Reserve the listener (learning their tier), then open the call here. Refused before
        anything was written, the listener is free again; a failure without an answer keeps
        the reservation, since the start may yet be committed (the listener's host frees it once
        PostgreSQL shows otherwise)."""
        r, now = op.request, op.now
        reserved = {"now": now, "listener_id": r.listener_id, "call_id": r.call_id}
        priced = r.call_type in r.card.price_bounds  # the card lets listeners price it
        reserve = ReserveListener(
            **reserved, payer_id=r.user_id, call_type=r.call_type, priced=priced
        )
        tier, own_price = await self.router.ask(reserve)
        try:
            return await self.open(r.call(tier, now, own_price), now, op.start_key)
        except BillingError:
            await self.router.ask(CancelReservation(**reserved))
            raise

    async def open(self, call: Call, now: float, start_key: str | None) -> dict:
        """Charge minute 1 and record the call's start, both committed before returning, and
        the call in Redis. The call connects when its payer's host opens it: never before the
        payer's last event."""
        w, now_ms = await self.time.payer_at(call.user_id, now)
        await self.client.room()
        call.connected_ms = max(call.connected_ms, w.stamp(now_ms))
        first = w.open_call(
            call.call_id, call.rate_coins, self.user_calls_max, call.connected_ms,
            call.minute_ms, call.offer_minutes,
        )  # fmt: skip
        call.after_billing_ms(1, False, call.connected_ms)
        self.book.add(call, w)
        records = [call_start_record(call, start_key), first, call_started_event(call)]
        if call.offer_minutes:  # the offer's grant for the free minutes, before minute 1
            grant = offers.grant(
                call.call_id, call.user_id, call.offer_minutes, call.rate_coins, call.connected_ms
            )
            records.insert(1, grant)
        await self.client.durable(records)
        self.book.counts["calls_started"] += 1
        self.book.counts["minutes_billed"] += 1  # minute 1, at connect
        self.meter.billed(1, started=1)
        state = call.state(w.balance_coins, w.buckets)
        if self.presence is not None:
            # The call cached in Redis, and connecting counts as a heartbeat of both parties:
            # in this host's pipeline, with the other starts and ends of its batch.
            await self.presence.call_started({k: state[k] for k in CACHED}, seen_at=now)
        return state

    async def end(self, op: EndCall) -> dict | None:
        """End a call: bill what is due, settle once, return after the settlement committed
        and the listener was freed. None when the call is not (or no longer) here."""
        call = self.book.calls.get(op.call_id)
        if call is None:
            return None
        w, now_ms = await self.time.payer_at(call.user_id, op.now)
        if call.settlement is None:
            s = call.end(op.reason, now_ms / 1000)
            self.settlements.settle([s], urgent=True)
        return await self.settlements.settled(call)

    async def read(self, op: ReadCall) -> dict | None:
        """The call brought up to now: its state, or, if it ended, its settlement once
        committed and its listener freed. None when it is not here."""
        call = self.book.calls.get(op.call_id)
        if call is None:
            return None
        w, _ = await self.time.payer_at(call.user_id, op.now)
        if call.settlement is None:
            return call.state(w.balance_coins, w.buckets)
        return await self.settlements.settled(call)
