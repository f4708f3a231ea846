"""The Engine API, each test on both placements (the `engine` fixture), on a manual clock."""

import pytest

from actors import (
    IdempotencyConflict,
    InsufficientCoins,
    InsufficientEarnings,
    InvalidInput,
    PartyBusy,
    UnknownCall,
    UnknownUser,
)
from persistence.db import get_pool
from tests.conftest import OnOneEngine
from tests.helpers import answered, audit_violations, eventually, restart_actor

MIN = 60.0


async def pair(engine, coins):
    user = await engine.create_user("alice")
    listener = await engine.create_listener("bob")
    if coins:
        await engine.top_up(user, coins, idempotency_key="seed")
    return user, listener


def items(lanes: dict, name: str) -> int:
    """Requests a lane has carried (0 before its first)."""
    return lanes.get(name, {}).get("items", 0)


async def db(engine):
    return await get_pool(engine.database_url)


async def _ended(engine, call_id):
    await engine.advance(0)
    row = await engine.get_call(call_id)
    return row if row["status"] != "ongoing" else None


@pytest.mark.xdist_group("engine_refusals")  # in a row on one worker: one engine per placement
class TestRefusals:
    """Each case refuses and changes nothing: they share one engine per placement."""

    @pytest.mark.parametrize(
        ("call", "error", "message"),
        [
            (lambda e, u, v: e.top_up(u, 0), InvalidInput, "amount"),
            (lambda e, u, v: e.top_up(u, 1.5), InvalidInput, "amount"),
            (lambda e, u, v: e.top_up(u, -3), InvalidInput, "amount"),
            (lambda e, u, v: e.top_up(u, 10, "spend"), InvalidInput, "tx_type"),
            (lambda e, u, v: e.top_up(u, 10, "purchase", ""), InvalidInput, "idempotency_key"),
            (lambda e, u, v: e.top_up(9999, 10), UnknownUser, "9999"),
            (lambda e, u, v: e.top_up("1", 10), InvalidInput, "user_id"),
            (lambda e, u, v: e.start_call(u, v, "fax"), InvalidInput, "call_type"),
            (lambda e, u, v: e.start_call(u, 9999), UnknownUser, "9999"),
            (lambda e, u, v: e.start_call(v, u), InvalidInput, "is a user, not a listener"),
            (lambda e, u, v: e.start_call(v, v), InvalidInput, "is a listener, not a user"),
            (lambda e, u, v: e.end_call(9999), UnknownCall, "9999"),
            (lambda e, u, v: e.withdraw(u, 10), InvalidInput, "not a listener"),
            (lambda e, u, v: e.create_user("x", "admin"), InvalidInput, "role"),
        ],
    )
    async def test_bad_input_is_refused_by_name_and_changes_nothing(
        self, shared_engine, call, error, message
    ):
        engine = shared_engine
        user, listener = await pair(engine, 100)
        pool = await db(engine)
        before = await pool.fetchval("SELECT count(*) FROM ledger")
        with pytest.raises(error, match=message):
            await call(engine, user, listener)
        assert await pool.fetchval("SELECT count(*) FROM ledger") == before
        assert (await engine.balance(user))["balance_coins"] == 100


async def test_a_restarted_engine_carries_on_without_billing_twice(engine):
    from engine.api import Engine

    user, listener = await pair(engine, 100)
    call = await engine.start_call(user, listener)
    await engine.advance(2 * MIN)
    now = engine.clock.now()
    await engine.stop()

    again = Engine(engine.config)
    await again.start()
    try:
        again.clock.set(now)
        await again.advance(MIN)  # minute 4 only
        s = await again.end_call(call["call_id"])
        assert s["billed_minutes"] == 4
        assert (await again.balance(user))["balance_coins"] == 60
        assert await audit_violations(await db(again)) == {}
    finally:
        await again.stop()


