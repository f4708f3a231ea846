"""The Engine's requests about calls: a start (minute 1 charged), an end (settled once), a read
(the call now), a person's calls, every minute due billed now, and the committed call events.
A start or end is an operation (`engine.operations`) sent to the payer's host; nothing that
memory can answer is read from PostgreSQL on the way."""

from __future__ import annotations

import asyncio

from actors.call import END_REASONS
from actors.call_request import CallRequest
from actors.errors import BillingError, IdempotencyConflict, InvalidInput
from actors.money import AMOUNT_MAX, CALL_TYPES, entity_id, key_of, one_of, page_limit
from actors.settlement import SETTLEMENT_KEYS
from engine.lifecycle import Lifecycle
from engine.offer_requests import OfferRequests
from engine.offer_requests import offer_code as offer_code_of
from engine.operations import EndCall, ReadCall, ReadWallet, StartCall
from engine.retryable import retryable
from persistence import store
from persistence.events import READ_LIMIT_MAX, read_events
from persistence.offers import code_exists as offer_code_exists

# Payers of the calls this process started, so that an end or a read goes to the payer's host
# without reading the call's row first. Past the cap the oldest entry goes (that call's next
# request reads its row, as a call started by another process does).
CALL_PAYERS_MAX = 200_000
# What the answer for a call that ended adds to its stored row.
STORED = {
    "next_tick_at": None,
    "grace_until": None,
    "minutes_affordable": None,
    "paid_until": None,
    "answered_from": "stored",
}


