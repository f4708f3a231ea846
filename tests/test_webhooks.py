"""Webhooks: events reach an app's endpoint signed, at least once, in order per call, through
an endpoint that is down for a while and a dispatcher that restarts; an endpoint failing past
its retry time is disabled with an event; replay sends again; a URL inside the network is
refused unless the operator allows it. Against a real HTTP server on this machine and the real
PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import socket
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from actors.errors import InvalidInput
from engine import webhooks
from engine.keys import SCOPES, Key, KeyRing, digest
from engine.webhooks import Dispatcher, WebhookLimits, check_url, sign, verify
from persistence import webhooks as store
from persistence.events import read_events
from tests.conftest import engine_config
from tests.test_service import free_port
from tests.test_wallet_loads import counting_pool

FAST = WebhookLimits(backoff_first_s=0.05, backoff_max_s=0.2, private_urls=True)
ROUNDS_MAX = 400  # a test's dispatcher rounds at most, before it gives up waiting


class Receiver:
    """An app's endpoint: a real HTTP server on 127.0.0.1 that can go down (its port closed)
    and come back on the same port. It keeps every request, and answers `fail(event_id)`'s
    status (or 200)."""

    def __init__(self, port: int, fail=lambda event_id, n: None) -> None:
        self.port, self.fail = port, fail
        self.url = f"http://127.0.0.1:{port}/hook"
        self.got: list[tuple[dict, bytes, int]] = []  # headers, body, status answered
        self.ports: list[int] = []  # the client's port of each: which connection it came on
        self.server: ThreadingHTTPServer | None = None
        self.lock = threading.Lock()

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # connections kept alive, as a real receiver's

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                event_id = int(self.headers["Billing-Event-Id"])
                with receiver.lock:
                    n = sum(1 for h, _, _ in receiver.got if int(h["billing-event-id"]) == event_id)
                    status = receiver.fail(event_id, n) or 200
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    receiver.got.append((headers, body, status))
                    receiver.ports.append(self.client_address[1])
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture
def receiver():
    r = Receiver(free_port())
    yield r
    r.down()


async def add_events(pool, calls: int, per_call: int, first_call: int = 1) -> list[int]:
    """Events of `calls` calls, interleaved (a call's next after every call's last), and a
    payout's (no call): their ids, in order."""
    types = ["call_started", "low_balance", "call_dropped", "call_settled"]
    rows = []
    for step in range(per_call):
        for call in range(first_call, first_call + calls):
            rows.append((f"{types[step]}:{call}", types[step], call, 100 + call))
    rows.append((f"payout_pending:{first_call}", "payout_pending", None, 7))
    ids = []
    for key, kind, call, user in rows:
        ids.append(
            await pool.fetchval(
                """INSERT INTO events (event_key, type, call_id, user_id, at, data)
                   VALUES ($1, $2, $3, $4, now(), '{"n": 1}') RETURNING event_id""",
                key,
                kind,
                call,
                user,
            )  # fmt: skip
        )
    return ids


async def until(dispatcher: Dispatcher, done, rounds: int = ROUNDS_MAX) -> None:
    for _ in range(rounds):
        if await done():
            return
        if not await dispatcher.round():
            await asyncio.sleep(0.02)
    raise AssertionError("the dispatcher did not get there")


def lane_of(event: dict) -> str:
    return f"call:{event['call_id']}" if event["call_id"] else f"user:{event['user_id']}"


