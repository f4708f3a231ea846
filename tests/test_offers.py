"""Offers on a running engine, on both placements: the first minutes of an eligible call free to
its payer, paid from the offer's own grant (`offer:{call_id}`) with what the call did not charge
going back out at its end (`offer_return:{call_id}`); a budget reserved at the start and never
overspent; who pays the listener; a start retried with its key gets its offer once."""

import asyncio

import pytest

from actors import IdempotencyConflict, InvalidInput
from actors.errors import InsufficientCoins, PartyBusy, UnknownOffer
from tests.helpers import audit_violations

MIN = 60.0
RATE = 10  # the default card: audio 10 coins a minute, basic listeners earn 100 paise


async def offer_of(engine, **terms):
    now = engine.clock.now()
    base = {
        "free_minutes": 3,
        "eligible": "first_call",
        "valid_from": now - 1,
        "valid_until": now + 86_400,
        "budget_minutes": 100,
    }
    return await engine.create_offer(**(base | terms))


async def payer(engine, coins=100, name="payer"):
    user = await engine.create_user(name)
    if coins:
        await engine.top_up(user, coins, idempotency_key="seed")
    return user


async def ledger_row(pool, transfer_id):
    return await pool.fetchrow(
        "SELECT user_id, amount, tx_type, call_id FROM ledger WHERE transfer_id = $1", transfer_id
    )


async def test_a_first_call_has_its_free_minutes_paid_by_the_platform(engine, pool):
    offer = await offer_of(engine)
    user, listener = await payer(engine), await engine.create_listener("l")
    started = await engine.start_call(user, listener)
    assert started["offer"] == {"offer_id": offer["offer_id"], "free_minutes": 3}
    assert (await engine.balance(user))["balance_coins"] == 100  # minute 1 from the grant
    assert started["minutes_affordable"] == 3 + 100 // RATE - 1  # 2 free left, then 10 paid
    await engine.advance(2.5 * MIN)
    call = await engine.get_call(started["call_id"])
    assert call["billed_minutes"] == 3 and call["offer"]["free_minutes"] == 3
    assert (await engine.balance(user))["balance_coins"] == 100
    await engine.advance(MIN)  # minute 4: the payer's own
    assert (await engine.balance(user))["balance_coins"] == 90
    end = await engine.end_call(started["call_id"])
    assert end["coins_charged"] == 40 and end["earnings_paise"] == 400
    assert (await engine.balance(user))["balance_coins"] == 90
    assert (await engine.balance(listener))["earnings_paise"] == 400
    grant = await ledger_row(pool, f"offer:{started['call_id']}")
    assert dict(grant) == {
        "user_id": user, "amount": 30, "tx_type": "offer_grant", "call_id": started["call_id"],
    }  # fmt: skip
    assert await ledger_row(pool, f"offer_return:{started['call_id']}") is None
    stats = await engine.offer(offer["offer_id"])
    assert {k: stats[k] for k in ("minutes_reserved", "minutes_used", "coins_granted",
                                  "coins_returned", "earnings_paid_paise", "calls")} == {
        "minutes_reserved": 0, "minutes_used": 3, "coins_granted": 30, "coins_returned": 0,
        "earnings_paid_paise": 300, "calls": 1,
    }  # fmt: skip
    # The user's second call is not their first: no offer, minute 1 charged.
    again = await engine.start_call(user, listener)
    assert again["offer"] is None
    assert (await engine.balance(user))["balance_coins"] == 80
    await engine.end_call(again["call_id"])
    assert (await engine.get_call(started["call_id"]))["offer"]["offer_id"] == offer["offer_id"]
    explained = await engine.explain_call(started["call_id"])
    assert [m["paid_by"] for m in explained["minutes"]] == ["offer"] * 3 + ["payer"]
    assert explained["offer"].startswith(f"offer {offer['offer_id']} (first_call): the first 3")
    assert "the platform pays the listener" in explained["offer"]
    assert [e["tx_type"] for e in explained["wallet_events"]][:1] == ["offer_grant"]
    rows = (await engine.statement(user))["transfers"]
    kinds = [(r["kind"], r["offer"]) for r in rows if r["call_id"] == started["call_id"]]
    assert kinds == [("offer_grant", None), ("minutes", started["offer"])]
    assert await audit_violations(pool) == {}


