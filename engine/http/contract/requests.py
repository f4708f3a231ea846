"""What a client sends: request bodies and the parameters of reads, each with every rule the
server enforces that a schema can state. A body whose every field has a default may be left
out."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Discriminator, Field, Tag

from actors.money import AMOUNT_MAX, NAME_CHARS_MAX, PURCHASE, REASON_CHARS_MAX
from engine.http.contract.kinds import (
    Body,
    BucketType,
    CallType,
    Coins,
    EndReason,
    Id,
    Key,
    Paise,
    Role,
    TimeIn,
    text,
    whole_number,
)
from persistence.payouts import PAYOUTS_PAGE_MAX
from persistence.statement import CURSOR_PATTERN, STATEMENT_PAGE_MAX

REFUND_MINUTES_MAX = 100_000  # engine/payout_requests.py checks the same
RefundMinutes = whole_number("minutes", ge=1, le=REFUND_MINUTES_MAX)


class NewUser(Body):
    name: str = text(NAME_CHARS_MAX, examples=["asha"])
    role: Role = Field(Role.user, description="user (pays) or listener (earns)")


class WalletQuery(Body):
    call_type: CallType | None = Field(
        None, description="answer `minutes_affordable` for a call of this type"
    )


class StatementQuery(Body):
    after: str | None = Field(
        None, pattern=CURSOR_PATTERN, description="`next_after` of the page before"
    )
    limit: int = Field(50, ge=1, le=STATEMENT_PAGE_MAX, description="rows a page")


class Purchase(Body):
    """Coins bought: they never expire."""

    amount: Coins = Field(examples=[100])
    tx_type: Literal["purchase"] = PURCHASE
    idempotency_key: Key = None


class Bonus(Body):
    """Coins given: they may expire (`expires_at`), and are spent before coins that never do."""

    amount: Coins = Field(examples=[20])
    tx_type: BucketType
    idempotency_key: Key = None
    expires_at: TimeIn | None = Field(
        None,
        description="when the coins left of it leave the wallet: after the top-up, at most "
        "400 days ahead; null: never",
        examples=["2026-12-31T23:59:59.000+00:00"],
    )


def _top_up_kind(body) -> str | None:
    if isinstance(body, dict):
        tx_type = body.get("tx_type", PURCHASE)
    else:  # a model already, or not an object at all (refused as a purchase's body)
        tx_type = getattr(body, "tx_type", PURCHASE)
    if tx_type == PURCHASE:
        return "purchase"
    return "bonus" if tx_type in tuple(BucketType) else None


# A purchase, or a bonus (which alone may expire): one of the two, by `tx_type`.
TopUp = Annotated[
    Annotated[Purchase, Tag("purchase")] | Annotated[Bonus, Tag("bonus")],
    Discriminator(
        _top_up_kind,
        custom_error_type="tx_type",
        custom_error_message="tx_type must be one of purchase, bonus, referral_bonus",
    ),
]


class Spend(Body):
    amount: Coins = Field(examples=[10])
    idempotency_key: Key = None


class Withdrawal(Body):
    amount_paise: Paise = Field(examples=[5000])
    idempotency_key: Key = None


class PayoutsQuery(Body):
    limit: int = Field(20, ge=1, le=PAYOUTS_PAGE_MAX, description="payouts per page")
    before: int | None = Field(  # from the query string: text that reads as an id
        None, ge=1, le=AMOUNT_MAX, description="the last payout id of the last page"
    )


class PayoutOutcome(Body):
    reason: str | None = text(REASON_CHARS_MAX, default=None, examples=["bank transfer 7781"])


class NewRefund(Body):
    minutes: RefundMinutes | None = Field(
        None, description="the last billed minutes to refund; null: all not refunded yet"
    )
    reason: str = text(REASON_CHARS_MAX, default="refund")
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
    call_type: CallType = CallType.audio
    idempotency_key: Key = Field(None, description="a repeat returns the same call")
    offer_code: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="a campaign's code: the start takes its offer if the payer is eligible",
        examples=["WELCOME"],
    )


class EndCall(Body):
    reason: EndReason = EndReason.hangup
