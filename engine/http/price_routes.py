"""Prices over HTTP (engine/price_requests.py): rate cards with a date (scheduling one needs the
`admin` scope, reading them `read`), and a listener's own prices (setting them needs `calls`,
as starting a call does; reading them `read`)."""

from __future__ import annotations

from fastapi import APIRouter, Path, Request
from pydantic import Field, create_model

import engine.http.contract as m
from actors.money import AMOUNT_MAX, CALL_TYPES
from actors.price_plan import FREE_S_MAX, GRACE_S_MAX, INCREMENTS_S
from engine.http.answers import answer
from engine.http.contract.kinds import (
    Coins,
    EarningsRule,
    Increment,
    Key,
    Paise,
    TimeIn,
    whole_number,
)
from engine.http.door import ADMIN, CALLS, READ
from engine.http.routes import engine_of

FreeSeconds = whole_number("billed seconds", ge=0, le=FREE_S_MAX)
GraceSeconds = whole_number("billed seconds", ge=0, le=GRACE_S_MAX)
Pct = whole_number("percent", ge=0, le=100)


class RateCardTerms(m.Body):
    """A rate card, as BILLING_RATE_CARD says it; a key left out takes its default."""

    coins_per_minute: dict[m.CallType, Coins] | None = Field(
        None, description="coins a minute by call type", examples=[{"audio": 10, "video": 60}]
    )
    paise_per_minute: dict[m.Tier, dict[m.CallType, Paise]] | None = Field(
        None, description="rule tier: paise a minute the listener earns, by tier and call type"
    )
    increment_s: dict[m.CallType, Increment] | None = Field(
        None,
        description=f"billed seconds the end rounds up to, one of {list(INCREMENTS_S)}",
        examples=[{"audio": 1, "video": 6}],
    )
    free_s: dict[m.CallType, FreeSeconds] | None = Field(
        None, description="a call shorter than this is free", examples=[{"audio": 15, "video": 0}]
    )
    grace_s: dict[m.CallType, GraceSeconds] | None = Field(
        None,
        description="billed seconds a minute the payer cannot pay waits for a credit (the call "
        "suspended) before it drops; 0: drops at once",
        examples=[{"audio": 30, "video": 0}],
    )
    price_bounds: dict[m.CallType, dict[m.Tier, list[Coins]]] | None = Field(
        None,
        description="[min, max] coins a minute a listener of each tier may set; a call type "
        "left out cannot be priced by listeners",
        examples=[{"audio": {"basic": [5, 15], "bronze": [5, 20], "silver": [8, 30],
                             "gold": [10, 40]}}],
    )  # fmt: skip
    earnings_rule: EarningsRule | None = None
    share_pct: dict[m.Tier, Pct] | None = Field(None, description="rule share, by tier")
    coin_value_paise: Paise | None = Field(None, description="what a coin is worth")


class NewRateCard(RateCardTerms):
    effective_at: TimeIn = Field(
        description="when it takes effect: at or after now, never back-dated",
        examples=["2026-12-31T18:30:00.000+00:00"],
    )
    idempotency_key: Key = None


class RateCardShown(m.Answer):
    coins_per_minute: dict[str, int]
    paise_per_minute: dict[str, dict[str, int]]
    increment_s: dict[str, int]
    free_s: dict[str, int]
    grace_s: dict[str, int]
    price_bounds: dict[str, dict[str, list[int]]]
    earnings_rule: EarningsRule
    share_pct: dict[str, int] | None
    coin_value_paise: int | None


class RateCard(m.Answer):
    rate_card_id: int = Field(description="0: the configured card (BILLING_RATE_CARD)")
    effective_at: m.Timestamp | None = Field(description="null for the configured card")
    created_at: m.Timestamp | None
    card: RateCardShown


class RateCards(m.Answer):
    in_force: RateCard
    scheduled: list[RateCard] = Field(description="cards to come, the soonest first")
    past: list[RateCard] = Field(description="cards no longer in force, the newest first")


# `{"audio": 12, "video": 50}`: a field per call type, and the key.
NewPrices = create_model(
    "NewPrices",
    __base__=m.Body,
    __doc__="A listener's prices, the whole set: a call type left out has no price of theirs",
    **{t: (Coins | None, Field(None, description=f"coins a minute of a {t} call")) for t in
       CALL_TYPES},
    idempotency_key=(Key, None),
)  # fmt: skip


class PricesChange(m.Answer):
    listener_id: int
    prices: dict[str, int]
    tier: m.Tier = Field(description="the tier the prices were checked against")
    rate_card_id: int
    bounds: dict[str, list[int]] = Field(description="[min, max] by call type, as checked")
    set_at: m.Timestamp


class ListenerPrices(m.Answer):
    listener_id: int
    tier: m.Tier = Field(description="their tier today")
    prices: dict[str, int] = Field(description="their prices now, coins a minute")
    bounds: dict[str, list[int]] = Field(
        description="[min, max] for their tier today on the card in force, by call type"
    )
    rate_card_id: int
    changes: list[PricesChange] = Field(description="their last changes, newest first")


router = APIRouter()
ListenerId = Path(ge=1, le=AMOUNT_MAX, description="the listener's user id")


@router.post(
    "/v1/rate-cards",
    summary="schedule a rate card: calls started from its date take it",
    status_code=201,
    response_model=RateCard,
    responses=m.errors(409),
    openapi_extra=ADMIN,
    operation_id="schedule_rate_card",
    tags=["prices"],
)
async def schedule_rate_card(request: Request, body: NewRateCard):
    card = body.model_dump(exclude_none=True, exclude={"effective_at", "idempotency_key"})
    card = _plain(card)
    engine = await engine_of(request)
    made = await engine.schedule_rate_card(
        body.effective_at.timestamp(), card, idempotency_key=body.idempotency_key
    )
    return answer(made, 201)


@router.get(
    "/v1/rate-cards",
    summary="the card in force, the ones scheduled, past ones",
    response_model=RateCards,
    responses=m.errors(),
    openapi_extra=READ,
    operation_id="list_rate_cards",
    tags=["prices"],
)
async def list_rate_cards(request: Request):
    return answer(await (await engine_of(request)).rate_cards())


@router.put(
    "/v1/listeners/{listener_id}/prices",
    summary="set a listener's own prices, within their tier's bounds",
    response_model=PricesChange,
    responses=m.errors(404, 409),
    openapi_extra=CALLS,
    operation_id="set_listener_prices",
    tags=["prices"],
)
async def set_listener_prices(request: Request, body: NewPrices, listener_id: int = ListenerId):
    prices = {t: getattr(body, t) for t in CALL_TYPES if getattr(body, t) is not None}
    engine = await engine_of(request)
    return answer(
        await engine.set_prices(listener_id, prices, idempotency_key=body.idempotency_key)
    )


@router.get(
    "/v1/listeners/{listener_id}/prices",
    summary="a listener's prices, the bounds for their tier today, their last changes",
    response_model=ListenerPrices,
    responses=m.errors(404),
    openapi_extra=READ,
    operation_id="get_listener_prices",
    tags=["prices"],
)
async def get_listener_prices(request: Request, listener_id: int = ListenerId):
    return answer(await (await engine_of(request)).listener_prices(listener_id))


def _plain(value):
    """Enum keys and values as the strings they are (the card is checked by the engine)."""
    if isinstance(value, dict):
        return {str(getattr(k, "value", k)): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return getattr(value, "value", value)
