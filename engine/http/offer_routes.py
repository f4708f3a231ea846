"""Offers over HTTP (engine/offer_requests.py): creating one needs the `admin` scope, reading
them `read`; a listener's opt-in to free minutes nobody pays them for needs `calls` (as their
prices do)."""

from __future__ import annotations

from enum import StrEnum

from fastapi import APIRouter, Path, Query, Request
from pydantic import Field

import engine.http.contract as m
from actors import offers
from actors.money import AMOUNT_MAX
from engine.http.answers import answer
from engine.http.contract.kinds import Key, TimeIn, whole_number
from engine.http.door import ADMIN, CALLS, READ
from engine.http.routes import engine_of
from persistence.offers import OFFERS_PAGE_MAX

Eligible = StrEnum("Eligible", {e: e for e in offers.ELIGIBLE})
Eligible.__doc__ = "who may take an offer: a user's first call ever, their first with a listener, "
Eligible.__doc__ += "or anyone with its code"
PaysListener = StrEnum("PaysListener", {p: p for p in offers.PAYS_LISTENER})
PaysListener.__doc__ = "who pays the listener for the free minutes"
FreeMinutes = whole_number("minutes", ge=1, le=offers.FREE_MINUTES_MAX)
Minutes = whole_number("minutes", ge=1, le=AMOUNT_MAX)


class NewOffer(m.Body):
    free_minutes: FreeMinutes = Field(description="the first minutes of a call it makes free")
    eligible: Eligible
    code: str | None = Field(
        None, min_length=1, max_length=offers.CODE_CHARS_MAX,
        description="eligible code: the code a start names (`offer_code`)", examples=["WELCOME"],
    )  # fmt: skip
    call_types: list[m.CallType] | None = Field(
        None, min_length=1, description="the call types it is for; all when left out"
    )
    valid_from: TimeIn = Field(description="calls started from then take it")
    valid_until: TimeIn = Field(description="calls started from then do not")
    budget_minutes: Minutes = Field(description="free minutes over all users, never overspent")
    per_user_max: whole_number("calls", ge=1, le=1_000_000) = Field(
        1, description="calls a user may take it for"
    )
    pays_listener: PaysListener = Field(
        PaysListener.platform,
        description="platform: the listener earns as usual; nobody: only listeners who opted in "
        "take such calls, unpaid for the free minutes",
    )
    idempotency_key: Key = None


class Offer(m.Answer):
    offer_id: int
    free_minutes: int
    eligible: Eligible
    code: str | None
    call_types: list[m.CallType]
    valid_from: m.Timestamp
    valid_until: m.Timestamp
    budget_minutes: int
    per_user_max: int
    pays_listener: PaysListener
    created_at: m.Timestamp
    minutes_reserved: int = Field(description="held by calls under way")
    minutes_used: int = Field(description="free minutes ended calls used")
    minutes_left: int = Field(description="budget_minutes - minutes_reserved - minutes_used")
    calls: int = Field(description="calls that took it")
    coins_granted: int = Field(description="coins its grants gave calls (offer:{call_id})")
    coins_returned: int = Field(description="coins back out at their ends (offer_return:…)")
    earnings_paid_paise: int = Field(description="listener earnings it paid (platform)")


class OffersPage(m.Answer):
    offers: list[Offer]
    next_before: int | None = Field(description="pass as `before` for the next page")


class OptIn(m.Body):
    free_minutes: bool = Field(
        strict=True, description="true: take calls whose free minutes nobody pays them for"
    )


class ListenerOffers(m.Answer):
    listener_id: int
    free_minutes: bool
    set_at: m.Timestamp | None = Field(description="null: never set (false)")


router = APIRouter()
OfferId = Path(ge=1, le=AMOUNT_MAX, description="the offer's id")
ListenerId = Path(ge=1, le=AMOUNT_MAX, description="the listener's user id")


@router.post(
    "/v1/offers",
    summary="create an offer: free first minutes within a budget",
    status_code=201,
    response_model=Offer,
    responses=m.errors(409),
    openapi_extra=ADMIN,
    operation_id="create_offer",
    tags=["offers"],
)
async def create_offer(request: Request, body: NewOffer):
    engine = await engine_of(request)
    made = await engine.create_offer(
        free_minutes=body.free_minutes,
        eligible=str(body.eligible),
        valid_from=body.valid_from.timestamp(),
        valid_until=body.valid_until.timestamp(),
        budget_minutes=body.budget_minutes,
        call_types=None if body.call_types is None else [str(t) for t in body.call_types],
        per_user_max=body.per_user_max,
        pays_listener=str(body.pays_listener),
        code=body.code,
        idempotency_key=body.idempotency_key,
    )
    return answer(made, 201)


@router.get(
    "/v1/offers",
    summary="offers, newest first, with what each cost",
    response_model=OffersPage,
    responses=m.errors(),
    openapi_extra=READ,
    operation_id="list_offers",
    tags=["offers"],
)
async def list_offers(
    request: Request,
    limit: int = Query(20, ge=1, le=OFFERS_PAGE_MAX),
    before: int | None = Query(None, ge=1, le=AMOUNT_MAX),
):
    page = await (await engine_of(request)).offers(limit, before)
    last = page[-1]["offer_id"] if len(page) == limit else None
    return answer({"offers": page, "next_before": last})


@router.get(
    "/v1/offers/{offer_id}",
    summary="an offer: its terms, its budget, and what it cost",
    response_model=Offer,
    responses=m.errors(404),
    openapi_extra=READ,
    operation_id="get_offer",
    tags=["offers"],
)
async def get_offer(request: Request, offer_id: int = OfferId):
    return answer(await (await engine_of(request)).offer(offer_id))


@router.put(
    "/v1/listeners/{listener_id}/offers",
    summary="a listener's opt-in to calls whose free minutes nobody pays them for",
    response_model=ListenerOffers,
    responses=m.errors(404),
    openapi_extra=CALLS,
    operation_id="set_listener_offers",
    tags=["offers"],
)
async def set_listener_offers(request: Request, body: OptIn, listener_id: int = ListenerId):
    engine = await engine_of(request)
    return answer(await engine.set_listener_offers(listener_id, body.free_minutes))


@router.get(
    "/v1/listeners/{listener_id}/offers",
    summary="a listener's opt-in to free minutes nobody pays them for",
    response_model=ListenerOffers,
    responses=m.errors(404),
    openapi_extra=READ,
    operation_id="get_listener_offers",
    tags=["offers"],
)
async def get_listener_offers(request: Request, listener_id: int = ListenerId):
    return answer(await (await engine_of(request)).listener_offers(listener_id))
