"""A refund of a call's minutes, in two steps: the listener's earnings clawed back on their host
(the refund recorded with it), then the payer's coins on theirs (`refunded_at` set with the coin
transfer). Each step is one transaction, written through before it answers, and idempotent, so
a step retried after a crash happens once. A host that dies between the two leaves a refund
without `refunded_at`: a retry with the same key, or the cleanup job (`jobs.finish_refunds`),
gives the coins. The listener's host decides the refunds of a call one at a time (a lock), so
two refunds at once cannot both take the last minutes."""

from __future__ import annotations

import asyncio

from actors.errors import CallOngoing, IdempotencyConflict, InvariantViolation, RefundExceedsBilled
from actors.transfer_ids import refund_id
from engine.host.time_order import TimeOrder
from engine.host.wallet_cache import WalletCache
from engine.operations import ClawBack, RefundCoins
from persistence import payouts, store
from persistence.client import WriterClient
from persistence.records import CALL_REFUNDED, REFUND, REFUNDED, event_record, row_record


class Refunds:
    def __init__(self, time: TimeOrder, cache: WalletCache, client: WriterClient) -> None:
        self.time = time
        self.cache = cache
        self.client = client
        self._deciding = asyncio.Lock()  # the refunds of this host's listeners, one at a time

    async def claw_back(self, op: ClawBack) -> dict:
        """Step one: decide the refund's minutes against what the call billed and what was
        refunded, and take the same minutes' earnings back from the listener (unless
        `listener_pays` is false). Answers the refund as recorded; a repeat, the refund its
        key made (a different request with that key is refused)."""
        async with self._deciding:
            w, now_ms = await self.time.wallet_at(op.listener_id, op.now)
            await self.client.wait_committed()
            pool = await self.cache.pool()
            rid = refund_id(op.call_id, op.key)
            before = await payouts.refund(pool, rid)
            if before is not None:
                asked = {"minutes": op.minutes, "listener_pays": op.listener_pays}
                asked = {k: v for k, v in asked.items() if v is not None}
                if any(before[k] != v for k, v in asked.items()):
                    raise IdempotencyConflict(
                        f"idempotency key {op.key!r} refunded {before['minutes']} minutes "
                        f"(listener_pays={before['listener_pays']}), not {asked}"
                    )
                return before
            row = await self._refund_row(pool, op, rid)
            await self.client.room()
            row["created_ms"] = at_ms = w.stamp(now_ms)
            back = [w.claw_back(rid, row["paise"], row["call_id"], at_ms)] if row["paise"] else []
            await self.client.durable([row_record(REFUND, row, back)])
            return await payouts.refund(pool, rid)

    async def _refund_row(self, pool, op: ClawBack, rid: str) -> dict:
        call = await store.read_call(pool, op.call_id)
        if call["status"] == "ongoing":
            raise CallOngoing(f"call {op.call_id} is ongoing; refund it once it has ended")
        if call["listener_id"] != op.listener_id:
            raise InvariantViolation(f"refund {rid} asked of listener {op.listener_id}'s host")
        refunded, coins_before = await payouts.refunded(pool, op.call_id)
        left = call["billed_minutes"] - refunded
        minutes = left if op.minutes is None else op.minutes
        if minutes > left or minutes <= 0:
            raise RefundExceedsBilled(
                f"call {op.call_id} billed {call['billed_minutes']} minutes and "
                f"{refunded} are refunded already; {left} can be, not {minutes}"
            )
        # What the call charged is all a refund gives back (its price may have returned part
        # of the prepaid minutes at its end); earnings go back in the same proportion.
        charged = call["coins_charged"]
        coins = min(minutes * call["rate_coins"], charged - coins_before)
        if coins <= 0:
            raise RefundExceedsBilled(
                f"call {op.call_id} charged {charged} coins and {coins_before} are refunded "
                "already: nothing is left to refund"
            )
        return {
            "refund_id": rid,
            "call_id": op.call_id,
            "user_id": call["user_id"],
            "listener_id": op.listener_id,
            "minutes": minutes,
            "coins": coins,
            "paise": coins * call["earnings_paise"] // charged if op.listener_pays else 0,
            "listener_pays": op.listener_pays,
            "reason": op.reason,
        }

    async def give_coins(self, op: RefundCoins) -> dict:
        """Step two: the refund's coins back to the payer, once."""
        rid = op.refund_id
        w, now_ms = await self.time.wallet_at(op.user_id, op.now)
        await self.cache.recall(w, rid)
        await self.client.room()
        at_ms = w.stamp(now_ms)
        t = w.refund_coins(rid, op.coins, op.call_id, at_ms)
        if t is not None:
            data = {"refund_id": rid, "listener_id": op.listener_id, "minutes": op.minutes}
            data |= {"coins": op.coins, "paise": op.paise, "reason": op.reason}
            event = event_record(CALL_REFUNDED, op.call_id, op.user_id, at_ms, data, of=rid)
            done = {"refund_id": rid, "refunded_ms": at_ms}
            resumed = self.time.resume(w, at_ms)  # a minute waiting in its grace
            await self.client.durable([row_record(REFUNDED, done, [t], event), *resumed])
        else:
            await self.client.wait_committed()
        return {"user_id": op.user_id, "balance_coins": w.balance_coins, "applied": t is not None}
