"""The HTTP API's routes (engine/http.py builds the app around them): each takes a typed body
(engine/http_schema.py), asks the Engine, and answers with what the Engine said."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from actors.errors import BillingError, EngineUnavailable
from engine import http_schema as m
from engine.http import RETRY_AFTER_S, answer
from persistence.store import CALLS_PAGE_MAX

log = logging.getLogger("billing.http")

EVENTS_POLL_S = 0.25  # how often an idle event stream looks for new events
EVENTS_KEEPALIVE_S = 15.0  # an idle stream sends a comment this often
EVENTS_PAGE = 200  # events read per poll

router = APIRouter()

UserId = Path(ge=1, description="the user's or listener's id")
CallId = Path(ge=1, description="the call's id")


def engine_of(request: Request):
    return request.app.state.get_engine()


@router.get("/healthz", summary="the service is alive", response_model=m.Health)
async def healthz():
    return answer({"status": "ok"})


@router.get(
    "/readyz",
    summary="writer, PostgreSQL and Redis answer; writer lag bounded",
    response_model=m.Readiness,
    responses={503: {"model": m.Readiness, "description": "not ready: `checks` says why"}},
)
async def readyz(request: Request):
    try:
        out = await (await engine_of(request)).readiness()
    except (EngineUnavailable, ConnectionError, RuntimeError) as e:
        out = {"ready": False, "checks": {"engine": f"{type(e).__name__}: {e}"}}
    if out["ready"]:
        return answer(out)
    return JSONResponse(out, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})


@router.post(
    "/v1/users",
    status_code=201,
    summary="create a user or listener",
    response_model=m.UserCreated,
    responses=m.errors(),
)
async def create_user(request: Request, body: m.NewUser):
    engine = await engine_of(request)
    return answer({"user_id": await engine.create_user(body.name, body.role)}, 201)


@router.get(
    "/v1/wallets/{user_id}",
    summary="balance and earnings now",
    response_model=m.Balance,
    responses=m.errors(404),
)
async def wallet(request: Request, user_id: int = UserId):
    return answer(await (await engine_of(request)).balance(user_id))


@router.post(
    "/v1/wallets/{user_id}/top-ups",
    summary="add coins (once per idempotency key)",
    response_model=m.Transfer,
    responses=m.errors(404, 409),
)
async def top_up(request: Request, body: m.TopUp, user_id: int = UserId):
    engine = await engine_of(request)
    return answer(await engine.top_up(user_id, body.amount, body.tx_type, body.idempotency_key))


@router.post(
    "/v1/wallets/{user_id}/spends",
    summary="take coins outside a call",
    response_model=m.Transfer,
    responses=m.errors(402, 404, 409),
)
async def spend(request: Request, body: m.Spend, user_id: int = UserId):
    engine = await engine_of(request)
    return answer(await engine.spend(user_id, body.amount, body.idempotency_key))


@router.post(
    "/v1/wallets/{user_id}/withdrawals",
    summary="pay out a listener's earnings",
    response_model=m.Transfer,
    responses=m.errors(402, 404, 409),
)
async def withdraw(request: Request, body: m.Withdrawal, user_id: int = UserId):
    engine = await engine_of(request)
    return answer(await engine.withdraw(user_id, body.amount_paise, body.idempotency_key))


@router.post(
    "/v1/calls",
    status_code=201,
    summary="connect a call: minute 1 is charged now",
    response_model=m.Call,
    responses=m.errors(402, 404, 409),
)
async def start_call(request: Request, body: m.NewCall):
    engine = await engine_of(request)
    call = await engine.start_call(
        body.user_id, body.listener_id, body.call_type, body.idempotency_key
    )
    return answer(call, 201)


@router.get(
    "/v1/calls/{call_id}",
    summary="a call now (live, or as stored once ended)",
    response_model=m.Call,
    responses=m.errors(404),
)
async def get_call(request: Request, call_id: int = CallId):
    return answer(await (await engine_of(request)).get_call(call_id))


@router.post(
    "/v1/calls/{call_id}/end",
    summary="end a call; idempotent",
    response_model=m.Settlement,
    responses=m.errors(404),
)
async def end_call(request: Request, body: m.EndCall | None = None, call_id: int = CallId):
    reason = "hangup" if body is None else body.reason
    return answer(await (await engine_of(request)).end_call(call_id, reason))


@router.get(
    "/v1/users/{user_id}/calls",
    summary="a person's calls, newest first, paged",
    response_model=m.CallsPage,
    responses=m.errors(),
)
async def calls_of(
    request: Request,
    user_id: int = UserId,
    limit: int = Query(20, ge=1, le=CALLS_PAGE_MAX, description="calls per page"),
    before: int | None = Query(None, ge=1, description="the last call id of the last page"),
):
    calls = await (await engine_of(request)).calls_of(user_id, limit, before)
    return answer({"calls": calls, "next_before": calls[-1]["call_id"] if calls else None})


@router.post(
    "/v1/presence/{user_id}/heartbeat",
    summary="the user is online",
    response_model=m.Online,
    responses=m.errors(),
)
async def heartbeat(request: Request, user_id: int = UserId):
    return answer({"online": await (await engine_of(request)).heartbeat(user_id)})


@router.get(
    "/v1/events",
    summary="call events as server-sent events (resume with Last-Event-ID)",
    description="text/event-stream: `id`, `event` (call_started, low_balance, call_dropped, "
    "call_settled) and `data` (JSON) per event, after `Last-Event-ID` (or `after`). "
    "With `Accept: application/json`, one page as a JSON list instead.",
    response_model=m.EventsPage,
    responses=m.errors(),
)
async def events(
    request: Request,
    after: int = Query(0, ge=0, description="resume after this event id"),
    user_id: int | None = Query(None, ge=1, description="only this person's calls"),
    last_event_id: str | None = Header(None),
):
    engine = await engine_of(request)
    if last_event_id:
        try:
            after = int(last_event_id)
        except ValueError:
            given = f"got {last_event_id!r}"
            raise BillingError(f"Last-Event-ID must be an event id, {given}") from None
    first = await engine.events(after, EVENTS_PAGE, user_id)
    if "application/json" in request.headers.get("accept", ""):
        return answer({"events": first})
    return StreamingResponse(
        _stream(engine, request, after, user_id, first),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _stream(engine, request: Request, after: int, user_id, page: list) -> AsyncIterator:
    idle_since = time.monotonic()
    yield "retry: 1000\n\n"
    while not await request.is_disconnected():
        for e in page:
            after = e["id"]
            yield f"id: {e['id']}\nevent: {e['type']}\ndata: {json.dumps(e)}\n\n"
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
