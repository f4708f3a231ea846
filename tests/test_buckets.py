"""Bonus coins that expire (actors/buckets.py): spent first, earliest expiry first; their rest
leaves at the expiry, in time order; a call that can no longer pay drops at that minute. On
the plain wallet, then on both placements, across a host's restart, and in the audit."""

import pytest

from actors import CapacityExceeded, InvalidInput, Wallet
from actors import buckets as bk
from actors.money import check_transfer
from tests.conftest import OnOneEngine
from tests.helpers import answered, audit_violations, eventually, restart_actor
from tests.test_time_order import payer_host

T = 1_800_000_000_000  # ms
MIN_MS = 60_000
MIN = 60.0


def test_coins_are_taken_from_the_bucket_that_expires_first_and_purchased_coins_last():
    w = Wallet(1, "user")
    w.apply_external("p", "purchase", 50, T)
    w.apply_external("late", "bonus", 30, T + 1, expires_ms=T + 10 * MIN_MS)
    w.apply_external("soon", "referral_bonus", 20, T + 2, expires_ms=T + 5 * MIN_MS)
    assert [b[bk.ID] for b in w.buckets] == ["ext:1:soon", "ext:1:late"]
    w.apply_external("s", "spend", 25, T + 3)  # 20 from soon, 5 from late
    assert [b[bk.LEFT] for b in w.buckets] == [0, 25] and w.balance_coins == 75
    w.expire_through(T + 5 * MIN_MS, 0)  # soon expires empty: nothing leaves
    assert w.balance_coins == 75 and [b[bk.ID] for b in w.buckets] == ["ext:1:late"]
    (_, ids, gone, after) = w.expiring.pop()
    assert ids == ["ext:1:soon"] and gone == [] and after == w.buckets
    w.expire_through(T + 10 * MIN_MS, 0)  # late's 25 leave as their own transfer
    (_, ids, gone, _) = w.expiring.pop()
    assert [(t.transfer_id, t.amount, t.at_ms) for t in gone] == [
        ("expire:ext:1:late", -25, T + 10 * MIN_MS)
    ]
    check_transfer(gone[0])
    assert w.balance_coins == 50 and w.buckets == []  # the purchased coins, whole


def test_a_minute_due_before_the_expiry_uses_the_bucket_and_the_first_after_drops_the_call():
    w = Wallet(1, "user")
    w.apply_external("b", "bonus", 30, T - 1, expires_ms=T + 2 * MIN_MS + 1)
    w.apply_external("p", "purchase", 5, T - 1)
    w.open_call(7, 10, 1, T, MIN_MS)  # minute 1 from the bucket: 20 left in it
    transfers, last, short = w.bill_minutes(7, 3)  # minute 3 starts at T+2min: before the expiry
    assert (last, short, w.balance_coins) == (3, False, 5)
    transfers, last, short = w.bill_minutes(7, 4)  # the bucket is empty anyway; 5 coins < 10
    assert (last, short) == (3, True)
    w2 = Wallet(2, "user")
    w2.apply_external("b", "bonus", 100, T - 1, expires_ms=T + 2 * MIN_MS)
    w2.open_call(8, 10, 1, T, MIN_MS)
    transfers, last, short = w2.bill_minutes(8, 5)
    # minute 3 starts exactly at the expiry: the 80 left expired first, so it cannot be paid
    assert (last, short, w2.balance_coins) == (2, True, 0)
    assert w2.expiring[0][2][0].amount == -80


def test_a_bucket_is_granted_after_the_debits_before_it_and_bad_buckets_are_refused():
    w = Wallet(1, "user", balance_coins=10)
    w.apply_external("s", "spend", 5, T)
    assert w.grant_ms(T) == T + 1  # never at the instant of a debit that came before it
    with pytest.raises(InvalidInput, match="only bonus and referral_bonus"):
        w.apply_external("p", "purchase", 5, T + 1, expires_ms=T + MIN_MS)
    with pytest.raises(InvalidInput, match="after the top-up"):
        w.apply_external("b", "bonus", 5, T + 1, expires_ms=T + 1)
    for i in range(bk.BUCKETS_MAX):
        w.apply_external(f"b{i}", "bonus", 1, T + 1, expires_ms=T + MIN_MS)
    with pytest.raises(CapacityExceeded, match="BUCKETS_MAX"):
        w.apply_external("one-more", "bonus", 1, T + 1, expires_ms=T + MIN_MS)


def test_replay_from_a_checkpoint_gives_the_state_the_wallet_had():
    w = Wallet(1, "user")
    w.apply_external("p", "purchase", 100, T)
    w.apply_external("a", "bonus", 40, T + 1, expires_ms=T + 30 * MIN_MS)
    w.apply_external("b", "bonus", 40, T + 2, expires_ms=T + 20 * MIN_MS)
    grants = [b[:] for b in w.buckets]  # as of their grants
    w.open_call(7, 10, 1, T + 3, MIN_MS)
    w.bill_minutes(7, 6)
    w.apply_external("s", "spend", 15, T + 10 * MIN_MS)
    debits = [(bk.position(T + 3, bk.OUTSIDE), 10)]
    debits += [(bk.position(T + 3 + k * MIN_MS, bk.MINUTE), 10) for k in range(1, 6)]
    debits.append((bk.position(T + 10 * MIN_MS, bk.OUTSIDE), 15))
    bk.replay(grants, debits)
    assert [b[bk.LEFT] for b in grants] == [b[bk.LEFT] for b in w.buckets] == [0, 5]