async def test_stop_drains_every_buffer_into_postgres(services, pool, ray_session):
    from engine.api import Engine
    from persistence.client import ClientLimits
    from tests.conftest import engine_config

    for placement in ("sharded", "actor-per-call"):
        # Minutes would sit an hour in the producers' buffers: only stop() writes them.
        cfg = engine_config(services, placement, client=ClientLimits(flush_interval_ms=3_600_000))
        eng = await Engine(cfg).start()
        user, listener = await pair(eng, 100)
        call = await eng.start_call(user, listener)
        await eng.advance(3 * MIN)
        await eng.stop()
        pool = await get_pool(services.database_url)  # stop() closed this process's pools
        minutes = await pool.fetchval(
            "SELECT count(*) FROM ledger WHERE call_id = $1 AND tx_type = 'spend'", call["call_id"]
        )
        assert minutes == 4, placement
        await pool.execute(
            "UPDATE calls SET status = 'completed', end_reason = 'hangup', ended_at = now(), "
            "billed_minutes = 4, coins_spent = 40, earnings_paise = 400 WHERE call_id = $1",
            call["call_id"],
        )
        await pool.execute(
            "UPDATE wallets SET settled_coins = settled_coins - 40 WHERE user_id = $1", user
        )


async def _answers(engine, call_id):
    try:
        return (await engine.get_call(call_id))["billed_minutes"] == 2
    except Exception:  # noqa: BLE001 - restarting
        return False


async def test_concurrent_requests_share_messages_and_each_gets_its_own_answer(engine):
    """Group commit: concurrent requests travel to a shard together, and still each one is
    applied once and answered with its own result or error."""
    import asyncio

    users = [await engine.create_user(f"g{i}") for i in range(8)]
    listeners = [await engine.create_listener(f"gl{i}") for i in range(8)]
    requests = [engine.top_up(u, 100, idempotency_key="a") for u in users]
    requests += [engine.top_up(u, 100, idempotency_key="a") for u in users]  # repeats
    requests += [engine.spend(u, 1_000, idempotency_key="big") for u in users[:2]]
    requests += [engine.top_up(10**12, 100, idempotency_key="a")]
    out = await asyncio.gather(*requests, return_exceptions=True)
    assert [o["balance_coins"] for o in out[:16]] == [100] * 16
    assert sum(o["applied"] for o in out[:16]) == 8
    assert all(isinstance(o, InsufficientCoins) for o in out[16:18])
    assert isinstance(out[18], UnknownUser)
    with pytest.raises(IdempotencyConflict):
        await engine.top_up(users[0], 100, idempotency_key="a", tx_type="bonus")
    pairs = zip(users, listeners, strict=True)
    calls = await asyncio.gather(*(engine.start_call(u, v) for u, v in pairs))
    ended = await asyncio.gather(*(engine.end_call(c["call_id"]) for c in calls))
    assert [e["coins_spent"] for e in ended] == [c["rate_coins"] for c in calls]
    if engine.placement.name == "sharded":
        sent = list(engine.placement._lanes.lanes().values())
        assert sum(s["items"] for s in sent) > 2 * sum(s["batches"] for s in sent)
        assert max(s["largest_batch"] for s in sent) > 1
    await engine.sync()
    assert await audit_violations(await db(engine)) == {}


async def test_a_wallet_actor_that_lost_unwritten_minutes_bills_them_again_at_the_end(
    services, pool, ray_session
):
    """Chaos found it: on actor-per-call the payer's wallet actor died with a minute it had
    billed but not written; its successor stood a minute behind the call actor, and the
    hang-up failed on that disagreement. The call now has the wallet bill again first."""
    from engine.api import Engine
    from engine.runtime.raycalls import wallet_name
    from persistence.client import ClientLimits
    from tests.conftest import engine_config

    # Minutes wait an hour in the wallet actor's buffer: killing it loses minute 2.
    cfg = engine_config(
        services, "actor-per-call", client=ClientLimits(flush_interval_ms=3_600_000)
    )
    eng = await Engine(cfg).start()
    try:
        user, listener = await pair(eng, 100)
        call = await eng.start_call(user, listener)
        await eng.advance(MIN)
        assert (await eng.get_call(call["call_id"]))["billed_minutes"] == 2
        await restart_actor(wallet_name(user))
        s = await eventually(
            lambda: answered(lambda: eng.end_call(call["call_id"])), what="hang-up answered"
        )
        assert s["billed_minutes"] == 2 and s["coins_spent"] == 20
        await eng.sync()
        assert (await eng.balance(user))["balance_coins"] == 80
        assert await audit_violations(await db(eng)) == {}
    finally:
        await eng.stop()