async def test_every_event_arrives_signed_in_order_per_call_through_an_outage_and_a_restart(
    pool, receiver
):
    types = ["call_started", "call_settled", "low_balance", "call_dropped", "payout_pending"]
    hook = await webhooks.register(pool, receiver.url, types, FAST)
    ids = await add_events(pool, calls=6, per_call=4)
    # Some events are refused once (a 500) even when the endpoint is up: retried, in lane.
    receiver.fail = lambda event_id, n: 500 if event_id % 5 == 0 and n == 0 else None

    first = Dispatcher(store_pool(pool), FAST)
    # Down: every lane's first event fails, again and again, with growing waits.
    deadline = time.monotonic() + 0.6
    while time.monotonic() < deadline:
        await first.round()
        await asyncio.sleep(0.02)
    page = await store.deliveries(pool, hook["webhook_id"], 100, None, None)
    assert len(page) == len(ids) and all(d["status"] == "pending" for d in page)
    tried = [d for d in page if d["attempts"]]
    heads = {*ids[:6], ids[-1]}  # each call's first event, and the payout's
    assert {d["event_id"] for d in tried} == heads  # each lane's head, nothing after it
    assert all(d["last_error"] and d["first_failed_at"] for d in tried)
    assert max(d["attempts"] for d in tried) < 10  # backed off, not hammered
    await first.close()

    # Up again, and a new dispatcher (an engine restarted): it sends what the first had not.
    receiver.up()
    second = Dispatcher(store_pool(pool), FAST)
    try:

        async def all_delivered():
            page = await store.deliveries(pool, hook["webhook_id"], 100, None, "pending")
            return not page

        await until(second, all_delivered)
    finally:
        await second.close()

    ok = [(h, b) for h, b, status in receiver.got if status == 200]
    got_ids = [int(h["billing-event-id"]) for h, _ in ok]
    assert sorted(got_ids) == ids, "every event once after its 2xx, none lost"
    events = {e["id"]: e for e in await read_events(pool, 0, 100)}
    by_lane: dict[str, list[int]] = {}
    for headers, body in ok:
        assert verify(hook["secret"], body, headers["billing-signature"])
        event = json.loads(body)
        assert event["id"] == int(headers["billing-event-id"])
        assert event["type"] == events[event["id"]]["type"]
        by_lane.setdefault(lane_of(event), []).append(event["id"])
    assert all(seen == sorted(seen) for seen in by_lane.values()), by_lane
    assert len(by_lane) == 7
    # Each refused-once event was sent again; the deliveries say what happened.
    refused = [int(h["billing-event-id"]) for h, _, s in receiver.got if s == 500]
    assert refused and all(i % 5 == 0 for i in refused)
    page = await store.deliveries(pool, hook["webhook_id"], 100, None, "delivered")
    assert len(page) == len(ids) and all(d["last_status"] == 200 for d in page)


def store_pool(pool):
    async def pool_of():
        return pool

    return pool_of


async def test_an_endpoint_failing_past_its_retry_time_is_disabled_with_an_event_then_replayed(
    pool, receiver
):
    limits = WebhookLimits(
        retry_for_s=0.3, backoff_first_s=0.05, backoff_max_s=0.1, private_urls=True
    )
    hook = await webhooks.register(pool, receiver.url, ["call_started"], limits)
    other = await webhooks.register(pool, receiver.url + "2", ["webhook_disabled"], limits)
    ids = await add_events(pool, calls=2, per_call=1)  # two call_started, a payout
    d = Dispatcher(store_pool(pool), limits)
    try:

        async def disabled():
            return (await store.get(pool, hook["webhook_id"]))["status"] == "disabled"

        await until(d, disabled)
        row = await store.get(pool, hook["webhook_id"])
        assert "failed for" in row["disabled_reason"] and row["disabled_at"]
        (event,) = [e for e in await read_events(pool, 0, 100) if e["type"] == "webhook_disabled"]
        assert event["user_id"] is None and event["call_id"] is None
        assert event["data"]["webhook_id"] == hook["webhook_id"]
        # Disabled: no more attempts.
        tries = len(receiver.got)
        for _ in range(5):
            await d.round()
        assert len(receiver.got) == tries == 0
        # The other endpoint is sent that event, once it is up.
        receiver.up()

        async def told():
            return any(h["billing-webhook-id"] == str(other["webhook_id"]) for h, _, _ in
                       receiver.got)  # fmt: skip

        await until(d, told)
        # Replayed from the first event: enabled, and everything from there sent, in order.
        replayed = await store.replay(pool, hook["webhook_id"], ids[0])
        assert replayed["status"] == "enabled" and replayed["disabled_at"] is None

        async def sent():
            page = await store.deliveries(pool, hook["webhook_id"], 100, None, "delivered")
            return len(page) == 2

        await until(d, sent)
        mine = [int(h["billing-event-id"]) for h, _, _ in receiver.got
                if h["billing-webhook-id"] == str(hook["webhook_id"])]  # fmt: skip
        assert sorted(mine) == ids[:2]  # two calls: each its own lane, sent side by side
        # An id past every event replays nothing (and is a number PostgreSQL's bigint holds).
        assert (await store.replay(pool, hook["webhook_id"], 2**53 - 1))["status"] == "enabled"
        # Replayed again from the second: that one is sent again (a replay is on purpose).
        await store.replay(pool, hook["webhook_id"], ids[1])
        await until(d, sent)
        mine = [int(h["billing-event-id"]) for h, _, _ in receiver.got
                if h["billing-webhook-id"] == str(hook["webhook_id"])]  # fmt: skip
        assert sorted(mine) == [ids[0], ids[1], ids[1]]
    finally:
        await d.close()


