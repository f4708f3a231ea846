"""The door of the HTTP API: who may come in, and how much they may bring.

A pure ASGI middleware in front of every route (Starlette's @app.middleware("http") runs each
request through two extra tasks and a stream: 15 % of a replica's CPU here). In order:

1. a route that declares no scope (health, readiness, the docs) is open;
2. a source past KEY_FAILURES_MAX wrong keys in its window is answered 429 with Retry-After;
3. a request without a live key is 401 (a wrong key counts against its source);
4. a key without the scope the route declares is 403, naming the scope;
5. a body over `body_bytes_max` is 413 before any route reads it: by its Content-Length at
   once, else as soon as that many bytes arrived; the route then reads the body the door read.

Every route's scope is declared once, in its OpenAPI `security` (engine/http/table.py and
engine/http/routes.py), and read from the app here, so the schema says what the door does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from engine.http.answers import error
from engine.http.haproxy import CLIENT_HEADER as CLIENT
from engine.keys import KEYS_REFRESH_S, FailedKeys, Key, KeyRing

log = logging.getLogger("billing.http")

SECURITY_SCHEME = "apiKey"  # the OpenAPI security scheme every scoped route names
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# A replica that could not read the keys for this long refuses what needs a key (503) rather
# than keep honouring keys that may have been revoked since.
KEYS_STALE_S = 30.0
FIRST_READ_S_MAX = 5.0  # a replica's first request waits this long at most for the keys
LOOPBACK = ("127.", "::1", "::ffff:127.")
CLIENT_HEADER = CLIENT.encode()


def scope_security(scope: str) -> list[dict]:
    """A route's OpenAPI `security`: the key scheme, with the scope it needs (OpenAPI 3.1 lets
    a non-OAuth scheme list the roles a route requires)."""
    return [{SECURITY_SCHEME: [scope]}]


# A route's `openapi_extra` naming the scope it needs (its `security`, which the door reads).
ADMIN, CALLS, READ = ({"security": scope_security(s)} for s in ("admin", "calls", "read"))


def declared_scopes(app) -> list[tuple[str, str, str | None]]:
    """(method, path, scope) of every route of `app`: the scope its `security` names, or None
    for a route that is open (it declares none: health, readiness, the docs and the schema)."""
    out = []
    for r in app.routes:
        security = (getattr(r, "openapi_extra", None) or {}).get("security") or []
        needed = [s for req in security for s in req.get(SECURITY_SCHEME, ())]
        for method in getattr(r, "methods", None) or ():
            out.append((method, r.path, needed[0] if needed else None))
    return out


class ScopeMap:
    """The scope a request needs, by its method and path: a `{name}` segment of a route's path
    matches any one segment (an id that is not a number still needs the route's scope before
    FastAPI refuses it). OPEN: the route is open; None: no route has that path (any live key
    may then be told so, 404)."""

    OPEN = ""

    def __init__(self, declared) -> None:
        self.routes: dict[tuple[str, int], list] = {}
        for method, path, scope in declared:
            parts = tuple(path.strip("/").split("/"))
            shape = tuple(None if p.startswith("{") else p for p in parts)
            self.routes.setdefault((method, len(parts)), []).append((shape, scope or self.OPEN))
        for candidates in self.routes.values():  # the most literal match first
            candidates.sort(key=lambda c: sum(p is None for p in c[0]))

    def needed(self, method: str, path: str) -> str | None:
        parts = path.strip("/").split("/")
        for shape, scope in self.routes.get((method, len(parts)), ()):
            if all(s is None or s == p for s, p in zip(shape, parts, strict=True)):
                return scope
        return None


@dataclass
class Keys:
    """The keys a replica checks: the live ones (`ring`), read again every KEYS_REFRESH_S with
    `read_live()` when given, and the failed-key count per source."""

    ring: KeyRing
    read_live: Callable[[], Awaitable[list[Key]]] | None = None
    failed: FailedKeys = field(default_factory=FailedKeys)
    read_at: float | None = None  # when the keys were last read here (monotonic)
    _task: asyncio.Task | None = None
    _first: asyncio.Event | None = None

    async def keep_fresh(self) -> None:
        """At a replica's first request: read the keys, then again every KEYS_REFRESH_S in the
        background (so a key made since the replica was deployed is known at once)."""
        if self.read_live is None:
            return
        if self._task is None:
            self.read_at = time.monotonic()  # the keys it was deployed with count as just read
            self._first = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._refresh())
        if not self._first.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._first.wait(), FIRST_READ_S_MAX)

    async def _refresh(self) -> None:
        while True:
            try:
                self.ring.replace(await self.read_live())
                self.read_at = time.monotonic()
            except Exception as e:  # noqa: BLE001 - keep the last keys, say so, try again
                log.warning("could not read the API keys: %s", e)
            self._first.set()
            await asyncio.sleep(KEYS_REFRESH_S)

    def stale_s(self) -> float | None:
        if self.read_at is None:
            return None
        age = time.monotonic() - self.read_at
        return age if age > KEYS_STALE_S else None


def source_of(scope) -> str:
    """The address a request came from: the peer, or for a peer on loopback (HAProxy, which
    sets CLIENT_HEADER to its client's address), the address that header names."""
    peer = (scope.get("client") or ("?", 0))[0]
    if peer.startswith(LOOPBACK):
        given = next((v for k, v in scope["headers"] if k == CLIENT_HEADER), b"")
        return given.decode("latin-1").strip() or peer
    return peer


def bearer(scope) -> str:
    given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
    kind, _, token = given.decode("latin-1").partition(" ")
    return token.strip() if kind.lower() == "bearer" else ""


def too_many(source: str, wait_s: int):
    denied = error(429, "TooManyFailedKeys", f"too many wrong keys from {source}")
    denied.headers["Retry-After"] = str(wait_s)
    return denied


class TooLarge(Exception):
    pass


async def read_body(receive, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b""
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the request body is over {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replaying(body: bytes, receive):
    """A `receive` that gives the body the door read, then what the connection says next."""
    sent = False

    async def again():
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return again


class Guard:
    """The door as ASGI middleware: keys (None: no authentication, `--insecure-no-auth`),
    scopes, the body bound; every request reported to `on_request(method, route, status,
    seconds)`; the table's routes answered by `fast` (engine/http/fast.py)."""

    def __init__(self, app, api, keys: Keys | None, body_bytes_max: int, on_request, fast) -> None:
        self.app = app
        self.api = api  # the FastAPI app, whose routes declare their scopes
        self.keys = keys
        self.body_bytes_max = body_bytes_max
        self.on_request = on_request
        self.fast = fast
        self._scopes: ScopeMap | None = None

    def scopes(self) -> ScopeMap:
        if self._scopes is None:  # the app's routes are all added by the first request
            self._scopes = ScopeMap(declared_scopes(self.api))
        return self._scopes

    async def refused(self, scope):
        """The answer of a request that may not come in, or None."""
        needed = self.scopes().needed(scope["method"], scope["path"])
        if needed == ScopeMap.OPEN or self.keys is None:
            return None
        await self.keys.keep_fresh()
        source = source_of(scope)
        wait_s = self.keys.failed.blocked(source)
        if wait_s is not None:
            return too_many(source, wait_s)
        stale_s = self.keys.stale_s()
        if stale_s is not None:
            return error(503, "EngineUnavailable", f"keys not read for {stale_s:.0f} s")
        given = bearer(scope)
        key = self.keys.ring.find(given)
        if key is None:
            wait_s = await self.keys.failed.failed(source) if given else None
            if wait_s is not None:
                return too_many(source, wait_s)
            denied = error(401, "Unauthorized", "a valid API key is required (Bearer)")
            denied.headers["WWW-Authenticate"] = "Bearer"
            return denied
        scope.setdefault("state", {})["api_key"] = key.name  # who asks (a key revoking itself)
        if needed is not None and needed not in key.scopes:
            return error(
                403,
                "Forbidden",
                f"this route needs the scope {needed!r}; key {key.name!r} has "
                f"{', '.join(key.scopes)}",
            )
        return None

    async def bounded(self, scope, receive):
        """`receive` with the body read already (at most body_bytes_max bytes), or TooLarge."""
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None and (not length.isdigit() or int(length) > self.body_bytes_max):
            raise TooLarge(f"the request body is over {self.body_bytes_max} bytes")
        if scope["method"] not in BODY_METHODS:
            return receive
        return replaying(await read_body(receive, self.body_bytes_max), receive)

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
            denied = await self.refused(scope)
            if denied is None:
                try:
                    receive = await self.bounded(scope, receive)
                except TooLarge as e:
                    denied = error(413, "InvalidInput", str(e))
            if denied is not None:
                await denied(scope, receive, sending)
                return
            hot = self.fast.match(scope)
            if hot is None:
                await self.app(scope, receive, sending)
            else:
                await self.fast.serve(*hot, scope, receive, sending)
        finally:
            if self.on_request is not None:
                route = hot[0].path if hot else getattr(scope.get("route"), "path", "unmatched")
                self.on_request(scope["method"], route, status, time.perf_counter() - started)
