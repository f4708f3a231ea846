"""The HTTP/JSON API: a FastAPI app over one Engine. `billing-engine up` serves it on Ray Serve
(engine/http/serving.py); tests drive it in-process. Its routes are in engine/http/routes.py,
its contract (every body, answer and error typed) in engine/http/contract.py.

A body that does not fit its model is refused here with a message naming the field; what the
model cannot say (an unknown user, a listener who is busy) the Engine refuses, with the same
message as in the Python API. Errors are `{"error": {"type", "message"}}`:

| status | errors |
|---|---|
| 400 | InvalidInput and any other refusal of the request as sent; malformed JSON or path |
| 401 | a missing or wrong API key (engine/http/door.py) |
| 402 | InsufficientCoins, InsufficientEarnings: the wallet cannot pay what was asked |
| 403 | a key without the scope the route needs |
| 404 | Unknown{User,Call,Payout,Key,Webhook,Offer}: no such thing; an unknown route |
| 409 | PartyBusy, IdempotencyConflict |
| 413 | a body over the door's bound |
| 429 | a source past its wrong keys; `Retry-After` says when to try again |
| 503 | EngineUnavailable, CapacityExceeded: not now; `Retry-After` says when to retry |
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import TypeAdapter
from starlette.exceptions import HTTPException as StarletteHTTPException

import engine.http.contract as m
import engine.http.table as http_table
from actors.errors import BillingError, EngineUnavailable
from engine.http.answers import (
    JSONLine,
    error,
    internal_message,
    status_of,
    validation_message,
)
from engine.http.door import SECURITY_SCHEME, Guard, Keys
from engine.http.fast import FastPath
from engine.http.options import BODY_BYTES_MAX

log = logging.getLogger("billing.http")


async def refused(_request: Request, exc: Exception) -> JSONResponse:
    return error(status_of(exc), type(exc).__name__, str(exc))


async def malformed(_request: Request, exc: RequestValidationError) -> JSONResponse:
    return error(400, "InvalidInput", validation_message(exc.errors()))


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    kind = "NotFound" if exc.status_code == 404 else "HTTPError"
    answered = error(exc.status_code, kind, str(exc.detail))
    answered.headers.update(exc.headers or {})
    if exc.status_code == 405:  # `Allow`: every method of the path (Starlette names one route's)
        path = request.url.path
        methods = {m for r in request.app.routes if isinstance(r, APIRoute)
                   and r.path_regex.match(path) for m in r.methods}  # fmt: skip
        answered.headers["Allow"] = ", ".join(sorted(methods))
    return answered


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


def build_app(
    get_engine: Callable[[], Awaitable[Any]],
    keys: Keys | None = None,
    on_request: Callable[[str, str, int, float], None] | None = None,
    hot_path: bool = True,
    body_bytes_max: int = BODY_BYTES_MAX,
) -> FastAPI:
    """The API over the engine `get_engine()` returns. With `keys`, every route that declares a
    scope needs a live key that has it (engine/http/door.py); None: no authentication at all.
    `on_request(method, route, status, seconds)` is told of every request (for metrics).
    Without `hot_path`, FastAPI answers every request (the same table's routes, the same
    answers, slower)."""
    app = FastAPI(
        default_response_class=JSONLine,
        docs_url=None,  # engine/http/docs_pages.py serves both pages, assets included
        redoc_url=None,
        title="billing engine",
        version="1",
        description="Per-minute billing of live calls. Errors: "
        '`{"error": {"type", "message"}}`; 402 is insufficient coins or earnings.',
    )
    app.state.get_engine = get_engine
    fast = FastPath(get_engine if hot_path else None)
    app.add_middleware(
        Guard,
        api=app,
        keys=keys,
        body_bytes_max=body_bytes_max,
        on_request=on_request,
        fast=fast,
    )
    for kind, handler in ERROR_HANDLERS.items():
        app.add_exception_handler(kind, handler)
    from engine.http.docs_pages import router as docs_router
    from engine.http.key_routes import router as keys_router
    from engine.http.offer_routes import router as offers_router
    from engine.http.price_routes import router as prices_router
    from engine.http.routes import router  # its routes answer with the helpers above
    from engine.http.webhook_routes import router as webhooks_router

    # The routes themselves, not include_router's wrapper: one routing step per request.
    for r in (router, keys_router, webhooks_router, prices_router, offers_router, docs_router):
        app.router.routes.extend(r.routes)
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
                _one_body(op.get("requestBody"))
                _no_null_parameters(op)
        _drop_empty_examples(spec)
        for name in ("HTTPValidationError", "ValidationError"):
            spec["components"]["schemas"].pop(name, None)
        # The stream's `event` names its type: one enum, as every other idea has.
        spec["components"]["schemas"]["EventType"] = TypeAdapter(m.EventType).json_schema()
        spec["components"]["securitySchemes"] = {
            SECURITY_SCHEME: {
                "type": "http",
                "scheme": "bearer",
                "description": "an API key (`billing-engine keys create`): "
                "`Authorization: Bearer bk_...`; each route names the scope it needs",
            }
        }
        app.openapi_schema = spec
    return app.openapi_schema


def _drop_empty_examples(value) -> None:
    """Remove every `"example": {}`: FastAPI writes one for a parameter or body whose example
    is unset once the app was pickled (as Serve ships it to a replica: its "unset" marker is
    then another object), and a client generator reads it as an example."""
    if isinstance(value, dict):
        if value.get("example") == {}:
            del value["example"]
        for v in value.values():
            _drop_empty_examples(v)
    elif isinstance(value, list):
        for v in value:
            _drop_empty_examples(v)


def _no_null_parameters(op: dict) -> None:
    """A parameter left out is its null: its schema is what it is when given (a client that
    sent the text `null` for "none" would send a value the server refuses)."""
    for p in op.get("parameters", ()):
        alternatives = [s for s in p["schema"].pop("anyOf", []) if s != {"type": "null"}]
        if len(alternatives) == 1:
            p["schema"].update(alternatives[0])
        elif alternatives:
            p["schema"]["anyOf"] = alternatives


def _one_body(request_body: dict | None) -> None:
    """A body as a generated client should type it: an optional body is its model, not
    required (not "the model or null", which such a client cannot leave out); a body that is
    one of exclusive models (a top-up: a purchase or a bonus) is `oneOf` them."""
    if request_body is None:
        return
    schema = request_body["content"]["application/json"]["schema"]
    alternatives = [s for s in schema.pop("anyOf", []) if s != {"type": "null"}]
    if len(alternatives) == 1:
        schema.update(alternatives[0])
    elif alternatives:
        schema["oneOf"] = alternatives
