"""Settling calls on the payer's host: the wallet closes the call, its end (with the listener's
credit and its events) is appended behind its minutes, and once that is committed the listener
is freed (here, or on their host), presence is cleared and whoever waits on the settlement is
answered. A call settles once: its future is the one anyone waits on."""

from __future__ import annotations

import asyncio

from actors.call import Call
from actors.errors import InvariantViolation
from actors.settlement import Settlement
from engine.host.book import CallBook
from engine.host.meter import Meter
from engine.host.notices import Notices
from engine.host.router import Router
from engine.host.wallet_cache import WalletCache
from engine.operations import ReleaseListener
from persistence.client import WriterClient
from persistence.presence import Presence
from persistence.records import settlement_records


class Settlements:
    def __init__(
        self,
        client: WriterClient,
        cache: WalletCache,
        book: CallBook,
        router: Router,
        presence: Presence | None,
        notices: Notices,
        meter: Meter,
    ) -> None:
        self.client = client
        self.cache = cache
        self.book = book
        self.router = router
        self.presence = presence
        self.notices = notices
        self.meter = meter
        self._under_way: dict[int, asyncio.Future] = {}  # call id -> its settlement, once freed

    def under_way(self) -> bool:
        """Is a settlement under way here (committed or freeing its listener)?"""
        return bool(self._under_way)

    def settle(self, settlements: list[Settlement], urgent: bool) -> None:
        loop = asyncio.get_running_loop()
        seq = 0
        for s in settlements:
            self._under_way[s.call_id] = loop.create_future()
            w = self.cache.wallets.get(s.user_id)
            last = (
                None
                if w is None
                else w.close_call(s.call_id, s.coins_returned, s.offer_coins_returned)
            )
            if last is not None and last != s.billed_minutes:
                raise InvariantViolation(
                    f"call {s.call_id}: wallet billed {last} minutes, call says {s.billed_minutes}"
                )
            seq = self.client.append(settlement_records(s))
        loop.create_task(self._finish(settlements, seq, urgent))
        self.notices.publish()

    async def _finish(self, settlements: list[Settlement], seq: int, urgent: bool) -> None:
        """After the settlements committed: free listeners (here, or on their hosts), clear
        presence, answer anyone waiting on them."""
        try:
            await self.client.wait_committed(seq, urgent=urgent)
            here = [s for s in settlements if self.router.is_local(s.listener_id)]
            for s in here:
                await self.router.ask(self._release(s))
            elsewhere = [s for s in settlements if not self.router.is_local(s.listener_id)]
            # Not delivered (the listener's host restarting): that host frees the listener
            # from PostgreSQL before it next answers for them.
            await asyncio.gather(*(self.router.ask(self._release(s)) for s in elsewhere))
            for s in settlements:
                self.book.remove(s.call_id)
                if self.presence is not None:
                    payer = self.cache.wallets.get(s.user_id)
                    await self.presence.call_settled(s.as_dict(), bool(payer and payer.calls))
            reasons = [s.end_reason for s in settlements]
            self.book.settled(reasons)
            self.meter.settled(reasons)
            for s in settlements:
                self._under_way.pop(s.call_id).set_result(s)
        except BaseException as e:
            for s in settlements:
                fut = self._under_way.pop(s.call_id, None)
                if fut is not None and not fut.done():
                    fut.set_exception(e)
                    fut.exception()  # retrieved: a waiter may never come
            raise

    @staticmethod
    def _release(s: Settlement) -> ReleaseListener:
        return ReleaseListener(
            now=s.ended_ms / 1000,
            listener_id=s.listener_id,
            call_id=s.call_id,
            earnings_paise=s.earnings_paise,
        )

    async def settled(self, call: Call) -> dict:
        """The call's state once its settlement (if under way) is committed and freed."""
        pending = self._under_way.get(call.call_id)
        if pending is not None:
            await self.client.wait_committed(urgent=True)  # someone waits: flush now
            await asyncio.shield(pending)
        return call.state()

    async def wait_all(self) -> None:
        """Until every settlement under way here is committed and its listener freed."""
        if self._under_way:
            await self.client.wait_committed(urgent=True)
            await asyncio.gather(*self._under_way.values(), return_exceptions=True)
