"""Payouts in two steps and refunds of a call's minutes, on both placements, manual clock: each
step idempotent, each refusal named and changing nothing, the audit clean after each."""

import pytest

from actors import (
    CallOngoing,
    IdempotencyConflict,
    InsufficientEarnings,
    InvalidInput,
    PayoutSettled,
    RefundExceedsBilled,
    UnknownPayout,
)
from engine.operations import ClawBack
from tests.conftest import OnOneEngine
from tests.helpers import answered, audit_violations, eventually, restart_actor
from tests.test_time_order import payer_host

MIN = 60.0


async def earned(engine, minutes: int, coins: int = 1_000) -> tuple[int, int, dict]:
    """A payer and a listener after an audio call of `minutes` minutes (100 paise each)."""
    user = await engine.create_user("payer")
    listener = await engine.create_listener("listener")
    await engine.top_up(user, coins, idempotency_key="seed")
    call = await engine.start_call(user, listener)
    await engine.advance((minutes - 1) * MIN + 1)
    settled = await engine.end_call(call["call_id"])
    assert settled["billed_minutes"] == minutes
    return user, listener, settled


async def test_a_refund_whose_coins_step_never_ran_is_finished_by_the_cleanup_job(engine, pool):
    """The window between the two steps: the claw-back committed, the host died before the
    coins. A retry with the key, or the cleanup job, gives them."""
    user, listener, call = await earned(engine, 2)
    coins = (await engine.balance(user))["balance_coins"]
    ask = ClawBack(
        now=engine.clock.now(),
        listener_id=listener,
        call_id=call["call_id"],
        minutes=None,
        reason="refund",
        key="half-done",
        listener_pays=True,
    )
    half = await engine.placement.ask(ask)
    assert half["refunded_at"] is None and half["minutes"] == 2
    assert (await engine.balance(listener))["earnings_paise"] == 0
    assert (await engine.balance(user))["balance_coins"] == coins
    assert await audit_violations(pool) == {}  # a refund under way is no violation
    out = await engine.run_job("cleanup")
    assert out["result"]["refunds_finished"] == 1
    assert (await engine.balance(user))["balance_coins"] == coins + 20
    again = await engine.refund_call(call["call_id"], idempotency_key="half-done")
    assert again["refunded_at"] is not None and again["coins"] == 20
    assert (await engine.run_job("cleanup"))["result"]["refunds_finished"] == 0
    assert (await engine.balance(user))["balance_coins"] == coins + 20  # once
    assert await audit_violations(pool) == {}


