"""The Ray face of a `WalletHost`: the methods a shard or a wallet actor serves, the batch of
requests the Engine groups for one host (`HostActor.many`), and the exit on a broken rule of
money that makes Ray rebuild the actor from PostgreSQL. `host_in_actor` builds the host the
same way for both.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable

from actors.call import Call, CallRequest
from actors.errors import InvalidInput, InvariantViolation
from engine.config import Config
from engine.host.peers import Peers, Releases
from engine.host.wallet_host import HostSettings, WalletHost
from engine.runtime.raycalls import (
    answerable,
    is_transient,
    writer_drainer,
    writer_hurrier,
    writer_sender,
)
from persistence.client import WriterClient
from persistence.presence import Presence
from persistence.writer import LedgerWriter

log = logging.getLogger("billing.host")

# Exit code of an actor that found a rule of money broken: Ray restarts it, and it reloads.
INVARIANT_EXIT_CODE = 70


def host_in_actor(
    config: Config,
    database_url: str,
    redis_url: str | None,
    peers: Peers,
    *,
    on_call_added: Callable[[Call], None] | None = None,
    send=None,
    own_writer: LedgerWriter | None = None,
) -> WalletHost:
    """The host of a shard or a wallet actor. Its writes go to `own_writer`, committed in this
    process under its fence, which the first read of PostgreSQL waits for (a shard); or to the
    engine's writer actor, whose committing what a predecessor handed it the first read waits
    for (a wallet actor); or to `send`, a test's LedgerWriter in its own process."""
    ns = config.namespace
    if own_writer is not None:
        client = WriterClient(own_writer.write, config.client)
        before_first_read = own_writer.fenced
    elif send is not None:
        client, before_first_read = WriterClient(send, config.client), None
    else:
        client = WriterClient(writer_sender(ns), config.client, is_transient, writer_hurrier(ns))
        before_first_read = writer_drainer(ns)
    return WalletHost(
        database_url,
        client,
        HostSettings.of(config),
        presence=Presence(redis_url),
        peers=peers,
        before_first_read=before_first_read,
        on_call_added=on_call_added,
    )


def exit_on_violation(e: InvariantViolation, who: str) -> None:
    """A rule of money broke inside a Ray actor: answer it, then die so that Ray restarts the
    actor and it reloads from PostgreSQL, instead of answering the same error forever."""
    log.critical("%s: %s; exiting to be rebuilt from PostgreSQL", who, e)
    asyncio.get_running_loop().call_later(0.05, os._exit, INVARIANT_EXIT_CODE)


# The methods of a host that a batch from the Engine may carry (`HostActor.many`).
BATCHED_METHODS = frozenset(
    {
        "apply_external",
        "balance",
        "inspect_wallet",
        "reserve_listener",
        "cancel_reservation",
        "open_call",
        "start_call",
        "end_call",
        "bill_call",
        "settle_payout",
        "claw_back",
        "refund_coins",
    }
)


class HostActor:
    """The wallet methods a Ray actor hosting a `WalletHost` serves (a shard, a wallet
    actor). `_loaded()` is where the actor loads what it must first; `_guard` turns a broken
    rule of money into a restart."""

    host: WalletHost
    name: str = "host"
    in_ray: bool = True

    async def _loaded(self) -> None:
        return None

    async def _guard(self, work: Callable[[], Awaitable]):
        try:
            await self._loaded()
            return await work()
        except InvariantViolation as e:
            if self.in_ray:
                exit_on_violation(e, self.name)
            raise

    async def many(self, requests: list[tuple[str, tuple]]) -> list:
        """Requests the Engine grouped for this host (`aio.batching`): run together,
        so that their writes share one commit, and answered in order, each with its result or
        the error its caller is to see."""

        async def one(method: str, args: tuple):
            if method not in BATCHED_METHODS:
                return InvalidInput(f"{method!r} cannot be batched; one of {BATCHED_METHODS}")
            try:
                return await getattr(self, method)(*args)
            except Exception as e:  # noqa: BLE001 - the error goes back to its own caller
                return answerable(e) or RuntimeError(f"{self.name}: {type(e).__name__}: {e}")

        return await asyncio.gather(*(one(method, args) for method, args in requests))

    async def apply_external(
        self, user_id, tx_type, amount, key, now, payout_id=None, expires_ms=None
    ) -> dict:
        return await self._guard(
            lambda: self.host.apply_external(
                user_id, tx_type, amount, key, now, payout_id, expires_ms
            )
        )

    async def settle_payout(self, listener_id, payout_id, outcome, reason, now) -> dict:
        return await self._guard(
            lambda: self.host.settle_payout(listener_id, payout_id, outcome, reason, now)
        )

    async def claw_back(self, listener_id: int, ask: dict, now: float) -> dict:
        return await self._guard(lambda: self.host.claw_back(listener_id, ask, now))

    async def refund_coins(self, user_id: int, refund: dict, now: float) -> dict:
        return await self._guard(lambda: self.host.refund_coins(user_id, refund, now))

    async def balance(self, user_id: int, now: float) -> dict:
        return await self._guard(lambda: self.host.balance(user_id, now))

    async def reserve_listener(self, listener_id, call_id, payer_id, now) -> str:
        return await self._guard(
            lambda: self.host.reserve_listener(listener_id, call_id, payer_id, now)
        )

    async def forget_tiers(self) -> None:
        self.host.forget_tiers()

    async def cancel_reservation(self, listener_id: int, call_id: int) -> None:
        await self._guard(lambda: self.host.cancel_reservation(listener_id, call_id))

    async def release_listeners(self, items: Releases) -> int:
        return await self._guard(lambda: self.host.release_listeners(items))

    async def open_call(self, spec: dict, now: float, start_key: str | None = None) -> dict:
        call = Call.from_spec(spec)
        return await self._guard(lambda: self.host.open_call(call, now, start_key))

    async def start_call(self, request: CallRequest, now: float, start_key: str | None) -> dict:
        return await self._guard(lambda: self.host.start_call(request, now, start_key))

    async def end_call(self, call_id: int, now: float, reason: str = "hangup") -> dict | None:
        return await self._guard(lambda: self.host.end_call(call_id, now, reason))

    async def bill_call(self, call_id: int, now: float) -> dict | None:
        return await self._guard(lambda: self.host.bill_call(call_id, now))

    async def inspect_wallet(self, user_id: int, now: float) -> dict:
        return await self._guard(lambda: self.host.inspect_wallet(user_id, now))
