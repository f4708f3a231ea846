"""The wallet operations, the same on both placements: each goes to the Ray actor that hosts the
person, as one message."""

from __future__ import annotations

from actors.call import Call, CallRequest
from engine.host.wallet_host import start_call
from engine.runtime.raycalls import remote

# How the engine's actors are made: Ray restarts them for ever (they reload from PostgreSQL);
# they take no CPU of Ray's accounting, so that as many fit as memory allows.
ACTOR_OPTIONS = {"max_restarts": -1, "max_concurrency": 1000, "num_cpus": 0}


class HostedWallets:
    """The wallet operations, the same on both placements: each goes to the Ray actor that
    hosts the person (`_host`), as one message (`_ask`)."""

    async def _host(self, user_id: int):
        raise NotImplementedError

    async def _ask(self, user_id: int, method: str, *args):
        """`method(*args)` on the host of `user_id`."""
        return await remote(getattr(await self._host(user_id), method).remote(*args))

    async def apply_external(
        self,
        user_id: int,
        tx_type: str,
        amount: int,
        key: str,
        now: float,
        payout_id: int | None = None,
        expires_ms: int | None = None,
    ) -> dict:
        return await self._ask(
            user_id, "apply_external", user_id, tx_type, amount, key, now, payout_id, expires_ms
        )

    async def settle_payout(
        self, listener_id: int, payout_id: int, outcome: str, reason: str | None, now: float
    ) -> dict:
        return await self._ask(
            listener_id, "settle_payout", listener_id, payout_id, outcome, reason, now
        )

    async def claw_back(self, listener_id: int, ask: dict, now: float) -> dict:
        return await self._ask(listener_id, "claw_back", listener_id, ask, now)

    async def refund_coins(self, user_id: int, refund: dict, now: float) -> dict:
        return await self._ask(user_id, "refund_coins", user_id, refund, now)

    async def balance(self, user_id: int, now: float) -> dict:
        return await self._ask(user_id, "balance", user_id, now)

    async def inspect_wallet(self, user_id: int, now: float) -> dict:
        return await self._ask(user_id, "inspect_wallet", user_id, now)

    async def reserve_listener(
        self, listener_id: int, call_id: int, payer_id: int, now: float
    ) -> str:
        """Hold the listener for the call on their host; returns their tier today."""
        return await self._ask(listener_id, "reserve_listener", listener_id, call_id, payer_id, now)

    async def cancel_reservation(self, listener_id: int, call_id: int) -> None:
        await self._ask(listener_id, "cancel_reservation", listener_id, call_id)

    async def open_call(self, call: Call, now: float, start_key: str | None) -> dict:
        raise NotImplementedError

    async def start_call(self, request: CallRequest, now: float, start_key: str | None) -> dict:
        """A start: the hold on the listener's host, then the call opened on the payer's."""
        return await start_call(
            request,
            lambda: self.reserve_listener(
                request.listener_id, request.call_id, request.user_id, now
            ),
            lambda call: self.open_call(call, now, start_key),
            lambda: self.cancel_reservation(request.listener_id, request.call_id),
            now,
        )
