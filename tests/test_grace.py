"""Grace at the cut-off: a minute the payer cannot pay suspends the call until `due + grace_s`;
a credit within it bills that minute at the credit's time and the call goes on, its next minute
due as before; without one the call drops at the unpaid minute's due time, the grace neither
charged nor earned; a hang-up in the grace ends it with the minutes paid. On the plain classes,
then on a running engine on both placements."""

import pytest

from actors.call import Call
from actors.due_order import bill_call_due, resume_paid
from actors.money import RateCard, to_ms
from actors.times import iso
from actors.wallet import Wallet
from tests.conftest import engine_on
from tests.helpers import audit_violations

MIN = 60.0
T0 = 1_800_000_000.0


def call_and_payer(coins: int, grace_s: int = 30) -> tuple[Call, Wallet]:
    w = Wallet(1, "user", coins)
    c = Call(7, 1, 2, "audio", "basic", 10, 100, T0, MIN, 240, grace_s=grace_s)
    w.open_call(7, 10, 1, c.connected_ms, c.minute_ms)
    c.after_billing_ms(1, False, c.connected_ms)
    return c, w


def tick(c: Call, w: Wallet, at: float) -> tuple[list, object]:
    out: list = []
    w.stamp(to_ms(at))
    s = bill_call_due(w, c, c.minute_at(at), to_ms(at), out)
    return out, s


def test_a_minute_the_payer_cannot_pay_waits_in_its_grace_and_a_credit_pays_it():
    c, w = call_and_payer(10)
    out, s = tick(c, w, T0 + MIN)
    assert (s, out, c.status, c.billed_minutes) == (None, [], "suspended", 1)
    assert c.grace_until_ms() == to_ms(T0 + 90) and c.wake_at() == T0 + 90
    assert c.grace_note == ("call_suspended", to_ms(T0 + MIN))
    c.grace_note = None
    assert tick(c, w, T0 + 80) == ([], None)  # still waiting: nothing billed, nothing ends
    w.apply_external("t", "purchase", 10, to_ms(T0 + 85))
    out = []
    assert resume_paid(w, [c], to_ms(T0 + 85), out) == 1
    assert (out[0].transfer_id, out[0].at_ms) == ("call:7:2", to_ms(T0 + 85))
    assert (c.status, c.billed_minutes, c.next_due_at()) == ("ongoing", 2, T0 + 2 * MIN)
    assert c.grace_note == ("call_resumed", to_ms(T0 + 85))


def test_without_a_credit_the_call_drops_at_the_unpaid_minute_and_the_grace_is_free():
    c, w = call_and_payer(15)
    tick(c, w, T0 + MIN)
    w.apply_external("t", "purchase", 4, to_ms(T0 + 70))
    assert resume_paid(w, [c], to_ms(T0 + 70), []) == 0  # 9 coins: still short of 10
    _, s = tick(c, w, T0 + 90)
    assert s is not None and (s.status, s.end_reason, s.billed_minutes) == (
        "dropped", "insufficient_coins", 1,
    )  # fmt: skip
    assert (s.ended_at, s.coins_charged, s.earnings_paise) == (T0 + MIN, 10, 100)


def test_a_hang_up_in_the_grace_ends_the_call_with_the_minutes_paid():
    c, w = call_and_payer(10)
    tick(c, w, T0 + MIN)
    s = c.hang_up(T0 + 75)
    assert (s.status, s.billed_minutes, s.coins_charged, s.charged_seconds) == (
        "completed", 1, 10, 60,
    )  # fmt: skip


def test_without_grace_the_call_drops_at_once_as_before():
    c, w = call_and_payer(10, grace_s=0)
    _, s = tick(c, w, T0 + MIN)
    assert (s.status, s.ended_at, c.grace_note) == ("dropped", T0 + MIN, None)


GRACE_CARD = RateCard(grace_s={"audio": 30, "video": 0})


engine = engine_on(rate_card=GRACE_CARD)


