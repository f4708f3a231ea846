"""The HTTP API's door, in-process: every route's scope (a key without it is 403, naming it),
keys missing or wrong (401), wrong keys slowed per source (429), bodies bounded before any
route reads them (413), keys read again from PostgreSQL (a revoked key refused within a
second), and no key needed where there is no door (`--insecure-no-auth`)."""

import asyncio
import json
import time

import httpx
import pytest

from actors.errors import EngineUnavailable
from engine import keys
from engine.http.app import build_app
from engine.http.door import KEYS_STALE_S, Keys, declared_scopes
from engine.keys import SCOPES, FailedKeys, Key, KeyRing

SECRETS = {scope: f"bk_only-{scope}" for scope in SCOPES}
EVERY_SCOPE = "bk_every-scope"


async def no_engine():
    raise EngineUnavailable("no engine in this test: the door is what it tests")


def door(failures_max: int = 20, read_live=None) -> Keys:
    ring = KeyRing([Key(f"only-{s}", keys.digest(k), (s,)) for s, k in SECRETS.items()])
    ring.replace([*ring.by_digest.values(), Key("all", keys.digest(EVERY_SCOPE), SCOPES)])
    return Keys(ring, read_live, FailedKeys(failures_max, 60))


def http(app, peer: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 4321))
    return httpx.AsyncClient(transport=transport, base_url="http://door")


def bearer(secret: str) -> dict:
    return {"Authorization": f"Bearer {secret}"}


async def test_every_route_declares_a_scope_and_a_key_without_it_is_403_naming_it():
    app = build_app(no_engine, door())
    routes = [(m, p, s) for m, p, s in declared_scopes(app) if p.startswith("/v1/")]
    assert routes and all(s in SCOPES for _, _, s in routes), routes
    async with http(app) as client:
        for method, path, needed in routes:
            url = path
            for name in ("user_id", "call_id", "payout_id"):
                url = url.replace("{" + name + "}", "1")
            url = url.replace("{name}", "some-key")
            for scope, secret in SECRETS.items():
                r = await client.request(method, url, headers=bearer(secret), json={})
                if scope == needed:
                    assert r.status_code not in (401, 403), (method, path, scope, r.text)
                else:
                    assert r.status_code == 403, (method, path, scope, r.text)
                    assert f"'{needed}'" in r.json()["error"]["message"]


async def test_an_id_that_is_not_a_number_still_needs_the_routes_scope():
    async with http(build_app(no_engine, door())) as client:
        r = await client.post("/v1/wallets/abc/top-ups", headers=bearer(SECRETS["read"]))
        assert r.status_code == 403 and "'calls'" in r.text
        r = await client.post("/v1/wallets/abc/top-ups", headers=bearer(SECRETS["calls"]))
        assert r.status_code == 400 and "user_id" in r.text


async def test_without_a_live_key_only_health_and_the_docs_answer():
    async with http(build_app(no_engine, door())) as client:
        for path in ("/healthz", "/docs", "/redoc", "/openapi.json"):
            assert (await client.get(path)).status_code == 200, path
        for headers in ({}, bearer("bk_wrong"), {"Authorization": "Basic eDp5"}):
            for method, path in (("GET", "/v1/wallets/1"), ("POST", "/v1/keys"), ("GET", "/x")):
                r = await client.request(method, path, headers=headers)
                assert r.status_code == 401, (method, path, headers)
                assert r.headers["www-authenticate"] == "Bearer"
        unknown = await client.get("/x", headers=bearer(SECRETS["read"]))
        assert unknown.status_code == 404  # a live key may learn that a route is not there


async def test_past_its_wrong_keys_a_source_is_429_with_retry_after_even_with_the_right_key():
    app = build_app(no_engine, door(failures_max=5))
    haproxy = {"x-billing-client": "203.0.113.7"}  # HAProxy sets it to its client's address
    async with http(app) as client:
        for _ in range(5):
            r = await client.get("/v1/wallets/1", headers=haproxy | bearer("bk_guess"))
            assert r.status_code == 401
        r = await client.get("/v1/wallets/1", headers=haproxy | bearer("bk_guess"))
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 59
        right = haproxy | bearer(SECRETS["read"])
        assert (await client.get("/v1/wallets/1", headers=right)).status_code == 429
        other = {"x-billing-client": "203.0.113.8"} | bearer(SECRETS["read"])
        assert (await client.get("/v1/wallets/1", headers=other)).status_code == 503
        assert (await client.get("/healthz", headers=haproxy)).status_code == 200
    # From a peer that is not on loopback the header is the client's own: not believed.
    async with http(app, peer="198.51.100.4") as client:
        spoofed = {"x-billing-client": "203.0.113.7"} | bearer(SECRETS["read"])
        assert (await client.get("/v1/wallets/1", headers=spoofed)).status_code == 503