async def test_the_last_retry_comes_at_the_retry_time_not_a_backoff_later(pool, receiver):
    limits = WebhookLimits(
        retry_for_s=0.5, backoff_first_s=0.4, backoff_max_s=60.0, private_urls=True
    )
    hook = await webhooks.register(pool, receiver.url, ["call_started"], limits)
    await add_events(pool, calls=1, per_call=1)
    d = Dispatcher(store_pool(pool), limits)
    try:

        async def tried_twice():
            page = await store.deliveries(pool, hook["webhook_id"], 10, None, None)
            return bool(page) and page[0]["attempts"] == 2

        await until(d, tried_twice)
        (one,) = await store.deliveries(pool, hook["webhook_id"], 10, None, None)
        # The backoff says 0.8 s after the second attempt; the retry time ends sooner.
        assert one["next_at"] - one["first_failed_at"] == pytest.approx(0.5, abs=1e-6)

        async def disabled():
            return (await store.get(pool, hook["webhook_id"]))["status"] == "disabled"

        await until(d, disabled)
        (one,) = await store.deliveries(pool, hook["webhook_id"], 10, None, None)
        assert one["attempts"] == 3
    finally:
        await d.close()


async def test_only_the_types_asked_for_from_registration_on_and_none_after_deletion(
    pool, receiver
):
    await add_events(pool, calls=1, per_call=1)  # before: never sent
    hook = await webhooks.register(pool, receiver.url, ["call_settled"], FAST)
    ids = await add_events(pool, calls=2, per_call=4, first_call=2)  # settled: ids[6], ids[7]
    receiver.up()
    d = Dispatcher(store_pool(pool), FAST)
    try:

        async def two():
            return len(receiver.got) == 2

        await until(d, two)
        sent = [json.loads(b)["type"] for _, b, _ in receiver.got]
        assert sent == ["call_settled", "call_settled"]
        await store.delete(pool, hook["webhook_id"])
        await pool.execute(
            "INSERT INTO events (event_key, type, call_id, user_id, at, data) VALUES "
            "('call_settled:99', 'call_settled', 99, 1, now(), '{}')"
        )
        for _ in range(5):
            await d.round()
        assert len(receiver.got) == 2
        assert sorted(json.loads(b)["id"] for _, b, _ in receiver.got) == [ids[6], ids[7]]
    finally:
        await d.close()


