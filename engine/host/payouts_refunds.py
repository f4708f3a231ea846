"""Money that goes back: a payout settled (paid, or rejected and its hold released) on the
listener's host, and a refund of a call's minutes in two steps: the listener's earnings clawed
back on their host, then the payer's coins on theirs. Each step is one transaction, written
through before it answers; each is idempotent, so a step retried after a crash happens once.

A refund's claw-back records the refund (its minutes, coins and paise); its coins step sets
`refunded_at` with the coin transfer. A host that dies between the two leaves a refund without
`refunded_at`: a retry with the same key, or the cleanup job (`jobs.finish_refunds`), gives
the coins. The listener's host is where the refunds of a call are decided one at a time (the
`_refunding` lock), so two refunds at once cannot both take the last minutes.
"""

from __future__ import annotations

import asyncio

from actors.errors import (
    CallOngoing,
    IdempotencyConflict,
    InvariantViolation,
    PayoutSettled,
    RefundExceedsBilled,
)
from actors.money import PAYOUT_PENDING
from actors.transfer_ids import refund_id
from persistence import payouts, store
from persistence.records import (
    CALL_REFUNDED,
    PAYOUT,
    PAYOUT_EVENTS,
    PAYOUT_SETTLED,
    REFUND,
    REFUNDED,
    event_record,
    row_record,
)


def payout_records(payout_id: int, t) -> list:
    """The payout a withdraw transfer `t` holds for, with `t` and its `payout_pending` event:
    one record."""
    row = {
        "payout_id": payout_id,
        "listener_id": t.user_id,
        "amount_paise": -t.amount,
        "transfer_id": t.transfer_id,
        "created_ms": t.at_ms,
    }
    return [row_record(PAYOUT, row, [t], _payout_event(row, PAYOUT_PENDING, None, t.at_ms))]


def _payout_event(row: dict, status: str, reason: str | None, at_ms: int) -> list:
    data = {k: row[k] for k in ("payout_id", "listener_id", "amount_paise")}
    data |= {"status": status, "reason": reason}
    kind = PAYOUT_EVENTS[status]
    return event_record(kind, None, row["listener_id"], at_ms, data, of=row["payout_id"])


