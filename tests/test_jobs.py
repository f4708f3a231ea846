"""The jobs and the older system's faults, on both placements (manual clock)."""

import asyncio
import json

import pytest
import redis.asyncio as aioredis

from actors import InsufficientCoins, PartyBusy
from engine.api import Engine
from persistence import keys
from persistence.badges import BadgeThresholds
from tests.conftest import PLACEMENTS, OnOneEngine, engine_config
from tests.helpers import audit_violations, eventually
from tests.test_engine import MIN, db, pair


async def earns(engine, call_id):
    return await (await db(engine)).fetchval(
        "SELECT count(*) FROM ledger WHERE tx_type = 'earn' AND call_id = $1", call_id
    )


async def test_silent_parties_expire_the_call_once_and_free_everything(engine):
    user, listener = await pair(engine, 1000)
    quiet = await engine.start_call(user, listener)
    talker, other = await pair(engine, 1000)
    live = await engine.start_call(talker, other)
    await engine.advance(100)
    await engine.heartbeat(talker)
    await engine.heartbeat(other)
    await engine.advance(40)  # 140 s: the quiet pair is past the 120 s timeout
    assert await engine.cleanup_expired_calls() == 1
    s = await engine.get_call(quiet["call_id"])
    assert (s["status"], s["end_reason"], s["billed_minutes"]) == ("dropped", "expired", 3)
    assert (await engine.get_call(live["call_id"]))["status"] == "ongoing"
    assert await engine.cleanup_expired_calls() == 0  # settles once
    assert await earns(engine, quiet["call_id"]) == 1
    r = aioredis.Redis.from_url(engine.redis_url, decode_responses=True)
    assert not await r.exists(keys.call_key(quiet["call_id"]))
    assert await r.zscore(keys.BUSY_UNTIL, str(listener)) is None
    await r.aclose()
    await engine.start_call(user, listener)  # both free again


async def test_a_call_just_started_is_not_silent_before_its_heartbeat_reaches_redis(engine):
    """CI found it: the cleanup ran between a start's commit and its heartbeat's write, saw
    parties never seen, and expired a call one minute old. Connecting is a heartbeat."""
    user, listener = await pair(engine, 1000)
    call = await engine.start_call(user, listener)
    r = aioredis.Redis.from_url(engine.redis_url, decode_responses=True)
    await r.delete(keys.LAST_SEEN)  # as if the heartbeat had not been written yet
    await r.aclose()
    await engine.advance(60)
    assert await engine.cleanup_expired_calls() == 0
    assert (await engine.get_call(call["call_id"]))["status"] == "ongoing"
    await engine.advance(61)  # 121 s after connecting, and no heartbeat since
    assert await engine.cleanup_expired_calls() == 1


async def test_a_hang_up_racing_the_cleanup_job_settles_once(engine):
    user, listener = await pair(engine, 1000)
    call = await engine.start_call(user, listener)
    await engine.advance(150)
    results = await asyncio.gather(
        engine.end_call(call["call_id"]),
        engine.cleanup_expired_calls(),
        engine.end_call(call["call_id"]),
    )
    assert results[0] == results[2]
    assert await earns(engine, call["call_id"]) == 1
    await engine.sync()
    assert (await engine.balance(listener))["earnings_paise"] == 300
    assert await audit_violations(await db(engine)) == {}


@pytest.mark.parametrize("placement", PLACEMENTS)
async def test_a_users_balance_never_goes_below_zero_under_concurrent_calls(
    placement, services, pool, ray_session
):
    engine = await Engine(engine_config(services, placement, user_calls_max=3)).start()
    try:
        user = await engine.create_user("u")
        listeners = [await engine.create_listener(f"l{i}") for i in range(3)]
        await engine.top_up(user, 25)
        started = await asyncio.gather(
            *(engine.start_call(user, v) for v in listeners), return_exceptions=True
        )
        ok = [s for s in started if isinstance(s, dict)]
        assert len(ok) == 2
        assert all(isinstance(s, InsufficientCoins) for s in started if not isinstance(s, dict))
        for _ in range(3):
            await engine.advance(MIN)
        await engine.sync()
        assert (await engine.balance(user))["balance_coins"] == 5
        assert await audit_violations(pool) == {}
    finally:
        await engine.stop()


@pytest.mark.parametrize("placement", ["sharded", "actor-per-call"])
async def test_badges_fix_the_rate_of_calls_that_start_the_next_day(
    services, pool, ray_session, placement
):
    cfg = engine_config(services, placement, badge_thresholds=BadgeThresholds(3, 6, 9))
    engine = await Engine(cfg).start()
    try:
        user, listener = await pair(engine, 10_000)
        call = await engine.start_call(user, listener)
        await engine.advance(9 * MIN + 1)
        await engine.end_call(call["call_id"])
        await engine.sync()
        engine.clock.advance(86_400)
        # Before the day's run: basic, and the listener's host remembers it for the day...
        early = await engine.start_call(user, listener)
        assert early["tier"] == "basic"
        await engine.end_call(early["call_id"])
        stats = await engine.run_job("badges")  # ...until the run makes it read again
        assert stats["result"]["gold_assigned"] == 1
        again = await engine.start_call(user, listener)
        assert (again["tier"], again["rate_paise"]) == ("gold", 180)
    finally:
        await engine.stop()


