"""The HTTP API in-process (the FastAPI app over a real engine, without Serve): routes, the
same hostile input as the Python API, error statuses, the bearer token."""

import re

import httpx
import pytest

from actors.times import iso
from engine.http.app import build_app
from engine.http.door import Keys
from engine.keys import SCOPES, Key, KeyRing, digest
from persistence.records import EVENT_TYPES
from tests.conftest import OnOneEngine, engine_config

MIN = 60.0
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00")  # every time the API says


@pytest.fixture
async def engine(services, pool, ray_session):
    from engine.api import Engine

    async with Engine(engine_config(services, "sharded")) as eng:
        yield eng


def client(
    engine, keys: Keys | None = None, seen: list | None = None, hot: bool = True
) -> httpx.AsyncClient:
    """The app in-process (with its hot path, or FastAPI alone). Every JSON answer is checked
    against the model its route declares for its status (extra fields forbidden): the
    contract is what the engine answers; and each ends with a newline."""
    routes: list = []

    async def get_engine():
        return engine

    def on_request(method, route, status, seconds):
        routes.append((method, route, status))
        if seen is not None:
            seen.append((method, route, status))

    app = build_app(get_engine, keys, on_request, hot_path=hot)

    async def fits_its_model(response: httpx.Response) -> None:
        await response.aread()
        method, route, status = routes[-1]
        if not response.headers.get("content-type", "").startswith("application/json"):
            return
        if response.url.path == "/openapi.json":  # the schema, not an answer
            return
        assert response.content.endswith(b"}\n"), response.content[-40:]  # a line each
        model = declared_model(app, method, route, status)
        if model is not None:
            model.model_validate(response.json())

    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://engine",
        event_hooks={"response": [fits_its_model]},
    )


def declared_model(app, method: str, path: str, status: int):
    """The model a route declares for `status`: its response_model for a 2xx, else the one in
    its `responses`. None for a path no route has (the 404 of an unknown path)."""
    from fastapi.routing import APIRoute

    from engine.http.contract import Error

    for r in app.routes:
        if isinstance(r, APIRoute) and r.path == path and method in r.methods:
            if 200 <= status < 300:
                return r.response_model
            declared = r.responses.get(status, {}).get("model")
            assert declared is not None, f"{method} {path} does not declare its {status}"
            return declared
    return Error


async def people(http: httpx.AsyncClient, coins: int) -> tuple[int, int]:
    user = (await http.post("/v1/users", json={"name": "asha"})).json()["user_id"]
    r = await http.post("/v1/users", json={"name": "ravi", "role": "listener"})
    assert r.status_code == 201
    listener = r.json()["user_id"]
    top = await http.post(f"/v1/wallets/{user}/top-ups", json={"amount": coins})
    assert top.status_code == 200 and top.json()["balance_coins"] == coins
    return user, listener


