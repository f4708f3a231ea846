"""A call's end, made once: what it was charged, what of its prepaid minutes goes back to the
payer (`unused:{call_id}`), what of its offer's grant goes back out (`offer_return:{call_id}`),
what its listener earned (`earn:call:{call_id}`). Pure, no I/O."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from actors import offers
from actors.money import COINS, EARN, OFFER_RETURN, PAISE, UNUSED_COINS, Transfer


def earn_transfer_id(call_id: int) -> str:
    return f"earn:call:{call_id}"


def unused_transfer_id(call_id: int) -> str:
    return f"unused:{call_id}"


@dataclass(frozen=True)
class Settlement:
    """`coins_spent` is what the call's minutes prepaid (the sum of its minute transfers);
    `coins_charged` what its price charged for the time it lasted, `coins_returned` the rest,
    given back at the end. A settlement made without a price (whole minutes) charges what it
    prepaid."""

    call_id: int
    user_id: int
    listener_id: int
    status: str
    end_reason: str
    billed_minutes: int
    coins_spent: int
    earnings_paise: int
    ended_ms: int
    coins_charged: int | None = None
    coins_returned: int = 0
    charged_seconds: int | None = None
    platform_paise: int | None = None
    # What its offer paid (actors/offers.py): free minutes started, the grant's coins returned
    # (`offer_return:{call_id}`), the listener's earnings it paid.
    offer_minutes_used: int = 0
    offer_coins_returned: int = 0
    offer_earnings_paise: int = 0

    def __post_init__(self) -> None:
        if self.coins_charged is None:
            object.__setattr__(self, "coins_charged", self.coins_spent - self.coins_returned)
        if self.charged_seconds is None:
            object.__setattr__(self, "charged_seconds", 60 * self.billed_minutes)

    @property
    def ended_at(self) -> float:
        return self.ended_ms / 1000

    def transfers(self) -> list[Transfer]:
        """What the end moves, once: the prepaid coins not charged back to the payer, dated at
        the end, then the listener's credit."""
        out = []
        if self.coins_returned > 0:
            out.append(Transfer(unused_transfer_id(self.call_id), self.user_id, COINS,
                                self.coins_returned, UNUSED_COINS, self.call_id, None,
                                self.ended_ms, self.ended_ms))  # fmt: skip
        if self.offer_coins_returned > 0:  # after the return: the grant's rest is in it
            out.append(Transfer(offers.return_id(self.call_id), self.user_id, COINS,
                                -self.offer_coins_returned, OFFER_RETURN, self.call_id,
                                None, self.ended_ms, self.ended_ms))  # fmt: skip
        if self.earnings_paise > 0:
            out.append(Transfer(earn_transfer_id(self.call_id), self.listener_id, PAISE,
                                self.earnings_paise, EARN, self.call_id, None, self.ended_ms,
                                self.ended_ms))  # fmt: skip
        return out

    def as_dict(self) -> dict:
        """The settlement as answers show it (SETTLEMENT_KEYS)."""
        return {k: getattr(self, k) for k in SETTLEMENT_KEYS}


# A settlement as answers show it: its fields, with the end as epoch seconds (its offer's part
# shows in the call's `offer`).
SETTLEMENT_KEYS = tuple(
    "ended_at" if f.name == "ended_ms" else f.name
    for f in dataclasses.fields(Settlement)
    if f.name not in offers.OFFER_END_FIELDS
)
# What a settlement's record carries to the writer (the call's row already names its parties).
END_FIELDS = tuple(
    f.name for f in dataclasses.fields(Settlement) if f.name not in ("user_id", "listener_id")
)
# What only an ended call has (null while it is ongoing).
ENDED_KEYS = ("coins_charged", "coins_returned", "charged_seconds", "platform_paise")


def ended_view(s: Settlement | None) -> dict:
    return {k: None if s is None else getattr(s, k) for k in ENDED_KEYS}