@pytest.mark.xdist_group("money_back_scenarios")  # in a row on one worker: one engine per placement
class TestMoneyBackOnOneEngine(OnOneEngine):
    """Scenarios on one engine per placement, each with people of its own."""

    async def test_a_payout_is_held_then_paid_and_a_second_is_rejected_and_released(
        self, engine, pool
    ):
        _, listener, _ = await earned(engine, 5)  # 500 paise
        first = await engine.withdraw(listener, 300, idempotency_key="w1")
        assert first["status"] == "pending" and first["earnings_paise"] == 200
        # The hold is taken at once: the held paise cannot be withdrawn again.
        with pytest.raises(InsufficientEarnings):
            await engine.withdraw(listener, 201, idempotency_key="too-much")
        second = await engine.withdraw(listener, 200, idempotency_key="w2")
        assert (await engine.balance(listener))["earnings_paise"] == 0
        again = await engine.withdraw(listener, 300, idempotency_key="w1")  # a retry: same payout
        assert again["payout_id"] == first["payout_id"] and not again["applied"]

        paid = await engine.settle_payout(first["payout_id"], "paid", "bank ref 1")
        assert (paid["status"], paid["applied"], paid["reason"]) == ("paid", True, "bank ref 1")
        assert paid["earnings_paise"] == 0 and paid["settled_at"] >= paid["created_at"]
        assert (await engine.settle_payout(first["payout_id"], "paid"))["applied"] is False
        with pytest.raises(PayoutSettled, match="was paid"):
            await engine.settle_payout(first["payout_id"], "rejected")

        rejected = await engine.settle_payout(second["payout_id"], "rejected", "wrong account")
        assert rejected["status"] == "rejected" and rejected["earnings_paise"] == 200
        assert (await engine.balance(listener))["earnings_paise"] == 200  # the hold released
        with pytest.raises(PayoutSettled, match="was rejected"):
            await engine.settle_payout(second["payout_id"], "paid")
        assert (await engine.withdraw(listener, 300, idempotency_key="w1"))["status"] == "paid"

        listed = await engine.payouts(listener)
        assert [(p["payout_id"], p["status"]) for p in listed] == [
            (second["payout_id"], "rejected"),
            (first["payout_id"], "paid"),
        ]
        assert await engine.payouts(listener, limit=1, before=second["payout_id"]) == listed[1:]
        with pytest.raises(UnknownPayout, match="no payout with id 999999"):
            await engine.settle_payout(999999, "paid")
        with pytest.raises(InvalidInput, match="outcome"):
            await engine.settle_payout(first["payout_id"], "lost")
        await engine.sync()
        events = await engine.events(user_id=listener)
        assert [(e["type"], e["data"]["payout_id"]) for e in events if e["call_id"] is None] == [
            ("payout_pending", first["payout_id"]),
            ("payout_pending", second["payout_id"]),
            ("payout_paid", first["payout_id"]),
            ("payout_rejected", second["payout_id"]),
        ]
        page = await engine.statement(listener)
        assert [(r["kind"], r["amount"], r["balance_after"]) for r in page["transfers"]] == [
            ("earn", 500, 500),
            ("withdraw", -300, 200),
            ("withdraw", -200, 0),
            ("payout_void", 200, 200),
        ]
        assert await audit_violations(pool) == {}

    async def test_a_pending_payout_survives_its_hosts_restart(self, engine, pool):
        _, listener, _ = await earned(engine, 3)
        held = await engine.withdraw(listener, 250, idempotency_key="w")
        await engine.sync()
        await restart_actor(payer_host(engine, listener))
        out = await eventually(
            lambda: answered(lambda: engine.settle_payout(held["payout_id"], "rejected")),
            what="the payout rejected after the restart",
        )
        assert out["applied"] and out["earnings_paise"] == 300
        assert await audit_violations(pool) == {}

    async def test_refunds_partial_then_the_rest_and_never_more_than_billed(self, engine, pool):
        user, listener, call = await earned(engine, 4)  # 40 coins, 400 paise
        call_id = call["call_id"]
        before = (await engine.balance(user))["balance_coins"]
        part = await engine.refund_call(call_id, 1, "dropped audio", idempotency_key="r1")
        assert (part["minutes"], part["coins"], part["paise"]) == (1, 10, 100)
        assert part["refunded_at"] is not None and part["refund_id"] == f"refund:{call_id}:r1"
        assert (await engine.balance(user))["balance_coins"] == before + 10
        assert (await engine.balance(listener))["earnings_paise"] == 300
        assert await engine.refund_call(call_id, 1, "dropped audio", idempotency_key="r1") == part
        with pytest.raises(IdempotencyConflict):
            await engine.refund_call(call_id, 2, "dropped audio", idempotency_key="r1")
        with pytest.raises(RefundExceedsBilled, match="3 can be, not 4"):
            await engine.refund_call(call_id, 4, idempotency_key="r2")
        rest = await engine.refund_call(call_id, reason="all of it", idempotency_key="r3")
        assert (rest["minutes"], rest["coins"], rest["paise"]) == (3, 30, 300)
        assert (await engine.balance(user))["balance_coins"] == before + 40
        assert (await engine.balance(listener))["earnings_paise"] == 0
        with pytest.raises(RefundExceedsBilled, match="0 can be"):
            await engine.refund_call(call_id, idempotency_key="r4")
        await engine.sync()
        refunded = [e for e in await engine.events(user_id=user) if e["type"] == "call_refunded"]
        assert [e["data"]["minutes"] for e in refunded] == [1, 3]
        rows = (await engine.statement(user))["transfers"]
        assert [(r["kind"], r["amount"]) for r in rows][-2:] == [("refund", 10), ("refund", 30)]
        assert await audit_violations(pool) == {}

    async def test_a_refund_the_listener_cannot_cover_is_refused_unless_the_coins_go_alone(
        self, engine, pool
    ):
        user, listener, call = await earned(engine, 3)
        await engine.withdraw(listener, 250, idempotency_key="w")  # 50 paise left
        with pytest.raises(InsufficientEarnings, match="listener_pays=false"):
            await engine.refund_call(call["call_id"], 1, idempotency_key="r")
        coins = (await engine.balance(user))["balance_coins"]
        alone = await engine.refund_call(
            call["call_id"], 2, idempotency_key="r", listener_pays=False
        )
        assert (alone["coins"], alone["paise"], alone["listener_pays"]) == (20, 0, False)
        assert (await engine.balance(user))["balance_coins"] == coins + 20
        assert (await engine.balance(listener))["earnings_paise"] == 50
        assert await audit_violations(pool) == {}

    async def test_an_ongoing_call_is_not_refunded_and_bad_input_changes_nothing(
        self, engine, pool
    ):
        user = await engine.create_user("payer")
        listener = await engine.create_listener("listener")
        await engine.top_up(user, 100, idempotency_key="seed")
        call = await engine.start_call(user, listener)
        with pytest.raises(CallOngoing, match="is ongoing"):
            await engine.refund_call(call["call_id"])
        for bad in ({"minutes": 0}, {"minutes": 1.0}, {"reason": ""}, {"listener_pays": 1}):
            with pytest.raises(InvalidInput):
                await engine.refund_call(call["call_id"], **bad)
        await engine.end_call(call["call_id"])
        assert (
            await pool.fetchval("SELECT count(*) FROM refunds WHERE call_id = $1", call["call_id"])
            == 0
        )