async def test_what_a_short_call_leaves_of_its_grant_goes_back_and_the_budget_is_released(
    engine, pool
):
    offer = await offer_of(engine, budget_minutes=5)
    user, listener = await payer(engine, coins=0), await engine.create_listener("l")
    started = await engine.start_call(user, listener)  # no coins: minute 1 is the offer's
    assert (await engine.offer(offer["offer_id"]))["minutes_reserved"] == 3
    await engine.advance(20)
    end = await engine.end_call(started["call_id"])
    assert end["billed_minutes"] == 1 and end["coins_charged"] == RATE
    assert (await engine.balance(user))["balance_coins"] == 0
    back = await ledger_row(pool, f"offer_return:{started['call_id']}")
    assert (back["amount"], back["tx_type"]) == (-2 * RATE, "offer_return")
    stats = await engine.offer(offer["offer_id"])
    assert (stats["minutes_reserved"], stats["minutes_used"], stats["minutes_left"]) == (0, 1, 4)
    assert (stats["coins_granted"], stats["coins_returned"]) == (3 * RATE, 2 * RATE)
    assert await audit_violations(pool) == {}


async def test_a_payer_without_coins_drops_when_the_free_minutes_run_out(engine, pool):
    await offer_of(engine, free_minutes=2)
    user, listener = await payer(engine, coins=0), await engine.create_listener("l")
    started = await engine.start_call(user, listener)
    await engine.advance(2 * MIN + 1)
    call = await engine.get_call(started["call_id"])
    assert (call["status"], call["end_reason"], call["billed_minutes"]) == (
        "dropped", "insufficient_coins", 2,
    )  # fmt: skip
    assert call["ended_at"] == pytest.approx(started["connected_at"] + 2 * MIN)
    assert (await engine.balance(user))["balance_coins"] == 0
    assert await audit_violations(pool) == {}


async def test_nobody_pays_the_listener_only_when_they_opted_in(engine, pool):
    offer = await offer_of(engine, eligible="first_call_with_listener", pays_listener="nobody")
    user = await payer(engine)
    plain, opted = await engine.create_listener("plain"), await engine.create_listener("opted")
    assert (await engine.set_listener_offers(opted, True))["free_minutes"] is True
    assert (await engine.listener_offers(plain))["free_minutes"] is False
    first = await engine.start_call(user, plain)
    assert first["offer"] is None  # the listener did not opt in
    await engine.end_call(first["call_id"])
    second = await engine.start_call(user, opted)
    assert second["offer"]["offer_id"] == offer["offer_id"]
    await engine.advance(3.5 * MIN)  # 3 free minutes, then minute 4 paid
    end = await engine.end_call(second["call_id"])
    assert end["earnings_paise"] == 100  # only the minute the payer paid
    assert (await engine.offer(offer["offer_id"]))["earnings_paid_paise"] == 0
    with_again = await engine.start_call(user, opted)  # not the first with this listener
    assert with_again["offer"] is None
    await engine.end_call(with_again["call_id"])
    assert await audit_violations(pool) == {}


async def test_a_code_takes_its_offer_and_a_wrong_code_is_refused(engine, pool):
    offer = await offer_of(engine, eligible="code", code="HELLO", per_user_max=2, free_minutes=1)
    user, listener = await payer(engine), await engine.create_listener("l")
    with pytest.raises(InvalidInput, match="NOPE"):
        await engine.start_call(user, listener, offer_code="NOPE")
    assert (await engine.balance(user))["balance_coins"] == 100  # nothing changed
    plain = await engine.start_call(user, listener)  # no code: a code offer is not taken
    assert plain["offer"] is None
    await engine.end_call(plain["call_id"])
    for _ in range(2):
        c = await engine.start_call(user, listener, offer_code="HELLO")
        assert c["offer"] == {"offer_id": offer["offer_id"], "free_minutes": 1}
        await engine.end_call(c["call_id"])
    third = await engine.start_call(user, listener, offer_code="HELLO")
    assert third["offer"] is None  # per_user_max
    await engine.end_call(third["call_id"])
    with pytest.raises(UnknownOffer):
        await engine.offer(offer["offer_id"] + 1000)
    assert await audit_violations(pool) == {}