class CallRequests:
    def __init__(self, life: Lifecycle, offer_requests: OfferRequests) -> None:
        self.life = life
        self.offers = offer_requests
        self._starting: dict[tuple[int, str], asyncio.Future] = {}  # keyed starts under way
        self._call_ids = store.SequenceIds()
        self._payers: dict[int, int] = {}  # call id -> payer, for CALL_PAYERS_MAX calls

    @retryable
    async def start_call(
        self,
        user_id: int,
        listener_id: int,
        call_type: str = "audio",
        idempotency_key: str | None = None,
        offer_code: str | None = None,
    ) -> dict:
        """Connect a call: minute 1 is charged now. Returns the call's state after the start
        is committed, with the offer it took (`offer`: the best the payer is eligible for,
        `offer_code` naming a campaign's; null if none). With an idempotency key, a repeat
        returns the call that key started, and the key used for another listener or call type
        is refused."""
        entity_id(user_id, "user_id")
        entity_id(listener_id, "listener_id")
        one_of(call_type, CALL_TYPES, "call_type")
        code = offer_code_of(offer_code)
        if code is not None and not await offer_code_exists(await self.life.pool(), code):
            raise InvalidInput(f"offer_code {code!r} is no offer's code")
        key = None if idempotency_key is None else key_of(idempotency_key)
        start = (user_id, listener_id, call_type, code)
        if key is None:
            return await self._start_call(*start, None)
        # One start per key at a time in this process; a repeat waits for the first.
        slot = (user_id, key)
        while (running := self._starting.get(slot)) is not None:
            await asyncio.wait([running])
        # The task frees its slot when it ends, even if this caller stops waiting.
        task = asyncio.ensure_future(self._start_keyed(*start, key))
        self._starting[slot] = task
        return await asyncio.shield(task)

    async def _start_keyed(self, user_id, listener_id, call_type, code, key) -> dict:
        try:
            before = await store.call_by_start_key(await self.life.pool(), user_id, key)
            if before is None:
                return await self._start_call(user_id, listener_id, call_type, code, key)
            if (before["listener_id"], before["call_type"]) != (listener_id, call_type):
                raise IdempotencyConflict(
                    f"idempotency key {key!r} started call {before['call_id']} with listener "
                    f"{before['listener_id']} ({before['call_type']}), not listener "
                    f"{listener_id} ({call_type})"
                )
            return await self.get_call(before["call_id"])
        finally:
            self._starting.pop((user_id, key), None)

    async def _start_call(self, user_id, listener_id, call_type, code, key: str | None) -> dict:
        # Nothing here that memory can answer is read from PostgreSQL: the call id comes from
        # a block taken from the sequence; each party's role is checked by their own host (the
        # listener's when it holds them, the payer's when it opens the call), and the
        # listener's tier today comes back with the hold.
        config = self.life.config
        call_id = await self._call_ids.next(await self.life.pool())
        now = self.life.clock.now()
        card_id, card = await self.life.cards.in_force(now)
        # The offer it takes, its minutes reserved in PostgreSQL before anything else.
        offer = await self.offers.claim(call_id, user_id, listener_id, call_type, code, key, now)
        request = CallRequest(
            call_id,
            user_id,
            listener_id,
            call_type,
            card,
            card_id,
            config.minute_seconds,
            config.max_call_minutes,
            offer_id=offer and offer["offer_id"],
            offer_minutes=offer["minutes"] if offer else 0,
            offer_pays=offer and offer["pays_listener"],
        )
        op = StartCall(now=now, request=request, start_key=key)
        try:
            state = await self.life.placement.ask(op)
        except BillingError:  # refused before anything was written: the minutes go back
            if offer is not None:
                await self.offers.release(call_id)
            raise
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
        settled = await self._live_or_stored(
            call_id,
            lambda payer, now: EndCall(
                now=now, user_id=payer, call_id=call_id, reason=reason
            ),  # fmt: skip
        )
        if settled.get("answered_from") == "stored":
            # Settled before (or by a host that died before freeing the listener): the
            # listener's host catches up from PostgreSQL before this returns.
            listener = settled["listener_id"]
            await self.life.placement.ask(ReadWallet(now=self.life.clock.now(), user_id=listener))
        return {k: settled[k] for k in SETTLEMENT_KEYS}

    async def _live_or_stored(self, call_id: int, op_for) -> dict:
        """What the payer's host answers to `op_for(payer, now)` while the call is ongoing
        (brought up to now), else its stored row (marked `answered_from: stored`)."""
        entity_id(call_id, "call_id")
        payer = self._payers.get(call_id)
        if payer is None:  # not started here: its row names the payer
            row = await store.read_call(await self.life.pool(), call_id)
            if row["status"] != "ongoing":
                return row | STORED
            payer = row["user_id"]
        live = await self.life.placement.ask(op_for(payer, self.life.clock.now()))
        if live is None or live["ended_at"] is not None:
            self._payers.pop(call_id, None)
        if live is not None:
            return live
        row = await store.read_call(await self.life.pool(), call_id)
        return row | STORED

    @retryable
    async def get_call(self, call_id: int) -> dict:
        """The call now: an ongoing call's live state, brought up to now (every minute due
        billed, a drop due applied), or the stored row of an ended one."""
        out = await self._live_or_stored(
            call_id, lambda payer, now: ReadCall(now=now, user_id=payer, call_id=call_id)
        )
        out.pop("answered_from", None)
        return out

    @retryable
    async def calls_of(self, user_id: int, limit: int = 20, before: int | None = None) -> list:
        """A person's calls as payer or listener, newest first, `limit` (at most
        CALLS_PAGE_MAX) at a time; pass the last call id seen as `before` for the next page.
        Rows as stored: an ongoing call's minutes are billed live (see `get_call`)."""
        entity_id(user_id, "user_id")
        page_limit(limit, store.CALLS_PAGE_MAX, before)
        return await store.calls_of(await self.life.pool(), user_id, limit, before)

    @retryable
    async def bill_due(self) -> int:
        """Bill every minute due now, for every ongoing call, and return once the calls that
        ended are settled. The calls' own timers bill the same minutes; the transfer ids make
        whichever comes second a no-op."""
        return await self.life.placement.bill_due(self.life.clock.now())

    @retryable
    async def events(
        self, after: int = 0, limit: int = 100, user_id: int | None = None
    ) -> list[dict]:
        """Committed call events (`call_started`, `low_balance`, `call_dropped`,
        `call_settled`) with an id above `after`, oldest first; of one party with `user_id`.
        Each is `{"id", "type", "call_id", "user_id", "at", "data"}`; a consumer keeps the last
        id it handled and asks again after it (delivery is at least once)."""
        if type(after) is not int or not 0 <= after <= AMOUNT_MAX:
            raise InvalidInput(
                f"after must be an integer event id in [0, {AMOUNT_MAX}], got {after!r}"
            )
        page_limit(limit, READ_LIMIT_MAX)
        if user_id is not None:
            entity_id(user_id, "user_id")
        return await read_events(await self.life.pool(), after, limit, user_id)