async def test_scheduler_runs_jobs_as_ray_tasks_one_at_a_time(services, pool, ray_session):
    cfg = engine_config(services, "sharded", clock="real", jobs_interval_s=0.5)
    engine = await Engine(cfg).start()
    try:
        sched = engine.scheduler
        await eventually(
            lambda: {"presence", "cleanup"} <= set(sched.last),
            timeout_s=60,
            what="presence and cleanup ran",
        )
        run = sched.last["presence"]
        assert set(run["result"]) == {"marked_offline", "busy_cleared"}
        assert run["duration_s"] >= 0
        await sched.wait_idle()  # a badge run made up at start, if today's was missed
        assert sched.submit("badges") is True
        assert sched.submit("badges") is False  # never two runs of one job at once
        assert sched.skipped["badges"] == 1
        await sched.wait_idle()
        assert sched.last["badges"]["result"]["errors"] == 0
        recorded = await eventually(lambda: engine.writer.jobs(), what="runs recorded for inspect")
        assert "presence" in recorded
    finally:
        await engine.stop()


async def test_a_busy_time_a_user_set_is_cleared_when_it_passes(engine):
    from actors import InvalidInput

    user, listener = await pair(engine, 100)
    await engine.start_call(user, listener)
    other = await engine.create_user("c")
    assert await engine.set_busy_for(other, 30)
    assert not await engine.set_busy_for(user, 30)  # in a call: busy until the call ends
    with pytest.raises(InvalidInput, match="seconds"):
        await engine.set_busy_for(other, -1)
    assert await engine.cleanup_expired_busy_status() == 0
    engine.clock.advance(31)
    result = await engine.run_job("presence")
    assert result["result"]["busy_cleared"] == 1
    r = aioredis.Redis.from_url(engine.redis_url, decode_responses=True)
    assert await r.zscore(keys.BUSY_UNTIL, str(other)) is None
    assert await r.zscore(keys.BUSY_UNTIL, str(user)) == float("inf")
    await r.aclose()


async def test_a_missed_daily_badge_run_is_made_up_and_only_once(services, pool, ray_session):
    # The manual clock starts at 08:00 UTC: today's 00:01 run was due and did not happen.
    engine = await Engine(engine_config(services, "sharded", badges_at="00:01")).start()
    try:
        await engine.create_listener("l")
        assert await engine.badges_missed()
        await engine.assign_daily_badges()
        assert (await engine.assign_daily_badges())["total_listeners"] == 1  # again: harmless
        assert not await engine.badges_missed()
    finally:
        await engine.stop()
    later = await Engine(engine_config(services, "sharded", badges_at="23:59")).start()
    try:
        assert not await later.badges_missed()  # today's run is not due yet
    finally:
        await later.stop()


@pytest.mark.xdist_group("jobs_scenarios")  # in a row on one worker: one engine per placement
class TestJobsOnOneEngine(OnOneEngine):
    """Scenarios on one engine per placement, each with people of its own."""

    async def test_overlapping_deduction_runs_charge_each_minute_once(self, engine):
        user, listener = await pair(engine, 1000)
        call = await engine.start_call(user, listener)
        engine.clock.advance(5 * MIN)  # time moves; nothing billed yet
        await asyncio.gather(
            engine.bill_due(),
            engine.bill_due(),
            engine.get_call(call["call_id"]),
            engine.run_job("deduct"),
        )
        await engine.sync()
        assert (await engine.get_call(call["call_id"]))["billed_minutes"] == 6
        assert (await engine.balance(user))["balance_coins"] == 940
        assert await audit_violations(await db(engine)) == {}

    async def test_one_low_balance_notice_per_call(self, engine):
        r = aioredis.Redis.from_url(engine.redis_url, decode_responses=True)
        sub = r.pubsub()
        await sub.subscribe(keys.low_balance_channel(engine.redis_url))
        user, listener = await pair(engine, 50)  # five minutes
        call = await engine.start_call(user, listener)
        for _ in range(3):
            await engine.advance(MIN)  # 40 coins left, then 30, then 20: 2 minutes left
        await engine.advance(MIN)

        async def notices():
            out = []
            while m := await sub.get_message(ignore_subscribe_messages=True, timeout=0.2):
                notice = json.loads(m["data"])
                if notice["call_id"] == call["call_id"]:  # the engine is shared
                    out.append(notice)
            return out

        got = await eventually(notices, what="a low-balance notice")
        await asyncio.sleep(0.3)
        got += await notices()
        await sub.aclose()
        await r.aclose()
        assert len(got) == 1 and got[0]["minutes_left"] <= 2

    async def test_earnings_are_paise_never_coins(self, engine):
        from background_tasks.services.call_service import update_user_coin_balance

        user, listener = await pair(engine, 100)
        call = await engine.start_call(user, listener)
        await engine.advance(MIN)
        await engine.end_call(call["call_id"])
        assert await engine.balance(listener) == {
            "user_id": listener,
            "balance_coins": 0,
            "earnings_paise": 200,
            "buckets": [],
            "minutes_affordable": None,
        }
        with pytest.raises(ValueError, match="never coins"):
            await update_user_coin_balance(listener, 100, operation="add", tx_type="earn")
        assert (await engine.balance(listener))["balance_coins"] == 0

    async def test_a_second_call_to_a_busy_listener_is_refused(self, engine):
        user, listener = await pair(engine, 100)
        other = await engine.create_user("c")
        await engine.top_up(other, 100)
        await engine.start_call(user, listener)
        with pytest.raises(PartyBusy):
            await engine.start_call(other, listener)