class Body:
    """An ASGI request body sent in chunks, counting what the app read of it."""

    def __init__(self, size: int, chunk: int = 1 << 20) -> None:
        self.left, self.chunk, self.read = size, chunk, 0

    async def receive(self):
        n = min(self.chunk, self.left)
        self.left -= n
        self.read += n
        return {"type": "http.request", "body": b"x" * n, "more_body": self.left > 0}


async def raw(app, method: str, path: str, headers: list, body: Body) -> tuple[int, dict]:
    sent: list = []

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"authorization", f"Bearer {EVERY_SCOPE}".encode()), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    await app(scope, body.receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    text = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(text)


@pytest.mark.parametrize(
    "method, path",
    [
        ("POST", "/v1/wallets/1/top-ups"),  # the hot path's
        ("POST", "/v1/wallets/abc/top-ups"),  # FastAPI's (an id that is not a number)
        ("POST", "/v1/users/1/nothing"),  # no route at all
        ("GET", "/v1/wallets/1"),  # a GET with a body
    ],
)
async def test_a_body_over_the_bound_is_413_before_any_route_reads_it(method, path):
    app = build_app(no_engine, door(), body_bytes_max=64 * 1024)
    big = 100 * 1024 * 1024
    declared = Body(big)
    length = [(b"content-length", str(big).encode())]
    status, answer = await raw(app, method, path, length, declared)
    assert status == 413 and "65536" in answer["error"]["message"]
    assert declared.read == 0  # refused on its Content-Length, nothing read
    if method == "POST":
        chunked = Body(big, chunk=16 * 1024)
        status, _ = await raw(app, method, path, [(b"transfer-encoding", b"chunked")], chunked)
        assert status == 413 and chunked.read <= 64 * 1024 + 16 * 1024


async def test_a_revoked_key_is_refused_within_a_second_and_a_new_one_known_when_handed_out(
    pool,
):
    async def read_live():
        return await keys.live(pool)

    app = build_app(no_engine, Keys(KeyRing(), read_live))
    async with http(app) as client:
        first = await keys.create(pool, "first", "read")
        assert (await client.get("/v1/wallets/1", headers=bearer(first["key"]))).status_code == 503
        second = await keys.create(pool, "second", "read")  # a rotation: both live now
        assert (await client.get("/v1/wallets/1", headers=bearer(second["key"]))).status_code == 503
        await keys.revoke(pool, "first")
        revoked = time.monotonic()
        while (await client.get("/v1/wallets/1", headers=bearer(first["key"]))).status_code != 401:
            assert time.monotonic() - revoked < 1.0, "the revoked key is still let in"
            await asyncio.sleep(0.02)
        assert (await client.get("/v1/wallets/1", headers=bearer(second["key"]))).status_code == 503


async def test_keys_not_read_for_too_long_refuse_rather_than_trust_old_ones(monkeypatch):
    async def unreadable():
        raise EngineUnavailable("PostgreSQL is away")

    keys_ = door(read_live=unreadable)
    async with http(build_app(no_engine, keys_)) as client:
        ok = bearer(SECRETS["read"])
        assert (await client.get("/v1/wallets/1", headers=ok)).status_code == 503
        assert "EngineUnavailable" in (await client.get("/v1/wallets/1", headers=ok)).text
        keys_.read_at -= KEYS_STALE_S + 1
        stale = await client.get("/v1/wallets/1", headers=ok)
        assert stale.status_code == 503 and "keys not read" in stale.text


async def test_without_a_door_no_key_is_asked():
    async with http(build_app(no_engine, None)) as client:
        r = await client.post("/v1/wallets/1/top-ups", json={"amount": 5})
        assert r.status_code == 503  # let in: the engine (absent here) would answer
