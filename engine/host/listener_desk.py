"""The listener's side of a host: holding a listener for a call (a reservation), freeing them
when it settles, and bringing a listener's call up to time through its payer's host before
answering for them.

A listener is in at most one call. The reservation is made before the call opens on the
payer's host (which may be another host); the release comes from the payer's host once the
settlement is committed, with the credit to mirror. A release that never arrives (the payer's
host died after the commit, or this one restarted) is made good from PostgreSQL before the
listener's next answer (`_release_if_settled`).
"""

from __future__ import annotations

import time

from actors.wallet import Wallet
from engine.host.router import Router
from engine.host.wallet_cache import WalletCache
from engine.operations import ReadCall
from persistence import store

# A reservation whose call never got a row (its start failed without an answer) lapses after
# this long: by then no write of that start can still be on its way to PostgreSQL.
RESERVATION_UNCONFIRMED_S = 30.0


class ListenerDesk:
    def __init__(self, cache: WalletCache, router: Router) -> None:
        self.cache = cache
        self.router = router
        self._reserved_at: dict[int, float] = {}  # listener -> when its reservation was made

    async def reserve(self, w: Wallet, call_id: int, payer_id: int, now: float) -> str:
        """Reserve the listener `w` (caught up to `now`) for call `call_id`; their tier today."""
        tier = await self.cache.tier(w.user_id, now)
        w.reserve_listener(call_id, payer_id)
        self._reserved_at[w.user_id] = time.monotonic()
        return tier

    def cancel(self, w: Wallet, call_id: int) -> None:
        w.cancel_reservation(call_id)
        if w.listener_call_id is None:
            self._reserved_at.pop(w.user_id, None)

    async def caught_up(self, w: Wallet, now_ms: int) -> None:
        """The call the listener `w` is in, brought up to `now_ms` on its payer's host; an
        ended one credited and the listener freed."""
        call_id, payer_id = w.listener_call_id, w.listener_payer_id
        outcome = None
        if payer_id is not None:
            outcome = await self.router.ask(
                ReadCall(now=now_ms / 1000, user_id=payer_id, call_id=call_id)
            )
        if outcome is None:
            # Neither ongoing nor settled on its payer's host: PostgreSQL decides.
            await self._release_if_settled(w)
        elif outcome["ended_at"] is not None:
            self.release(w, call_id, outcome["earnings_paise"])

    def release(self, w: Wallet, call_id: int, earned_paise: int) -> bool:
        """Free the listener `w` of call `call_id`, mirroring its committed credit."""
        released = w.release_listener(call_id, earned_paise)
        if released:
            self._reserved_at.pop(w.user_id, None)
        return released

    async def _release_if_settled(self, w: Wallet) -> None:
        """Free a listener whose call settled while the message that frees it was lost (the
        payer's host died after the commit, or this one restarted before it arrived).

        PostgreSQL decides: the call ended and its credit is committed, so the credit is
        mirrored here once (release_listener only frees the call the listener is in). A call
        with no row is a start that failed without an answer: its reservation lapses after
        RESERVATION_UNCONFIRMED_S, when no write of it can still be in flight."""
        call_id = w.listener_call_id
        if call_id is None:
            return
        outcome = await store.call_outcome(await self.cache.pool(), call_id)
        if outcome is None:
            age = time.monotonic() - self._reserved_at.get(w.user_id, 0.0)
            if age > RESERVATION_UNCONFIRMED_S:
                w.cancel_reservation(call_id)
                self._reserved_at.pop(w.user_id, None)
        elif outcome["status"] != "ongoing":
            self.release(w, call_id, outcome["earnings_paise"])