@pytest.mark.xdist_group("engine_scenarios")  # in a row on one worker: one engine per placement
class TestOnOneEngine(OnOneEngine):
    """Scenarios on one engine per placement, each with people of its own."""

    async def test_a_call_bills_each_elapsed_minute_and_drops_when_the_user_cannot_pay(
        self, engine
    ):
        user, listener = await pair(engine, 45)
        call = await engine.start_call(user, listener, "audio")
        assert call["billed_minutes"] == 1 and call["rate_coins"] == 10
        await engine.advance(MIN)
        assert (await engine.get_call(call["call_id"]))["billed_minutes"] == 2
        await engine.advance(5 * MIN)  # one late look bills every started minute it can
        ended = await eventually(
            lambda: _ended(engine, call["call_id"]), what="call dropped and settled"
        )
        assert (ended["status"], ended["end_reason"]) == ("dropped", "insufficient_coins")
        assert ended["billed_minutes"] == 4 and ended["coins_spent"] == 40
        await engine.sync()  # the listener is released once the settlement is committed
        assert (await engine.balance(user))["balance_coins"] == 5
        assert (await engine.balance(listener))["earnings_paise"] == 400
        assert await audit_violations(await db(engine)) == {}

    async def test_hang_up_mid_minute_keeps_the_started_minute_billed(self, engine):
        user, listener = await pair(engine, 100)
        call = await engine.start_call(user, listener, "audio")
        await engine.advance(MIN + 30)  # inside minute 2
        s = await engine.end_call(call["call_id"])
        assert (s["status"], s["end_reason"], s["billed_minutes"]) == ("completed", "hangup", 2)
        assert s["earnings_paise"] == 200
        assert await engine.end_call(call["call_id"]) == s  # ending twice changes nothing
        earns = await (await db(engine)).fetchval(
            "SELECT count(*) FROM ledger WHERE tx_type = 'earn' AND call_id = $1", call["call_id"]
        )
        assert earns == 1
        assert (await engine.balance(listener))["earnings_paise"] == 200

    async def test_a_call_the_user_cannot_start_changes_nothing(self, engine):
        user, listener = await pair(engine, 59)
        with pytest.raises(InsufficientCoins, match="minute 1 costs 60"):
            await engine.start_call(user, listener, "video")
        pool = await db(engine)
        assert await pool.fetchval("SELECT count(*) FROM calls WHERE user_id = $1", user) == 0
        assert (await engine.balance(user))["balance_coins"] == 59
        other = await engine.create_user("carol")
        await engine.top_up(other, 10)
        await engine.start_call(other, listener, "audio")  # the listener was left free

    async def test_a_busy_listener_is_refused_until_the_call_ends(self, engine):
        user, listener = await pair(engine, 100)
        second = await engine.create_user("carol")
        await engine.top_up(second, 100)
        call = await engine.start_call(user, listener)
        with pytest.raises(PartyBusy, match=f"listener {listener} is already in call"):
            await engine.start_call(second, listener)
        await engine.end_call(call["call_id"])
        await engine.start_call(second, listener)

    async def test_top_ups_are_idempotent_and_a_reused_key_is_refused(self, engine):
        user, _ = await pair(engine, 0)
        first = await engine.top_up(user, 50, "purchase", "order-1")
        again = await engine.top_up(user, 50, "purchase", "order-1")
        assert first["applied"] and not again["applied"] and again["balance_coins"] == 50
        with pytest.raises(IdempotencyConflict, match="order-1"):
            await engine.top_up(user, 70, "purchase", "order-1")
        await engine.top_up(user, 5, "bonus")
        await engine.top_up(user, 5, "referral_bonus")
        assert (await engine.balance(user))["balance_coins"] == 60

    async def test_listener_withdraws_earnings_never_more(self, engine):
        user, listener = await pair(engine, 100)
        call = await engine.start_call(user, listener)
        await engine.advance(2 * MIN)
        await engine.end_call(call["call_id"])
        with pytest.raises(InsufficientEarnings):
            await engine.withdraw(listener, 301)
        out = await engine.withdraw(listener, 300, "payout-1")
        assert out["earnings_paise"] == 0
        assert not (await engine.withdraw(listener, 300, "payout-1"))["applied"]
        assert await audit_violations(await db(engine)) == {}

    async def test_inspect_shows_live_state(self, engine):
        user, listener = await pair(engine, 100)
        call = await engine.start_call(user, listener)
        await engine.advance(MIN)
        live = await engine.inspect("call", call["call_id"])
        assert (
            live["billed_minutes"] == 2 and live["next_tick_at"] == live["connected_at"] + 2 * MIN
        )
        wallet = await engine.inspect("wallet", user)
        assert wallet["balance_coins"] == 80
        assert wallet["calls"][call["call_id"]]["billed_minutes"] == 2
        await engine.sync()
        writer = await engine.inspect("writer")
        assert writer["ledger_rows_inserted"] >= 3 and writer["queued_records"] == 0
        assert await engine.inspect("shards")

    async def test_a_killed_actor_is_restarted_and_carries_on_from_postgres(self, engine):

        from engine.runtime.raycalls import call_name, shard_name

        user, listener = await pair(engine, 100)
        call = await engine.start_call(user, listener)
        await engine.advance(MIN)
        await engine.sync()
        name = (
            shard_name(user % 2)
            if engine.placement.name == "sharded"
            else call_name(call["call_id"])
        )
        await restart_actor(name)
        await eventually(lambda: _answers(engine, call["call_id"]), what=f"{name} answering")
        await engine.advance(MIN)
        s = await engine.end_call(call["call_id"])
        assert s["billed_minutes"] == 3
        assert (await engine.balance(user))["balance_coins"] == 70
        assert await audit_violations(await db(engine)) == {}

    async def test_redis_holds_the_ongoing_call_and_both_parties_busy_until_it_settles(
        self, engine
    ):
        import redis.asyncio as aioredis

        from persistence import keys

        user, listener = await pair(engine, 100)
        call = await engine.start_call(user, listener)
        r = aioredis.Redis.from_url(engine.redis_url, decode_responses=True)
        try:
            cached = await r.hgetall(keys.call_key(call["call_id"]))
            assert cached["user_id"] == str(user) and cached["listener_id"] == str(listener)
            assert await r.zscore(keys.BUSY_UNTIL, str(user)) == float("inf")
            assert await r.zscore(keys.BUSY_UNTIL, str(listener)) == float("inf")
            await engine.end_call(call["call_id"])
            assert not await r.exists(keys.call_key(call["call_id"]))
            assert await r.zscore(keys.BUSY_UNTIL, str(user)) is None
            assert await r.zscore(keys.BUSY_UNTIL, str(listener)) is None
            assert await engine.heartbeat(user)
            assert await r.sismember(keys.ONLINE, str(user))
        finally:
            await r.aclose()

    async def test_concurrent_first_requests_for_one_user_share_one_wallet(self, engine):
        """Chaos found it: on actor-per-call, two first requests for a user each made a wallet
        actor handle; the second replaced the owner's, and the actor died with it."""
        import asyncio

        user = await engine.create_user("u")
        await asyncio.gather(*(engine.top_up(user, 10, idempotency_key=f"k{i}") for i in range(5)))
        await engine.sync()
        assert (await engine.balance(user))["balance_coins"] == 50
        await engine.sync()

    async def test_a_start_whose_parties_share_a_shard_goes_whole_or_not_at_all(self, engine):
        """Payer and listener on one host: the hold and the opening travel in one message, and a
        start refused there leaves the listener free, as a start across two hosts does."""
        from engine.runtime.raycalls import shard_of

        sharded = engine.placement.name == "sharded"
        before = engine.placement._lanes.lanes() if sharded else {}  # the engine is shared
        user = await engine.create_user("same-a")
        listener = await engine.create_listener("same-b")
        shards = engine.config.shards
        if shard_of(user, shards) != shard_of(listener, shards):
            listener = await engine.create_listener("same-c")
        assert shard_of(user, shards) == shard_of(listener, shards)
        with pytest.raises(InsufficientCoins):
            await engine.start_call(user, listener)
        await engine.top_up(user, 100, idempotency_key="k")
        call = await engine.start_call(user, listener)  # the refused start did not keep the hold
        assert (call["tier"], call["billed_minutes"], call["coins_spent"]) == ("basic", 1, 10)
        with pytest.raises(PartyBusy):
            await engine.start_call(user, listener)
        ended = await engine.end_call(call["call_id"])
        assert ended["coins_spent"] == 10 and (await engine.balance(listener))["earnings_paise"] > 0
        if sharded:
            lanes = engine.placement._lanes.lanes()
            starts = f"StartCall to shard:{shard_of(user, shards)}"
            assert items(lanes, starts) - items(before, starts) == 3
            assert not any(name.startswith("ReserveListener") for name in lanes)
        await engine.sync()
        assert await audit_violations(await db(engine)) == {}

    async def test_a_start_across_shards_is_one_message_from_the_engine(self, engine):
        """Payer and listener on two shards: the Engine sends the start to the payer's shard
        alone, which holds the listener on theirs; a start refused there frees the listener."""
        from engine.runtime.raycalls import shard_of

        if engine.placement.name != "sharded":
            pytest.skip("shards only")
        shards = engine.config.shards
        shard_lanes = await engine.inspect("shards")  # the engine is shared: counts from here
        user = await engine.create_user("across-a")
        listener = await engine.create_listener("across-b")
        while shard_of(listener, shards) == shard_of(user, shards):
            listener = await engine.create_listener(f"across-{listener}")
        with pytest.raises(InsufficientCoins):
            await engine.start_call(user, listener)
        await engine.top_up(user, 100, idempotency_key="k")
        call = await engine.start_call(user, listener)  # the refused start let the listener go
        assert (call["billed_minutes"], call["coins_spent"]) == (1, 10)
        other = await engine.create_user("across-c")
        await engine.top_up(other, 100, idempotency_key="k")
        with pytest.raises(PartyBusy):
            await engine.start_call(other, listener)
        lanes = engine.placement._lanes.lanes()
        assert not any(name.startswith("ReserveListener") for name in lanes)
        payer_shard = (await engine.inspect("shards"))[shard_of(user, shards)]
        holds = payer_shard["batches"]["peer_requests"]
        held_before = shard_lanes[shard_of(user, shards)]["batches"]["peer_requests"]
        asked = 2 + (shard_of(other, shards) == shard_of(user, shards))  # `other` too, from there
        reserves = f"ReserveListener to shard:{shard_of(listener, shards)}"
        assert items(holds, reserves) - items(held_before, reserves) == asked
        ended = await engine.end_call(call["call_id"])
        assert ended["coins_spent"] == 10 and (await engine.balance(listener))["earnings_paise"] > 0
        await engine.sync()
        assert await audit_violations(await db(engine)) == {}

    async def test_a_spend_key_is_remembered_after_a_restart(self, engine):
        """Chaos found it: a restarted wallet forgot the keys of spends outside calls, and a late
        repeat of a spend was applied again in memory."""

        from engine.runtime.raycalls import shard_name, wallet_name

        user, _ = await pair(engine, 100)
        await engine.spend(user, 30, idempotency_key="s1")
        await engine.sync()
        sharded = engine.placement.name == "sharded"
        name = shard_name(user % 2) if sharded else wallet_name(user)
        await restart_actor(name)
        again = await eventually(
            lambda: answered(lambda: engine.spend(user, 30, idempotency_key="s1")),
            what=f"{name} answering",
        )
        assert again["applied"] is False and again["balance_coins"] == 70
        with pytest.raises(IdempotencyConflict):
            await engine.spend(user, 31, idempotency_key="s1")
        assert (await engine.balance(user))["balance_coins"] == 70