async def test_a_refused_start_gives_its_minutes_back(engine, pool):
    offer = await offer_of(engine, eligible="first_call_with_listener", budget_minutes=3)
    a, b = await payer(engine, name="a"), await payer(engine, name="b")
    listener = await engine.create_listener("l")
    held = await engine.start_call(a, listener)
    assert held["offer"] is not None
    with pytest.raises(PartyBusy):  # the listener is in a call
        await engine.start_call(b, listener)
    await engine.end_call(held["call_id"])
    stats = await engine.offer(offer["offer_id"])
    assert (stats["minutes_reserved"], stats["minutes_used"]) == (0, 1)
    assert (await engine.start_call(b, listener))["offer"]["free_minutes"] == 2  # what is left


async def test_terms_are_checked_and_a_key_answers_its_offer(engine):
    now = engine.clock.now()
    with pytest.raises(InvalidInput, match="code"):
        await offer_of(engine, eligible="code")
    with pytest.raises(InvalidInput, match="valid_until"):
        await offer_of(engine, valid_from=now, valid_until=now)
    with pytest.raises(InvalidInput, match="call_types"):
        await offer_of(engine, call_types=["radio"])
    with pytest.raises(InvalidInput, match="budget_minutes"):
        await offer_of(engine, budget_minutes=0)
    made = await offer_of(engine, idempotency_key="o1")
    assert (await offer_of(engine, idempotency_key="o1"))["offer_id"] == made["offer_id"]
    with pytest.raises(IdempotencyConflict, match="o1"):
        await offer_of(engine, idempotency_key="o1", free_minutes=4)
    assert [o["offer_id"] for o in await engine.offers()] == [made["offer_id"]]


async def test_outside_its_window_or_call_types_an_offer_is_not_taken(engine):
    now = engine.clock.now()
    await offer_of(engine, valid_from=now + 3600, valid_until=now + 7200)
    await offer_of(engine, call_types=["video"])
    user, listener = await payer(engine), await engine.create_listener("l")
    assert (await engine.start_call(user, listener, "audio"))["offer"] is None


async def test_concurrent_starts_never_overspend_the_budget(engine, pool):
    """Twelve first calls at once against a budget of 7 minutes, 3 each: 3 + 3 + 1."""
    offer = await offer_of(engine, eligible="code", code="RUSH", budget_minutes=7)
    users = [await payer(engine, name=f"u{i}") for i in range(12)]
    listeners = [await engine.create_listener(f"l{i}") for i in range(12)]
    started = await asyncio.gather(
        *(
            engine.start_call(u, li, offer_code="RUSH")
            for u, li in zip(users, listeners, strict=True)
        )
    )
    granted = sorted(s["offer"]["free_minutes"] for s in started if s["offer"])
    assert granted == [1, 3, 3]
    stats = await engine.offer(offer["offer_id"])
    assert (stats["minutes_reserved"], stats["minutes_left"]) == (7, 0)
    for s in started:
        await engine.end_call(s["call_id"])
    stats = await engine.offer(offer["offer_id"])
    assert (stats["minutes_reserved"], stats["minutes_used"]) == (0, 3)
    assert await audit_violations(pool) == {}


async def test_a_start_retried_with_its_key_gets_its_claim_once(engine, pool):
    """The host died between the claim and the start's answer: the claim is in PostgreSQL, the
    call is not. The start retried with its key takes that claim (moved to its new call), and
    the budget is not charged twice."""
    from persistence import offers as stored

    offer = await offer_of(engine, eligible="code", code="ONCE", budget_minutes=3)
    user, listener = await payer(engine), await engine.create_listener("l")
    now = engine.clock.now()
    lost = await stored.claim(pool, 10_000, user, listener, "audio", "ONCE", "k1", now, 240)
    assert lost["minutes"] == 3
    assert (await engine.offer(offer["offer_id"]))["minutes_left"] == 0
    started = await engine.start_call(user, listener, idempotency_key="k1", offer_code="ONCE")
    assert started["offer"] == {"offer_id": offer["offer_id"], "free_minutes": 3}
    again = await engine.start_call(user, listener, idempotency_key="k1", offer_code="ONCE")
    assert again["call_id"] == started["call_id"] and again["offer"] == started["offer"]
    claims = await pool.fetch("SELECT call_id, minutes FROM offer_claims")
    assert [tuple(c) for c in claims] == [(started["call_id"], 3)]
    await engine.end_call(started["call_id"])
    stats = await engine.offer(offer["offer_id"])
    assert (stats["minutes_reserved"], stats["minutes_used"], stats["calls"]) == (0, 1, 1)
    assert await audit_violations(pool) == {}


