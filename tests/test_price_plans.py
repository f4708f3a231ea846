"""Price plans on a running engine, on both placements: a call's price fixed at its start and
recorded, increments and free seconds charged at the end with the prepaid rest returned
(`unused:{call_id}`), earnings by tier or by share, listeners' own prices within their tier's
bounds (clamped when the tier or the card moves), and cards with a date that live calls do not
feel. The audit finds each rule broken when the database is tampered with."""

import pytest

from actors import IdempotencyConflict, InvalidInput
from actors.money import TIERS, RateCard
from tests.conftest import engine_on
from tests.helpers import audit_violations

MIN = 60.0
BOUNDS = {"basic": [5, 15], "bronze": [5, 20], "silver": [8, 30], "gold": [10, 40]}
CARD = RateCard(
    increment_s={"audio": 1, "video": 6},
    free_s={"audio": 15, "video": 0},
    price_bounds={"audio": BOUNDS},
    coin_value_paise=50,
)
# The card scheduled for later: audio dearer, by the minute, listeners capped at 10 (basic),
# and listeners paid half of what the user paid.
LATER = {
    "coins_per_minute": {"audio": 20, "video": 60},
    "price_bounds": {"audio": BOUNDS | {"basic": [5, 10]}},
    "earnings_rule": "share",
    "share_pct": dict.fromkeys(TIERS, 50),
    "coin_value_paise": 50,
}


engine = engine_on(rate_card=CARD)


async def people(engine, coins=1000):
    user = await engine.create_user("payer")
    await engine.top_up(user, coins, idempotency_key="seed")
    return user, [await engine.create_listener(f"l{i}") for i in range(3)]


async def call_of(engine, user, listener, seconds, call_type="audio"):
    started = await engine.start_call(user, listener, call_type)
    await engine.advance(seconds)
    return started, await engine.end_call(started["call_id"])


async def unused(pool, call_id):
    return await pool.fetchrow(
        "SELECT amount, user_id, tx_type, created_at FROM ledger WHERE transfer_id = $1",
        f"unused:{call_id}",
    )


async def test_increments_free_seconds_and_listener_prices_charge_exactly(engine, pool):
    user, (l1, l2, _) = await people(engine)
    await engine.set_prices(l1, {"audio": 12}, idempotency_key="p1")
    assert (await engine.set_prices(l1, {"audio": 12}, idempotency_key="p1"))["prices"] == {
        "audio": 12
    }
    with pytest.raises(IdempotencyConflict, match="p1"):
        await engine.set_prices(l1, {"audio": 13}, idempotency_key="p1")

    # 90.4 s at the listener's 12 coins a minute, 1-s increments: 91 s, ceil(12 * 91 / 60) = 19
    # coins of the 24 prepaid (two minutes); earnings floor(100 * 91 / 60) = 151 paise.
    started, end = await call_of(engine, user, l1, 90.4)
    assert started["price"] == {
        "rate_coins": 12,
        "increment_s": 1,
        "free_s": 15,
        "earnings": {"rule": "tier", "paise_per_minute": 100, "coin_value_paise": 50},
        "rate_card_id": 0,
        "source": "listener",
        "clamped_from": None,
    }
    assert (end["billed_minutes"], end["coins_spent"]) == (2, 24)
    assert (end["charged_seconds"], end["coins_charged"], end["coins_returned"]) == (91, 19, 5)
    assert (end["earnings_paise"], end["platform_paise"]) == (151, 19 * 50 - 151)
    back = await unused(pool, started["call_id"])
    assert (back["amount"], back["user_id"], back["tx_type"]) == (5, user, "unused")
    assert back["created_at"].timestamp() == pytest.approx(end["ended_at"])
    assert (await engine.balance(user))["balance_coins"] == 1000 - 19
    rows = [(r["kind"], r["amount"], r["balance_after"]) for r in
            (await engine.statement(user))["transfers"]]  # fmt: skip
    assert rows == [("purchase", 1000, 1000), ("minutes", -24, 976), ("unused", 5, 981)]
    assert (await engine.get_call(started["call_id"]))["price"] == started["price"]
    words = await engine.explain_call(started["call_id"])
    assert words["end"]["charge"] == (
        "90.4 s billed as 91 s at 1-s increments: 19 coins; 5 of 24 prepaid returned"
    )
    assert "the listener's own price" in words["price"]
    assert [m["balance_after_coins"] for m in words["minutes"]] == [988, 976]
    assert [(e["tx_type"], e["coins"], e["balance_after_coins"]) for e in words["wallet_events"]
            ] == [("unused", 5, 981)]  # fmt: skip

    # Under the free 15 s: nothing charged, nothing earned, minute 1 back.
    started, end = await call_of(engine, user, l2, 10)
    assert (end["coins_charged"], end["coins_returned"], end["earnings_paise"]) == (0, 10, 0)
    assert started["price"]["source"] == "card" and started["price"]["rate_coins"] == 10
    assert (await engine.balance(user))["balance_coins"] == 1000 - 19
    # 90 s of video at 6-s increments: 96 s of the 120 prepaid, 96 of 120 coins.
    started, end = await call_of(engine, user, l2, 90, "video")
    assert (end["charged_seconds"], end["coins_charged"], end["coins_returned"]) == (96, 96, 24)
    assert await audit_violations(pool) == {}

    # The audit sees a return taken away, and a charge that its price does not give.
    await pool.execute("DELETE FROM ledger WHERE transfer_id = $1", f"unused:{started['call_id']}")
    found = await audit_violations(pool)
    assert "prepaid coins not returned exactly when due, or returns without their call" in found
    await pool.execute(
        "UPDATE calls SET coins_charged = 100, coins_returned = 20 WHERE call_id = $1",
        started["call_id"],
    )
    assert any("charge, return or earnings" in k for k in await audit_violations(pool))


