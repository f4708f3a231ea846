"""The logic of one call: which minutes are due, and settling once. Pure, no I/O, no clock.

Time is passed in as float seconds since the epoch; minute k (1-based) is due at
`connected_at + (k - 1) * minute_seconds`, so billing follows elapsed time, never how often a
job or timer ran.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from actors.errors import InvariantViolation
from actors.money import (
    COMPLETED,
    DROPPED,
    EARN,
    ONGOING,
    PAISE,
    REASON_EXPIRED,
    REASON_HANGUP,
    REASON_INSUFFICIENT,
    Transfer,
)

END_REASONS = (REASON_HANGUP, REASON_INSUFFICIENT, REASON_EXPIRED)


def earn_transfer_id(call_id: int) -> str:
    return f"earn:call:{call_id}"


@dataclass(frozen=True)
class Settlement:
    call_id: int
    user_id: int
    listener_id: int
    status: str
    end_reason: str
    billed_minutes: int
    coins_spent: int
    earnings_paise: int
    ended_at: float

    def earn_transfer(self) -> Transfer | None:
        """The listener's credit, posted once when the call settles."""
        if self.earnings_paise == 0:
            return None
        return Transfer(
            earn_transfer_id(self.call_id),
            self.listener_id,
            PAISE,
            self.earnings_paise,
            EARN,
            self.call_id,
            None,
            int(self.ended_at * 1000),
        )

    def as_dict(self) -> dict:
        return {
            "call_id": self.call_id,
            "user_id": self.user_id,
            "listener_id": self.listener_id,
            "status": self.status,
            "end_reason": self.end_reason,
            "billed_minutes": self.billed_minutes,
            "coins_spent": self.coins_spent,
            "earnings_paise": self.earnings_paise,
            "ended_at": self.ended_at,
        }


class Call:
    __slots__ = (
        "call_id",
        "user_id",
        "listener_id",
        "call_type",
        "tier",
        "rate_coins",
        "rate_paise",
        "connected_at",
        "minute_seconds",
        "max_minutes",
        "billed_minutes",
        "settlement",
        "low_balance_warned",
    )

    def __init__(
        self,
        call_id: int,
        user_id: int,
        listener_id: int,
        call_type: str,
        tier: str,
        rate_coins: int,
        rate_paise: int,
        connected_at: float,
        minute_seconds: float,
        max_minutes: int,
        billed_minutes: int = 0,
    ) -> None:
        self.call_id = call_id
        self.user_id = user_id
        self.listener_id = listener_id
        self.call_type = call_type
        self.tier = tier
        self.rate_coins = rate_coins
        self.rate_paise = rate_paise
        self.connected_at = connected_at
        self.minute_seconds = minute_seconds
        self.max_minutes = max_minutes
        self.billed_minutes = billed_minutes
        self.settlement: Settlement | None = None
        self.low_balance_warned = False

    @property
    def status(self) -> str:
        return ONGOING if self.settlement is None else self.settlement.status

    def due_minute(self, now: float) -> int:
        """The last minute that has started by `now` (capped by the maximum duration)."""
        started = math.floor((now - self.connected_at) / self.minute_seconds) + 1
        return max(1, min(started, self.max_minutes))

    def next_due_at(self) -> float:
        """When the next unbilled minute starts, or the call expires."""
        return self.connected_at + self.billed_minutes * self.minute_seconds

    def expires_at(self) -> float:
        return self.connected_at + self.max_minutes * self.minute_seconds

    def after_billing(self, last_minute: int, short: bool, now: float) -> Settlement | None:
        """Record what the wallet billed; settle if it could not pay or the call ran out."""
        if last_minute < self.billed_minutes:
            raise InvariantViolation(
                f"call {self.call_id}: billed minutes went back from "
                f"{self.billed_minutes} to {last_minute}"
            )
        self.billed_minutes = last_minute
        if short:
            # Ends at the boundary it could not pay; that minute is not billed.
            return self.settle(DROPPED, REASON_INSUFFICIENT, self.next_due_at())
        if now >= self.expires_at():
            return self.settle(DROPPED, REASON_EXPIRED, self.expires_at())
        return None

    def settle(self, status: str, reason: str, ended_at: float) -> Settlement | None:
        """End the call. Only the first end counts (rule 7); later ones return None."""
        if self.settlement is not None:
            return None
        if status not in (COMPLETED, DROPPED):
            raise InvariantViolation(f"call {self.call_id}: cannot settle as {status!r}")
        self.settlement = Settlement(
            call_id=self.call_id,
            user_id=self.user_id,
            listener_id=self.listener_id,
            status=status,
            end_reason=reason,
            billed_minutes=self.billed_minutes,
            coins_spent=self.billed_minutes * self.rate_coins,
            earnings_paise=self.billed_minutes * self.rate_paise,
            ended_at=ended_at,
        )
        return self.settlement

    def hang_up(self, now: float) -> Settlement | None:
        return self.settle(COMPLETED, REASON_HANGUP, now)

    def end(self, reason: str, now: float) -> Settlement | None:
        """End for `reason`: a hang-up completes the call; expiry or a payer found short by
        an outside check drops it."""
        if reason == REASON_HANGUP:
            return self.hang_up(now)
        if reason not in END_REASONS:
            raise InvariantViolation(f"call {self.call_id}: unknown end reason {reason!r}")
        return self.settle(DROPPED, reason, now)

    def low_balance(self, balance_coins: int, minutes_threshold: int) -> dict | None:
        """The one notice per call when the payer's coins cover `minutes_threshold` minutes
        or fewer."""
        if self.low_balance_warned or self.settlement is not None:
            return None
        minutes_left = balance_coins // self.rate_coins
        if minutes_left > minutes_threshold:
            return None
        self.low_balance_warned = True
        return {
            "call_id": self.call_id,
            "user_id": self.user_id,
            "balance_coins": balance_coins,
            "minutes_left": minutes_left,
            "threshold_minutes": minutes_threshold,
        }

    def state(self, now: float | None = None) -> dict:
        out = {
            "call_id": self.call_id,
            "user_id": self.user_id,
            "listener_id": self.listener_id,
            "call_type": self.call_type,
            "tier": self.tier,
            "rate_coins": self.rate_coins,
            "rate_paise": self.rate_paise,
            "connected_at": self.connected_at,
            "billed_minutes": self.billed_minutes,
            "coins_spent": self.billed_minutes * self.rate_coins,
            "earnings_paise": self.billed_minutes * self.rate_paise,
            "next_tick_at": self.next_due_at() if self.settlement is None else None,
            "status": self.status,
            "end_reason": self.settlement.end_reason if self.settlement else None,
        }
        return out
