"""The logic of one call: which minutes are due, and settling once. Pure, no I/O, no clock.

Time is passed in as float seconds since the epoch and kept as integer milliseconds (`to_ms`),
so that the engine, the ledger and the audit compute the same boundaries. Minute k (1-based) is
due at `connected_ms + (k - 1) * minute_ms`: billing follows elapsed time, never how often a job
or timer ran, and a minute's transfer carries its due time, so the same minute billed again
after a crash is the same row.
"""

from __future__ import annotations

from actors import offers
from actors import price_plan as plan
from actors.buckets import minutes_affordable
from actors.errors import InvariantViolation
from actors.money import (
    CALL_TYPES,
    COMPLETED,
    DROPPED,
    ONGOING,
    REASON_EXPIRED,
    REASON_HANGUP,
    REASON_INSUFFICIENT,
    SUSPENDED,
    TIERS,
    to_ms,
)
from actors.settlement import Settlement, ended_view
from actors.shared import one_copy

END_REASONS = (REASON_HANGUP, REASON_INSUFFICIENT, REASON_EXPIRED)


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
    *plan.PLAN_FIELDS,
    *offers.OFFER_FIELDS,
    "grace_s",
)
# A call as the event that announces it shows it: who, what and at what price, and when (and
# the whole price, as `price`).
STARTED_KEYS = (
    *CALL_FIELDS[: CALL_FIELDS.index("connected_ms")],
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
        *plan.PLAN_FIELDS,
        *offers.OFFER_FIELDS,
        "grace_s",
        "billed_minutes",
        "settlement",
        "low_balance_warned",
        "suspended_ms",
        "grace_note",
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
        increment_s: int = 60,
        free_s: int = 0,
        earnings_rule: str = plan.TIER_RULE,
        share_pct: int | None = None,
        coin_value_paise: int | None = None,
        price_source: str = plan.CARD,
        rate_card_id: int = 0,
        clamped_from: int | None = None,
        offer_id: int | None = None,
        offer_minutes: int = 0,
        offer_pays: str | None = None,
        grace_s: int = 0,
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
        self.increment_s = increment_s
        self.free_s = free_s
        self.earnings_rule = one_copy(earnings_rule)
        self.share_pct = share_pct
        self.coin_value_paise = coin_value_paise
        self.price_source = one_copy(price_source)
        self.rate_card_id = rate_card_id
        self.clamped_from = clamped_from
        # The offer that pays the first `offer_minutes` minutes (actors/offers.py), if any.
        self.offer_id = offer_id
        self.offer_minutes = offer_minutes
        self.offer_pays = None if offer_pays is None else one_copy(offer_pays)
        # The grace (`grace_ms`); while suspended, the due time of the minute it waits on; the
        # change its event reports (suspended, resumed) until it is written.
        self.grace_s = grace_s
        self.suspended_ms: int | None = None
        self.grace_note: tuple[str, int] | None = None
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
        if (self.offer_id is None) != (self.offer_minutes == 0) or self.offer_minutes < 0:
            raise InvariantViolation(
                f"call {self.call_id}: offer {self.offer_id} of {self.offer_minutes} minutes"
            )
        self.price()  # a price that does not hold raises here, not at the call's end

    def price(self) -> plan.Price:
        """The price the call fixed at its start."""
        return plan.price_of(self)

    def price_view(self) -> dict:
        return plan.view(self.price(), self.rate_card_id)

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
        args = {k: spec[k] for k in CALL_FIELDS if k in spec}  # plan fields may be left out
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
        if self.settlement is not None:
            return self.settlement.status
        return ONGOING if self.suspended_ms is None else SUSPENDED

    def grace_ms(self) -> int:
        """How long a minute the payer cannot pay waits for a credit (`grace_s`)."""
        return self.grace_s * self.minute_ms // 60

    def grace_until_ms(self) -> int | None:
        """While suspended: when the call drops if no credit pays the minute it waits on."""
        if self.suspended_ms is None:
            return None
        return self.suspended_ms + self.grace_ms()

    def free_left(self) -> int:
        """Minutes of its offer not started yet (the offer's grant pays them)."""
        return max(0, self.offer_minutes - self.billed_minutes)

    def wake_ms(self) -> int:
        """When it next moves by itself: its next minute, or (suspended) its grace's end."""
        until = self.grace_until_ms()
        return self.next_due_ms() if until is None else until

    def wake_at(self) -> float:
        return self.wake_ms() / 1000

    def waiting(self, now_ms: int) -> bool:
        """Suspended, and its grace not over by `now_ms`: only a credit moves it."""
        until = self.grace_until_ms()
        return until is not None and now_ms < until

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
        if self.suspended_ms is not None and last_minute > self.billed_minutes:
            self.suspended_ms = None  # a credit paid the minute it waited on
            self.grace_note = ("call_resumed", now_ms)
        self.billed_minutes = last_minute
        if short:
            due = self.next_due_ms()
            if self.grace_s and now_ms < due + self.grace_ms():
                if self.suspended_ms is None:  # waits for a credit, until its grace ends
                    self.suspended_ms = due
                    self.grace_note = ("call_suspended", due)
                return None
            # Ends at the boundary it could not pay; that minute is not billed (nor the grace).
            return self._settle(DROPPED, REASON_INSUFFICIENT, due)
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
        price = self.price()
        c = plan.charge(price, self.billed_minutes, ended_ms - self.connected_ms, self.minute_ms)
        o = offers.end(price, c, self.billed_minutes, self.offer_minutes, self.offer_pays)
        self.settlement = Settlement(
            call_id=self.call_id,
            user_id=self.user_id,
            listener_id=self.listener_id,
            status=status,
            end_reason=reason,
            billed_minutes=self.billed_minutes,
            coins_spent=self.billed_minutes * self.rate_coins,
            earnings_paise=o.listener_paise,
            ended_ms=ended_ms,
            coins_charged=c.coins_charged,
            coins_returned=c.coins_returned,
            charged_seconds=c.charged_s,
            platform_paise=o.platform_paise,
            offer_minutes_used=o.minutes_used,
            offer_coins_returned=o.coins_returned,
            offer_earnings_paise=o.earnings_paise,
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
        minutes_left = self.free_left() + balance_coins // self.rate_coins
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
        limit = self.max_minutes - self.billed_minutes
        free = min(self.free_left(), limit)  # the offer pays them
        minutes = free + minutes_affordable(
            balance_coins,
            buckets or [],
            self.rate_coins,
            self.next_due_ms() + free * self.minute_ms,
            self.minute_ms,
            limit - free,
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
        price = self.price()
        prepaid = self.billed_minutes * self.rate_coins
        until = self.grace_until_ms()
        earned = None
        if s is None:  # so far: what the minutes prepaid would earn, charged whole
            earned = plan.earnings_for(price, 60 * self.billed_minutes, prepaid)
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
            "coins_spent": prepaid,
            "earnings_paise": earned if s is None else s.earnings_paise,
            **ended_view(s),
            "price": plan.view(price, self.rate_card_id),
            "offer": offers.view(self.offer_id, self.offer_minutes),
            "next_tick_at": self.wake_at() if s is None else None,
            "status": self.status,
            "grace_until": None if s is not None or until is None else until / 1000,
            "end_reason": None if s is None else s.end_reason,
            "ended_at": None if s is None else s.ended_at,
            "minutes_affordable": minutes,
            "paid_until": paid_until,
        }
