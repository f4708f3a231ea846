"""The logic of one call: which minutes are due, and settling once. Pure, no I/O, no clock.

Time is passed in as float seconds since the epoch and kept as integer milliseconds (`to_ms`),
so that the engine, the ledger and the audit compute the same boundaries. Minute k (1-based) is
due at `connected_ms + (k - 1) * minute_ms`: billing follows elapsed time, never how often a job
or timer ran, and a minute's transfer carries its due time, so the same minute billed again
after a crash is the same row.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from actors.buckets import minutes_affordable
from actors.errors import InvariantViolation
from actors.money import (
    CALL_TYPES,
    COMPLETED,
    DROPPED,
    EARN,
    ONGOING,
    PAISE,
    REASON_EXPIRED,
    REASON_HANGUP,
    REASON_INSUFFICIENT,
    TIERS,
    Transfer,
    to_ms,
)
from actors.shared import one_copy

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
    ended_ms: int

    @property
    def ended_at(self) -> float:
        return self.ended_ms / 1000

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
            self.ended_ms,
            self.ended_ms,
        )

    def as_dict(self) -> dict:
        """The settlement as answers show it (SETTLEMENT_KEYS)."""
        return {k: getattr(self, k) for k in SETTLEMENT_KEYS}


# A settlement as answers show it: its fields, with the end as epoch seconds.
SETTLEMENT_KEYS = tuple(
    "ended_at" if f.name == "ended_ms" else f.name for f in dataclasses.fields(Settlement)
)

# What defines a call, as it travels: the one field list its spec (to another process), its
# start record (to the writer), its row's columns and its recovery derive from. Its time and
# the length of its minutes are integer milliseconds.
CALL_FIELDS = (
    "call_id",
    "user_id",
    "listener_id",
    "call_type",
    "tier",
    "rate_coins",
    "rate_paise",
    "connected_ms",
    "minute_ms",
    "max_minutes",
)
# What a settlement's record carries to the writer (the call's row already names its parties).
END_FIELDS = tuple(
    f.name for f in dataclasses.fields(Settlement) if f.name not in ("user_id", "listener_id")
)
# A call as the event that announces it shows it: who, what and at what price, and when.
STARTED_KEYS = (
    *(k for k in CALL_FIELDS if k not in ("connected_ms", "minute_ms", "max_minutes")),
    "connected_at",
)


class Call:
    __slots__ = (
        "call_id",
        "user_id",
        "listener_id",
        "call_type",
        "tier",
        "rate_coins",
        "rate_paise",
        "connected_ms",
        "minute_ms",
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
        # One string per type and tier for every call, not one each (a million calls).
        self.call_type = one_copy(call_type)
        self.tier = one_copy(tier)
        self.rate_coins = rate_coins
        self.rate_paise = rate_paise
        self.connected_ms = to_ms(connected_at)
        self.minute_ms = to_ms(minute_seconds)
        self.max_minutes = max_minutes
        self.billed_minutes = billed_minutes
        self.settlement: Settlement | None = None
        self.low_balance_warned = False
        self._check()

    def _check(self) -> None:
        if self.call_type not in CALL_TYPES:
            raise InvariantViolation(f"call {self.call_id}: call type {self.call_type!r}")
        if self.tier not in TIERS:
            raise InvariantViolation(f"call {self.call_id}: tier {self.tier!r}")
        if self.minute_ms <= 0:
            raise InvariantViolation(f"call {self.call_id}: minute of {self.minute_ms} ms")
        if self.max_minutes < 1:
            raise InvariantViolation(f"call {self.call_id}: at most {self.max_minutes} minutes")

    @property
    def connected_at(self) -> float:
        return self.connected_ms / 1000

    @property
    def minute_seconds(self) -> float:
        return self.minute_ms / 1000

    def spec(self) -> dict:
        """What another process needs to hold this call (its billed minutes travel apart)."""
        return {k: getattr(self, k) for k in CALL_FIELDS}

    def fields(self) -> tuple:
        """CALL_FIELDS' values, in order (a start record, a row)."""
        return tuple(getattr(self, k) for k in CALL_FIELDS)

    @classmethod
    def from_spec(cls, spec, billed_minutes: int = 0) -> Call:
        """The call of a spec, or of anything that maps CALL_FIELDS (a stored row)."""
        args = {k: spec[k] for k in CALL_FIELDS}
        connected_ms, minute_ms = args.pop("connected_ms"), args.pop("minute_ms")
        call = cls(
            **args,
            connected_at=connected_ms / 1000,
            minute_seconds=minute_ms / 1000,
            billed_minutes=billed_minutes,
        )
        call.connected_ms, call.minute_ms = connected_ms, minute_ms  # exactly, not via seconds
        return call

    @property
    def status(self) -> str:
        return ONGOING if self.settlement is None else self.settlement.status

    def minute_at(self, now: float) -> int:
        """The last minute that has started by `now` (capped by the maximum duration)."""
        return self.minute_at_ms(to_ms(now))

    def minute_at_ms(self, now_ms: int) -> int:
        started = (now_ms - self.connected_ms) // self.minute_ms + 1
        return max(1, min(started, self.max_minutes))

    def minute_start_ms(self, minute_no: int) -> int:
        """When minute `minute_no` starts: the time its transfer carries."""
        return self.connected_ms + (minute_no - 1) * self.minute_ms

    def next_due_ms(self) -> int:
        """When the next unbilled minute starts (or, after the last, the call expires)."""
        return self.connected_ms + self.billed_minutes * self.minute_ms

    def next_due_at(self) -> float:
        return self.next_due_ms() / 1000

    def expires_ms(self) -> int:
        return self.connected_ms + self.max_minutes * self.minute_ms

    def after_billing(self, last_minute: int, short: bool, now: float) -> Settlement | None:
        return self.after_billing_ms(last_minute, short, to_ms(now))

    def after_billing_ms(self, last_minute: int, short: bool, now_ms: int) -> Settlement | None:
        """Record what the wallet billed; settle if it could not pay or the call ran out."""
        if last_minute < self.billed_minutes:
            raise InvariantViolation(
                f"call {self.call_id}: billed minutes went back from "
                f"{self.billed_minutes} to {last_minute}"
            )
        self.billed_minutes = last_minute
        if short:
            # Ends at the boundary it could not pay; that minute is not billed.
            return self._settle(DROPPED, REASON_INSUFFICIENT, self.next_due_ms())
        if last_minute >= self.max_minutes and now_ms >= self.expires_ms():
            return self._settle(DROPPED, REASON_EXPIRED, self.expires_ms())
        return None

    def settle(self, status: str, reason: str, ended_at: float) -> Settlement | None:
        """End the call. Only the first end counts (rule 7); later ones return None."""
        return self._settle(status, reason, to_ms(ended_at))

    def _settle(self, status: str, reason: str, ended_ms: int) -> Settlement | None:
        if self.settlement is not None:
            return None
        if status not in (COMPLETED, DROPPED):
            raise InvariantViolation(f"call {self.call_id}: cannot settle as {status!r}")
        if ended_ms < self.minute_start_ms(self.billed_minutes):
            raise InvariantViolation(
                f"call {self.call_id}: ends at {ended_ms} ms, before its minute "
                f"{self.billed_minutes} started"
            )
        self.settlement = Settlement(
            call_id=self.call_id,
            user_id=self.user_id,
            listener_id=self.listener_id,
            status=status,
            end_reason=reason,
            billed_minutes=self.billed_minutes,
            coins_spent=self.billed_minutes * self.rate_coins,
            earnings_paise=self.billed_minutes * self.rate_paise,
            ended_ms=ended_ms,
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
        minutes, until_ms = self.affordable(balance_coins)
        return {
            "call_id": self.call_id,
            "user_id": self.user_id,
            "listener_id": self.listener_id,
            "balance_coins": balance_coins,
            "minutes_left": minutes_left,
            "threshold_minutes": minutes_threshold,
            "minutes_affordable": minutes,
            "paid_until": until_ms / 1000,
        }

    def affordable(self, balance_coins: int, buckets: list | None = None) -> tuple[int, int]:
        """(minutes the payer's `balance_coins` pay after those billed, at this call's rate and
        within its maximum, a bucket of coins that expires before a minute not paying it;
        when the call drops if nothing changes, in ms: the start of the first minute they
        cannot pay, or the call's expiry). Counts this call alone: a payer with several calls
        at once runs out sooner."""
        minutes = minutes_affordable(
            balance_coins,
            buckets or [],
            self.rate_coins,
            self.next_due_ms(),
            self.minute_ms,
            self.max_minutes - self.billed_minutes,
        )
        return minutes, min(self.next_due_ms() + minutes * self.minute_ms, self.expires_ms())

    def state(self, balance_coins: int | None = None, buckets: list | None = None) -> dict:
        """The call as its answers show it: the stored row's keys, `next_tick_at`, and, while
        it is ongoing and its payer's balance is given, `minutes_affordable` and `paid_until`
        (null otherwise)."""
        s = self.settlement
        minutes = paid_until = None
        if s is None and balance_coins is not None:
            minutes, until_ms = self.affordable(balance_coins, buckets)
            paid_until = until_ms / 1000
        return {
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
            "next_tick_at": self.next_due_at() if s is None else None,
            "status": self.status,
            "end_reason": None if s is None else s.end_reason,
            "ended_at": None if s is None else s.ended_at,
            "minutes_affordable": minutes,
            "paid_until": paid_until,
        }


@dataclass(frozen=True)
class CallRequest:
    """A call to connect, before its listener is held: the listener's host answers the tier,
    and the tier picks the rates."""

    call_id: int
    user_id: int
    listener_id: int
    call_type: str
    rates: dict[str, tuple[int, int]]  # tier -> (coins, paise) per minute
    minute_seconds: float
    max_minutes: int

    def call(self, tier: str, now: float) -> Call:
        coins, paise = self.rates[tier]
        return Call(
            self.call_id,
            self.user_id,
            self.listener_id,
            self.call_type,
            tier,
            coins,
            paise,
            now,
            self.minute_seconds,
            self.max_minutes,
        )
