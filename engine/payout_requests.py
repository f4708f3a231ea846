"""The Engine's requests for money that goes back or out: a payout settled (paid, or rejected
and its hold released), a listener's payouts, and a refund of a call's minutes in its two steps.
The hosts do the money (`engine/host/payouts.py`, `refunds.py`); this checks what comes in and
sends each step, as an operation, to the host of the wallet it moves."""

from __future__ import annotations

from actors.errors import CallOngoing, InvalidInput
from actors.money import (
    PAYOUT_OUTCOMES,
    REASON_CHARS_MAX,
    entity_id,
    key_of,
    one_of,
    page_limit,
    text_value,
)
from engine.lifecycle import Lifecycle
from engine.operations import ClawBack, RefundCoins, SettlePayout
from engine.retryable import retryable
from persistence import payouts, store

REFUND_MINUTES_MAX = 100_000


def _reason(reason: object, required: bool) -> str | None:
    if reason is None and not required:
        return None
    return text_value(reason, "reason", REASON_CHARS_MAX)


class PayoutsAndRefunds:
    def __init__(self, life: Lifecycle) -> None:
        self.life = life

    @retryable
    async def settle_payout(self, payout_id: int, outcome: str, reason: str | None = None) -> dict:
        """`outcome` "paid" (the hold stays, as the payout) or "rejected" (the held earnings
        go back to the listener as a `payout_void` transfer). Idempotent; settling a payout
        the other way is refused with `PayoutSettled`."""
        entity_id(payout_id, "payout_id")
        one_of(outcome, PAYOUT_OUTCOMES, "outcome")
        reason = _reason(reason, False)
        row = await payouts.payout(await self.life.pool(), payout_id)
        op = SettlePayout(now=self.life.clock.now(), listener_id=row["listener_id"],
                          payout_id=payout_id, outcome=outcome, reason=reason)  # fmt: skip
        return await self.life.placement.ask(op)

    @retryable
    async def payouts(
        self, listener_id: int, limit: int = 20, before: int | None = None
    ) -> list[dict]:
        """A listener's payouts, newest first, `limit` (at most PAYOUTS_PAGE_MAX) at a time;
        pass the last `payout_id` seen as `before` for the next page."""
        entity_id(listener_id, "listener_id")
        page_limit(limit, payouts.PAYOUTS_PAGE_MAX, before)
        return await payouts.payouts_of(await self.life.pool(), listener_id, limit, before)

    @retryable
    async def refund_call(
        self,
        call_id: int,
        minutes: int | None = None,
        reason: str = "refund",
        idempotency_key: str | None = None,
        listener_pays: bool = True,
    ) -> dict:
        """Give back the coins of a call's last `minutes` billed minutes (all not refunded yet
        when None) and take the same minutes' earnings back from its listener, as correcting
        transfers (`refund:{call_id}:{key}`, and `...:clawback`). Refused with
        `RefundExceedsBilled` past what was billed and not refunded, `InsufficientEarnings`
        when the listener's earnings cannot cover the claw-back (unless `listener_pays` is
        false: the coins alone are refunded, recorded as such), `CallOngoing` before the call
        ended. Once per key: a repeat answers the same refund."""
        entity_id(call_id, "call_id")
        if minutes is not None and (
            type(minutes) is not int or not 1 <= minutes <= REFUND_MINUTES_MAX
        ):
            raise InvalidInput(
                f"minutes must be an integer in [1, {REFUND_MINUTES_MAX}] or null, got {minutes!r}"
            )
        if type(listener_pays) is not bool:
            raise InvalidInput(f"listener_pays must be true or false, got {listener_pays!r}")
        reason, key = _reason(reason, True), key_of(idempotency_key)
        call = await store.read_call(await self.life.pool(), call_id)
        if call["status"] == "ongoing":
            raise CallOngoing(f"call {call_id} is ongoing; refund it once it has ended")
        op = ClawBack(
            now=self.life.clock.now(),
            listener_id=call["listener_id"],
            call_id=call_id,
            minutes=minutes,
            reason=reason,
            key=key,
            listener_pays=listener_pays,
        )
        return await self.finish_refund(await self.life.placement.ask(op))

    async def finish_refund(self, refund: dict) -> dict:
        """The refund's coins to its payer, if they are not yet: its second step."""
        if refund["refunded_at"] is None:
            fields = ("refund_id", "call_id", "listener_id", "minutes", "coins", "paise", "reason")
            op = RefundCoins(now=self.life.clock.now(), user_id=refund["user_id"],
                             **{k: refund[k] for k in fields})  # fmt: skip
            await self.life.placement.ask(op)
            refund = await payouts.refund(await self.life.pool(), refund["refund_id"])
        return refund
