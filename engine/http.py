"""The HTTP/JSON API: a FastAPI app over one Engine. `billing-engine up` serves it on Ray Serve
(engine/runtime/serving.py); tests drive it in-process. Its routes are in engine/http_routes.py,
its contract (every body, answer and error typed) in engine/http_schema.py.

A body that does not fit its model is refused here with a message naming the field; what the
model cannot say (an unknown user, a listener who is busy) the Engine refuses, with the same
message as in the Python API. Errors are `{"error": {"type", "message"}}`:

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

import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from actors.errors import BillingError, EngineUnavailable
from engine import http_table
from engine.http_answers import (
    error,
    internal_message,
    status_of,
    validation_message,
)
from engine.http_fast import FastPath

log = logging.getLogger("billing.http")


async def refused(_request: Request, exc: Exception) -> JSONResponse:
    return error(status_of(exc), type(exc).__name__, str(exc))


async def malformed(_request: Request, exc: RequestValidationError) -> JSONResponse:
    return error(400, "InvalidInput", validation_message(exc.errors()))


async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
    kind = "NotFound" if exc.status_code == 404 else "HTTPError"
    return error(exc.status_code, kind, str(exc.detail))


async def internal(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("request failed")
    return error(500, "InternalError", internal_message(exc))


ERROR_HANDLERS = {
    BillingError: refused,
    EngineUnavailable: refused,
    RequestValidationError: malformed,
    StarletteHTTPException: http_error,
    Exception: internal,
}


def token_digest(token: str) -> str:
    """What the service keeps of the API token: its SHA-256, never the token."""
    return hashlib.sha256(token.encode()).hexdigest()


class Guard:
    """Pure ASGI middleware in front of the app: the bearer token, and every request reported
    to `on_request(method, route, status, seconds)`. (Starlette's @app.middleware("http")
    runs each request through two extra tasks and a stream: 15 % of a replica's CPU here.)"""

    def __init__(self, app, token_sha256: str | None, on_request, fast) -> None:
        self.app = app
        self.token_sha256 = token_sha256
        self.on_request = on_request
        self.fast = fast

    def authorized(self, scope) -> bool:
        if self.token_sha256 is None or scope["path"] in OPEN_PATHS:
            return True
        given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        scheme, _, token = given.decode("latin-1").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token_digest(token.strip()), self.token_sha256
        )

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500

        async def sending(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        hot = None
        try:
            if self.authorized(scope):
                hot = self.fast.match(scope)
                if hot is None:
                    await self.app(scope, receive, sending)
                else:
                    await self.fast.serve(*hot, scope, receive, sending)
            else:
                denied = error(401, "Unauthorized", "a valid bearer token is required")
                denied.headers["WWW-Authenticate"] = "Bearer"
                await denied(scope, receive, sending)
        finally:
            if self.on_request is not None:
                route = hot[0].path if hot else getattr(scope.get("route"), "path", "unmatched")
                self.on_request(scope["method"], route, status, time.perf_counter() - started)


OPEN_PATHS = frozenset({"/healthz", "/readyz", "/docs", "/openapi.json", "/docs/oauth2-redirect"})


def build_app(
    get_engine: Callable[[], Awaitable[Any]],
    token_sha256: str | None = None,
    on_request: Callable[[str, str, int, float], None] | None = None,
    hot_path: bool = True,
) -> FastAPI:
    """The API over the engine `get_engine()` returns. With `token_sha256`, every route but
    /healthz, /readyz and the docs needs `Authorization: Bearer <token>`. `on_request(method,
    route, status, seconds)` is told of every request (for metrics). Without `hot_path`,
    FastAPI answers every request (the same table's routes, the same answers, slower)."""
    app = FastAPI(
        title="billing engine",
        version="1",
        description="Per-minute billing of live calls. Errors: "
        '`{"error": {"type", "message"}}`; 402 is insufficient coins or earnings.',
    )
    app.state.get_engine = get_engine
    fast = FastPath(get_engine if hot_path else None)
    app.add_middleware(Guard, token_sha256=token_sha256, on_request=on_request, fast=fast)
    for kind, handler in ERROR_HANDLERS.items():
        app.add_exception_handler(kind, handler)
    from engine.http_routes import router  # its routes answer with the helpers above

    # The routes themselves, not include_router's wrapper: one routing step per request.
    app.router.routes.extend(router.routes)
    http_table.register(app)
    app.openapi = lambda: _openapi(app)
    return app


def _openapi(app: FastAPI) -> dict:
    """FastAPI's schema without the 422 it declares on every route: a body or path that does
    not fit is answered 400 with the error body (`malformed`), as every refusal is."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        spec = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        for methods in spec["paths"].values():
            for op in methods.values():
                op["responses"].pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            spec["components"]["schemas"].pop(name, None)
        app.openapi_schema = spec
    return app.openapi_schema