# (method, path, body, status, error type, words in the message); {u} the user, {v} listener.
HOSTILE = [
    ("POST", "/v1/wallets/{u}/top-ups", {"amount": 0}, 400, "InvalidInput", "amount"),
    ("POST", "/v1/wallets/{u}/top-ups", {"amount": 1.5}, 400, "InvalidInput", "amount"),
    ("POST", "/v1/wallets/{u}/top-ups", {"amount": -3}, 400, "InvalidInput", "amount"),
    ("POST", "/v1/wallets/{u}/top-ups", {"amount": "10"}, 400, "InvalidInput", "amount"),
    ("POST", "/v1/wallets/{u}/top-ups", {"amount": True}, 400, "InvalidInput", "amount"),
    ("POST", "/v1/wallets/{u}/top-ups", {}, 400, "InvalidInput", "amount"),
    ("POST", "/v1/wallets/{u}/top-ups", {"amount": 10, "tx_type": "spend"}, 400, "", "tx_type"),
    (
        "POST",
        "/v1/wallets/{u}/top-ups",
        {"amount": 10, "idempotency_key": ""},
        400,
        "InvalidInput",
        "idempotency_key",
    ),
    ("POST", "/v1/wallets/9999/top-ups", {"amount": 10}, 404, "UnknownUser", "9999"),
    ("POST", "/v1/wallets/abc/top-ups", {"amount": 10}, 400, "InvalidInput", "user_id"),
    ("POST", "/v1/wallets/0/top-ups", {"amount": 10}, 400, "InvalidInput", "user_id"),
    ("POST", "/v1/wallets/{u}/spends", {"amount": 101}, 402, "InsufficientCoins", ""),
    ("POST", "/v1/wallets/{v}/withdrawals", {"amount_paise": 1}, 402, "InsufficientEarnings", ""),
    ("POST", "/v1/wallets/{u}/withdrawals", {"amount_paise": 1}, 400, "", "not a listener"),
    (
        "POST",
        "/v1/calls",
        {"user_id": "{u}", "listener_id": "{v}", "call_type": "fax"},
        400,
        "",
        "call_type",
    ),
    ("POST", "/v1/calls", {"user_id": "{u}", "listener_id": 9999}, 404, "UnknownUser", "9999"),
    ("POST", "/v1/calls", {"user_id": "{v}", "listener_id": "{u}"}, 400, "", "not a listener"),
    ("POST", "/v1/calls", {"user_id": "{u}"}, 400, "InvalidInput", "listener_id"),
    ("POST", "/v1/calls/9999/end", {}, 404, "UnknownCall", "9999"),
    ("POST", "/v1/calls/9999/end", {"reason": "bored"}, 400, "InvalidInput", "reason"),
    ("GET", "/v1/calls/9999", None, 404, "UnknownCall", "9999"),
    ("POST", "/v1/users", {"name": "x", "role": "admin"}, 400, "InvalidInput", "role"),
    ("POST", "/v1/users", {"name": ""}, 400, "InvalidInput", "name"),
    ("GET", "/v1/users/{u}/calls?limit=0", None, 400, "InvalidInput", "limit"),
    ("GET", "/v1/events?after=-1", None, 400, "InvalidInput", "after"),
    ("GET", "/v1/events?after=3350594465617248199376896", None, 400, "InvalidInput", "after"),
    ("GET", "/v1/nothing", None, 404, "NotFound", ""),
    ("POST", "/v1/payouts/9999/paid", {}, 404, "UnknownPayout", "9999"),
    ("POST", "/v1/payouts/9999/rejected", {"reason": ""}, 400, "InvalidInput", "reason"),
    ("POST", "/v1/calls/9999/refunds", {}, 404, "UnknownCall", "9999"),
    ("POST", "/v1/calls/9999/refunds", {"minutes": 0}, 400, "InvalidInput", "minutes"),
    ("POST", "/v1/calls/9999/refunds", {"minutes": 1.5}, 400, "InvalidInput", "minutes"),
    ("POST", "/v1/calls/9999/refunds", {"listener_pays": "no"}, 400, "", "listener_pays"),
    ("GET", "/v1/wallets/{v}/payouts?limit=0", None, 400, "InvalidInput", "limit"),
]


def _fill(value, user: int, listener: int):
    if isinstance(value, str):
        filled = value.replace("{u}", str(user)).replace("{v}", str(listener))
        return int(filled) if filled != value and filled.isdigit() else filled
    if isinstance(value, dict):
        return {k: _fill(v, user, listener) for k, v in value.items()}
    return value


async def refused_and_unchanged(http, engine, method, path, body, status, kind, words) -> None:
    user, listener = await people(http, 100)
    pool = await engine.pool()
    before = await pool.fetchval("SELECT count(*) FROM ledger")
    r = await http.request(method, _fill(path, user, listener), json=_fill(body, user, listener))
    assert r.status_code == status, (path, body, r.text)
    err = r.json()["error"]
    assert set(err) == {"type", "message"}
    assert kind in err["type"] and words in err["message"], (path, body, err)
    assert await pool.fetchval("SELECT count(*) FROM ledger") == before
    assert (await http.get(f"/v1/wallets/{user}")).json()["balance_coins"] == 100


