"""The events an app follows (`/v1/events`, the stream, webhooks), each type with its `data`
typed: one model per event, told apart by `type` (a discriminator a generated client reads)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from engine.http.contract.kinds import (
    Answer,
    CallStatus,
    CallType,
    EndReason,
    PayoutStatus,
    Tier,
    Timestamp,
)


class CallTerms(Answer):
    """What a call is, fixed at its start: its parties, type and rates (every answer and
    event that shows a call starts with these)."""

    call_id: int
    user_id: int
    listener_id: int
    call_type: CallType
    tier: Tier = Field(description="the listener's tier when the call started")
    rate_coins: int = Field(description="coins a minute the payer pays")
    rate_paise: int = Field(description="paise a minute the listener earns")


class CallStartedData(CallTerms):
    connected_at: Timestamp


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
    coins_spent: int
    earnings_paise: int
    ended_at: Timestamp


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
    data: Settlement


class CallSettled(_Event):
    type: Literal["call_settled"]
    data: Settlement


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
    | PayoutPending
    | PayoutPaid
    | PayoutRejected
    | WebhookDisabled,
    Field(discriminator="type"),
]
