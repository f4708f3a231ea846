"""Rule 9, time order, for the wallets a host holds: whatever reaches a wallet at time t is
applied after every minute and every drop due by t, for every call the wallet pays, and for a
listener after their call was brought up to t on its payer's host.

A host that restarted reloads from PostgreSQL and then does the same before its first answer,
so no answer is computed from state behind the clock or behind PostgreSQL. Minutes are written
behind (appended to the writer client), the settlements of calls that ran out follow them.
"""

from __future__ import annotations

from actors.due_order import bill_call_due, bill_payer_due, resume_paid
from actors.errors import InvariantViolation
from actors.money import to_ms
from actors.settlement import Settlement
from actors.wallet import Wallet
from engine.host.book import CallBook
from engine.host.expiries import BucketExpiries
from engine.host.listener_desk import ListenerDesk
from engine.host.meter import Meter
from engine.host.notices import Notices
from engine.host.settlements import Settlements
from engine.host.wallet_cache import WalletCache
from persistence.client import WriterClient


class TimeOrder:
    def __init__(
        self,
        cache: WalletCache,
        book: CallBook,
        client: WriterClient,
        settlements: Settlements,
        expiries: BucketExpiries,
        notices: Notices,
        desk: ListenerDesk,
        meter: Meter,
    ) -> None:
        self.cache = cache
        self.book = book
        self.client = client
        self.settlements = settlements
        self.expiries = expiries
        self.notices = notices
        self.desk = desk
        self.meter = meter

    async def payer_at(self, user_id: int, now: float) -> tuple[Wallet, int]:
        """The wallet, with every minute and drop due by `now` applied to the calls it pays.
        Returns it and the time of the operation (never before what the wallet already did)."""
        w = await self.cache.wallet(user_id)
        now_ms = w.stamp(to_ms(now))
        if w.calls:
            self.bill_wallet_due(w, now_ms)
        self.expiries.expire_due(w, now_ms)
        return w, now_ms

    async def wallet_at(self, user_id: int, now: float) -> tuple[Wallet, int]:
        """`payer_at`, and for a listener in a call, that call brought up to `now` by
        its payer's host: ended calls credited and freed here before anything is answered."""
        w, now_ms = await self.payer_at(user_id, now)
        if w.listener_call_id is not None:
            await self.desk.caught_up(w, now_ms)
        return w, w.stamp(now_ms)

    def bill_wallet_due(self, w: Wallet, now_ms: int) -> list[Settlement]:
        """Bill every minute due by `now_ms` of the calls `w` pays, in the order they fell due;
        returns the settlements of those that ran out."""
        calls = self.book.paid_by(w)
        if len(calls) != len(w.calls):
            missing = [c for c in w.calls if c not in self.book.calls]
            raise InvariantViolation(f"wallet {w.user_id} pays calls {missing} not hosted here")
        records: list = []
        settled = bill_payer_due(w, calls, now_ms, records)
        minutes = len(records)
        self.notices.note(w, calls, records)
        self.client.append(records)  # before the settlements they lead to
        self._billed(minutes)
        if settled:
            self.settlements.settle(settled, urgent=False)
        else:
            self.notices.publish()
        return settled

    def bill_due(self, call_ids: list[int], now: float) -> int:
        """Bill the calls `call_ids` through `now` (a timer's pass; written behind). Returns
        the minutes billed. A payer with more than one call has all of them billed in due
        order."""
        now_ms = to_ms(now)
        records: list = []
        events: list = []
        settled: list[Settlement] = []
        calls, wallets = self.book.calls, self.cache.wallets
        for call_id in call_ids:
            call = calls.get(call_id)
            if call is None or call.settlement is not None:
                continue
            w = wallets.get(call.user_id)
            if w is None:
                raise InvariantViolation(f"call {call_id}: payer {call.user_id} not hosted here")
            w.stamp(now_ms)
            if len(w.calls) == 1:  # the hot path: bill_payer_due's own, without building lists
                payer_calls: tuple | list = (call,)
                s = bill_call_due(w, call, call.minute_at_ms(now_ms), now_ms, records)
                if s is not None:
                    settled.append(s)
            else:
                payer_calls = [calls[c] for c in w.calls]
                settled += bill_payer_due(w, payer_calls, now_ms, records)
            self.notices.note(w, payer_calls, events)
            if w.expiring:
                events += self.expiries.expired_records(w)
        minutes = len(records)
        records += events
        self.client.append(records)  # before the settlements of this pass
        self._billed(minutes)
        if settled:
            self.settlements.settle(settled, urgent=False)
        return minutes

    def resume(self, w: Wallet, at_ms: int) -> list:
        """After a credit to `w` at `at_ms`: the minutes its calls waited on in their grace,
        billed if it pays them, with their events; for the caller to write with the credit (a
        crash keeps both or neither)."""
        if not w.calls:
            return []
        calls = self.book.paid_by(w)
        if not any(c.suspended_ms is not None for c in calls):
            return []
        records: list = []
        self._billed(resume_paid(w, calls, at_ms, records))
        self.notices.note(w, calls, records)
        return records

    def _billed(self, minutes: int) -> None:
        self.book.counts["minutes_billed"] += minutes
        self.meter.billed(minutes)

    def grant_at(self, w: Wallet, at_ms: int) -> int:
        """A bucket's time: after every debit from outside, with everything due by then
        applied first (no await: nothing comes between)."""
        grant_ms = w.grant_ms(at_ms)
        if grant_ms > at_ms:
            w.stamp(grant_ms)
            if w.calls:
                self.bill_wallet_due(w, grant_ms)
            self.expiries.expire_due(w, grant_ms)
        return grant_ms
