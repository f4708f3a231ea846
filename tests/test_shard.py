"""A shard run in-process against a real writer and PostgreSQL: recovery and races, no Ray."""

import asyncio
import math

import pytest

from actors import Call, IdempotencyConflict, InsufficientCoins, InvalidInput
from actors.call_request import CallRequest
from actors.money import CALL_TYPES, TIERS, RateCard, to_ms
from bench.setup import ongoing_calls
from engine.config import Config
from engine.operations import (
    EndCall,
    InspectWallet,
    ReadCall,
    ReadWallet,
    Spend,
    StartCall,
    TopUp,
)
from engine.runtime.ray_actors.shard import Shard
from persistence import store
from persistence.client import ClientLimits
from persistence.writer import LedgerWriter
from tests.helpers import audit_violations

T0 = 1_800_000_000.0
MIN = 60.0


def config(services, **changes):
    return Config(
        database_url=services.database_url,
        redis_url=services.redis_url,
        shards=1,
        clock="manual",
        **changes,
    )


def shard(services, redis_url=None, **changes):
    writer = LedgerWriter(services.database_url)
    return Shard(
        0,
        config(services, **changes),
        services.database_url,
        redis_url or services.redis_url,
        link=writer,
    )


async def ask(sh, op):
    """`op` alone in a message to the shard: its answer, or its error raised."""
    (out,) = await sh.handle([op])
    if isinstance(out, BaseException):
        raise out
    return out


def top_up(sh, user, coins, key, now=T0):
    return ask(sh, TopUp(now=now, user_id=user, amount_coins=coins, tx_type="purchase", key=key))


def spend(sh, user, coins, key, now=T0):
    return ask(sh, Spend(now=now, user_id=user, amount_coins=coins, key=key))


def balance(sh, user, now=T0):
    return ask(sh, ReadWallet(now=now, user_id=user))


def end_call(sh, user, call_id, now):
    return ask(sh, EndCall(now=now, user_id=user, call_id=call_id, reason="hangup"))


async def new_call(pool, sh, user, listener, now=T0, rate=10):
    call_id = await store.SequenceIds(1).next(pool)
    card = RateCard(
        coins_per_minute=dict.fromkeys(CALL_TYPES, rate),
        paise_per_minute={t: dict.fromkeys(CALL_TYPES, 100) for t in TIERS},
    )
    request = CallRequest(call_id, user, listener, "audio", card, 0, MIN, 240)
    await ask(sh, StartCall(now=now, request=request, start_key=None))
    return call_id


async def people(pool, coins):
    user = await store.create_user(pool, "u", "user")
    listener = await store.create_user(pool, "l", "listener")
    return user, listener


async def test_after_a_crash_unwritten_minutes_are_recomputed_once(pool, services):
    user, listener = await people(pool, 0)
    # Minutes stay in the shard's buffer: the flush interval is an hour.
    a = shard(services, client=ClientLimits(flush_interval_ms=3_600_000))
    await top_up(a, user, 100, "k", T0)
    call_id = await new_call(pool, a, user, listener)
    await a.bill_due(T0 + 4 * MIN)  # minutes 2..5, not written yet
    assert a.client.pending == 4
    a.client._task.cancel()  # the shard dies with its buffer
    assert await store.last_billed_minutes(pool, [call_id]) == {call_id: 1}

    b = shard(services)
    state = await b.start()
    assert state["recovered_calls"] == 1
    assert (await ask(b, ReadCall(now=T0, user_id=user, call_id=call_id)))["billed_minutes"] == 1
    await b.bill_due(T0 + 4 * MIN + 1)
    await b.bill_due(T0 + 4 * MIN + 2)  # a second look bills nothing more
    await b.sync()
    minutes = await pool.fetch(
        "SELECT minute_no FROM ledger WHERE call_id = $1 AND tx_type = 'spend' ORDER BY 1", call_id
    )
    assert [m["minute_no"] for m in minutes] == [1, 2, 3, 4, 5]
    assert (await balance(b, user, T0))["balance_coins"] == 50
    assert await audit_violations(pool) == {}