async def test_prices_outside_the_tier_are_refused_and_clamped_when_the_tier_falls(engine, pool):
    user, (l1, l2, _) = await people(engine)
    with pytest.raises(InvalidInput, match=r"prices.audio: 16 .* outside \[5, 15\].* tier basic"):
        await engine.set_prices(l1, {"audio": 16})
    with pytest.raises(InvalidInput, match="prices.video: .* no listener set a price"):
        await engine.set_prices(l1, {"video": 70})
    with pytest.raises(InvalidInput, match="not a listener"):
        await engine.set_prices(user, {"audio": 10})
    with pytest.raises(InvalidInput, match="prices: unknown call types"):
        await engine.set_prices(l1, {"fax": 10})
    assert await pool.fetchval("SELECT count(*) FROM listener_prices") == 0

    # Gold today (l2, whose tier no host has read yet): 35 is within [10, 40]. Tomorrow, with
    # no badge, the tier is basic: clamped.
    l1 = l2
    day = await pool.fetchval(
        "SELECT (to_timestamp($1) AT TIME ZONE 'UTC')::date", engine.clock.now()
    )
    await pool.execute(
        "INSERT INTO listener_badges (listener_id, day, tier, minutes) VALUES ($1, $2, 'gold', 0)",
        l1,
        day,
    )
    await engine.set_prices(l1, {"audio": 35})
    shown = await engine.listener_prices(l1)
    assert (shown["tier"], shown["prices"], shown["bounds"]) == ("gold", {"audio": 35},
                                                                {"audio": [10, 40]})  # fmt: skip
    assert [c["prices"] for c in shown["changes"]] == [{"audio": 35}]
    started, _ = await call_of(engine, user, l1, 30)
    assert started["price"]["rate_coins"] == 35 and started["tier"] == "gold"
    await engine.advance(86_400)
    started, _ = await call_of(engine, user, l1, 30)
    assert (started["tier"], started["price"]["rate_coins"]) == ("basic", 15)
    assert started["price"]["clamped_from"] == 35
    assert (
        "own price 35 clamped to the bounds of tier basic"
        in (await engine.explain_call(started["call_id"]))["price"]
    )
    assert await audit_violations(pool) == {}
    await pool.execute("UPDATE listener_prices SET prices = '{\"audio\": 99}'")
    assert "listener prices outside the bounds of their card and tier when set" in (
        await audit_violations(pool)
    )


