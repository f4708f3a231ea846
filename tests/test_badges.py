"""Daily badges against real PostgreSQL."""

import datetime as dt

from actors import Call
from actors.money import Transfer
from persistence import store
from persistence.badges import BadgeThresholds, assign_daily_badges, day_window
from persistence.records import call_start_record
from persistence.writer import LedgerWriter

TODAY = dt.date(2027, 1, 16)
YESTERDAY_NOON = dt.datetime(2027, 1, 15, 12, tzinfo=dt.UTC).timestamp()
LOW = BadgeThresholds(bronze_minutes=3, silver_minutes=6, gold_minutes=9)


async def talk(pool, services, user, listener, minutes, at, call_id):
    """Commit a call of `minutes` billed minutes starting at `at`."""
    w = LedgerWriter(services.database_url)
    call = Call(call_id, user, listener, "audio", "basic", 10, 100, at, 60.0, 240)
    records = [
        Transfer(
            f"ext:{user}:{call_id}",
            user,
            "coins",
            10 * minutes,
            "purchase",
            None,
            None,
            int(at * 1000),
        ),
        call_start_record(call),
    ]
    for m in range(1, minutes + 1):
        records.append(
            Transfer(
                f"call:{call_id}:{m}",
                user,
                "coins",
                -10,
                "spend",
                call_id,
                m,
                int((at + 60 * m) * 1000),
            )
        )
    await w.write(records)


async def test_badges_come_from_yesterdays_minutes_and_a_second_run_writes_the_same(pool, services):
    user = await store.create_user(pool, "u", "user")
    listeners = [await store.create_user(pool, f"l{i}", "listener") for i in range(4)]
    for i, (listener, minutes) in enumerate(zip(listeners, (0, 3, 7, 10), strict=True)):
        if minutes:
            await talk(pool, services, user, listener, minutes, YESTERDAY_NOON, 100 + i)
    # Minutes billed today do not count for today's badge.
    await talk(pool, services, user, listeners[0], 12, YESTERDAY_NOON + 86400, 200)
    stats = await assign_daily_badges(pool, TODAY, "UTC", LOW)
    assert stats == {
        "total_listeners": 4,
        "basic_assigned": 1,
        "bronze_assigned": 1,
        "silver_assigned": 1,
        "gold_assigned": 1,
        "errors": 0,
    }
    first = await pool.fetch(
        "SELECT listener_id, day, tier, minutes FROM listener_badges ORDER BY listener_id"
    )
    assert await assign_daily_badges(pool, TODAY, "UTC", LOW) == stats
    again = await pool.fetch(
        "SELECT listener_id, day, tier, minutes FROM listener_badges ORDER BY listener_id"
    )
    assert first == again and [r["tier"] for r in first] == ["basic", "bronze", "silver", "gold"]


async def test_minutes_of_calls_dropped_for_low_balance_count_too(pool, services):
    user = await store.create_user(pool, "u", "user")
    listener = await store.create_user(pool, "l", "listener")
    await talk(pool, services, user, listener, 4, YESTERDAY_NOON, 7)
    await pool.execute(
        "UPDATE calls SET status = 'dropped', end_reason = 'insufficient_coins', "
        "ended_at = now(), billed_minutes = 4, coins_spent = 40, "
        "earnings_paise = 400 WHERE call_id = 7"
    )
    stats = await assign_daily_badges(pool, TODAY, "UTC", LOW)
    assert stats["bronze_assigned"] == 1


async def test_a_listener_whose_row_cannot_be_written_is_an_error_and_the_rest_are_assigned(
    pool, services
):
    listeners = [await store.create_user(pool, f"l{i}", "listener") for i in range(3)]
    bad = listeners[1]
    await pool.execute(f"""
        CREATE OR REPLACE FUNCTION refuse_badge() RETURNS trigger AS $$
        BEGIN IF NEW.listener_id = {bad} THEN RAISE EXCEPTION 'disk full'; END IF;
        RETURN NEW; END $$ LANGUAGE plpgsql;
        CREATE TRIGGER refuse_badge BEFORE INSERT ON listener_badges
            FOR EACH ROW EXECUTE FUNCTION refuse_badge();""")
    try:
        stats = await assign_daily_badges(pool, TODAY, "UTC", LOW)
    finally:
        await pool.execute("DROP TRIGGER refuse_badge ON listener_badges")
    assert stats["errors"] == 1 and stats["basic_assigned"] == 2
    written = {
        r["listener_id"] for r in await pool.fetch("SELECT listener_id FROM listener_badges")
    }
    assert written == {listeners[0], listeners[2]}


def test_yesterday_is_a_local_day_in_the_configured_time_zone():
    start, end = day_window(TODAY, "Asia/Kolkata")
    assert start.isoformat() == "2027-01-15T00:00:00+05:30"
    assert (end - start) == dt.timedelta(days=1)
    start, end = day_window(dt.date(2027, 3, 15), "America/New_York")  # DST began on the 14th
    assert (end.timestamp() - start.timestamp()) == 23 * 3600