async def test_recovery_reads_calls_in_pieces_and_misses_none(pool, services, monkeypatch):
    monkeypatch.setattr("engine.runtime.ray_actors.shard.RECOVERY_CHUNK_CALLS", 2)
    await ongoing_calls(pool, 5, 100, T0)  # 5 calls: pieces of 2, 2 and 1
    sh = shard(services)
    state = await sh.start()
    assert state["recovered_calls"] == 5 and state["timer_entries"] == 5
    assert await sh.bill_due(T0 + MIN) == 5  # each call's minute 2, once
    await sh.sync()
    assert (await balance(sh, 3, T0))["balance_coins"] == 80
    assert await audit_violations(pool) == {}


async def test_inspect_counts_the_timers_and_minutes_of_the_calls_still_here(pool, services):
    """What `inspect shards` says is true: an ended call's timer is gone from it at once (hung
    up, or dropped by a pass), and minute 1, billed at connect, is a minute billed."""
    sh = shard(services)
    (u1, l1), (u2, l2) = await people(pool, 0), await people(pool, 0)
    await top_up(sh, u1, 100, "a")
    await top_up(sh, u2, 20, "b")  # minutes 1 and 2, then dropped at minute 3
    first = await new_call(pool, sh, u1, l1)
    await new_call(pool, sh, u2, l2)
    state = await sh.state()
    assert (state["timer_entries"], state["minutes_billed"]) == (2, 2)
    assert state["next_tick_at"] == pytest.approx(T0 + MIN, abs=0.05)
    await end_call(sh, u1, first, T0 + 30)
    await sh.sync()
    state = await sh.state()
    assert (state["ongoing_calls"], state["timer_entries"]) == (1, 1)
    assert state["next_tick_at"] == pytest.approx(T0 + MIN, abs=0.05)
    await sh.bill_due(T0 + 2 * MIN)  # takes the hung-up call's old entry too
    await sh.sync()
    state = await sh.state()
    assert (state["ongoing_calls"], state["timer_entries"], state["next_tick_at"]) == (0, 0, None)
    assert state["minutes_billed"] == 3


async def test_acknowledged_top_up_survives_a_crash(pool, services):
    user, _ = await people(pool, 0)
    a = shard(services, client=ClientLimits(flush_interval_ms=3_600_000))
    out = await top_up(a, user, 70, "k", T0)
    assert out["applied"]
    a.client._task.cancel()
    b = shard(services)
    assert (await balance(b, user, T0))["balance_coins"] == 70
    again = await top_up(b, user, 70, "k", T0)  # the client retries
    assert not again["applied"] and again["balance_coins"] == 70


async def test_a_reloaded_wallet_holds_no_key_history_and_still_refuses_every_repeat(
    pool, services
):
    user, _ = await people(pool, 0)
    a = shard(services)
    await top_up(a, user, 70, "k", T0)
    await spend(a, user, 20, "s", T0)
    await a.sync()
    b = shard(services)  # a restart: the wallet reloads from PostgreSQL
    assert (await ask(b, InspectWallet(now=T0, user_id=user)))["external_transfers"] == 0
    assert not (await spend(b, user, 20, "s", T0))["applied"]
    with pytest.raises(IdempotencyConflict, match="'k' was used for purchase of 70"):
        await top_up(b, user, 71, "k", T0)
    with pytest.raises(InvalidInput, match="amount must be a positive integer"):
        await top_up(b, user, 0, "z", T0)
    assert (await balance(b, user, T0))["balance_coins"] == 50
    assert (await ask(b, InspectWallet(now=T0, user_id=user)))[
        "external_transfers"
    ] == 2  # the keys it was asked