async def test_an_endpoint_that_never_answers_holds_up_no_other(pool, receiver):
    """Each endpoint is served by a task of its own: one whose attempts hang until their
    timeout does not delay another's deliveries."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts (the kernel does), never answers
    limits = WebhookLimits(timeout_s=60.0, private_urls=True)
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
    await webhooks.register(pool, url, ["call_started"], limits)
    await webhooks.register(pool, receiver.url, ["call_started"], limits)
    await add_events(pool, calls=3, per_call=1)
    receiver.up()
    d = Dispatcher(store_pool(pool), limits)
    task = asyncio.get_running_loop().create_task(d.run())
    try:
        for _ in range(200):
            if len(receiver.got) == 3:
                break
            await asyncio.sleep(0.05)
        assert len(receiver.got) == 3, "the silent endpoint held up the other"
        assert d.failed == 0  # the silent one's attempts are still waiting
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await d.close()
        silent.close()


async def test_idle_endpoints_cost_one_statement_a_look_not_one_each(services, pool, receiver):
    """Twenty endpoints with nothing to send: the dispatcher asks PostgreSQL once every IDLE_S
    which have work, and none of them asks on its own; an event wakes them."""
    for n in range(20):
        await webhooks.register(pool, f"{receiver.url}{n}", ["call_started"], FAST)
    queries: list[str] = []
    counted = await counting_pool(services, queries)
    await counted.fetchval("SELECT 1")  # the connection's own set-up, before counting
    queries.clear()
    d = Dispatcher(store_pool(counted), FAST)
    task = asyncio.get_running_loop().create_task(d.run())
    try:
        await asyncio.sleep(1.0)
        looks = len(queries)
        assert 1 <= looks <= 1.0 / webhooks.IDLE_S + 2, queries  # about 4 in a second
        assert all("has_work" in q for q in queries), queries
        receiver.up()
        await add_events(pool, calls=1, per_call=1)
        for _ in range(100):
            if len(receiver.got) == 20:
                break
            await asyncio.sleep(0.05)
        assert len(receiver.got) == 20
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await d.close()
        await counted.close()


async def test_deliveries_reuse_their_connection(pool, receiver):
    """One lane's events one after another come on one kept-alive connection (an answer left
    unread closed it, and every delivery paid a new connection, and a TLS handshake)."""
    types = ["call_started", "call_settled", "low_balance", "call_dropped"]
    await webhooks.register(pool, receiver.url, types, FAST)
    await add_events(pool, calls=1, per_call=4)
    receiver.up()
    d = Dispatcher(store_pool(pool), FAST)
    try:

        async def four():
            return len(receiver.got) == 4

        await until(d, four)
    finally:
        await d.close()
    assert len(set(receiver.ports)) == 1, receiver.ports


def test_the_signature_is_stripes_scheme_and_verify_refuses_a_change_or_an_old_one():
    body, secret, t = b'{"id":1}', "whsec_x", 1_800_000_000
    header = sign(secret, body, t)
    mac = hmac.new(secret.encode(), b"1800000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t={t},v1={mac}"
    assert verify(secret, body, header, now=t + 10)
    assert not verify(secret, body + b" ", header, now=t)
    assert not verify("whsec_y", body, header, now=t)
    assert not verify(secret, body, header, now=t + 301)  # replayed later
    assert not verify(secret, body, "v1=" + mac, now=t)


def test_the_receivers_snippet_in_the_docs_verifies_what_the_engine_signs():
    docs = (Path(__file__).resolve().parent.parent / "docs" / "service.md").read_text()
    section = docs.split("## Webhooks", 1)[1].split("\n## ", 1)[0]
    (snippet,) = re.findall(r"```python\n(.*?)```", section, re.S)
    scope: dict = {}
    exec(textwrap.dedent(snippet), scope)  # noqa: S102 - the docs' own code, run as written
    body, t = b'{"id":7,"type":"call_settled"}', int(time.time())
    header = sign("whsec_k", body, t)
    assert scope["verified"]("whsec_k", body, header)
    assert not scope["verified"]("whsec_k", body + b"x", header)
    assert not scope["verified"]("whsec_k", body, sign("whsec_k", body, t - 3600))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://localhost/hook",
        "http://[::1]/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.5/hook",
        "http://172.16.0.1/hook",
        "http://169.254.169.254/latest/meta-data",  # a cloud's metadata service
        "http://0.0.0.0/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://100.64.0.1/hook",  # carrier-grade NAT
    ],
)
async def test_a_url_inside_the_network_is_refused_unless_the_operator_allows_it(url):
    with pytest.raises(InvalidInput, match="BILLING_WEBHOOK_PRIVATE_URLS=1"):
        await check_url(url, private_ok=False)
    assert await check_url(url, private_ok=True) == url


@pytest.mark.parametrize(
    "url, named",
    [
        ("ftp://93.184.216.34/hook", "http:// or https://"),
        ("http:///hook", "http:// or https://"),
        ("http://user:pw@93.184.216.34/hook", "user or password"),
        ("http://93.184.216.34:99999/hook", "not a URL"),
        ("http://" + "a" * 2100 + ".com/", "at most 2048"),
        ("http://no-such-host.invalid/hook", "does not resolve"),
        ("http://h\x00st/hook", "printable ASCII"),
        ("http://h/caf\u00e9", "printable ASCII"),
        (None, "at most 2048"),
    ],
)
async def test_a_url_that_is_not_one_is_refused_naming_why(url, named):
    with pytest.raises(InvalidInput, match=named):
        await check_url(url, private_ok=False)


async def test_a_public_address_is_accepted_as_it_is():
    assert await check_url("https://93.184.216.34/hook", False) == "https://93.184.216.34/hook"


# -- over HTTP, against a real engine -------------------------------------------------------


@pytest.fixture
async def engine(services, pool, ray_session):
    from engine.api import Engine

    config = engine_config(services, "sharded", webhooks=FAST)
    async with Engine(config) as eng:
        yield eng


async def test_over_http_a_call_reaches_the_endpoint_as_v1_events_gives_it(engine, receiver):
    from tests.test_http import client

    ring = KeyRing()
    ring.replace([Key("admin", digest("k-admin"), frozenset(SCOPES)),
                  Key("reader", digest("k-read"), frozenset({"read"}))])  # fmt: skip
    from engine.http.door import Keys

    keys = Keys(ring)
    async with client(engine, keys) as http:
        admin = {"Authorization": "Bearer k-admin"}
        reader = {"Authorization": "Bearer k-read"}
        body = {"url": receiver.url, "event_types": ["call_started", "call_settled"]}
        assert (await http.post("/v1/webhooks", json=body, headers=reader)).status_code == 403
        r = await http.post("/v1/webhooks", json=body, headers=admin)
        assert r.status_code == 201, r.text
        made = r.json()
        assert made["secret"].startswith("whsec_") and made["status"] == "enabled"
        listed = (await http.get("/v1/webhooks", headers=reader)).json()["webhooks"]
        assert [w["webhook_id"] for w in listed] == [made["webhook_id"]]
        assert "secret" not in listed[0] and "whsec_" not in json.dumps(listed)
        bad = {"url": "http://example.com/x", "event_types": ["no_such_type"]}
        assert (await http.post("/v1/webhooks", json=bad, headers=admin)).status_code == 400

        user = await engine.create_user("payer")
        listener = await engine.create_listener("listener")
        await engine.top_up(user, 100, idempotency_key="seed")
        call = await engine.start_call(user, listener)
        await engine.end_call(call["call_id"])
        await engine.sync()
        receiver.up()
        d = Dispatcher(engine.pool, FAST)
        try:

            async def both():
                return len(receiver.got) == 2

            await until(d, both)
        finally:
            await d.close()
        page = (await http.get("/v1/events", headers=reader)).json()["events"]
        for (headers, body, _), event in zip(receiver.got, page, strict=True):
            assert json.loads(body) == event  # the body is the event as /v1/events gives it
            assert verify(made["secret"], body, headers["billing-signature"])
        wid = made["webhook_id"]
        r = await http.get(f"/v1/webhooks/{wid}/deliveries", headers=reader)
        deliveries = r.json()["deliveries"]
        assert [d["event_id"] for d in deliveries] == [e["id"] for e in reversed(page)]
        assert all(d["status"] == "delivered" and d["attempts"] == 1 for d in deliveries)
        r = await http.post(f"/v1/webhooks/{wid}/replay", json={"from_event_id": page[1]["id"]},
                            headers=admin)  # fmt: skip
        assert r.status_code == 200 and r.json()["status"] == "enabled"
        r = await http.get(f"/v1/webhooks/{wid}/deliveries?status=pending", headers=reader)
        assert [d["event_id"] for d in r.json()["deliveries"]] == [page[1]["id"]]
        assert (await http.delete(f"/v1/webhooks/{wid}", headers=admin)).json()["status"] == (
            "deleted"
        )
        assert (await http.get(f"/v1/webhooks/{wid}", headers=reader)).status_code == 404
        assert (await http.get("/v1/webhooks", headers=reader)).json()["webhooks"] == []


async def test_over_http_a_private_url_is_refused_by_default(services, pool, ray_session):
    from engine.api import Engine
    from tests.test_http import client

    async with Engine(engine_config(services, "sharded")) as eng, client(eng) as http:
        body = {"url": "http://127.0.0.1:9/hook", "event_types": ["call_settled"]}
        r = await http.post("/v1/webhooks", json=body)
        assert r.status_code == 400 and "BILLING_WEBHOOK_PRIVATE_URLS" in r.text
        assert (await http.get("/v1/webhooks")).json()["webhooks"] == []
