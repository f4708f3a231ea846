"""Chaos: a short fault-injection run on each placement, the checks that judge it, and the
recovery paths such runs found."""

import time

import pytest

from actors import PartyBusy
from engine.cli.chaos import (
    CRASH_KINDS,
    PLAN_CARD,
    ChaosResult,
    Model,
    check_database,
    run_chaos,
)
from engine.host.listener_desk import RESERVATION_UNCONFIRMED_S
from engine.host.wallet_host import HostSettings, WalletHost
from engine.operations import ReserveListener, Withdraw
from persistence.client import WriterClient
from persistence.db import get_pool
from tests.conftest import PLACEMENTS, engine_config

MIN = 60.0
RUN_SECONDS = 8.0


@pytest.mark.parametrize("placement", PLACEMENTS)
async def test_a_chaos_run_on_a_plan_card_returns_and_earns_exactly(
    services, pool, ray_session, placement
):
    """Calls by the second and in 6-s increments with free seconds, earnings a share: every
    end's charge, return and earnings checked against the model, under the same faults."""
    config = engine_config(services, placement, rate_card=PLAN_CARD)
    result = await run_chaos(config, RUN_SECONDS, seed=12)
    out = result.as_dict()
    assert result.ok, out["mismatches"]
    assert out["acknowledged"] > 5 and out["acknowledged_lost"] == 0
    db = await get_pool(services.database_url)  # the run's engine closed the shared pool
    returned = await db.fetchval("SELECT count(*) FROM ledger WHERE tx_type = 'unused'")
    assert returned > 0  # ends that gave back part of what was prepaid


@pytest.mark.parametrize("placement", PLACEMENTS)
async def test_a_short_chaos_run_loses_nothing_and_bills_nothing_twice(
    services, pool, ray_session, placement
):
    result = await run_chaos(engine_config(services, placement), RUN_SECONDS, seed=11)
    out = result.as_dict()
    assert result.ok, out["mismatches"]
    kinds = {"kill_writer", "postgres_restart", "redis_restart", "clock_jump", *CRASH_KINDS}
    assert kinds <= set(out["faults_injected"]), out["faults_injected"]
    killed = {"kill_shard"} if placement == "sharded" else {"kill_call_actor", "kill_wallet_actor"}
    assert killed <= set(out["faults_injected"]), out["faults_injected"]
    assert out["acknowledged"] > 5 and out["steps"] >= len(kinds)
    assert out["acknowledged_lost"] == out["minutes_double_billed"] == 0
    assert out["audit_ok"] and out["invariant_violations"] == 0


async def test_the_comparison_catches_a_lost_transfer_and_a_minute_billed_twice(engine):
    user = await engine.create_user("u")
    listener = await engine.create_listener("l")
    model = Model(MIN, engine.config.max_call_minutes, {user: 0, listener: 0}, {listener: 0})
    await engine.top_up(user, 100, idempotency_key="k1")
    model.external(user, "k1", "purchase", 100, engine.clock.now())
    t0 = engine.clock.now()
    call = await engine.start_call(user, listener)
    model.start(call["call_id"], user, listener, call["rate_coins"], call["rate_paise"], t0)
    await engine.advance(2 * MIN)
    model.bill(engine.clock.now())
    await engine.end_call(call["call_id"])
    model.end(call["call_id"], engine.clock.now())
    await engine.sync()
    db = await get_pool(engine.database_url)

    clean = ChaosResult(1, engine.config.placement, 0)
    await check_database(db, model, clean)
    assert clean.ok, clean.mismatches

    await db.execute("DELETE FROM ledger WHERE transfer_id = $1", f"ext:{user}:k1")
    await db.execute(
        "INSERT INTO ledger (transfer_id, user_id, unit, amount, tx_type, call_id, minute_no,"
        " created_at) VALUES ($1, $2, 'coins', -10, 'spend', $3, 99, now())",
        f"call:{call['call_id']}:99",
        user,
        call["call_id"],
    )
    broken = ChaosResult(1, engine.config.placement, 0)
    await check_database(db, model, broken)
    assert broken.acknowledged_lost == 1 and broken.minutes_double_billed == 1
    assert not broken.audit_ok and not broken.ok


async def test_a_listener_whose_release_was_lost_is_freed_from_postgres(engine):
    """Chaos found it: a payer's shard died after a settlement committed, before it freed the
    listener, who stayed busy with a stale balance. The listener's host now asks PostgreSQL."""
    from engine.runtime.ray_actors.writer_actor import WriterActorLink

    user = await engine.create_user("u")
    listener = await engine.create_listener("l")
    await engine.top_up(user, 100, idempotency_key="k1")
    call = await engine.start_call(user, listener)
    await engine.advance(MIN)
    settled = await engine.end_call(call["call_id"])
    await engine.sync()
    earned = settled["earnings_paise"]
    assert earned == 2 * call["rate_paise"]

    def reserve(call_id: int) -> ReserveListener:
        return ReserveListener(
            now=engine.clock.now(), listener_id=listener, call_id=call_id, payer_id=user
        )

    client = WriterClient(WriterActorLink(engine.config.namespace))
    host = WalletHost(engine.database_url, client, HostSettings(user_calls_max=1))
    w = await host.wallet(listener)
    # As loaded before the settlement committed, with the message that frees it lost:
    w.listener_call_id, w.earnings_paise = call["call_id"], 0
    now = engine.clock.now()
    withdraw = Withdraw(now=now, listener_id=listener, amount_paise=earned, key="w1", payout_id=1)
    out = await host.handle(withdraw)
    assert out["earnings_paise"] == 0 and w.listener_call_id is None
    await host.handle(reserve(777))
    assert w.listener_call_id == 777

    # A reservation for a start that never got a row holds while that start may still land,
    # and lapses after RESERVATION_UNCONFIRMED_S.
    with pytest.raises(PartyBusy):
        await host.handle(reserve(778))
    host.desk._reserved_at[listener] = time.monotonic() - RESERVATION_UNCONFIRMED_S - 1
    await host.handle(reserve(778))
    assert w.listener_call_id == 778
    db = await get_pool(engine.database_url)
    assert await db.fetchval("SELECT earnings_paise FROM listener_earnings") == 0


def test_the_model_counts_minutes_in_milliseconds_as_the_engine_does():
    """Chaos found it: a start the driver got no answer for is read back from PostgreSQL,
    rounded to the ms; a hang-up one minute of clock after the start's own time is minute 2 for
    the engine (both rounded), and was 1 for a model that counted in float seconds."""
    from engine.cli.chaos.model import Model

    start = 1_800_010_833.3406  # the clock when the call started
    model = Model(MIN, 240, {1: 100, 2: 0}, {2: 0})
    model.start(9, 1, 2, 10, 100, round(start, 3))  # as PostgreSQL gives it back: .341
    model.end(9, start + MIN)
    assert model.calls[9].minutes == 2 and model.coins[1] == 80
