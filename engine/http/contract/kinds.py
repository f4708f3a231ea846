"""The contract's words: one named enum per idea (each a schema component of its own, made
from the tuple the engine checks against, so the two cannot drift), and the scalar kinds every
model uses, each with every rule the server enforces stated in the schema."""

from __future__ import annotations

import enum
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

from actors.buckets import BUCKET_TYPES
from actors.call import END_REASONS
from actors.money import (
    AMOUNT_MAX,
    CALL_TYPES,
    COMPLETED,
    DROPPED,
    IDEMPOTENCY_KEY_CHARS_MAX,
    ONGOING,
    PAYOUT_STATUSES,
    ROLES,
    SUSPENDED,
    TIERS,
    TOP_UP_TYPES,
)
from actors.price_plan import CARD, EARNINGS_RULES, INCREMENTS_S, LISTENER
from persistence.records import EVENT_TYPES
from persistence.webhooks import DELIVERY_STATUSES, WEBHOOK_STATUSES


def _enum(name: str, values: tuple[str, ...], doc: str) -> type[enum.StrEnum]:
    kind = enum.StrEnum(name, {v: v for v in values})
    kind.__doc__ = doc
    return kind


Role = _enum("Role", ROLES, "user (pays) or listener (earns)")
TopUpType = _enum("TopUpType", TOP_UP_TYPES, "how coins came in")
BucketType = _enum("BucketType", BUCKET_TYPES, "top-ups whose coins may expire")
CallType = _enum("CallType", CALL_TYPES, "what a minute costs depends on it")
Tier = _enum("Tier", TIERS, "a listener's tier for the day, from yesterday's minutes")
CallStatus = _enum(
    "CallStatus",
    (ONGOING, COMPLETED, DROPPED, SUSPENDED),
    "a call's state: suspended, a minute its payer could not pay waits in its grace for a credit",
)
EndReason = _enum("EndReason", END_REASONS, "why a call ended")
PaidBy = _enum("PaidBy", ("payer", "offer"), "who paid a minute: an offer's grant, or the payer")
EventType = _enum("EventType", EVENT_TYPES, "what an event reports")
PayoutStatus = _enum("PayoutStatus", PAYOUT_STATUSES, "a payout's state")
WebhookStatus = _enum("WebhookStatus", WEBHOOK_STATUSES, "an endpoint's state")
DeliveryStatus = _enum("DeliveryStatus", DELIVERY_STATUSES, "pending until a 2xx")
EarningsRule = _enum(
    "EarningsRule", EARNINGS_RULES, "tier: paise a minute by tier; share: a share of the coins"
)
Increment = enum.IntEnum("Increment", {f"s{v}": v for v in INCREMENTS_S})
Increment.__doc__ = "billed seconds a call's end rounds up to: a divisor of 60"
PriceSource = _enum("PriceSource", (CARD, LISTENER), "the listener's own price, or the card's")
Unit = _enum("Unit", ("coins", "paise"), "coins (a user's) or paise (a listener's earnings)")


def _whole(value):
    """A JSON number with no fraction is an integer (JSON Schema's `integer` says so):
    `100.0` is 100. `100.5`, `"100"` and `true` stay what they are, and are refused."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def whole_number(description: str = "", **bounds):
    # The Field first: its bounds are then the schema's (minimum, maximum), the validator
    # still runs before them.
    return Annotated[
        int, Field(strict=True, description=description, **bounds), BeforeValidator(_whole)
    ]


Coins = whole_number("coins", gt=0, le=AMOUNT_MAX)
Paise = whole_number("paise", gt=0, le=AMOUNT_MAX)
Id = whole_number(gt=0, le=AMOUNT_MAX)

# What the server calls blank (`str.strip`): every character Python counts as whitespace.
_SPACE = "".join(c for c in map(chr, range(0x3001)) if c.isspace())
# Text from outside: not blank, no NUL (PostgreSQL cannot store one), the server's length.
TEXT_PATTERN = f"^[^\\x00]*[^\\x00{_SPACE}][^\\x00]*$"


def text(chars_max: int, **more):
    return Field(min_length=1, max_length=chars_max, pattern=TEXT_PATTERN, **more)


Key = Annotated[
    str | None,
    text(
        IDEMPOTENCY_KEY_CHARS_MAX,
        description="applied once per key; a repeat with the same key changes nothing",
        examples=["order-81723"],
    ),
]


def _time_text(value: object) -> object:
    if not isinstance(value, str):
        raise ValueError("a time is ISO 8601 text with its offset, not a number")
    return value


# A time a request gives: ISO 8601 text with its offset (a number is refused: as epoch seconds it
# would be read silently in some unit).
TimeIn = Annotated[AwareDatetime, BeforeValidator(_time_text)]
# Every time the HTTP API says (answers and events alike): ISO 8601, UTC, with its offset and
# milliseconds (`actors/times.py`; the Python API answers the same times as epoch seconds).
Timestamp = Annotated[
    str,
    Field(
        pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$",
        description="ISO 8601, UTC, with offset and milliseconds",
        examples=["2026-12-01T10:58:20.631+00:00"],
        json_schema_extra={"format": "date-time"},
    ),
]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", use_enum_values=True)


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid", use_enum_values=True)
