"""What the API answers, each a model: tests/test_http.py checks every route's real answer
against its model (extra fields forbidden), so the schema is what the engine says."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from engine.http.contract.events import CallOffer, CallTerms, Event
from engine.http.contract.kinds import (
    Answer,
    BucketType,
    CallStatus,
    EndReason,
    PaidBy,
    PayoutStatus,
    Timestamp,
    Unit,
)


class UserCreated(Answer):
    user_id: int


class Transfer(Answer):
    transfer_id: str = Field(description="ext:{user}:{key}: the transfer's deterministic id")
    applied: bool = Field(description="false for a repeat of the same idempotency key")
    user_id: int
    balance_coins: int
    earnings_paise: int


class Withdrawn(Transfer):
    payout_id: int = Field(description="the payout holding these earnings")
    status: PayoutStatus = Field(description="pending until paid or rejected")


class Payout(Answer):
    payout_id: int
    listener_id: int
    amount_paise: int
    transfer_id: str = Field(description="the withdraw transfer that holds the earnings")
    status: PayoutStatus
    reason: str | None
    created_at: Timestamp
    settled_at: Timestamp | None = Field(description="when it was paid or rejected")


class PayoutSettlement(Payout):
    applied: bool = Field(description="false for a repeat of the same outcome")
    earnings_paise: int = Field(description="the listener's earnings after it")


class PayoutsPage(Answer):
    payouts: list[Payout]
    next_before: int | None = Field(description="pass as `before` for the next page")


class Refund(Answer):
    refund_id: str = Field(description="refund:{call}:{key}: its coin transfer's id too")
    call_id: int
    user_id: int = Field(description="the payer, whose coins come back")
    listener_id: int
    minutes: int
    coins: int = Field(description="coins back to the payer")
    paise: int = Field(description="earnings taken back from the listener (0: coins alone)")
    listener_pays: bool
    reason: str
    created_at: Timestamp = Field(description="when the listener's side was taken")
    refunded_at: Timestamp | None = Field(description="when the coins were given back")


class Bucket(Answer):
    bucket_id: str = Field(description="the top-up that made it")
    tx_type: BucketType
    coins: int = Field(description="coins left in it")
    expires_at: Timestamp


class Balance(Answer):
    user_id: int
    balance_coins: int = Field(description="every coin, those of buckets included")
    earnings_paise: int
    buckets: list[Bucket] = Field(description="coins that expire, the first to expire first")
    minutes_affordable: int | None = Field(
        description="minutes of a `call_type` call the coins pay; null without `call_type`"
    )


class Call(CallTerms):
    connected_at: Timestamp
    billed_minutes: int
    coins_spent: int
    earnings_paise: int
    coins_charged: int | None = Field(description="once ended: what its price charged")
    coins_returned: int | None = Field(description="once ended: prepaid coins given back")
    charged_seconds: int | None = Field(description="once ended: billed seconds charged")
    platform_paise: int | None = Field(description="once ended, with a coin value")
    next_tick_at: Timestamp | None = Field(
        description="when the next minute is billed (suspended: when its grace ends)"
    )
    status: CallStatus
    grace_until: Timestamp | None = Field(
        description="suspended: the call drops then, at its unpaid minute, unless a credit to "
        "the payer pays that minute first"
    )
    end_reason: EndReason | None
    ended_at: Timestamp | None
    minutes_affordable: int | None = Field(
        description="more minutes the payer's coins pay at this rate; null once ended"
    )
    paid_until: Timestamp | None = Field(
        description="when the call drops (or expires) if nothing changes; null once ended"
    )


class StoredCall(CallTerms):
    status: CallStatus
    end_reason: EndReason | None
    connected_at: Timestamp
    ended_at: Timestamp | None
    billed_minutes: int
    coins_spent: int
    earnings_paise: int
    coins_charged: int | None = Field(description="once ended: what its price charged")
    coins_returned: int | None = Field(description="once ended: prepaid coins given back")
    charged_seconds: int | None = Field(description="once ended: billed seconds charged")
    platform_paise: int | None = Field(description="once ended, with a coin value")


class TimelineMinute(Answer):
    minute: int
    due_at: Timestamp = Field(description="when the minute started: the time it carries")
    billed_at: Timestamp | None = Field(description="when the host billed it")
    committed_at: Timestamp | None = Field(description="null: billed, not committed yet")
    coins: int = Field(description="coins the minute took")
    balance_after_coins: int | None = Field(
        description="the payer's coins after it, as the ledger has them (an offer's grant not "
        "drawn yet included)"
    )
    paid_at: Timestamp | None = Field(
        description="a minute a credit paid in its grace: when (after it fell due); else null"
    )
    paid_by: PaidBy = Field(
        description="offer: one of the free minutes, drawn from the offer's grant"
    )


class WalletEvent(Answer):
    transfer_id: str
    tx_type: str
    coins: int = Field(description="coins added (+) or taken (-)")
    call_id: int | None = Field(
        description="the call it belongs to: a minute of another call of the payer, a call's "
        "return (`unused`) or refund"
    )
    at: Timestamp
    committed_at: Timestamp | None
    balance_after_coins: int


class CallEnd(Answer):
    status: CallStatus
    reason: EndReason
    rule: str = Field(
        description="the rule that ended it, in words and numbers",
        examples=["dropped at 12:03:00.000 UTC: balance 5 coins < rate 10 coins a minute, ..."],
    )
    at: Timestamp
    charge: str = Field(
        description="the end's rounding in words",
        examples=["90.4 s billed as 91 s at 1-s increments: 16 coins; 4 of 20 prepaid returned"],
    )


class Timeline(Answer):
    call: Call
    price: str = Field(
        description="how the call's price was decided, in words",
        examples=["10 coins a minute: the rate of rate card 0 (the configured one); billed by "
                  "the minute; the listener earns 100 paise a charged minute (tier basic)"],
    )  # fmt: skip
    offer: str | None = Field(
        description="the offer that paid its first minutes, in words; null without one",
        examples=["offer 1 (first_call): the first 3 minutes free, paid from its grant of 30 "
                  "coins (offer:7); the platform pays the listener for them"],
    )  # fmt: skip
    minutes: list[TimelineMinute]
    wallet_events: list[WalletEvent] = Field(
        description="the payer's other coin transfers during the call, in time order"
    )
    end: CallEnd | None = Field(description="null while the call is ongoing")
    rows_cut: bool = Field(description="the payer had more transfers since than one answer holds")


class StatementRow(Answer):
    transfer_id: str = Field(description="the transfer's id; a call's minutes: `call:{id}`")
    kind: str = Field(
        description="purchase, bonus, referral_bonus, spend, withdraw (a payout's hold), "
        "payout_void (a rejected payout's hold released), refund, clawback, earn, expire, "
        "minutes (a call's minutes in one row when it ended), or unused (what its price did not "
        "charge of them, back: the row after), offer_grant (an offer's coins for a call's "
        "free minutes, at its start) or offer_return (what of them the call did not use, at its "
        "end)"
    )
    amount: int = Field(description="added (+) or taken (-), in `unit`")
    unit: Unit
    call_id: int | None
    minutes: int | None = Field(description="a `minutes` row: how many")
    offer: CallOffer | None = Field(
        None, description="a `minutes` row of a call that took an offer: which"
    )
    at: Timestamp
    balance_after: int = Field(description="the balance in `unit` after it")


class Statement(Answer):
    transfers: list[StatementRow]
    next_after: str | None = Field(description="pass as `after` for the next page")


class CallsPage(Answer):
    calls: list[StoredCall]
    next_before: int | None = Field(description="pass as `before` for the next page")


class Online(Answer):
    online: bool


class EventsPage(Answer):
    events: list[Event] = Field(description="oldest first")


class Health(Answer):
    status: Literal["ok"]


class Readiness(Answer):
    ready: bool
    checks: dict[str, str] = Field(description='"ok", or what failed, per dependency')
    writer_lag_ms: float | None = None