async def test_a_claim_whose_start_never_came_back_is_released_by_the_cleanup(engine, pool):
    from persistence import offers as stored

    offer = await offer_of(engine, eligible="code", code="LOST", budget_minutes=3)
    user, listener = await payer(engine), await engine.create_listener("l")
    now = engine.clock.now()
    await stored.claim(pool, 10_000, user, listener, "audio", "LOST", None, now, 240)
    await engine.cleanup_expired_calls()
    assert (await engine.offer(offer["offer_id"]))["minutes_reserved"] == 3  # may be in flight
    await engine.advance(stored.CLAIM_UNCONFIRMED_S + 1)
    await engine.cleanup_expired_calls()
    stats = await engine.offer(offer["offer_id"])
    assert (stats["minutes_reserved"], stats["minutes_left"]) == (0, 3)
    assert await audit_violations(pool) == {}


async def test_an_offer_call_survives_its_payers_host_restarting(engine, pool):
    """The payer's wallet reloaded from PostgreSQL holds the grant apart from what they may
    spend, and the call goes on drawing it."""
    from tests.helpers import restart_actor
    from tests.test_time_order import payer_host

    await offer_of(engine)
    user, listener = await payer(engine, coins=15), await engine.create_listener("l")
    started = await engine.start_call(user, listener)
    await engine.advance(MIN)  # minute 2, free
    await engine.sync()
    await restart_actor(payer_host(engine, user), engine.config.namespace)
    assert (await engine.balance(user))["balance_coins"] == 15
    with pytest.raises(InsufficientCoins):  # the grant is not the payer's to spend
        await engine.spend(user, 16, idempotency_key="s")
    await engine.advance(2 * MIN)  # minute 3 free, minute 4 paid
    assert (await engine.balance(user))["balance_coins"] == 5
    end = await engine.end_call(started["call_id"])
    assert end["billed_minutes"] == 4 and end["coins_charged"] == 40
    assert await audit_violations(pool) == {}


async def test_offers_over_http(engine, pool):
    """Created with `admin`, read with `read`; a start names its code; the start answer, the
    call and the statement say the offer; a bad window or code is a 400 naming it."""
    from actors.times import iso
    from tests.test_http import client

    if engine.placement.name != "sharded":
        pytest.skip("the HTTP layer is the same on both placements")
    user, listener = await payer(engine), await engine.create_listener("l")
    now = engine.clock.now()
    body = {"free_minutes": 2, "eligible": "code", "code": "HTTP", "valid_from": iso(now - 1),
            "valid_until": iso(now + 3600), "budget_minutes": 10,
            "idempotency_key": "o"}  # fmt: skip
    async with client(engine) as http:
        made = await http.post("/v1/offers", json=body)
        assert made.status_code == 201, made.text
        offer = made.json()
        assert (offer["pays_listener"], offer["per_user_max"], offer["minutes_left"]) == (
            "platform", 1, 10,
        )  # fmt: skip
        assert (await http.post("/v1/offers", json=body)).json() == offer
        bad = await http.post("/v1/offers", json=body | {"idempotency_key": "p",
                                                         "valid_until": iso(now - 5)})  # fmt: skip
        assert bad.status_code == 400 and "valid_until" in bad.json()["error"]["message"]
        number = await http.post("/v1/offers", json=body | {"valid_from": 0})
        assert number.status_code == 400, number.text
        wrong = await http.post("/v1/calls", json={"user_id": user, "listener_id": listener,
                                                   "offer_code": "NOPE"})  # fmt: skip
        assert wrong.status_code == 400 and "NOPE" in wrong.json()["error"]["message"]
        r = await http.post("/v1/calls", json={"user_id": user, "listener_id": listener,
                                               "offer_code": "HTTP"})  # fmt: skip
        assert r.status_code == 201, r.text
        assert r.json()["offer"] == {"offer_id": offer["offer_id"], "free_minutes": 2}
        call_id = r.json()["call_id"]
        await engine.advance(30)
        assert (await http.post(f"/v1/calls/{call_id}/end")).status_code == 200
        assert (await http.get(f"/v1/calls/{call_id}")).json()["offer"]["free_minutes"] == 2
        shown = (await http.get(f"/v1/offers/{offer['offer_id']}")).json()
        assert (shown["minutes_used"], shown["coins_granted"], shown["coins_returned"]) == (
            1, 20, 10,
        )  # fmt: skip
        listed = (await http.get("/v1/offers")).json()
        assert [o["offer_id"] for o in listed["offers"]] == [offer["offer_id"]]
        assert (await http.get("/v1/offers/999")).status_code == 404
        opt = await http.put(f"/v1/listeners/{listener}/offers", json={"free_minutes": True})
        assert opt.status_code == 200 and opt.json()["free_minutes"] is True, opt.text
        assert (await http.get(f"/v1/listeners/{listener}/offers")).json()["free_minutes"]
        assert (await http.put(f"/v1/listeners/{user}/offers",
                               json={"free_minutes": True})).status_code == 400  # fmt: skip
        timeline = (await http.get(f"/v1/calls/{call_id}/timeline")).json()
        assert timeline["offer"].startswith(f"offer {offer['offer_id']} (code)")
    assert await audit_violations(pool) == {}


