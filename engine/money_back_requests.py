"""The Engine's requests for money that goes out or back: withdrawals as payouts in two steps,
their settlement, a listener's payouts, and refunds of a call's minutes. The hosts do the money
(`engine/host/payouts_refunds.py`); this checks what comes in and routes it."""

from __future__ import annotations

from actors.errors import CallOngoing, InvalidInput
from actors.money import (
    PAYOUT_OUTCOMES,
    REASON_CHARS_MAX,
    WITHDRAW,
    entity_id,
    key_of,
    one_of,
    text_value,
)
from engine.retryable import retryable
from persistence import payouts, store

PAYOUT_ID_BLOCK = 16  # payout ids a process takes from their sequence at a time
REFUND_MINUTES_MAX = 100_000


def _reason(reason: object, required: bool) -> str | None:
    if reason is None and not required:
        return None
    return text_value(reason, "reason", REASON_CHARS_MAX)


class MoneyBackRequests:
    """Mixed into `Engine`."""

    @retryable
    async def withdraw(
        self, listener_id: int, amount_paise: int, idempotency_key: str | None = None
    ) -> dict:
        """Pay out a listener's earnings in two steps: the earnings are held now (a pending
        payout: they cannot be withdrawn twice or spent), then `settle_payout` says it was
        paid or rejected (the hold released). The answer adds `payout_id` and `status` to a
        transfer's; a repeat of the key answers the same payout, as it is now."""
        return await self._external(
            listener_id, "listener_id", WITHDRAW, amount_paise, idempotency_key
        )

    @retryable
    async def settle_payout(self, payout_id: int, outcome: str, reason: str | None = None) -> dict:
        """`outcome` "paid" (the hold stays, as the payout) or "rejected" (the held earnings
        go back to the listener as a `payout_void` transfer). Idempotent; settling a payout
        the other way is refused with `PayoutSettled`."""
        entity_id(payout_id, "payout_id")
        one_of(outcome, PAYOUT_OUTCOMES, "outcome")
        reason = _reason(reason, False)
        row = await payouts.payout(await self.pool(), payout_id)
        return await self.placement.settle_payout(
            row["listener_id"], payout_id, outcome, reason, self.clock.now()
        )

    @retryable
    async def payouts(
        self, listener_id: int, limit: int = 20, before: int | None = None
    ) -> list[dict]:
        """A listener's payouts, newest first, `limit` (at most PAYOUTS_PAGE_MAX) at a time;
        pass the last `payout_id` seen as `before` for the next page."""
        entity_id(listener_id, "listener_id")
        if type(limit) is not int or not 1 <= limit <= payouts.PAYOUTS_PAGE_MAX:
            raise InvalidInput(
                f"limit must be an integer in [1, {payouts.PAYOUTS_PAGE_MAX}], got {limit!r}"
            )
        if before is not None:
            entity_id(before, "before")
        return await payouts.payouts_of(await self.pool(), listener_id, limit, before)

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
        ask = {
            "call_id": call_id,
            "minutes": minutes,
            "reason": _reason(reason, True),
            "key": key_of(idempotency_key),
            "listener_pays": listener_pays,
        }
        call = await store.read_call(await self.pool(), call_id)
        if call["status"] == "ongoing":
            raise CallOngoing(f"call {call_id} is ongoing; refund it once it has ended")
        refund = await self.placement.claw_back(call["listener_id"], ask, self.clock.now())
        return await self.finish_refund(refund)

    async def finish_refund(self, refund: dict) -> dict:
        """The refund's coins to its payer, if they are not yet: its second step."""
        if refund["refunded_at"] is None:
            await self.placement.refund_coins(refund["user_id"], refund, self.clock.now())
            refund = await payouts.refund(await self.pool(), refund["refund_id"])
        return refund