class MoneyBack:
    """Mixed into `WalletHost`: payouts settled and refunds, on the host of the wallet they
    move."""

    _refunding: asyncio.Lock

    async def withdrawn(self, transfer_id: str, payout_id: int | None) -> dict:
        """The payout of a withdrawal: the new one (`payout_id`), or for a repeat the one its
        first delivery made, as committed."""
        if payout_id is not None:
            return {"payout_id": payout_id, "status": PAYOUT_PENDING}
        row = await payouts.payout_of_transfer(await self.pool(), transfer_id)
        if row is None:
            raise InvariantViolation(f"withdrawal {transfer_id} holds for no payout")
        return {"payout_id": row["payout_id"], "status": row["status"]}

    async def settle_payout(
        self, listener_id: int, payout_id: int, outcome: str, reason: str | None, now: float
    ) -> dict:
        """Pay or reject a pending payout, once: a repeat answers the payout as it is, and the
        other outcome of a settled one is refused (`PayoutSettled`)."""
        w, now_ms = await self._caught_up(listener_id, now)
        if payout_id in w.payouts:
            await self.client.room()
        if payout_id in w.payouts:  # still: the awaits let no other settle it
            at_ms = w.stamp(now_ms)
            row = {"payout_id": payout_id, "listener_id": listener_id}
            row |= {"amount_paise": w.payouts[payout_id]}
            void = w.settle_payout(payout_id, outcome, at_ms)
            settled = {"status": outcome, "reason": reason, "settled_ms": at_ms}
            event = _payout_event(row, outcome, reason, at_ms)
            voided = [] if void is None else [void]
            await self.client.durable([row_record(PAYOUT_SETTLED, row | settled, voided, event)])
            applied = True
        else:
            await self.client.wait_committed()  # a settle of it under way here commits first
            applied = False
        out = await payouts.payout(await self.pool(), payout_id)
        if out["listener_id"] != listener_id or out["status"] == PAYOUT_PENDING:
            raise InvariantViolation(f"payout {payout_id}: {out} is not pending on its host")
        if out["status"] != outcome:
            raise PayoutSettled(
                f"payout {payout_id} was {out['status']}; it cannot be {outcome} as well"
            )
        return out | {"applied": applied, "earnings_paise": w.earnings_paise}

    async def claw_back(self, listener_id: int, ask: dict, now: float) -> dict:
        """Step one of a refund: decide its minutes against what the call billed and what was
        refunded, and take the same minutes' earnings back from the listener (unless
        `listener_pays` is false). Answers the refund as recorded; a repeat, the refund its
        key made (a different request with that key is refused)."""
        async with self._refunding:
            w, now_ms = await self._caught_up(listener_id, now)
            await self.client.wait_committed()
            pool = await self.pool()
            rid = refund_id(ask["call_id"], ask["key"])
            before = await payouts.refund(pool, rid)
            if before is not None:
                asked = {k: ask[k] for k in ("minutes", "listener_pays") if ask[k] is not None}
                if any(before[k] != v for k, v in asked.items()):
                    raise IdempotencyConflict(
                        f"idempotency key {ask['key']!r} refunded {before['minutes']} minutes "
                        f"(listener_pays={before['listener_pays']}), not {asked}"
                    )
                return before
            row = await self._refund_row(pool, listener_id, rid, ask)
            await self.client.room()
            row["created_ms"] = at_ms = w.stamp(now_ms)
            back = [w.claw_back(rid, row["paise"], row["call_id"], at_ms)] if row["paise"] else []
            await self.client.durable([row_record(REFUND, row, back)])
            return await payouts.refund(pool, rid)

    async def _refund_row(self, pool, listener_id: int, rid: str, ask: dict) -> dict:
        call = await store.read_call(pool, ask["call_id"])
        if call["status"] == "ongoing":
            raise CallOngoing(f"call {ask['call_id']} is ongoing; refund it once it has ended")
        if call["listener_id"] != listener_id:
            raise InvariantViolation(f"refund {rid} asked of listener {listener_id}'s host")
        refunded = await payouts.refunded_minutes(pool, ask["call_id"])
        left = call["billed_minutes"] - refunded
        minutes = left if ask["minutes"] is None else ask["minutes"]
        if minutes > left or minutes <= 0:
            raise RefundExceedsBilled(
                f"call {ask['call_id']} billed {call['billed_minutes']} minutes and "
                f"{refunded} are refunded already; {left} can be, not {minutes}"
            )
        return {
            "refund_id": rid,
            "call_id": ask["call_id"],
            "user_id": call["user_id"],
            "listener_id": listener_id,
            "minutes": minutes,
            "coins": minutes * call["rate_coins"],
            "paise": minutes * call["rate_paise"] if ask["listener_pays"] else 0,
            "listener_pays": ask["listener_pays"],
            "reason": ask["reason"],
        }

    async def refund_coins(self, user_id: int, refund: dict, now: float) -> dict:
        """Step two: the refund's coins back to the payer, once."""
        rid = refund["refund_id"]
        if refund["user_id"] != user_id:
            raise InvariantViolation(f"refund {rid} asked of user {user_id}'s host")
        w, now_ms = await self._caught_up(user_id, now)
        await self.recalled(w, rid)
        await self.client.room()
        at_ms = w.stamp(now_ms)
        t = w.refund_coins(rid, refund["coins"], refund["call_id"], at_ms)
        if t is not None:
            data = {k: refund[k] for k in ("refund_id", "listener_id", "minutes", "coins")}
            data |= {"paise": refund["paise"], "reason": refund["reason"]}
            event = event_record(CALL_REFUNDED, refund["call_id"], user_id, at_ms, data, of=rid)
            done = {"refund_id": rid, "refunded_ms": at_ms}
            await self.client.durable([row_record(REFUNDED, done, [t], event)])
        else:
            await self.client.wait_committed()
        return {"user_id": user_id, "balance_coins": w.balance_coins, "applied": t is not None}
