"""The ongoing calls a host holds (the calls its wallets pay), and what it counted of them.

A call is added when it opens here or when its payer's wallet loads with it (recovery); the
host's timer hears of each (`on_added`: a shard's wheel); it leaves once its settlement is
committed and its listener freed (`on_removed`)."""

from __future__ import annotations

from collections.abc import Callable

from actors.call import Call
from actors.wallet import Wallet


class CallBook:
    def __init__(
        self,
        on_added: Callable[[Call], None] | None = None,
        on_removed: Callable[[Call], None] | None = None,
    ) -> None:
        self.calls: dict[int, Call] = {}
        self._on_added = on_added
        self._on_removed = on_removed
        self.counts = {"minutes_billed": 0, "calls_started": 0, "calls_settled": 0}
        self.ends: dict[str, int] = {}  # calls settled here, by end reason

    def add(self, call: Call, payer: Wallet | None) -> None:
        """Keep a call its payer's wallet pays. A wallet already loaded (`payer`) is the
        authority on how far the call is billed (both were read from PostgreSQL, or both moved
        here)."""
        entry = None if payer is None else payer.calls.get(call.call_id)
        if entry is not None:
            call.billed_minutes = entry[1]
        self.calls[call.call_id] = call
        if self._on_added is not None:
            self._on_added(call)

    def remove(self, call_id: int) -> None:
        """The call settled, its listener freed: it leaves (the timer hears of it)."""
        call = self.calls.pop(call_id, None)
        if call is not None and self._on_removed is not None:
            self._on_removed(call)

    def paid_by(self, w: Wallet) -> list[Call]:
        """The calls hosted here that `w` pays."""
        return [self.calls[c] for c in w.calls if c in self.calls]

    def settled(self, reasons: list[str]) -> None:
        self.counts["calls_settled"] += len(reasons)
        for reason in reasons:
            self.ends[reason] = self.ends.get(reason, 0) + 1

    def stats(self) -> dict:
        return self.counts | {"ends": dict(self.ends)}