async def test_top_ups_racing_ticks_lose_nothing(pool, services):
    users = [await store.create_user(pool, f"u{i}", "user") for i in range(5)]
    listeners = [await store.create_user(pool, f"l{i}", "listener") for i in range(5)]
    sh = shard(services)
    for u in users:
        await top_up(sh, u, 10, "seed", T0)
    calls = [await new_call(pool, sh, u, v) for u, v in zip(users, listeners, strict=True)]
    now = T0

    async def top_ups(u):
        for i in range(20):
            await top_up(sh, u, 10, f"t{i}", now)

    async def ticks():
        for m in range(1, 21):
            await sh.bill_due(T0 + m * MIN)
            await asyncio.sleep(0)

    await asyncio.gather(ticks(), *(top_ups(u) for u in users))
    for c in calls:
        await end_call(sh, users[calls.index(c)], c, T0 + 21 * MIN)
    await sh.sync()
    assert await audit_violations(pool) == {}
    total_in = await pool.fetchval("SELECT sum(amount) FROM ledger WHERE tx_type = 'purchase'")
    assert total_in == 5 * (10 + 20 * 10)


async def test_hang_ups_racing_a_tick_settle_once_and_credit_once(pool, services):
    user, listener = await people(pool, 0)
    sh = shard(services)
    await top_up(sh, user, 1000, "k", T0)
    call_id = await new_call(pool, sh, user, listener)
    now = T0 + 3 * MIN + 5
    results = await asyncio.gather(
        end_call(sh, user, call_id, now), sh.bill_due(now), end_call(sh, user, call_id, now)
    )
    assert results[0] == results[2]
    assert results[0]["billed_minutes"] == 4
    await sh.sync()
    earns = await pool.fetch("SELECT amount FROM ledger WHERE tx_type = 'earn'")
    assert [e["amount"] for e in earns] == [400]
    assert (await balance(sh, listener, T0))["earnings_paise"] == 400
    assert await end_call(sh, user, call_id, now + 60) is None  # no longer on the shard
    assert await audit_violations(pool) == {}


async def test_a_user_who_cannot_pay_minute_one_changes_nothing(pool, services):
    user, listener = await people(pool, 0)
    sh = shard(services)
    await top_up(sh, user, 9, "k", T0)
    with pytest.raises(InsufficientCoins):
        await new_call(pool, sh, user, listener)
    assert await pool.fetchval("SELECT count(*) FROM calls") == 0
    assert (await balance(sh, user, T0))["balance_coins"] == 9


async def test_billing_goes_on_when_redis_is_down(pool, services):
    user, listener = await people(pool, 0)
    sh = shard(services, redis_url="redis://127.0.0.1:1/0")
    await top_up(sh, user, 100, "k", T0)
    call_id = await new_call(pool, sh, user, listener)
    await sh.bill_due(T0 + 2 * MIN)
    s = await end_call(sh, user, call_id, T0 + 2 * MIN + 1)
    assert s["billed_minutes"] == 3
    assert sh.presence.errors >= 1
    assert await audit_violations(pool) == {}


def test_call_recovered_from_a_row_keeps_its_rates_and_start():
    row = dict(
        call_id=3,
        user_id=1,
        listener_id=2,
        call_type="video",
        tier="gold",
        rate_coins=60,
        rate_paise=1000,
        connected_ms=to_ms(T0),
    )
    c = store.call_from_row(row, MIN, 240, 7)  # stored before calls recorded their minute
    assert isinstance(c, Call) and c.billed_minutes == 7 and c.connected_at == T0
    assert (c.rate_coins, c.rate_paise, c.tier) == (60, 1000, "gold")


async def test_idle_wallets_past_the_cap_are_evicted_and_reload_as_they_were(
    pool, services, monkeypatch
):
    monkeypatch.setattr("engine.host.wallet_cache.WALLETS_IDLE_MAX", 2)
    monkeypatch.setattr("engine.host.wallet_cache.WALLET_IDLE_S", 0.0)
    users = [await store.create_user(pool, f"u{i}", "user") for i in range(6)]
    listener = await store.create_user(pool, "l", "listener")
    sh = shard(services)
    await top_up(sh, users[0], 100, "k", T0)
    call_id = await new_call(pool, sh, users[0], listener)  # its payer is never evicted
    for u in users[1:]:
        await top_up(sh, u, 10 + u, "k", T0)
    held = sh.host.wallets
    assert len(held) - len(sh.host.book.calls) <= 2 + 1  # the cap, and the one loaded last
    assert users[0] in held and listener in held  # in a call: kept
    assert sh.host.stats["wallets_evicted"] >= 2
    for u in users[1:]:  # evicted ones reload from PostgreSQL as they were
        assert (await balance(sh, u, T0))["balance_coins"] == 10 + u
    assert listener in sh.host.desk._reserved_at  # while its call runs
    await end_call(sh, users[0], call_id, T0 + MIN)
    await sh.sync()
    assert not sh.host.desk._reserved_at  # a reservation is dropped with its call
    assert await audit_violations(pool) == {}


