"""The HTTP/JSON API: a FastAPI app over one Engine. `billing-engine up` serves it on Ray Serve
(engine/runtime/serving.py); tests drive it in-process.

Bodies are passed to the Engine as sent, so a bad value is refused by the same check, with the
same message, as in the Python API. Errors are `{"error": {"type", "message"}}`:

| status | errors |
|---|---|
| 400 | InvalidInput and any other refusal of the request as sent; malformed JSON or path |
| 401 | a missing or wrong bearer token (when BILLING_API_TOKEN is set) |
| 402 | InsufficientCoins, InsufficientEarnings: the wallet cannot pay what was asked |
| 404 | UnknownUser, UnknownCall |
| 409 | PartyBusy, IdempotencyConflict |
| 503 | EngineUnavailable, CapacityExceeded: not now; `Retry-After` says when to retry |
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from actors.errors import (
    BillingError,
    CapacityExceeded,
    EngineUnavailable,
    IdempotencyConflict,
    InsufficientCoins,
    InsufficientEarnings,
    PartyBusy,
    UnknownCall,
    UnknownUser,
)

log = logging.getLogger("billing.http")

EVENTS_POLL_S = 0.25  # how often an idle event stream looks for new events
EVENTS_KEEPALIVE_S = 15.0  # an idle stream sends a comment this often
EVENTS_PAGE = 200  # events read per poll
RETRY_AFTER_S = 1

STATUS: list[tuple[type[BaseException], int]] = [
    (InsufficientCoins, 402),
    (InsufficientEarnings, 402),
    (UnknownUser, 404),
    (UnknownCall, 404),
    (PartyBusy, 409),
    (IdempotencyConflict, 409),
    (CapacityExceeded, 503),
    (BillingError, 400),
    (EngineUnavailable, 503),
]


def status_of(exc: BaseException) -> int:
    return next((code for kind, code in STATUS if isinstance(exc, kind)), 500)


def error(status: int, kind: str, message: str) -> JSONResponse:
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
    return JSONResponse(
        {"error": {"type": kind, "message": message}}, status_code=status, headers=headers
    )


def token_digest(token: str) -> str:
    """What the service keeps of the API token: its SHA-256, never the token."""
    return hashlib.sha256(token.encode()).hexdigest()


# -- bodies: documented, passed on as sent (the Engine checks them) --------------------------


class NewUser(BaseModel):
    name: Any = Field(description="display name", examples=["asha"])
    role: Any = Field("user", description="user (pays) or listener (earns)", examples=["user"])


class TopUp(BaseModel):
    amount: Any = Field(description="coins, a positive integer", examples=[100])
    tx_type: Any = Field("purchase", description="purchase, bonus or referral_bonus")
    idempotency_key: Any = Field(None, description="applied once per key", examples=["order-1"])


class Spend(BaseModel):
    amount: Any = Field(description="coins, a positive integer", examples=[10])
    idempotency_key: Any = Field(None, description="applied once per key")


class Withdrawal(BaseModel):
    amount_paise: Any = Field(description="paise, a positive integer", examples=[5000])
    idempotency_key: Any = Field(None, description="applied once per key")


class NewCall(BaseModel):
    user_id: Any = Field(description="the payer", examples=[1])
    listener_id: Any = Field(description="the listener", examples=[2])
    call_type: Any = Field("audio", description="audio or video")
    idempotency_key: Any = Field(None, description="a repeat returns the same call")


class EndCall(BaseModel):
    reason: Any = Field("hangup", description="hangup, insufficient_coins or expired")


def build_app(
    get_engine: Callable[[], Awaitable[Any]],
    token_sha256: str | None = None,
    on_request: Callable[[str, str, int, float], None] | None = None,
) -> FastAPI:
    """The API over the engine `get_engine()` returns. With `token_sha256`, every route but
    /healthz, /readyz and the docs needs `Authorization: Bearer <token>`. `on_request(method,
    route, status, seconds)` is told of every request (for metrics)."""
    app = FastAPI(
        title="billing engine",
        version="1",
        description="Per-minute billing of live calls. Errors: "
        '`{"error": {"type", "message"}}`; 402 is insufficient coins or earnings.',
    )
    open_paths = {"/healthz", "/readyz", "/docs", "/openapi.json", "/docs/oauth2-redirect"}

    @app.middleware("http")
    async def guard(request: Request, call_next):
        started = time.perf_counter()
        path = request.url.path
        if token_sha256 is not None and path not in open_paths:
            given = request.headers.get("authorization", "")
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                token_digest(token.strip()), token_sha256
            ):
                response = error(401, "Unauthorized", "a valid bearer token is required")
                response.headers["WWW-Authenticate"] = "Bearer"
                return response
        response = await call_next(request)
        if on_request is not None:
            route = request.scope.get("route")
            on_request(
                request.method,
                getattr(route, "path", "unmatched"),
                response.status_code,
                time.perf_counter() - started,
            )
        return response

    @app.exception_handler(BillingError)
    @app.exception_handler(EngineUnavailable)
    async def refused(_request: Request, exc: Exception) -> JSONResponse:
        return error(status_of(exc), type(exc).__name__, str(exc))

    @app.exception_handler(RequestValidationError)
    async def malformed(_request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors():
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
            parts.append(f"{where}: {e.get('msg')}")
        return error(400, "InvalidInput", "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "NotFound" if exc.status_code == 404 else "HTTPError"
        return error(exc.status_code, kind, str(exc.detail))

    @app.exception_handler(Exception)
    async def internal(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("request failed")
        return error(500, "InternalError", f"{type(exc).__name__}: see the service's log")

    @app.get("/healthz", summary="the service is alive")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", summary="writer, PostgreSQL and Redis answer; writer lag bounded")
    async def readyz():
        try:
            engine = await get_engine()
            out = await engine.readiness()
        except (EngineUnavailable, ConnectionError, RuntimeError) as e:
            out = {"ready": False, "checks": {"engine": f"{type(e).__name__}: {e}"}}
        if out["ready"]:
            return out
        headers = {"Retry-After": str(RETRY_AFTER_S)}
        return JSONResponse(out, status_code=503, headers=headers)

    @app.post("/v1/users", status_code=201, summary="create a user or listener")
    async def create_user(body: NewUser) -> dict:
        engine = await get_engine()
        return {"user_id": await engine.create_user(body.name, body.role)}

    @app.get("/v1/wallets/{user_id}", summary="balance and earnings now")
    async def wallet(user_id: int) -> dict:
        return await (await get_engine()).balance(user_id)

    @app.post("/v1/wallets/{user_id}/top-ups", summary="add coins (once per idempotency key)")
    async def top_up(user_id: int, body: TopUp) -> dict:
        engine = await get_engine()
        return await engine.top_up(user_id, body.amount, body.tx_type, body.idempotency_key)

    @app.post("/v1/wallets/{user_id}/spends", summary="take coins outside a call")
    async def spend(user_id: int, body: Spend) -> dict:
        return await (await get_engine()).spend(user_id, body.amount, body.idempotency_key)

    @app.post("/v1/wallets/{user_id}/withdrawals", summary="pay out a listener's earnings")
    async def withdraw(user_id: int, body: Withdrawal) -> dict:
        engine = await get_engine()
        return await engine.withdraw(user_id, body.amount_paise, body.idempotency_key)

    @app.post("/v1/calls", status_code=201, summary="connect a call: minute 1 is charged now")
    async def start_call(body: NewCall) -> dict:
        engine = await get_engine()
        return await engine.start_call(
            body.user_id, body.listener_id, body.call_type, body.idempotency_key
        )

    @app.get("/v1/calls/{call_id}", summary="a call now (live, or as stored once ended)")
    async def get_call(call_id: int) -> dict:
        return await (await get_engine()).get_call(call_id)

    @app.post("/v1/calls/{call_id}/end", summary="end a call; idempotent")
    async def end_call(call_id: int, body: EndCall | None = None) -> dict:
        reason = "hangup" if body is None else body.reason
        return await (await get_engine()).end_call(call_id, reason)

    @app.get("/v1/users/{user_id}/calls", summary="a person's calls, newest first, paged")
    async def calls_of(
        user_id: int,
        limit: int = Query(20, description="calls per page (at most 100)"),
        before: int | None = Query(None, description="the last call id of the previous page"),
    ) -> dict:
        calls = await (await get_engine()).calls_of(user_id, limit, before)
        return {"calls": calls, "next_before": calls[-1]["call_id"] if calls else None}

    @app.post("/v1/presence/{user_id}/heartbeat", summary="the user is online")
    async def heartbeat(user_id: int) -> dict:
        return {"online": await (await get_engine()).heartbeat(user_id)}

    @app.get(
        "/v1/events",
        summary="call events as server-sent events (resume with Last-Event-ID)",
        description="text/event-stream: `id`, `event` (call_started, low_balance, call_dropped, "
        "call_settled) and `data` (JSON) per event, after `Last-Event-ID` (or `after`). "
        "With `Accept: application/json`, one page as a JSON list instead.",
    )
    async def events(
        request: Request,
        after: int = Query(0, description="resume after this event id"),
        user_id: int | None = Query(None, description="only this person's calls"),
        last_event_id: str | None = Header(None),
    ):
        engine = await get_engine()
        if last_event_id:
            try:
                after = int(last_event_id)
            except ValueError:
                raise BillingError(
                    f"Last-Event-ID must be an event id, got {last_event_id!r}"
                ) from None
        first = await engine.events(after, EVENTS_PAGE, user_id)  # checks the arguments
        if "application/json" in request.headers.get("accept", ""):
            return {"events": first}
        return StreamingResponse(
            _stream(engine, request, after, user_id, first),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return app


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
