"""The HTTP API's contract: every request body, answer and error as a typed model, so that
the OpenAPI schema at /openapi.json is enough for a client generator. The enums come from the
tuples the engine checks against (actors/money.py, actors/call.py), so the schema cannot drift
from what the Engine accepts. Amounts and ids are strict integers: `10.0`, `"10"` and `true` are
refused, as the Python API refuses them. Answers are built by the Engine; tests/test_http.py
checks each route's real answer against its model (extra fields forbidden)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from actors.call import END_REASONS
from actors.money import (
    AMOUNT_MAX,
    CALL_TYPES,
    COMPLETED,
    DROPPED,
    IDEMPOTENCY_KEY_CHARS_MAX,
    NAME_CHARS_MAX,
    ONGOING,
    PAYOUT_STATUSES,
    REASON_CHARS_MAX,
    ROLES,
    TIERS,
    TOP_UP_TYPES,
)
from persistence.payouts import PAYOUTS_PAGE_MAX
from persistence.records import EVENT_TYPES
from persistence.statement import STATEMENT_PAGE_MAX

REFUND_MINUTES_MAX = 100_000  # engine/payout_requests.py checks the same

Role = Literal[ROLES]
TopUpType = Literal[TOP_UP_TYPES]
CallType = Literal[CALL_TYPES]
Tier = Literal[TIERS]
EndReason = Literal[END_REASONS]
Status = Literal[(ONGOING, COMPLETED, DROPPED)]
EventType = Literal[EVENT_TYPES]
PayoutStatus = Literal[PAYOUT_STATUSES]

Coins = Annotated[int, Field(strict=True, gt=0, le=AMOUNT_MAX, description="coins")]
Paise = Annotated[int, Field(strict=True, gt=0, le=AMOUNT_MAX, description="paise")]
Id = Annotated[int, Field(strict=True, gt=0, le=AMOUNT_MAX)]
Key = Annotated[
    str | None,
    Field(
        min_length=1,
        max_length=IDEMPOTENCY_KEY_CHARS_MAX,
        description="applied once per key; a repeat with the same key changes nothing",
        examples=["order-81723"],
    ),
]
# Every time the HTTP API says (answers and events alike): ISO 8601, UTC, with its offset and
# milliseconds (`actors/times.py`; the Python API answers the same times as epoch seconds).
Timestamp = Annotated[
    str,
    Field(
        pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$",
        description="ISO 8601, UTC, with offset and milliseconds",
        examples=["2026-12-01T10:58:20.631+00:00"],
    ),
]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- request bodies ------------------------------------------------------------------------


class NewUser(Body):
    name: str = Field(min_length=1, max_length=NAME_CHARS_MAX, examples=["asha"])
    role: Role = Field("user", description="user (pays) or listener (earns)")


class WalletQuery(Body):
    call_type: CallType | None = Field(
        None, description="answer `minutes_affordable` for a call of this type"
    )


class StatementQuery(Body):
    after: str | None = Field(None, description="`next_after` of the page before")
    limit: int = Field(50, ge=1, le=STATEMENT_PAGE_MAX, description="rows a page")


class TopUp(Body):
    amount: Coins = Field(examples=[100])
    tx_type: TopUpType = "purchase"
    idempotency_key: Key = None
    expires_at: AwareDatetime | None = Field(
        None,
        description="bonus and referral_bonus only: the coins left of it leave the wallet "
        "then; spent before coins that never expire",
        examples=["2026-12-31T23:59:59.000+00:00"],
    )


class Spend(Body):
    amount: Coins = Field(examples=[10])
    idempotency_key: Key = None


class Withdrawal(Body):
    amount_paise: Paise = Field(examples=[5000])
    idempotency_key: Key = None


class PayoutsQuery(Body):
    limit: int = Field(20, ge=1, le=PAYOUTS_PAGE_MAX, description="payouts per page")
    before: int | None = Field(None, ge=1, description="the last payout id of the last page")


class PayoutOutcome(Body):
    reason: str | None = Field(
        None, min_length=1, max_length=REASON_CHARS_MAX, examples=["bank transfer 7781"]
    )


class NewRefund(Body):
    minutes: int | None = Field(
        None,
        strict=True,
        ge=1,
        le=REFUND_MINUTES_MAX,
        description="the last billed minutes to refund; null: all not refunded yet",
    )
    reason: str = Field("refund", min_length=1, max_length=REASON_CHARS_MAX)
    idempotency_key: Key = None
    listener_pays: bool = Field(
        True,
        strict=True,
        description="take the minutes' earnings back from the listener; false: refund the "
        "coins alone",
    )


class NewCall(Body):
    user_id: Id = Field(description="the payer", examples=[1])
    listener_id: Id = Field(description="the listener", examples=[2])
    call_type: CallType = "audio"
    idempotency_key: Key = Field(None, description="a repeat returns the same call")


class EndCall(Body):
    reason: EndReason = "hangup"


# -- answers -------------------------------------------------------------------------------


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
    tx_type: TopUpType
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


class Call(Answer):
    call_id: int
    user_id: int
    listener_id: int
    call_type: CallType
    tier: Tier = Field(description="the listener's tier when the call started")
    rate_coins: int = Field(description="coins a minute the payer pays")
    rate_paise: int = Field(description="paise a minute the listener earns")
    connected_at: Timestamp
    billed_minutes: int
    coins_spent: int
    earnings_paise: int
    next_tick_at: Timestamp | None = Field(description="when the next minute is billed")
    status: Status
    end_reason: EndReason | None
    ended_at: Timestamp | None
    minutes_affordable: int | None = Field(
        description="more minutes the payer's coins pay at this rate; null once ended"
    )
    paid_until: Timestamp | None = Field(
        description="when the call drops (or expires) if nothing changes; null once ended"
    )


class StoredCall(Answer):
    call_id: int
    user_id: int
    listener_id: int
    call_type: CallType
    tier: Tier
    rate_coins: int
    rate_paise: int
    status: Status
    end_reason: EndReason | None
    connected_at: Timestamp
    ended_at: Timestamp | None
    billed_minutes: int
    coins_spent: int
    earnings_paise: int


class Settlement(Answer):
    call_id: int
    user_id: int
    listener_id: int
    status: Status
    end_reason: EndReason
    billed_minutes: int
    coins_spent: int
    earnings_paise: int
    ended_at: Timestamp


class TimelineMinute(Answer):
    minute: int
    due_at: Timestamp = Field(description="when the minute started: the time it carries")
    billed_at: Timestamp | None = Field(description="when the host billed it")
    committed_at: Timestamp | None = Field(description="null: billed, not committed yet")
    coins: int = Field(description="coins the minute took")
    balance_after_coins: int | None = Field(description="the payer's coins after it")


class WalletEvent(Answer):
    transfer_id: str
    tx_type: str
    coins: int = Field(description="coins added (+) or taken (-)")
    call_id: int | None = Field(description="set for a minute of another call of the payer")
    at: Timestamp
    committed_at: Timestamp | None
    balance_after_coins: int


class CallEnd(Answer):
    status: Status
    reason: EndReason
    rule: str = Field(
        description="the rule that ended it, in words and numbers",
        examples=["dropped at 12:03:00.000 UTC: balance 5 coins < rate 10 coins a minute, ..."],
    )
    at: Timestamp


class Timeline(Answer):
    call: Call
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
        "payout_void (a rejected payout's hold released), refund, clawback, earn, or "
        "minutes: a call's minutes in one row when it ended"
    )
    amount: int = Field(description="added (+) or taken (-), in `unit`")
    unit: Literal["coins", "paise"]
    call_id: int | None
    minutes: int | None = Field(description="a `minutes` row: how many")
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


class Event(Answer):
    id: int
    type: EventType
    call_id: int | None = Field(description="null for a payout's events")
    user_id: int
    at: Timestamp
    data: dict[str, int | float | str | bool | None]


class EventsPage(Answer):
    events: list[Event]


class Health(Answer):
    status: Literal["ok"]


class Readiness(Answer):
    ready: bool
    checks: dict[str, str] = Field(description='"ok", or what failed, per dependency')
    writer_lag_ms: float | None = None


class ErrorDetail(Answer):
    type: str = Field(description="the error class, e.g. InsufficientCoins", examples=["X"])
    message: str = Field(description="what is wrong, naming the field or id")


class Error(Answer):
    error: ErrorDetail


ERRORS = {
    400: "bad input: the message names the field",
    401: "a missing or wrong API key",
    402: "insufficient coins or earnings",
    403: "the key lacks the scope this route needs (the message names it)",
    404: "an unknown user, call, payout, key or route",
    409: "a party is busy, an idempotency key or key name reused, a payout settled the other "
    "way, a refund over what was billed, or the call is ongoing",
    413: "the body is over the door's bound (BILLING_HTTP_BODY_BYTES_MAX)",
    429: "too many wrong keys from this address: retry after `Retry-After`",
    503: "the engine cannot answer now; retry after `Retry-After` with the same key",
}
DOOR_ERRORS = (400, 401, 403, 413, 429, 503)  # what the door may answer (http_door.py)


def errors(*statuses: int) -> dict:
    """The `responses` of a route: these error statuses and the door's, with the error body."""
    return {s: {"model": Error, "description": ERRORS[s]} for s in (*DOOR_ERRORS, *statuses)}
