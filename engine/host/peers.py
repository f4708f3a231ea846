"""The hosts beside a host: how one reaches the others (`Peers`), typed once.

A shard's peers are the other shards; a wallet actor's, the other wallet actors. A host asks
them three things: hold a listener for a call that opens here (and let them go if it is
refused), free listeners whose calls settled here, and bring a call a listener here is in up to
a time on its payer's host.
"""

from __future__ import annotations

from typing import Protocol

from actors.errors import InvariantViolation

# (listener_id, call_id, earnings_paise) of settled calls, for the listeners' hosts.
Releases = list[tuple[int, int, int]]


class Peers(Protocol):
    """The hosts beside this one, as a host sees them."""

    def is_local(self, user_id: int) -> bool:
        """Is this person's wallet hosted here?"""
        ...

    async def reserve_listener(
        self, listener_id: int, call_id: int, payer_id: int, now: float
    ) -> str:
        """Hold a listener hosted elsewhere for call `call_id`, which opens here; their tier."""
        ...

    async def cancel_reservation(self, listener_id: int, call_id: int) -> None:
        """Let go of that hold: the call was refused before anything was written."""
        ...

    async def release_listeners(self, items: Releases) -> None:
        """Free listeners hosted elsewhere, whose calls settled here (best effort: a host that
        never hears it frees them from PostgreSQL before it next answers for them)."""
        ...

    async def bill_call(self, payer_id: int, call_id: int, now: float) -> dict | None:
        """The payer's host brings the call up to `now`: its state, None if it has no such
        call."""
        ...


class Alone:
    """The peers of a host that hosts everyone (a test's in-process host)."""

    def is_local(self, user_id: int) -> bool:
        return True

    async def reserve_listener(self, listener_id, call_id, payer_id, now) -> str:
        raise InvariantViolation(f"listener {listener_id} is hosted here: nowhere else to ask")

    async def cancel_reservation(self, listener_id: int, call_id: int) -> None:
        raise InvariantViolation(f"listener {listener_id} is hosted here: nowhere else to ask")

    async def release_listeners(self, items: Releases) -> None:
        return None

    async def bill_call(self, payer_id: int, call_id: int, now: float) -> dict | None:
        return None