@pytest.mark.parametrize("shared_engine", ["sharded"], indirect=True, scope="class")
@pytest.mark.xdist_group("http_refusals")  # in a row on one worker: one engine
class TestRefusals:
    """Each case refuses and changes nothing: they share one engine (`shared_engine`)."""

    @pytest.mark.parametrize(("method", "path", "body", "status", "kind", "words"), HOSTILE)
    async def test_bad_requests_get_json_errors_with_the_right_status_and_change_nothing(
        self, shared_engine, method, path, body, status, kind, words
    ):
        engine = shared_engine
        async with client(engine) as http:
            await refused_and_unchanged(http, engine, method, path, body, status, kind, words)


async def test_an_engine_that_cannot_answer_is_503_with_retry_after():
    from engine import EngineUnavailable

    async def away():
        raise EngineUnavailable("an engine actor is restarting")

    app = build_app(away)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://engine") as http:
        r = await http.get("/v1/wallets/1")
        assert r.status_code == 503 and r.headers["Retry-After"] == "1"
        assert r.json()["error"]["type"] == "EngineUnavailable"
        ready = await http.get("/readyz")
        assert ready.status_code == 503 and not ready.json()["ready"]


def _untyped(schema: dict, where: str, components: dict) -> list[str]:
    """The places in `schema` with no type: each property must say what it holds."""
    if "$ref" in schema:
        return []
    if not any(k in schema for k in ("type", "anyOf", "oneOf", "allOf", "enum", "const")):
        return [where]
    out = []
    for name, prop in schema.get("properties", {}).items():
        out += _untyped(prop, f"{where}.{name}", components)
    for key in ("anyOf", "oneOf", "allOf"):
        for i, alt in enumerate(schema.get(key, [])):
            out += _untyped(alt, f"{where}.{key}[{i}]", components)
    if isinstance(schema.get("items"), dict):
        out += _untyped(schema["items"], f"{where}[]", components)
    if isinstance(schema.get("additionalProperties"), dict):
        out += _untyped(schema["additionalProperties"], f"{where}{{}}", components)
    return out


OPERATIONS = {  # operationId: tag, as a generated client names its methods and modules
    "create_user": "users", "get_wallet": "wallets", "get_statement": "wallets",
    "top_up": "wallets", "spend": "wallets", "withdraw": "payouts", "list_payouts": "payouts",
    "mark_payout_paid": "payouts", "mark_payout_rejected": "payouts", "refund_call": "calls",
    "start_call": "calls", "get_call": "calls", "end_call": "calls",
    "get_call_timeline": "calls", "list_calls": "calls", "send_heartbeat": "presence",
    "list_events": "events", "stream_events": "events", "create_key": "keys",
    "list_keys": "keys", "revoke_key": "keys",
    "create_webhook": "webhooks", "list_webhooks": "webhooks", "get_webhook": "webhooks",
    "delete_webhook": "webhooks", "list_webhook_deliveries": "webhooks",
    "replay_webhook": "webhooks",
    "schedule_rate_card": "prices", "list_rate_cards": "prices",
    "set_listener_prices": "prices", "get_listener_prices": "prices",
    "create_offer": "offers", "list_offers": "offers", "get_offer": "offers",
    "set_listener_offers": "offers", "get_listener_offers": "offers",
    "get_health": "health", "get_readiness": "health",
}  # fmt: skip