async def test_a_pass_warns_each_call_of_a_payer_of_two_calls_once_when_coins_run_low(
    pool, services
):
    user = await store.create_user(pool, "u", "user")
    listeners = [await store.create_user(pool, f"l{i}", "listener") for i in range(2)]
    sh = shard(services, user_calls_max=2)
    await top_up(sh, user, 60, "k", T0)
    calls = [await new_call(pool, sh, user, v) for v in listeners]
    assert not any(sh.host.book.calls[c].low_balance_warned for c in calls)  # 40 coins: 4 minutes
    await sh.bill_due(T0 + MIN)  # each call's minute 2: 20 coins left, 2 minutes at its rate
    assert all(sh.host.book.calls[c].low_balance_warned for c in calls)
    for c in calls:
        await end_call(sh, user, c, T0 + MIN)
    await sh.sync()
    assert await audit_violations(pool) == {}


async def test_a_batch_of_requests_shares_one_commit_and_answers_each_its_own(pool, services):
    users = [await store.create_user(pool, f"b{i}", "user") for i in range(20)]
    listener = await store.create_user(pool, "bl", "listener")
    sh = shard(services)
    await top_up(sh, listener, 5, "warm", T0)  # the shard has loaded
    sent = sh.client.stats["batches_sent"]
    top_ups = [
        TopUp(now=T0, user_id=u, amount_coins=10, tx_type="purchase", key="k") for u in users
    ]
    wrong = [
        TopUp(now=T0, user_id=users[1], amount_coins=0, tx_type="purchase", key="z"),
        Spend(now=T0, user_id=listener, amount_coins=10, key="s"),  # has 5 coins
        ReadWallet(now=T0, user_id=10**12),
        ("sync", ()),  # a method's name is no operation
    ]
    out = await sh.handle(top_ups + wrong)
    assert [o["balance_coins"] for o in out[:20]] == [10] * 20
    assert all(o["applied"] for o in out[:20])
    assert isinstance(out[20], InvalidInput) and "amount must be a positive integer" in str(out[20])
    assert isinstance(out[21], InsufficientCoins)
    assert "no user with id 1000000000000" in str(out[22])
    assert isinstance(out[23], InvalidInput) and "not an operation" in str(out[23])
    # Twenty write-through top-ups, one message to the writer, one commit.
    assert sh.client.stats["batches_sent"] == sent + 1
    again = await sh.handle(top_ups[:2])  # a repeat, in a batch too, applies nothing
    assert [o["applied"] for o in again] == [False, False]
    await sh.sync()
    assert await pool.fetchval("SELECT count(*) FROM ledger WHERE transfer_id LIKE 'ext:%:k'") == 20
    assert await audit_violations(pool) == {}


async def test_a_pass_bills_a_minute_due_at_the_ms_its_clock_reached(pool, services):
    """A clock's float a hair short of a minute's start (a manual clock sums its steps) is the
    same ms as the start: the pass bills that minute, as every operation at that time would
    (the timers once compared floats, and a refund of a call the pass should have dropped
    read it as ongoing)."""
    user, listener = await people(pool, 0)
    sh = shard(services)
    start = 1_800_000_212.629
    await top_up(sh, user, 15, "k", start)
    call_id = await new_call(pool, sh, user, listener, now=start)
    due = (to_ms(start) + to_ms(MIN)) / 1000  # minute 2's start, as the call holds it
    short = math.nextafter(due, 0)
    assert short < due and to_ms(short) == to_ms(due)
    await sh.bill_due(short, True)  # 5 coins left: minute 2 cannot be paid, the call drops
    row = await pool.fetchrow(
        "SELECT status, billed_minutes FROM calls WHERE call_id = $1", call_id
    )
    assert (row["status"], row["billed_minutes"]) == ("dropped", 1)
