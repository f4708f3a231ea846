"""The hosts beside a host: how one reaches the others (`Peers`), typed once.

A shard's peers are the other shards; a wallet actor's, the other wallet actors. A host asks
them, as operations (`engine.operations`), to reserve a listener for a call that opens here (and
let them go if it is refused), to free listeners whose calls settled here (best effort: a
host that never hears it frees them from PostgreSQL before it next answers for them), and to
bring a call a listener here is in up to a time on its payer's host (None: no such call there).
"""

from __future__ import annotations

from typing import Protocol

from actors.errors import InvariantViolation
from engine.operations import Operation


class Peers(Protocol):
    """The hosts beside this one, as a host sees them."""

    def is_local(self, user_id: int) -> bool:
        """Is this person's wallet hosted here?"""
        ...

    async def ask(self, op: Operation):
        """`op` on the host of the person it is routed by, elsewhere."""
        ...


class Alone:
    """The peers of a host that hosts everyone (a test's in-process host)."""

    def is_local(self, user_id: int) -> bool:
        return True

    async def ask(self, op: Operation):
        raise InvariantViolation(f"{op.routed_by} is hosted here: nowhere else to ask {op}")
