"""Low-balance notices: one per ongoing call whose payer's coins now cover few minutes, its
event written with the minutes that ran them low, and the notice published on Redis's
low-balance channel after the pass that found it."""

from __future__ import annotations

import asyncio

from actors.wallet import Wallet
from persistence.presence import Presence
from persistence.records import grace_event, low_balance_event


class Notices:
    def __init__(self, presence: Presence | None, low_balance_minutes: int) -> None:
        self.presence = presence
        self.low_balance_minutes = low_balance_minutes
        self._waiting: list[dict] = []  # notices to publish

    def note(self, w: Wallet, calls, records: list) -> None:
        """The notice of each ongoing call of `calls` whose payer's coins now run low: kept to
        publish, and its event appended to `records` (with the minutes that ran them low)."""
        for c in calls:
            if c.grace_note is not None:
                records.append(grace_event(c, w.balance_coins))
            if c.settlement is None:
                notice = c.low_balance(w.balance_coins, self.low_balance_minutes)
                if notice is not None:
                    self._waiting.append(notice)
                    records.append(low_balance_event(notice, w.clock_ms))

    def publish(self) -> None:
        if self._waiting and self.presence is not None:
            notices, self._waiting = self._waiting, []
            asyncio.get_running_loop().create_task(self.presence.publish_low_balance(notices))
