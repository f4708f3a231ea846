"""The events an app follows (`/v1/events`, the stream, webhooks), each type with its `data`
typed: one model per event, told apart by `type` (a discriminator a generated client reads)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from engine.http.contract.kinds import (
    Answer,
    CallStatus,
    CallType,
    EarningsRule,
    EndReason,
    PayoutStatus,
    PriceSource,
    Tier,
    Timestamp,
)


class Earnings(Answer):
    rule: EarningsRule
    paise_per_minute: int | None = Field(None, description="rule tier: paise a charged minute")
    share_pct: int | None = Field(None, description="rule share: % of the coins' value")
    coin_value_paise: int | None = Field(description="what a coin is worth, when the card says")


class Price(Answer):
    """A call's price, fixed at its start: nothing that changes later reprices it."""

    rate_coins: int = Field(description="coins a minute, prepaid at each minute's start")
    increment_s: int = Field(description="billed seconds the end rounds up to (60: minutes)")
    free_s: int = Field(description="a call shorter than this many billed seconds is free")
    earnings: Earnings
    rate_card_id: int = Field(description="the card in force at the start (0: the configured)")
    source: PriceSource
    clamped_from: int | None = Field(
        description="the listener's own price, when their tier's bounds moved it to rate_coins"
    )


class CallOffer(Answer):
    """The offer a call took at its start: its first `free_minutes` minutes are the offer's."""

    offer_id: int
    free_minutes: int = Field(description="the free minutes this call got (what the budget had)")


class CallTerms(Answer):
    """What a call is, fixed at its start: its parties, type and rates (every answer and
    event that shows a call starts with these)."""

    call_id: int
    user_id: int
    listener_id: int
    call_type: CallType
    tier: Tier = Field(description="the listener's tier when the call started")
    rate_coins: int = Field(description="coins a minute the payer pays")
    rate_paise: int = Field(description="paise a minute the listener earns (rule tier)")
    price: Price
    offer: CallOffer | None = Field(
        None, description="the offer that pays its first minutes; null (events: absent) if none"
    )


class CallStartedData(CallTerms):
    connected_at: Timestamp
    price: Price | None = Field(None, description="absent from events written before price plans")


class LowBalanceData(Answer):
    call_id: int
    user_id: int
    listener_id: int
    balance_coins: int
    minutes_left: int = Field(description="whole minutes the coins pay at the call's rate")
    threshold_minutes: int = Field(description="the notice comes at this many minutes or fewer")
    minutes_affordable: int
    paid_until: Timestamp = Field(description="when the call drops if nothing changes")


class Settlement(Answer):
    """A call's end, once: what `end_call` answers, and the data of its events."""

    call_id: int
    user_id: int
    listener_id: int
    status: CallStatus
    end_reason: EndReason
    billed_minutes: int
    coins_spent: int = Field(description="what its minutes prepaid")
    earnings_paise: int
    ended_at: Timestamp
    coins_charged: int = Field(description="what its price charged for the time it lasted")
    coins_returned: int = Field(description="prepaid and not charged: back to the payer")
    charged_seconds: int = Field(description="billed seconds charged")
    platform_paise: int | None = Field(
        description="coins_charged * coin value - earnings_paise; null without a coin value"
    )


class SettledData(Settlement):
    """A settlement as its events carry it (null where an event was written before price
    plans)."""

    coins_charged: int | None = None
    coins_returned: int | None = None
    charged_seconds: int | None = None
    platform_paise: int | None = None


class CallRefundedData(Answer):
    refund_id: str
    listener_id: int
    minutes: int
    coins: int = Field(description="coins back to the payer")
    paise: int = Field(description="earnings taken back from the listener")
    reason: str


class PayoutData(Answer):
    payout_id: int
    listener_id: int
    amount_paise: int
    status: PayoutStatus
    reason: str | None


class WebhookDisabledData(Answer):
    webhook_id: int
    url: str
    reason: str = Field(description="the delivery that kept failing, for how long, and why")


class _CallParties(Answer):
    call_id: int
    user_id: int
    listener_id: int


class CallSuspendedData(_CallParties):
    minute: int = Field(description="the minute its payer could not pay when it fell due")
    balance_coins: int
    coins_needed: int = Field(description="at least this many more coins pay that minute")
    grace_until: Timestamp = Field(description="it drops then, at that minute, without them")


class CallResumedData(_CallParties):
    minute: int = Field(description="the minute a credit paid within its grace")
    paid_at: Timestamp = Field(description="when: the minute's transfer carries this time")
    next_tick_at: Timestamp = Field(description="the next minute, due as before")


class _Event(Answer):
    id: int = Field(description="increasing: resume after the last one handled")
    call_id: int | None = Field(description="null for a payout's events")
    user_id: int = Field(description="the payer, or a payout's listener")
    at: Timestamp


class CallStarted(_Event):
    type: Literal["call_started"]
    data: CallStartedData


class LowBalance(_Event):
    type: Literal["low_balance"]
    data: LowBalanceData


class CallDropped(_Event):
    type: Literal["call_dropped"]
    data: SettledData


class CallSettled(_Event):
    type: Literal["call_settled"]
    data: SettledData


class CallSuspended(_Event):
    type: Literal["call_suspended"]
    data: CallSuspendedData


class CallResumed(_Event):
    type: Literal["call_resumed"]
    data: CallResumedData


class CallRefunded(_Event):
    type: Literal["call_refunded"]
    data: CallRefundedData


class PayoutPending(_Event):
    type: Literal["payout_pending"]
    data: PayoutData


class PayoutPaid(_Event):
    type: Literal["payout_paid"]
    data: PayoutData


class PayoutRejected(_Event):
    type: Literal["payout_rejected"]
    data: PayoutData


class WebhookDisabled(_Event):
    type: Literal["webhook_disabled"]
    user_id: None = Field(description="an endpoint's event is nobody's")
    data: WebhookDisabledData


Event = Annotated[
    CallStarted
    | LowBalance
    | CallDropped
    | CallSettled
    | CallRefunded
    | CallSuspended
    | CallResumed
    | PayoutPending
    | PayoutPaid
    | PayoutRejected
    | WebhookDisabled,
    Field(discriminator="type"),
]
