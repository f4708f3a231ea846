"""The Ray face of a `WalletHost`: its one entry for operations (`HostActor.handle`: the
operations grouped for this host, by the Engine's placement or by a host beside it), and the
exit on a broken rule of money that makes Ray rebuild the actor from PostgreSQL.
`host_in_actor` builds the host the same way for a shard and a wallet actor."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from actors.call import Call
from actors.errors import InvariantViolation
from engine.config import Config
from engine.host.peers import Peers
from engine.host.wallet_host import HostSettings, WalletHost
from engine.operations import InspectWallet, Operation
from engine.runtime import metrics
from engine.runtime.raycalls import answerable
from persistence.client import WriterClient
from persistence.link import WriterLink
from persistence.presence import Presence

log = logging.getLogger("billing.host")

# Exit code of an actor that found a rule of money broken: Ray restarts it, and it reloads.
INVARIANT_EXIT_CODE = 70


def host_in_actor(
    config: Config,
    database_url: str,
    redis_url: str | None,
    peers: Peers,
    link: WriterLink,
    *,
    on_call_added: Callable[[Call], None] | None = None,
    on_call_removed: Callable[[Call], None] | None = None,
) -> WalletHost:
    """The host of a shard or a wallet actor, writing through `link` (a shard's own Committer,
    or the writer actor), which it lets take over before its first read of PostgreSQL."""
    return WalletHost(
        database_url,
        WriterClient(link, config.client),
        HostSettings.of(config),
        presence=Presence(redis_url),
        peers=peers,
        take_over=link.take_over,
        on_call_added=on_call_added,
        on_call_removed=on_call_removed,
        meter=metrics,
    )


def exit_on_violation(e: InvariantViolation, who: str) -> None:
    """A rule of money broke inside a Ray actor: answer it, then die so that Ray restarts the
    actor and it reloads from PostgreSQL, instead of answering the same error forever."""
    log.critical("%s: %s; exiting to be rebuilt from PostgreSQL", who, e)
    asyncio.get_running_loop().call_later(0.05, os._exit, INVARIANT_EXIT_CODE)


class HostActor:
    """What a Ray actor hosting a `WalletHost` serves (a shard, a wallet actor). `_loaded()`
    is where the actor loads what it must first; `about()` what it adds to an inspected
    wallet."""

    host: WalletHost
    name: str = "host"
    in_ray: bool = True

    async def _loaded(self) -> None:
        return None

    def about(self) -> dict:
        return {}

    async def handle(self, ops: list[Operation]) -> list:
        """Operations grouped for this host: run together, so that their writes share one
        commit, and answered in order, each with its result or the error its caller is to
        see. A broken rule of money is answered, then the actor exits to be rebuilt."""

        async def one(op: Operation):
            try:
                await self._loaded()
                out = await self.host.handle(op)
            except InvariantViolation as e:
                if self.in_ray:
                    exit_on_violation(e, self.name)
                return e
            except Exception as e:  # noqa: BLE001 - the error goes back to its own caller
                return answerable(e) or RuntimeError(f"{self.name}: {type(e).__name__}: {e}")
            return out | self.about() if isinstance(op, InspectWallet) else out

        return await asyncio.gather(*(one(op) for op in ops))

    async def forget_tiers(self) -> None:
        self.host.forget_tiers()
