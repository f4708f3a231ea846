"""Settling calls on the payer's host: the wallet closes the call, its end (with the listener's
credit and its events) is appended behind its minutes, and once that is committed the listener
is freed (here, or on their host, batched), presence is cleared and whoever waits on the
settlement is answered. A call settles once: its future is the one anyone waits on."""

from __future__ import annotations

import asyncio

from actors.call import Call, Settlement
from actors.errors import InvariantViolation
from actors.wallet import Wallet
from engine.host.peers import Peers, Releases
from engine.runtime import metrics
from persistence.client import WriterClient
from persistence.presence import Presence
from persistence.records import settlement_records


class Settling:
    """Mixed into `WalletHost`, whose state it shares."""

    client: WriterClient
    peers: Peers
    presence: Presence | None
    wallets: dict[int, Wallet]
    calls: dict[int, Call]
    counts: dict[str, int]
    ends: dict[str, int]
    _settling: dict[int, asyncio.Future]
    _notices: list[dict]

    def _settle(self, settlements: list[Settlement], urgent: bool) -> None:
        loop = asyncio.get_running_loop()
        seq = 0
        for s in settlements:
            self._settling[s.call_id] = loop.create_future()
            w = self.wallets.get(s.user_id)
            last = None if w is None else w.close_call(s.call_id)
            if last is not None and last != s.billed_minutes:
                raise InvariantViolation(
                    f"call {s.call_id}: wallet billed {last} minutes, call says {s.billed_minutes}"
                )
            seq = self.client.append(settlement_records(s))
        loop.create_task(self._finish(settlements, seq, urgent))
        self.publish_notices()

    async def _finish(self, settlements: list[Settlement], seq: int, urgent: bool) -> None:
        """After the settlements committed: free listeners (here, or batched per host),
        clear presence, answer anyone waiting on them."""
        try:
            await self.client.wait_committed(seq, urgent=urgent)
            elsewhere: Releases = []
            for s in settlements:
                item = (s.listener_id, s.call_id, s.earnings_paise)
                if self.peers.is_local(s.listener_id):
                    await self.release_listeners([item])
                else:
                    elsewhere.append(item)
            if elsewhere:
                # Not delivered (the listener's host restarting): that host frees the listener
                # from PostgreSQL before it next answers for them.
                await self.peers.release_listeners(elsewhere)
            for s in settlements:
                self.calls.pop(s.call_id, None)
                if self.presence is not None:
                    await self.presence.call_settled(s.as_dict(), self.user_in_call(s.user_id))
            self.counts["calls_settled"] += len(settlements)
            for s in settlements:
                self.ends[s.end_reason] = self.ends.get(s.end_reason, 0) + 1
            metrics.settled([s.end_reason for s in settlements])
            for s in settlements:
                self._settling.pop(s.call_id).set_result(s)
        except BaseException as e:
            for s in settlements:
                fut = self._settling.pop(s.call_id, None)
                if fut is not None and not fut.done():
                    fut.set_exception(e)
                    fut.exception()  # retrieved: a waiter may never come
            raise

    async def wait_settled(self) -> None:
        """Until every settlement under way here is committed and its listener freed."""
        if self._settling:
            await self.client.wait_committed(urgent=True)
            await asyncio.gather(*self._settling.values(), return_exceptions=True)

    def publish_notices(self) -> None:
        if self._notices and self.presence is not None:
            notices, self._notices = self._notices, []
            asyncio.get_running_loop().create_task(self.presence.publish_low_balance(notices))