async def people(engine, coins):
    user = await engine.create_user("payer")
    await engine.top_up(user, coins, idempotency_key="seed")
    return user, await engine.create_listener("l")


async def events_of(engine, call_id):
    return [e for e in await engine.events(limit=100) if e["call_id"] == call_id]


async def test_a_suspended_call_topped_up_within_its_grace_goes_on(engine, pool):
    user, listener = await people(engine, 10)
    started = await engine.start_call(user, listener)
    t0, call_id = started["connected_at"], started["call_id"]
    await engine.advance(MIN + 5)
    call = await engine.get_call(call_id)
    assert (call["status"], call["billed_minutes"]) == ("suspended", 1)
    assert call["grace_until"] == pytest.approx(t0 + 90) == call["next_tick_at"]
    await engine.advance(10)  # 75 s: within the grace
    await engine.top_up(user, 25, idempotency_key="rescue")
    call = await engine.get_call(call_id)
    assert (call["status"], call["billed_minutes"], call["grace_until"]) == ("ongoing", 2, None)
    assert call["next_tick_at"] == pytest.approx(t0 + 2 * MIN)
    assert (await engine.balance(user))["balance_coins"] == 15
    minute_2 = await pool.fetchval(
        "SELECT extract(epoch FROM created_at) FROM ledger WHERE transfer_id = $1",
        f"call:{call_id}:2",
    )
    assert float(minute_2) == pytest.approx(t0 + 75, abs=0.01)  # at the top-up, not at 60 s
    await engine.advance(MIN)  # minute 3 at 120 s: paid
    await engine.advance(MIN)  # minute 4 at 180 s: 5 coins, suspended
    assert (await engine.get_call(call_id))["status"] == "suspended"
    await engine.advance(40)  # its grace over: dropped at 180 s with 3 minutes
    end = await engine.get_call(call_id)
    assert (end["status"], end["end_reason"], end["billed_minutes"]) == (
        "dropped", "insufficient_coins", 3,
    )  # fmt: skip
    assert end["ended_at"] == pytest.approx(t0 + 3 * MIN)
    await engine.sync()
    explained = await engine.explain_call(call_id)
    paid = [(m["minute"], m["paid_at"]) for m in explained["minutes"]]
    assert paid[1] == (2, pytest.approx(t0 + 75)) and paid[2] == (3, None)
    assert explained["minutes"][1]["due_at"] == pytest.approx(t0 + MIN)
    assert explained["end"]["rule"].endswith("nor was it within its 30-s grace")
    events = [e for e in await events_of(engine, call_id) if e["type"] != "low_balance"]
    kinds = [(e["type"], e["data"].get("minute")) for e in events]
    assert kinds == [("call_started", None), ("call_suspended", 2), ("call_resumed", 2),
                     ("call_suspended", 4), ("call_dropped", None),
                     ("call_settled", None)]  # fmt: skip
    assert await audit_violations(pool) == {}


async def test_a_call_whose_grace_ran_out_drops_at_its_unpaid_minute(engine, pool):
    from tests.test_http import client

    user, listener = await people(engine, 10)
    started = await engine.start_call(user, listener)
    await engine.advance(MIN + 10)
    async with client(engine) as http:  # each answer checked against its declared model
        shown = (await http.get(f"/v1/calls/{started['call_id']}")).json()
        assert (shown["status"], shown["grace_until"]) == (
            "suspended", iso(started["connected_at"] + 90),
        )  # fmt: skip
        await engine.sync()
        page = (await http.get("/v1/events", params={"user_id": user})).json()
        suspended = [e for e in page["events"] if e["type"] == "call_suspended"]
        assert [e["data"]["coins_needed"] for e in suspended] == [10]
    await engine.advance(21)
    end = await engine.get_call(started["call_id"])
    assert (end["status"], end["billed_minutes"], end["coins_charged"]) == ("dropped", 1, 10)
    assert end["ended_at"] == pytest.approx(started["connected_at"] + MIN)
    assert (await engine.balance(listener))["earnings_paise"] == 100  # the grace earns nothing
    late = await engine.top_up(user, 50, idempotency_key="late")  # after the grace: no call
    assert late["balance_coins"] == 50
    assert await audit_violations(pool) == {}


