"""Payouts on the listener's host: a withdrawal holds the earnings as a pending payout (its
record made with the withdraw transfer), and the payout is settled once, paid (the hold kept)
or rejected (a `payout_void` transfer releases it), as TigerBeetle's pending transfers are
posted or voided. Each is written through before it answers."""

from __future__ import annotations

from actors.errors import InvariantViolation, PayoutSettled
from actors.money import PAYOUT_PENDING
from engine.host.time_order import TimeOrder
from engine.host.wallet_cache import WalletCache
from engine.operations import SettlePayout
from persistence import payouts
from persistence.client import WriterClient
from persistence.records import PAYOUT, PAYOUT_EVENTS, PAYOUT_SETTLED, event_record, row_record


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


class Payouts:
    def __init__(self, time: TimeOrder, cache: WalletCache, client: WriterClient) -> None:
        self.time = time
        self.cache = cache
        self.client = client

    async def withdrawn(self, transfer_id: str, payout_id: int | None) -> dict:
        """The payout of a withdrawal: the new one (`payout_id`), or for a repeat the one its
        first delivery made, as committed."""
        if payout_id is not None:
            return {"payout_id": payout_id, "status": PAYOUT_PENDING}
        row = await payouts.payout_of_transfer(await self.cache.pool(), transfer_id)
        if row is None:
            raise InvariantViolation(f"withdrawal {transfer_id} holds for no payout")
        return {"payout_id": row["payout_id"], "status": row["status"]}

    async def settle(self, op: SettlePayout) -> dict:
        """Pay or reject a pending payout, once: a repeat answers the payout as it is, and the
        other outcome of a settled one is refused (`PayoutSettled`)."""
        listener_id, payout_id, outcome = op.listener_id, op.payout_id, op.outcome
        w, now_ms = await self.time.wallet_at(listener_id, op.now)
        if payout_id in w.payouts:
            await self.client.room()
        if payout_id in w.payouts:  # still: the awaits let no other settle it
            at_ms = w.stamp(now_ms)
            row = {"payout_id": payout_id, "listener_id": listener_id}
            row |= {"amount_paise": w.payouts[payout_id]}
            void = w.settle_payout(payout_id, outcome, at_ms)
            settled = {"status": outcome, "reason": op.reason, "settled_ms": at_ms}
            event = _payout_event(row, outcome, op.reason, at_ms)
            voided = [] if void is None else [void]
            await self.client.durable([row_record(PAYOUT_SETTLED, row | settled, voided, event)])
            applied = True
        else:
            await self.client.wait_committed()  # a settle of it under way here commits first
            applied = False
        out = await payouts.payout(await self.cache.pool(), payout_id)
        if out["listener_id"] != listener_id or out["status"] == PAYOUT_PENDING:
            raise InvariantViolation(f"payout {payout_id}: {out} is not pending on its host")
        if out["status"] != outcome:
            raise PayoutSettled(
                f"payout {payout_id} was {out['status']}; it cannot be {outcome} as well"
            )
        return out | {"applied": applied, "earnings_paise": w.earnings_paise}