async def test_200_concurrent_claims_take_exactly_the_budget(services, pool):
    """Two hundred starts claim a code offer of 3 free minutes at once against a budget of 50,
    each on a connection of its own: 16 get 3 minutes, one gets the 2 left, the rest none."""
    import asyncpg

    from actors.offers import Terms
    from persistence import offers as stored

    now = 1_800_000_000.0
    terms = Terms.from_dict({"free_minutes": 3, "eligible": "code", "code": "RUSH",
                             "valid_from": now - 1, "valid_until": now + 60,
                             "budget_minutes": 50, "pays_listener": "platform"})  # fmt: skip
    offer = await stored.create(pool, terms, now, None)
    wide = await asyncpg.create_pool(services.database_url, min_size=40, max_size=40)
    try:
        got = await asyncio.gather(
            *(
                stored.claim(
                    wide, 1000 + i, 10_000 + i, 20_000 + i, "audio", "RUSH", None, now, 240
                )
                for i in range(200)
            )  # fmt: skip
        )
    finally:
        await wide.close()
    minutes = sorted((g["minutes"] for g in got if g), reverse=True)
    assert minutes == [3] * 16 + [2]
    shown = await stored.read(pool, offer["offer_id"])
    assert (shown["minutes_reserved"], shown["minutes_left"]) == (50, 0)
    assert await pool.fetchval("SELECT sum(minutes) FROM offer_claims") == 50


async def test_the_offers_command_creates_one_from_a_file_and_lists_them(engine, tmp_path):
    import json

    from rich.console import Console

    from actors.times import iso
    from engine.cli.offers_view import run, table

    if engine.placement.name != "sharded":
        pytest.skip("the command is the same on both placements")
    now = engine.clock.now()
    terms = tmp_path / "offer.json"
    terms.write_text(json.dumps({"free_minutes": 3, "eligible": "code", "code": "WELCOME",
                                 "valid_from": iso(now), "valid_until": iso(now + 86_400),
                                 "budget_minutes": 500}))  # fmt: skip
    made = await run(engine, str(terms), "campaign-1", None)
    assert [(o["code"], o["minutes_left"]) for o in made] == [("WELCOME", 500)]
    assert await run(engine, str(terms), "campaign-1", None) == made  # the key: once
    listed = await run(engine, None, None, None)
    console = Console(record=True, width=250)
    console.print(table(listed))
    assert "code WELCOME" in console.export_text()
    with pytest.raises(InvalidInput, match="not an offer's JSON"):
        await run(engine, str(tmp_path / "missing.json"), None, None)