def test_minutes_affordable_does_not_count_a_bucket_that_expires_first():
    buckets = [["b", "bonus", 50, T + 3 * MIN_MS, 0]]
    # 50 bonus coins that last until minute 4's start, and 20 purchased: minutes 1..3 from the
    # bucket (30), minute 4 and 5 from the purchase (20); the other 20 of the bucket expire
    assert bk.minutes_affordable(70, buckets, 10, T, MIN_MS, 240) == 5
    assert bk.minutes_affordable(70, [], 10, T, MIN_MS, 240) == 7


# -- on the engine ---------------------------------------------------------------------------


async def test_a_bucket_nobody_asks_about_is_expired_by_the_cleanup_job(engine, pool):
    user = await engine.create_user("payer")
    now = engine.clock.now()
    await engine.top_up(user, 40, "referral_bonus", idempotency_key="r", expires_at=now + 30)
    await engine.advance(60)
    out = await engine.run_job("cleanup")
    assert out["result"]["buckets_expired"] == 1
    await engine.sync()
    rows = (await engine.statement(user))["transfers"]
    assert [(r["kind"], r["amount"], r["at"]) for r in rows][-1] == ("expire", -40, now + 30)
    assert (await engine.run_job("cleanup"))["result"]["buckets_expired"] == 0
    assert await audit_violations(pool) == {}


@pytest.mark.xdist_group("buckets_scenarios")  # in a row on one worker: one engine per placement
class TestBucketsOnOneEngine(OnOneEngine):
    """Scenarios on one engine per placement, each with people of its own."""

    async def test_a_bonus_that_expires_during_a_call_drops_it_at_that_minute(self, engine, pool):
        user = await engine.create_user("payer")
        listener = await engine.create_listener("listener")
        now = engine.clock.now()
        await engine.top_up(user, 5, "purchase", idempotency_key="p")
        bonus = await engine.top_up(
            user, 100, "bonus", idempotency_key="b", expires_at=now + 2 * MIN + 30
        )
        state = await engine.balance(user, call_type="audio")
        assert state["buckets"] == [
            {"bucket_id": bonus["transfer_id"], "tx_type": "bonus", "coins": 100,
             "expires_at": now + 2 * MIN + 30}
        ]  # fmt: skip
        assert state["minutes_affordable"] == 3  # minutes 1..3 start before the expiry; then 5
        call = await engine.start_call(user, listener)
        assert (
            call["minutes_affordable"] == 2 and call["paid_until"] == call["connected_at"] + 3 * MIN
        )
        await engine.advance(3 * MIN)  # minute 4 starts after the expiry: 70 expired, 5 < 10

        async def dropped():
            out = await engine.get_call(call["call_id"])
            return out if out["status"] == "dropped" else None

        ended = await eventually(dropped, what="the call dropped at the expiry")
        assert ended["billed_minutes"] == 3 and ended["ended_at"] == call["connected_at"] + 3 * MIN
        after = await engine.balance(user)
        assert after["balance_coins"] == 5 and after["buckets"] == []
        await engine.sync()
        rows = (await engine.statement(user))["transfers"]
        assert [(r["kind"], r["amount"], r["balance_after"]) for r in rows] == [
            ("bonus", 100, 100),  # at the same instant as the purchase: by id
            ("purchase", 5, 105),
            ("expire", -70, 35),  # dated at the expiry, before the call's end
            ("minutes", -30, 5),
        ]
        assert await audit_violations(pool) == {}

    async def test_buckets_survive_their_hosts_restart_as_the_wallet_held_them(self, engine, pool):
        user = await engine.create_user("payer")
        listener = await engine.create_listener("listener")
        now = engine.clock.now()
        await engine.top_up(user, 50, idempotency_key="p")
        await engine.top_up(user, 25, "bonus", idempotency_key="b1", expires_at=now + 10 * MIN)
        await engine.top_up(user, 25, "bonus", idempotency_key="b2", expires_at=now + 20 * MIN)
        call = await engine.start_call(user, listener)
        await engine.advance(2 * MIN)  # three minutes: 25 from b1, 5 from b2
        await engine.sync()
        before = (await engine.balance(user))["buckets"]
        assert [b["coins"] for b in before] == [20]
        await restart_actor(payer_host(engine, user))
        after = await eventually(
            lambda: answered(lambda: engine.balance(user)), what="the payer's host back"
        )
        assert after["buckets"] == before and after["balance_coins"] == 70
        await engine.advance(18 * MIN)  # b2 expires at minute 21's start: its rest leaves
        out = await engine.end_call(call["call_id"])
        assert out["status"] in ("completed", "dropped")
        final = await engine.balance(user)
        assert final["buckets"] == []
        await engine.sync()
        assert await audit_violations(pool) == {}
