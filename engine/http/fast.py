"""The replica's hot path: the table's routes (engine/http/table.py) answered in plain ASGI,
without FastAPI's request machinery.

Measured here at saturation (py-spy of the replica, top-ups at concurrency 50): FastAPI's
stack (its two exception middlewares, the router, dependency solving, the request object, the
response model) took about a third of the replica's CPU, and the replica is the one process
every HTTP request crosses. This path does what those steps do for these routes: match the
method and path, turn the ids into integers, validate the body with the route's model
(pydantic's own JSON parser, so a bad field gets the same message), ask the Engine, and
answer or refuse exactly as the app's error handlers do. A request it does not recognise
(another path, an id that is not a number) goes on to FastAPI, which answers it as before.
"""

from __future__ import annotations

import logging
import urllib.parse

from pydantic import ValidationError

from actors.errors import BillingError, EngineUnavailable
from engine.http.answers import answer, error, internal_message, status_of, validation_message
from engine.http.table import ROUTES, Route

log = logging.getLogger("billing.http")


class FastPath:
    def __init__(self, get_engine) -> None:
        """Serve the table's routes with `get_engine()`'s engine; None: serve none (FastAPI
        answers everything)."""
        self.get_engine = get_engine
        self.routes: dict[tuple[str, int, tuple[str, ...]], Route] = {}
        for r in ROUTES if get_engine is not None else ():
            self.routes[(r.method, len(r.shape), r.shape)] = r

    def match(self, scope) -> tuple[Route, dict[str, int]] | None:
        parts = scope["path"].strip("/").split("/")
        shape = tuple("{}" if p.isdigit() and p.isascii() else p for p in parts)
        route = self.routes.get((scope["method"], len(shape), shape))
        if route is None:
            return None
        numbers = [int(p) for p, s in zip(parts, shape, strict=True) if s == "{}"]
        return route, dict(zip(route.ids, numbers, strict=True))

    async def serve(self, route: Route, ids: dict, scope, receive, send) -> None:
        try:
            body = None
            if route.query is not None:
                query = scope.get("query_string", b"").decode()
                given = urllib.parse.parse_qsl(query, keep_blank_values=True)  # `?after=`: ""
                known = route.query.model_fields  # others are ignored, as FastAPI does
                body = route.query.model_validate({k: v for k, v in given if k in known})
            if route.body is not None:
                # The door (engine/http/door.py) read the body, bounded, and hands it over whole
                # in one message.
                body = route.read_body((await receive()).get("body", b""))
            engine = await self.get_engine()
            response = answer(await route.ask(engine, body, **ids), route.status)
        except ValidationError as e:
            response = error(400, "InvalidInput", validation_message(e.errors()))
        except (BillingError, EngineUnavailable) as e:
            response = error(status_of(e), type(e).__name__, str(e))
        except Exception as e:  # noqa: BLE001 - a bug: logged, answered 500 as the app does
            log.exception("request failed")
            response = error(500, "InternalError", internal_message(e))
        await response(scope, receive, send)