async def test_a_card_scheduled_for_later_is_not_felt_by_live_calls(engine, pool):
    user, (l1, l2, _) = await people(engine)
    await engine.set_prices(l1, {"audio": 12})
    now = engine.clock.now()
    with pytest.raises(InvalidInput, match="never back-dated"):
        await engine.schedule_rate_card(now - 1, LATER)
    with pytest.raises(InvalidInput, match=r"increment_s.audio"):
        await engine.schedule_rate_card(now + 60, {"increment_s": {"audio": 7, "video": 6}})
    card = await engine.schedule_rate_card(now + 2 * MIN, LATER, idempotency_key="later")
    assert (await engine.schedule_rate_card(now + 2 * MIN, LATER, idempotency_key="later")) == card
    listed = await engine.rate_cards()
    assert listed["in_force"]["rate_card_id"] == 0
    assert [c["rate_card_id"] for c in listed["scheduled"]] == [card["rate_card_id"]]

    live = await engine.start_call(user, l1)  # before the date: card 0, the listener's 12
    await engine.advance(3 * MIN)  # the new card is in force now
    other, _ = await people(engine)
    after = await engine.start_call(other, l2)  # the new card's rate, by the minute, shared
    await engine.advance(30)
    end_live = await engine.end_call(live["call_id"])
    end_after = await engine.end_call(after["call_id"])
    assert live["price"]["rate_card_id"] == 0 and live["price"]["increment_s"] == 1
    assert (end_live["billed_minutes"], end_live["coins_charged"]) == (
        4,
        43,
    )  # 211 s at 12: the started second counts
    assert after["price"] == {
        "rate_coins": 20,
        "increment_s": 60,
        "free_s": 0,
        "earnings": {"rule": "share", "share_pct": 50, "coin_value_paise": 50},
        "rate_card_id": card["rate_card_id"],
        "source": "card",
        "clamped_from": None,
    }
    assert (end_after["coins_charged"], end_after["earnings_paise"]) == (20, 20 * 50 // 2)
    assert end_after["platform_paise"] == 20 * 50 - 500
    # The listener's 12 on the new card's [5, 10] for basic: clamped to 10.
    clamped, _ = await call_of(engine, user, l1, 30)
    assert clamped["price"]["rate_coins"] == 10 and clamped["price"]["clamped_from"] == 12
    listed = await engine.rate_cards()
    assert listed["in_force"]["rate_card_id"] == card["rate_card_id"] and not listed["scheduled"]
    assert [c["rate_card_id"] for c in listed["past"]] == [0]
    assert await audit_violations(pool) == {}
    await pool.execute(
        "UPDATE calls SET rate_card_id = $1 WHERE call_id = $2", card["rate_card_id"],
        live["call_id"],
    )  # fmt: skip
    assert "calls on a card before its date, or on a card that does not exist" in (
        await audit_violations(pool)
    )


@pytest.mark.parametrize("engine", ["sharded"], indirect=True)
async def test_an_attached_engine_prices_on_the_running_engines_card(engine, pool):
    """A Serve replica, `rate-cards` or a job attach to the engine running in the namespace:
    card 0 is that engine's BILLING_RATE_CARD, not the attaching process's default."""
    from engine.api import Engine
    from engine.config import Config

    user, (listener, _, _) = await people(engine)
    other = await Engine(Config(namespace=engine.config.namespace, clock="manual")).start(
        attach_only=True
    )
    try:
        assert other.attached
        started = await other.start_call(user, listener)
        assert (started["price"]["increment_s"], started["price"]["free_s"]) == (1, 15)
        assert (await other.rate_cards())["in_force"]["card"]["increment_s"]["audio"] == 1
    finally:
        await other.stop()


@pytest.mark.parametrize("engine", ["sharded"], indirect=True)
async def test_prices_and_cards_over_http(engine, pool):
    from actors.times import iso
    from tests.test_http import client

    user, (l1, l2, _) = await people(engine)
    async with client(engine) as http:
        body = {"audio": 12, "idempotency_key": "k1"}
        r = await http.put(f"/v1/listeners/{l1}/prices", json=body)
        assert r.status_code == 200 and r.json()["prices"] == {"audio": 12}, r.text
        assert (await http.put(f"/v1/listeners/{l1}/prices", json=body)).json() == r.json()
        bad = await http.put(f"/v1/listeners/{l1}/prices", json={"audio": 16})
        assert bad.status_code == 400 and "prices.audio" in bad.json()["error"]["message"]
        clash = await http.put(f"/v1/listeners/{l1}/prices", json={"audio": 9} | {
            "idempotency_key": "k1"})  # fmt: skip
        assert clash.status_code == 409
        shown = (await http.get(f"/v1/listeners/{l1}/prices")).json()
        assert (shown["tier"], shown["prices"], shown["bounds"]) == ("basic", {"audio": 12},
                                                                    {"audio": [5, 15]})  # fmt: skip
        assert (await http.get("/v1/listeners/999999/prices")).status_code == 404

        now = engine.clock.now()
        back = await http.post("/v1/rate-cards", json={"effective_at": iso(now - 5)})
        assert back.status_code == 400 and "back-dated" in back.json()["error"]["message"]
        odd = await http.post(
            "/v1/rate-cards", json={"effective_at": iso(now + 60), "increment_s": {"audio": 7}}
        )
        assert odd.status_code == 400 and "increment_s" in odd.json()["error"]["message"]
        card = {"effective_at": iso(now + 60), "increment_s": {"audio": 6, "video": 6}}
        made = await http.post("/v1/rate-cards", json=card)
        assert made.status_code == 201, made.text
        listed = (await http.get("/v1/rate-cards")).json()
        assert [c["rate_card_id"] for c in listed["scheduled"]] == [made.json()["rate_card_id"]]

        r = await http.post("/v1/calls", json={"user_id": user, "listener_id": l1})
        assert r.status_code == 201 and r.json()["price"]["source"] == "listener", r.text
        await engine.advance(90.4)
        end = (await http.post(f"/v1/calls/{r.json()['call_id']}/end")).json()
        assert (end["coins_charged"], end["coins_returned"], end["charged_seconds"]) == (19, 5, 91)
        timeline = (await http.get(f"/v1/calls/{r.json()['call_id']}/timeline")).json()
        assert timeline["end"]["charge"].startswith("90.4 s billed as 91 s at 1-s increments")
        assert "own price" in timeline["price"]
        # Started after the new card's date: 6-s increments, the card's own rate for video.
        r = await http.post(
            "/v1/calls", json={"user_id": user, "listener_id": l2, "call_type": "video"}
        )
        assert r.json()["price"]["increment_s"] == 6
        assert r.json()["price"]["rate_card_id"] == made.json()["rate_card_id"]
