"""The HTTP API's routes that are not requests to bill (engine/http/table.py has those):
health, readiness, a person's calls by page, and the event stream. Each answers with what the
Engine said, documented by its model in engine/http/contract.py."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import StreamingResponse

import engine.http.contract as m
from actors.errors import BillingError, EngineUnavailable
from actors.money import AMOUNT_MAX
from actors.times import iso_times
from engine.http.answers import RETRY_AFTER_S, JSONLine, answer
from engine.http.door import scope_security
from persistence.events import READ_LIMIT_MAX
from persistence.store import CALLS_PAGE_MAX

log = logging.getLogger("billing.http")

EVENTS_POLL_S = 0.25  # how often an idle event stream looks for new events
EVENTS_KEEPALIVE_S = 15.0  # an idle stream sends a comment this often
EVENTS_PAGE = 200  # events read per poll

router = APIRouter()

# One message of the stream (OpenAPI 3.1: a text/event-stream's schema describes each event).
SSE_EVENT = {
    "type": "object",
    "properties": {
        "id": {
            "type": "string",
            "pattern": "^[0-9]+$",
            "description": "the event's id: send it back as `Last-Event-ID` to resume after it",
        },
        "event": {"$ref": "#/components/schemas/EventType"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "description": "the event, as `GET /v1/events` gives it",
        },
    },
    "required": ["id", "event", "data"],
}
EventsAfter = Query(0, ge=0, le=AMOUNT_MAX, description="resume after this event id")
EventsOf = Query(None, ge=1, le=AMOUNT_MAX, description="only this person's calls")
# At most 15 digits: every id it says is below 2**53 - 1, the largest event id asked for.
LastEventId = Header(
    None, pattern=r"^[0-9]{1,15}$", description="resume after this event id (a stream's)"
)
UserId = Path(ge=1, le=AMOUNT_MAX, description="the user's or listener's id")


def engine_of(request: Request):
    return request.app.state.get_engine()


async def pool_of(request: Request):
    """The engine's PostgreSQL pool, for the routes that read or write it themselves (keys,
    webhooks)."""
    return await (await engine_of(request)).pool()


@router.get(
    "/healthz",
    summary="the service is alive",
    response_model=m.Health,
    operation_id="get_health",
    tags=["health"],
)
async def healthz():
    return answer({"status": "ok"})


@router.get(
    "/readyz",
    summary="writer, PostgreSQL and Redis answer; writer lag bounded",
    response_model=m.Readiness,
    operation_id="get_readiness",
    tags=["health"],
    responses={503: {"model": m.Readiness, "description": "not ready: `checks` says why"}},
)
async def readyz(request: Request):
    try:
        out = await (await engine_of(request)).readiness()
    except (EngineUnavailable, ConnectionError, RuntimeError) as e:
        out = {"ready": False, "checks": {"engine": f"{type(e).__name__}: {e}"}}
    if out["ready"]:
        return answer(out)
    return JSONLine(out, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})


@router.get(
    "/v1/users/{user_id}/calls",
    summary="a person's calls, newest first, paged",
    response_model=m.CallsPage,
    operation_id="list_calls",
    tags=["calls"],
    responses=m.errors(),
    openapi_extra={"security": scope_security("read")},
)
async def calls_of(
    request: Request,
    user_id: int = UserId,
    limit: int = Query(20, ge=1, le=CALLS_PAGE_MAX, description="calls per page"),
    before: int | None = Query(
        None, ge=1, le=AMOUNT_MAX, description="the last call id of the last page"
    ),
):
    calls = await (await engine_of(request)).calls_of(user_id, limit, before)
    return answer({"calls": calls, "next_before": calls[-1]["call_id"] if calls else None})


@router.get(
    "/v1/events",
    summary="call events, a page: oldest first, after an event id",
    description="Up to `limit` events after `after` (or `Last-Event-ID`), oldest first. A client "
    "that keeps the last id it handled and asks again after it sees every event at least once. "
    "(`GET /v1/events/stream` sends them as they come; so does this path for a client that asks "
    "for `Accept: text/event-stream`.)",
    response_model=m.EventsPage,
    operation_id="list_events",
    tags=["events"],
    responses=m.errors(),
    openapi_extra={"security": scope_security("read")},
)
async def events(
    request: Request,
    after: int = EventsAfter,
    user_id: int | None = EventsOf,
    limit: int = Query(EVENTS_PAGE, ge=1, le=READ_LIMIT_MAX, description="events in the page"),
    last_event_id: str | None = LastEventId,
):
    if "text/event-stream" in request.headers.get("accept", ""):
        return await events_stream(request, after, user_id, last_event_id)
    after = _resumed(after, last_event_id)
    return answer({"events": await (await engine_of(request)).events(after, limit, user_id)})


@router.get(
    "/v1/events/stream",
    summary="call events as they come: server-sent events, resumable",
    description="An endless text/event-stream: per event `id`, `event` (its type) and `data` "
    "(the event as `GET /v1/events` gives it), after `after` or `Last-Event-ID`; a comment every "
    f"{EVENTS_KEEPALIVE_S:.0f} s when idle. A client that reconnects with the last id it read "
    "misses nothing.",
    response_class=StreamingResponse,
    operation_id="stream_events",
    tags=["events"],
    responses=m.errors() | {200: {"content": {"text/event-stream": {"schema": SSE_EVENT}}}},
    openapi_extra={"security": scope_security("read")},
)
async def events_stream(
    request: Request,
    after: int = EventsAfter,
    user_id: int | None = EventsOf,
    last_event_id: str | None = LastEventId,
):
    after = _resumed(after, last_event_id)
    engine = await engine_of(request)
    first = await engine.events(after, EVENTS_PAGE, user_id)
    return StreamingResponse(
        _stream(engine, request, after, user_id, first),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _resumed(after: int, last_event_id: str | None) -> int:
    """Where a page or a stream starts: after `Last-Event-ID` when given, else `after`."""
    if not last_event_id:
        return after
    try:
        return int(last_event_id)
    except ValueError:
        raise BillingError(f"Last-Event-ID must be an event id, got {last_event_id!r}") from None


async def _stream(engine, request: Request, after: int, user_id, page: list) -> AsyncIterator:
    idle_since = time.monotonic()
    yield "retry: 1000\n\n"
    while not await request.is_disconnected():
        for e in page:
            after = e["id"]
            yield f"id: {e['id']}\nevent: {e['type']}\ndata: {json.dumps(iso_times(e))}\n\n"
        if page:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since >= EVENTS_KEEPALIVE_S:
            idle_since = time.monotonic()
            yield ": keep-alive\n\n"
        if len(page) < EVENTS_PAGE:
            await asyncio.sleep(EVENTS_POLL_S)
        try:
            page = await engine.events(after, EVENTS_PAGE, user_id)
        except EngineUnavailable as e:
            log.warning("event stream: %s; trying again", e)
            page = []
