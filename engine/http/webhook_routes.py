"""Webhooks over HTTP (engine/webhooks.py): register an endpoint (its secret shown once), list
and read them, delete one, read an endpoint's deliveries, replay from an event id. Making,
deleting and replaying need the `admin` scope (an endpoint receives every event of its types);
reading needs `read`."""

from __future__ import annotations

from fastapi import APIRouter, Path, Query, Request
from pydantic import Field

import engine.http.contract as m
from actors.errors import UnknownWebhook
from actors.money import AMOUNT_MAX
from engine import webhooks
from engine.http.answers import answer
from engine.http.door import ADMIN, READ
from engine.http.routes import engine_of, pool_of
from persistence import webhooks as store


class NewWebhook(m.Body):
    url: str = Field(
        min_length=1,
        max_length=webhooks.URL_CHARS_MAX,
        pattern=webhooks.URL_PATTERN,
        description="http(s) URL events are POSTed to; not a loopback or private address "
        "unless the operator allows it (BILLING_WEBHOOK_PRIVATE_URLS=1)",
        examples=["https://app.example.com/billing/events"],
    )
    event_types: list[m.EventType] = Field(
        min_length=1, description="the event types sent", examples=[["call_settled"]]
    )


class Webhook(m.Answer):
    webhook_id: int
    url: str
    event_types: list[m.EventType]
    status: m.WebhookStatus
    created_at: m.Timestamp
    disabled_at: m.Timestamp | None = Field(description="when it failed past its retry time")
    disabled_reason: str | None


class WebhookMade(Webhook):
    secret: str = Field(
        description="signs every delivery (Billing-Signature): shown in this answer only"
    )


class WebhooksPage(m.Answer):
    webhooks: list[Webhook]


class Delivery(m.Answer):
    event_id: int
    status: m.DeliveryStatus
    attempts: int = Field(description="POSTs made (since its last replay)")
    next_at: m.Timestamp | None = Field(description="a pending delivery's next attempt")
    first_failed_at: m.Timestamp | None
    last_attempt_at: m.Timestamp | None
    last_status: int | None = Field(description="the endpoint's last HTTP status, if it answered")
    last_error: str | None
    delivered_at: m.Timestamp | None


class DeliveriesPage(m.Answer):
    deliveries: list[Delivery]
    next_before: int | None = Field(description="pass as `before` for the next page")


class Replay(m.Body):
    from_event_id: int = Field(ge=1, le=AMOUNT_MAX, description="send again from this event on")


router = APIRouter()
WebhookId = Path(ge=1, le=AMOUNT_MAX, description="the webhook's id")
PerPage = Query(20, ge=1, le=store.DELIVERIES_PAGE_MAX, description="deliveries per page")
Before = Query(None, ge=1, le=AMOUNT_MAX, description="the last event id of the last page")
OnlyStatus = Query(None, description="only the deliveries in this state")


def _found(row: dict | None, webhook_id: int) -> dict:
    if row is None or row["status"] == store.DELETED:
        raise UnknownWebhook(f"no webhook {webhook_id}")
    return row


@router.post(
    "/v1/webhooks",
    summary="register an endpoint for events: its secret is in this answer only",
    status_code=201,
    response_model=WebhookMade,
    responses=m.errors(),
    openapi_extra=ADMIN,
    operation_id="create_webhook",
    tags=["webhooks"],
)
async def create_webhook(request: Request, body: NewWebhook):
    engine = await engine_of(request)
    made = await webhooks.register(
        await engine.pool(), body.url, body.event_types, engine.config.webhooks
    )
    return answer(made, 201)


@router.get(
    "/v1/webhooks",
    summary="every endpoint not deleted (never their secrets)",
    response_model=WebhooksPage,
    responses=m.errors(),
    openapi_extra=READ,
    operation_id="list_webhooks",
    tags=["webhooks"],
)
async def list_webhooks(request: Request):
    return answer({"webhooks": await store.listed(await pool_of(request))})


@router.get(
    "/v1/webhooks/{webhook_id}",
    summary="an endpoint",
    response_model=Webhook,
    responses=m.errors(404),
    openapi_extra=READ,
    operation_id="get_webhook",
    tags=["webhooks"],
)
async def get_webhook(request: Request, webhook_id: int = WebhookId):
    return answer(_found(await store.get(await pool_of(request), webhook_id), webhook_id))


@router.delete(
    "/v1/webhooks/{webhook_id}",
    summary="stop sending to an endpoint, for good",
    response_model=Webhook,
    responses=m.errors(404),
    openapi_extra=ADMIN,
    operation_id="delete_webhook",
    tags=["webhooks"],
)
async def delete_webhook(request: Request, webhook_id: int = WebhookId):
    deleted = await store.delete(await pool_of(request), webhook_id)
    if deleted is None:
        raise UnknownWebhook(f"no webhook {webhook_id}")
    return answer(deleted)


@router.get(
    "/v1/webhooks/{webhook_id}/deliveries",
    summary="an endpoint's deliveries, newest event first, paged",
    response_model=DeliveriesPage,
    responses=m.errors(404),
    openapi_extra=READ,
    operation_id="list_webhook_deliveries",
    tags=["webhooks"],
)
async def list_webhook_deliveries(
    request: Request,
    webhook_id: int = WebhookId,
    limit: int = PerPage,
    before: int | None = Before,
    status: m.DeliveryStatus | None = OnlyStatus,
):
    pool = await pool_of(request)
    _found(await store.get(pool, webhook_id), webhook_id)
    out = await store.deliveries(pool, webhook_id, limit, before, status)
    full = len(out) == limit
    return answer({"deliveries": out, "next_before": out[-1]["event_id"] if full else None})


@router.post(
    "/v1/webhooks/{webhook_id}/replay",
    summary="send an endpoint its events again from an event id on (and enable it)",
    response_model=Webhook,
    responses=m.errors(404),
    openapi_extra=ADMIN,
    operation_id="replay_webhook",
    tags=["webhooks"],
)
async def replay_webhook(request: Request, body: Replay, webhook_id: int = WebhookId):
    row = await store.replay(await pool_of(request), webhook_id, body.from_event_id)
    return answer(_found(row, webhook_id))