def _walk(value, where=""):
    """Every (place, schema object) of `value`."""
    if isinstance(value, dict):
        yield where, value
        for k, v in value.items():
            yield from _walk(v, f"{where}/{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, f"{where}/{i}")


def test_the_openapi_schema_is_made_for_generated_clients():
    async def no_engine():
        raise AssertionError("the schema needs no engine")

    spec = build_app(no_engine).openapi()
    components = spec["components"]["schemas"]
    untyped = [w for n, s in components.items() for w in _untyped(s, n, components)]
    assert untyped == []
    # Operations read as methods, grouped by resource.
    ops = {op["operationId"]: op for methods in spec["paths"].values() for op in methods.values()}
    assert {k: op["tags"] for k, op in ops.items()} == {k: [t] for k, t in OPERATIONS.items()}
    # One named enum per idea: no property spells out an enum of its own.
    for name, values in {
        "Role": ["user", "listener"],
        "CallType": ["audio", "video"],
        "EndReason": ["hangup", "insufficient_coins", "expired"],
        "CallStatus": ["ongoing", "completed", "dropped", "suspended"],
        "BucketType": ["bonus", "referral_bonus"],
        "Tier": ["basic", "bronze", "silver", "gold"],
    }.items():
        assert components[name]["enum"] == values, name
    inline = [w for w, o in _walk(components) if "enum" in o and w.count("/") > 1]
    assert inline == []
    # Every time is a date-time; no empty example anywhere.
    for where, o in _walk(spec):
        if o.get("pattern", "").startswith("^\\d{4}-"):
            assert o.get("format") == "date-time", where
        assert o.get("example") != {}, where
        # bounds as JSON Schema says them (minimum...), not pydantic's own words (ge...)
        assert not {"gt", "ge", "lt", "le"} & set(o), where
    # A top-up is one of a purchase (never expires) or a bonus (which may): the schema says so.
    top_up = ops["top_up"]["requestBody"]["content"]["application/json"]["schema"]
    kinds = [{"$ref": "#/components/schemas/Purchase"}, {"$ref": "#/components/schemas/Bonus"}]
    assert top_up["oneOf"] == kinds and "anyOf" not in top_up
    assert "expires_at" not in components["Purchase"]["properties"]
    assert components["Purchase"]["additionalProperties"] is False
    # Optional bodies may be left out, and are the model, not "the model or null".
    for name in ("end_call", "mark_payout_paid", "mark_payout_rejected", "refund_call"):
        body = ops[name]["requestBody"]
        assert not body.get("required") and "$ref" in body["content"]["application/json"]["schema"]
    # Events: a JSON page, and beside it a text/event-stream; each event typed by its `type`.
    assert set(ops["list_events"]["responses"]["200"]["content"]) == {"application/json"}
    assert set(ops["stream_events"]["responses"]["200"]["content"]) == {"text/event-stream"}
    items = components["EventsPage"]["properties"]["events"]["items"]
    assert items["discriminator"]["propertyName"] == "type"
    assert len(items["oneOf"]) == len(EVENT_TYPES)  # one model per type
    # What the server enforces, the schema states.
    assert components["NewUser"]["properties"]["name"]["pattern"]
    assert components["Purchase"]["properties"]["amount"]["type"] == "integer"
    params = {p["name"]: p["schema"] for p in ops["list_payouts"]["parameters"]}
    assert params["before"]["minimum"] == 1  # left out, not `null`: a parameter is not nullable
    params = {p["name"]: p["schema"] for p in ops["get_statement"]["parameters"]}
    assert params["after"]["pattern"] and "anyOf" not in params["after"]
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            ok = [s for s in op["responses"] if s.startswith("2")]
            assert len(ok) == 1, (method, path)
            if path == "/v1/events/stream":
                continue
            content = op["responses"][ok[0]]["content"]["application/json"]["schema"]
            assert "$ref" in content, (method, path, content)
            if path.startswith("/v1/"):
                for status in ("400", "401", "403", "413", "429", "503"):
                    err = op["responses"][status]["content"]["application/json"]["schema"]
                    assert err == {"$ref": "#/components/schemas/Error"}, (method, path, status)


def call_start(call: dict) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(call["connected_at"]).timestamp()


@pytest.mark.parametrize("shared_engine", ["sharded"], indirect=True, scope="class")
@pytest.mark.xdist_group("http_scenarios")  # in a row on one worker: one engine
class TestHttpOnOneEngine(OnOneEngine):
    """Scenarios on one engine per placement, each with people of its own."""

    @pytest.mark.parametrize("hot", [True, False], ids=["hot-path", "fastapi"])
    async def test_a_call_over_http_from_start_to_withdrawal(self, engine, hot):
        seen: list = []
        async with client(engine, seen=seen, hot=hot) as http:
            assert (await http.get("/healthz")).json() == {"status": "ok"}
            ready = await http.get("/readyz")
            assert ready.status_code == 200 and ready.json()["checks"] == {
                "writer": "ok",
                "postgres": "ok",
                "redis": "ok",
            }
            user, listener = await people(http, 100)
            before = (await http.get(f"/v1/wallets/{user}", params={"call_type": "video"})).json()
            assert before["minutes_affordable"] == 1  # 100 coins, 60 a minute
            assert (await http.get(f"/v1/wallets/{user}")).json()["minutes_affordable"] is None
            bad = await http.get(f"/v1/wallets/{user}", params={"call_type": "fax"})
            assert bad.status_code == 400 and "call_type" in bad.json()["error"]["message"]
            body = {"user_id": user, "listener_id": listener, "idempotency_key": "c1"}
            r = await http.post("/v1/calls", json=body)
            assert r.status_code == 201, r.text
            call = r.json()
            assert call["minutes_affordable"] == 9  # 90 coins left, 10 a minute
            again = await http.post("/v1/calls", json=body)  # a retry: the same call
            assert again.json()["call_id"] == call["call_id"]
            assert (await http.post(f"/v1/presence/{user}/heartbeat")).json() == {"online": True}
            await engine.advance(2 * MIN)
            live = (await http.get(f"/v1/calls/{call['call_id']}")).json()
            assert live["billed_minutes"] == 3 and live["status"] == "ongoing"
            assert live["minutes_affordable"] == 7 and live["paid_until"] == iso(
                call_start(call) + 10 * MIN  # minutes 1..10 paid: the drop is at minute 11's start
            )
            end = await http.post(f"/v1/calls/{call['call_id']}/end", json={"reason": "hangup"})
            assert end.json()["billed_minutes"] == 3 and end.json()["status"] == "completed"
            assert (await http.post(f"/v1/calls/{call['call_id']}/end")).json() == end.json()
            timeline = (await http.get(f"/v1/calls/{call['call_id']}/timeline")).json()
            assert [m["minute"] for m in timeline["minutes"]] == [1, 2, 3]
            assert [m["balance_after_coins"] for m in timeline["minutes"]] == [90, 80, 70]
            assert timeline["end"]["rule"].startswith("hung up at ")
            assert ISO.fullmatch(timeline["minutes"][0]["committed_at"]), timeline["minutes"][0]
            ended = ("status", "end_reason", "coins_charged", "coins_returned", "charged_seconds")
            assert timeline["call"] == live | {k: end.json()[k] for k in ended} | {
                "ended_at": end.json()["ended_at"],
                "next_tick_at": None,
                "minutes_affordable": None,
                "paid_until": None,
            }
            assert (await http.get(f"/v1/wallets/{user}")).json()["balance_coins"] == 70
            paid = (await http.get(f"/v1/wallets/{listener}")).json()["earnings_paise"]
            out = await http.post(
                f"/v1/wallets/{listener}/withdrawals",
                json={"amount_paise": paid, "idempotency_key": "w1"},
            )
            assert out.status_code == 200 and out.json()["earnings_paise"] == 0
            spend = await http.post(f"/v1/wallets/{user}/spends", json={"amount": 70})
            assert spend.json()["balance_coins"] == 0
            await engine.sync()
            first = (await http.get(f"/v1/wallets/{user}/transfers", params={"limit": 2})).json()
            rest = await http.get(
                f"/v1/wallets/{user}/transfers", params={"after": first["next_after"], "limit": 2}
            )
            rows = first["transfers"] + rest.json()["transfers"]
            assert rest.json()["next_after"] is None
            assert [(r["kind"], r["amount"], r["balance_after"]) for r in rows] == [
                ("purchase", 100, 100),
                ("minutes", -30, 70),
                ("spend", -70, 0),
            ]
            for bad in ({"limit": 0}, {"limit": "x"}, {"after": "bad"}):
                r = await http.get(f"/v1/wallets/{user}/transfers", params=bad)
                assert r.status_code == 400 and ("limit" in r.text or "after" in r.text), r.text
            page = (await http.get(f"/v1/users/{listener}/calls", params={"limit": 1})).json()
            assert [c["call_id"] for c in page["calls"]] == [call["call_id"]]
            assert page["next_before"] == call["call_id"]
            after = await http.get(
                f"/v1/users/{listener}/calls", params={"before": page["next_before"]}
            )
            assert after.json() == {"calls": [], "next_before": None}
            await engine.sync()
            mine = {"user_id": listener}  # the engine is shared: this test's listener's events
            # A JSON page unless the client asks for a stream (`Accept: text/event-stream`).
            events = await http.get("/v1/events", params=mine)
            assert events.headers["content-type"] == "application/json"
            one = await http.get("/v1/events", params=mine | {"limit": 1})
            assert one.json()["events"] == events.json()["events"][:1]
            assert [e["type"] for e in events.json()["events"]] == [
                "call_started",
                "call_settled",
                "payout_pending",  # the withdrawal
            ]
            for e in events.json()["events"]:  # one time format: ISO 8601, outside and inside data
                times = [e["at"]] + [v for k, v in e["data"].items() if k.endswith("_at") and v]
                assert all(ISO.fullmatch(t) for t in times), e
            first = str(events.json()["events"][0]["id"])
            resumed = await http.get(
                "/v1/events",
                params=mine,
                headers={"Accept": "application/json", "Last-Event-ID": first},
            )
            assert [e["type"] for e in resumed.json()["events"]] == [
                "call_settled",
                "payout_pending",
            ]
        assert ("POST", "/v1/calls", 201) in seen and ("GET", "/v1/calls/{call_id}", 200) in seen
        assert ("GET", "/v1/calls/{call_id}/timeline", 200) in seen

    @pytest.mark.parametrize("hot", [True, False], ids=["hot-path", "fastapi"])
    async def test_payouts_held_paid_and_rejected_and_refunds_partial_and_full_over_http(
        self, engine, hot
    ):
        async with client(engine, hot=hot) as http:
            user, listener = await people(http, 100)
            body = {"user_id": user, "listener_id": listener}
            call = (await http.post("/v1/calls", json=body)).json()
            await engine.advance(3 * MIN + 1)  # four minutes: 40 coins, 400 paise
            await http.post(f"/v1/calls/{call['call_id']}/end")
            refunds = f"/v1/calls/{call['call_id']}/refunds"
            part = await http.post(refunds, json={"minutes": 1, "idempotency_key": "r1"})
            assert part.status_code == 201, part.text
            assert (part.json()["coins"], part.json()["paise"]) == (10, 100)
            assert ISO.fullmatch(part.json()["refunded_at"])
            again = await http.post(refunds, json={"minutes": 1, "idempotency_key": "r1"})
            assert again.json() == part.json()
            more = await http.post(refunds, json={"minutes": 4, "idempotency_key": "r2"})
            assert more.status_code == 409 and more.json()["error"]["type"] == "RefundExceedsBilled"
            full = await http.post(refunds)  # the rest: three minutes
            assert full.status_code == 201 and full.json()["minutes"] == 3
            assert (await http.get(f"/v1/wallets/{user}")).json()["balance_coins"] == 100

            call = (await http.post("/v1/calls", json=body)).json()
            await engine.advance(4 * MIN + 1)  # five minutes: 500 paise
            await http.post(f"/v1/calls/{call['call_id']}/end")
            withdrawals = f"/v1/wallets/{listener}/withdrawals"
            held = await http.post(withdrawals, json={"amount_paise": 300, "idempotency_key": "w1"})
            assert held.status_code == 200, held.text
            assert held.json()["status"] == "pending" and held.json()["earnings_paise"] == 200
            second = await http.post(withdrawals, json={"amount_paise": 200})
            first_id, second_id = held.json()["payout_id"], second.json()["payout_id"]
            paid = await http.post(f"/v1/payouts/{first_id}/paid", json={"reason": "utr 81"})
            assert paid.status_code == 200 and paid.json()["status"] == "paid", paid.text
            assert (await http.post(f"/v1/payouts/{first_id}/paid")).json()["applied"] is False
            null = await http.post(f"/v1/payouts/{first_id}/paid", content=b"null")  # not a body
            assert null.status_code == 400, null.text
            listed = await http.post(f"/v1/payouts/{first_id}/paid", json=[None, None])
            assert listed.status_code == 400, listed.text
            wrong = await http.post(f"/v1/payouts/{first_id}/rejected")
            assert wrong.status_code == 409 and wrong.json()["error"]["type"] == "PayoutSettled"
            rejected = await http.post(f"/v1/payouts/{second_id}/rejected")
            assert rejected.json()["earnings_paise"] == 200
            page = (await http.get(f"/v1/wallets/{listener}/payouts", params={"limit": 1})).json()
            assert [p["payout_id"] for p in page["payouts"]] == [second_id]
            rest = await http.get(
                f"/v1/wallets/{listener}/payouts", params={"before": page["next_before"]}
            )
            assert [(p["payout_id"], p["status"]) for p in rest.json()["payouts"]] == [
                (first_id, "paid")
            ]
            assert ISO.fullmatch(rest.json()["payouts"][0]["settled_at"])
            await engine.sync()
            events = await http.get(
                "/v1/events", params={"user_id": listener}, headers={"Accept": "application/json"}
            )
            kinds = [e["type"] for e in events.json()["events"] if e["call_id"] is None]
            assert kinds == ["payout_pending", "payout_pending", "payout_paid", "payout_rejected"]

    async def test_a_bonus_that_expires_during_a_call_over_http(self, engine):
        async with client(engine) as http:
            user, listener = await people(http, 5)
            expires = iso(engine.clock.now() + 2 * MIN + 30)
            body = {"amount": 100, "tx_type": "bonus", "expires_at": expires}
            bonus = await http.post(f"/v1/wallets/{user}/top-ups", json=body)
            assert bonus.status_code == 200, bonus.text
            wallet = (await http.get(f"/v1/wallets/{user}", params={"call_type": "audio"})).json()
            assert wallet["buckets"] == [
                {"bucket_id": bonus.json()["transfer_id"], "tx_type": "bonus", "coins": 100,
                 "expires_at": expires}
            ]  # fmt: skip
            assert wallet["minutes_affordable"] == 3  # the bucket pays minutes 1..3, not more
            bad = await http.post(
                f"/v1/wallets/{user}/top-ups", json={"amount": 5, "expires_at": expires}
            )
            assert bad.status_code == 400 and "expire" in bad.json()["error"]["message"]
            past = await http.post(
                f"/v1/wallets/{user}/top-ups",
                json={"amount": 5, "tx_type": "bonus", "expires_at": iso(engine.clock.now() - 1)},
            )
            assert past.status_code == 400 and "expires_at" in past.json()["error"]["message"]
            call = await http.post("/v1/calls", json={"user_id": user, "listener_id": listener})
            assert call.json()["minutes_affordable"] == 2
            await engine.advance(3 * MIN)
            ended = (await http.get(f"/v1/calls/{call.json()['call_id']}")).json()
            assert (ended["status"], ended["billed_minutes"]) == ("dropped", 3)
            after = (await http.get(f"/v1/wallets/{user}")).json()
            assert after["balance_coins"] == 5 and after["buckets"] == []

    async def test_fastapi_alone_refuses_every_bad_request_as_the_hot_path_does(self, engine):
        # The table's routes have two adapters (engine/http/fast.py, FastAPI): the same refusals.
        async with client(engine, hot=False) as http:
            for case in HOSTILE:
                await refused_and_unchanged(http, engine, *case)

    async def test_a_busy_listener_and_a_reused_key_are_409(self, engine):
        async with client(engine) as http:
            user, listener = await people(http, 100)
            other, _ = await people(http, 100)
            body = {"user_id": user, "listener_id": listener, "idempotency_key": "k"}
            assert (await http.post("/v1/calls", json=body)).status_code == 201
            busy = await http.post("/v1/calls", json={"user_id": other, "listener_id": listener})
            assert busy.status_code == 409 and busy.json()["error"]["type"] == "PartyBusy"
            reused = await http.post("/v1/calls", json=body | {"call_type": "video"})
            assert reused.status_code == 409
            assert reused.json()["error"]["type"] == "IdempotencyConflict"

    async def test_the_docs_pages_load_every_asset_from_the_engine_without_a_key(self, engine):
        """No internet needed: /docs and /redoc name no other host, and each file they load
        is served here, open, with its type."""
        keys = Keys(KeyRing([Key("app", digest("s3cret"), SCOPES)]))
        async with client(engine, keys) as http:
            for page in ("/docs", "/redoc"):
                html = (await http.get(page)).text
                loaded = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
                loaded += re.findall(r"""url: ['"]([^'"]+)['"]""", html)  # Swagger's schema
                loaded += re.findall(r"""spec-url=["']([^"']+)["']""", html)  # ReDoc's
                assert loaded and not re.search(r"//|https?:", " ".join(loaded) + html), page
                for path in loaded:
                    r = await http.get(path)
                    assert r.status_code == 200 and len(r.content) > 1000, (page, path)
                    kind = r.headers["content-type"]
                    assert kind.split(";")[0] in ("text/javascript", "text/css", "image/png",
                                                  "application/json"), (path, kind)  # fmt: skip
            missing = await http.get("/docs/assets/nothing.js")
            assert missing.status_code == 404 and missing.json()["error"]["type"] == "NotFound"
            beyond = await http.get("/docs/assets/..%2Fcore.py")  # no path out of the folder
            assert beyond.status_code in (401, 404), beyond.text

    async def test_a_key_cannot_revoke_itself_and_another_admin_key_can(self, engine, pool):
        from engine import keys as api_keys

        first = await api_keys.create(pool, "first-admin", ["admin"])
        second = await api_keys.create(pool, "second-admin", ["admin"])
        ring = KeyRing([Key(k["name"], digest(k["key"]), ("admin",)) for k in (first, second)])
        async with client(engine, Keys(ring)) as http:
            as_first = {"Authorization": f"Bearer {first['key']}"}
            itself = await http.post("/v1/keys/first-admin/revoke", headers=as_first)
            assert itself.status_code == 409 and itself.json()["error"]["type"] == "KeyInUse"
            assert not [k for k in await api_keys.listed(pool) if k["revoked_at"]]
            other = await http.post("/v1/keys/second-admin/revoke", headers=as_first)
            assert other.status_code == 200 and other.json()["revoked_at"], other.text
            # A method a path does not have: 405, and `Allow` names every one it has.
            wrong = await http.request("OPTIONS", "/v1/keys", headers=as_first)
            assert wrong.status_code == 405 and wrong.headers["allow"] == "GET, POST"

    async def test_with_keys_requests_need_one_and_health_does_not(self, engine):
        keys = Keys(KeyRing([Key("app", digest("s3cret"), SCOPES)]))
        async with client(engine, keys) as http:
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/docs")).status_code == 200
            denied = await http.post("/v1/users", json={"name": "a"})
            assert denied.status_code == 401 and denied.json()["error"]["type"] == "Unauthorized"
            assert "s3cret" not in denied.text
            wrong = await http.post(
                "/v1/users", json={"name": "a"}, headers={"Authorization": "Bearer nope"}
            )
            assert wrong.status_code == 401
            ok = await http.post(
                "/v1/users", json={"name": "a"}, headers={"Authorization": "Bearer s3cret"}
            )
            assert ok.status_code == 201
