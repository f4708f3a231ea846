"""Offers, the arithmetic: an offer's terms as given, checked; and what the free minutes of a
call move at its end. Pure and exact, integers only.

An offer makes the first `f` minutes of a call free to its payer. At the start the offer grants
`f * rate_coins` coins from outside to the payer, scoped to the call (`offer:{call_id}`): the
call's first `f` minutes draw on them, never on the payer's own coins, and nothing else may
spend them. At the end the part of the grant the call's price did not charge goes back out
(`offer_return:{call_id}`):

    granted  = f * rate_coins
    offered  = min(coins_charged, granted)      what the offer paid of the charge
    returned = granted - offered

The payer pays `coins_charged - offered`. Who pays the listener for the offered part is the
offer's: `platform` (the listener earns as usual; the offer paid the earnings of its part) or
`nobody` (the listener, who opted in, earns only on what the payer paid).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from actors import price_plan as plan
from actors.errors import InvalidInput
from actors.money import (
    AMOUNT_MAX,
    CALL_TYPES,
    COINS,
    OFFER_GRANT,
    Transfer,
    one_of,
    text_value,
)

FIRST_CALL, FIRST_WITH_LISTENER, CODE = "first_call", "first_call_with_listener", "code"
ELIGIBLE = (FIRST_CALL, FIRST_WITH_LISTENER, CODE)
PLATFORM, NOBODY = "platform", "nobody"
PAYS_LISTENER = (PLATFORM, NOBODY)
FREE_MINUTES_MAX = 600  # free minutes one call may get from an offer
CODE_CHARS_MAX = 64
# What a call records of its offer (columns of `calls`, fields of its spec): none, 0, none
# without one.
OFFER_FIELDS = ("offer_id", "offer_minutes", "offer_pays")
# What a call's end records of its offer (columns of `calls`, fields of its settlement).
OFFER_END_FIELDS = ("offer_minutes_used", "offer_coins_returned", "offer_earnings_paise")


def grant_id(call_id: int) -> str:
    return f"offer:{call_id}"


def return_id(call_id: int) -> str:
    return f"offer_return:{call_id}"


def grant(call_id: int, user_id: int, minutes: int, rate_coins: int, at_ms: int) -> Transfer:
    """The offer's coins for a call's `minutes` free minutes, to its payer at its start."""
    coins = minutes * rate_coins
    return Transfer(grant_id(call_id), user_id, COINS, coins, OFFER_GRANT, call_id, None,
                    at_ms, at_ms)  # fmt: skip


@dataclass(frozen=True)
class OfferEnd:
    """What a call's offer paid, at the call's end."""

    minutes_used: int  # of the free minutes, those the call started (prepaid from the grant)
    coins_granted: int
    coins_returned: int  # the transfer `offer_return:{call_id}`
    earnings_paise: int  # the listener's earnings the offer paid (platform), 0 for nobody
    listener_paise: int  # what the listener earns for the whole call
    # What the payer paid (`coins_charged - offered`) at the coin value, less the listener's
    # earnings; null without a coin value.
    platform_paise: int | None


def end(
    price: plan.Price, c: plan.Charge, minutes_billed: int, minutes: int, pays: str | None
) -> OfferEnd:
    """The offer's part of a call that ends with the charge `c`, on `price`, having billed
    `minutes_billed` minutes, with `minutes` free minutes paid by `pays`."""
    if not minutes:
        return OfferEnd(0, 0, 0, 0, c.earnings_paise, c.platform_paise)
    granted = minutes * price.rate_coins
    offered = min(c.coins_charged, granted)
    paid_s = max(0, c.charged_s - plan.SECONDS_PER_MINUTE * minutes)  # the payer's seconds
    payer_part = plan.earnings_for(price, paid_s, c.coins_charged - offered)
    if pays == NOBODY:
        offer_paise, listener = 0, payer_part
    else:
        offer_paise, listener = c.earnings_paise - payer_part, c.earnings_paise
    platform = None
    if price.coin_value_paise is not None:
        platform = (c.coins_charged - offered) * price.coin_value_paise - listener
    return OfferEnd(
        min(minutes_billed, minutes), granted, granted - offered, offer_paise, listener, platform
    )


def credit_left(minutes: int, billed: int, rate_coins: int) -> int:
    """The coins of a call's grant its minutes have not drawn yet (held for that call)."""
    return max(0, minutes - billed) * rate_coins


def view(offer_id: int | None, minutes: int) -> dict | None:
    """A call's `offer`, as answers show it."""
    return None if offer_id is None else {"offer_id": offer_id, "free_minutes": minutes}


@dataclass(frozen=True)
class Terms:
    """An offer as created: checked, naming what is wrong."""

    free_minutes: int
    eligible: str
    code: str | None
    call_types: tuple[str, ...]
    valid_from: float
    valid_until: float
    budget_minutes: int
    per_user_max: int
    pays_listener: str

    @classmethod
    def from_dict(cls, body: object) -> Terms:
        if not isinstance(body, dict):
            raise InvalidInput(f"an offer must be an object, got {body!r}")
        allowed = {*cls.__dataclass_fields__, "idempotency_key"}
        unknown = set(body) - allowed
        if unknown:
            raise InvalidInput(f"an offer has no keys {sorted(unknown)}")
        eligible = one_of(body.get("eligible"), ELIGIBLE, "eligible")
        code = body.get("code")
        if eligible == CODE:
            code = text_value(code, "code", CODE_CHARS_MAX)
        elif code is not None:
            raise InvalidInput(f"code is only for offers eligible by code, not {eligible!r}")
        types = body.get("call_types")
        if types is None:
            types = list(CALL_TYPES)
        if not isinstance(types, list) or not types:
            raise InvalidInput(f"call_types must be a non-empty list, got {types!r}")
        for t in types:
            one_of(t, CALL_TYPES, "call_types[]")
        valid_from = _time(body.get("valid_from"), "valid_from")
        valid_until = _time(body.get("valid_until"), "valid_until")
        if valid_until <= valid_from:
            raise InvalidInput(
                f"valid_until must be after valid_from, got {valid_until} <= {valid_from}"
            )
        return cls(
            free_minutes=_count(body.get("free_minutes"), "free_minutes", FREE_MINUTES_MAX),
            eligible=eligible,
            code=code,
            call_types=tuple(sorted(set(types))),
            valid_from=valid_from,
            valid_until=valid_until,
            budget_minutes=_count(body.get("budget_minutes"), "budget_minutes", AMOUNT_MAX),
            per_user_max=_count(body.get("per_user_max", 1), "per_user_max", 1_000_000),
            pays_listener=one_of(body.get("pays_listener"), PAYS_LISTENER, "pays_listener"),
        )


def _count(value: object, what: str, high: int) -> int:
    if type(value) is not int or not 1 <= value <= high:
        raise InvalidInput(f"{what} must be an integer in [1, {high}], got {value!r}")
    return value


def _time(value: object, what: str) -> float:
    """A time as epoch seconds (a number, finite and not negative)."""
    if type(value) not in (int, float) or not math.isfinite(value) or not 0 <= value < 2**40:
        raise InvalidInput(f"{what} must be a time in epoch seconds, got {value!r}")
    return float(value)
