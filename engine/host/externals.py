"""Money from and to the outside, on the host of its wallet: top-ups (a bonus with an expiry is
a bucket), spends outside any call, and withdrawals (the hold of a pending payout). Each is
applied once per idempotency key and written through: the answer comes after the commit."""

from __future__ import annotations

from actors.money import COINS, SPEND, WITHDRAW, check_external
from actors.transfer_ids import external_transfer_id
from engine.host.expiries import BucketExpiries
from engine.host.listener_desk import ListenerDesk
from engine.host.payouts import Payouts, payout_records
from engine.host.time_order import TimeOrder
from engine.host.wallet_cache import WalletCache
from engine.operations import Spend, TopUp, Withdraw
from persistence.client import WriterClient


class Externals:
    def __init__(
        self,
        time: TimeOrder,
        cache: WalletCache,
        client: WriterClient,
        desk: ListenerDesk,
        expiries: BucketExpiries,
        payouts: Payouts,
    ) -> None:
        self.time = time
        self.cache = cache
        self.client = client
        self.desk = desk
        self.expiries = expiries
        self.payouts = payouts

    async def top_up(self, op: TopUp) -> dict:
        return await self._apply(op.user_id, op.tx_type, op.amount_coins, op.key, op.now,
                                 expires_ms=op.expires_ms)  # fmt: skip

    async def spend(self, op: Spend) -> dict:
        return await self._apply(op.user_id, SPEND, op.amount_coins, op.key, op.now)

    async def withdraw(self, op: Withdraw) -> dict:
        return await self._apply(op.listener_id, WITHDRAW, op.amount_paise, op.key, op.now,
                                 payout_id=op.payout_id)  # fmt: skip

    async def _apply(
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
        earnings: the payout is pending until it is settled; a bonus with `expires_ms` is a
        bucket, granted after every debit before it (`Wallet.grant_ms`)."""
        check_external(tx_type, amount)  # bad input is refused before any read
        w, now_ms = await self.time.wallet_at(user_id, now)
        transfer_id = external_transfer_id(user_id, key)
        await self.cache.recall(w, transfer_id)
        if tx_type == WITHDRAW and amount > w.earnings_paise and w.listener_call_id is not None:
            await self.desk.caught_up(w, now_ms)  # a credit that settled meanwhile
        await self.client.room()
        # Awaits above let other operations in; whatever they did is at or before this stamp.
        at_ms = w.stamp(now_ms)
        if expires_ms is not None and transfer_id not in w.external:
            at_ms = self.time.grant_at(w, at_ms)
        t = w.apply_external(key, tx_type, amount, at_ms, payout_id, expires_ms)
        if t is not None:
            if payout_id:
                records = payout_records(payout_id, t)
            elif expires_ms is not None:
                records = [self.expiries.granted_record(w, t, expires_ms)]
            else:
                records = [t]
            if t.unit == COINS and t.amount > 0:  # a credit: a minute waiting in its grace
                records += self.time.resume(w, at_ms)
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
            out |= await self.payouts.withdrawn(transfer_id, payout_id if t is not None else None)
        return out