async def test_a_hang_up_during_the_grace_ends_the_call_with_the_minutes_paid(engine, pool):
    user, listener = await people(engine, 10)
    started = await engine.start_call(user, listener)
    await engine.advance(MIN + 10)
    end = await engine.end_call(started["call_id"])
    assert (end["status"], end["end_reason"], end["billed_minutes"], end["coins_charged"]) == (
        "completed", "hangup", 1, 10,
    )  # fmt: skip
    assert await audit_violations(pool) == {}


async def test_a_video_call_without_grace_drops_at_once(engine, pool):
    user, listener = await people(engine, 60)
    started = await engine.start_call(user, listener, "video")
    await engine.advance(MIN + 1)
    end = await engine.get_call(started["call_id"])
    assert (end["status"], end["billed_minutes"]) == ("dropped", 1)
    assert await audit_violations(pool) == {}


# Each rule of the grace broken in the ledger, and put back: (the change, its undoing, the check
# that finds it). {a}: a call rescued in its grace, then dropped when its grace ran out; {b}: a
# call hung up in its grace; {u}: their payer.
GRACE_CORRUPTIONS = [
    (
        "UPDATE ledger SET created_at = created_at + interval '30 seconds' "
        "WHERE transfer_id = 'call:{a}:2'",
        "UPDATE ledger SET created_at = created_at - interval '30 seconds' "
        "WHERE transfer_id = 'call:{a}:2'",
        "call minutes not dated when they started (or, waiting in their grace, when a credit "
        "paid them), or dated after their call ended",
    ),
    (
        "UPDATE ledger SET created_at = created_at - interval '1 second' "
        "WHERE transfer_id = 'ext:{u}:rescue'",
        "UPDATE ledger SET created_at = created_at + interval '1 second' "
        "WHERE transfer_id = 'ext:{u}:rescue'",
        "call minutes not dated when they started (or, waiting in their grace, when a credit "
        "paid them), or dated after their call ended",
    ),
    (
        "UPDATE ledger SET created_at = created_at - interval '50 seconds' "
        "WHERE transfer_id = 'ext:{u}:late'",
        "UPDATE ledger SET created_at = created_at + interval '50 seconds' "
        "WHERE transfer_id = 'ext:{u}:late'",
        "calls dropped for coins although a credit within their grace could pay the minute",
    ),
    (
        "UPDATE calls SET grace_s = 0 WHERE call_id = {b}",
        "UPDATE calls SET grace_s = 30 WHERE call_id = {b}",
        "ended calls whose billed minutes disagree with their start, end and reason",
    ),
]


async def test_each_broken_rule_of_the_grace_is_found_by_its_check(engine, pool):
    if engine.placement.name != "sharded":
        pytest.skip("the ledger is the same on both placements")
    user, listener = await people(engine, 10)
    a = (await engine.start_call(user, listener))["call_id"]
    await engine.advance(MIN + 15)
    await engine.top_up(user, 15, idempotency_key="rescue")  # pays minute 2 at 75 s
    await engine.advance(MIN + 31)  # minute 3 at 120 s: 5 coins, suspended; dropped at 151 s
    assert (await engine.get_call(a))["status"] == "dropped"
    await engine.advance(20)
    await engine.top_up(user, 10, idempotency_key="late")  # 171 s: after the grace
    b = (await engine.start_call(user, listener))["call_id"]
    await engine.advance(MIN + 10)
    await engine.end_call(b)
    await engine.sync()
    assert await audit_violations(pool) == {}
    ids = {"a": a, "b": b, "u": user}
    for change, undo, check in GRACE_CORRUPTIONS:
        await pool.execute(change.format(**ids))
        found = await audit_violations(pool)
        await pool.execute(undo.format(**ids))
        assert check in found, (change, found)
    assert await audit_violations(pool) == {}
