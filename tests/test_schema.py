"""Migrations carry a database forward without moving a coin."""

import asyncpg

from persistence import store
from persistence.audit import run_audit
from persistence.db import recreate_database, with_database
from persistence.schema import MIGRATIONS, migrate


async def test_settling_minutes_at_the_end_keeps_the_balances_of_a_version_2_database(services):
    """Version 2 moved the wallet row by every minute; version 3 moves it when the call ends.
    An ongoing call's minutes, already in the wallet row, must not be taken twice."""
    name = "billing_test_migration"
    await recreate_database(services.admin_url, name)
    conn = await asyncpg.connect(with_database(services.admin_url, name))
    try:
        assert await migrate(conn, through=2) == 2
        await conn.execute(
            """INSERT INTO users VALUES (1, 'u', 'user', now()), (2, 'l', 'listener', now()),
                                        (3, 'm', 'listener', now());
               INSERT INTO wallets VALUES (1, 0, 50), (2, 0, 0), (3, 0, 0);
               INSERT INTO listener_earnings VALUES (2, 0, 100), (3, 0, 0);
               INSERT INTO calls (call_id, user_id, listener_id, call_type, tier, rate_coins,
                                  rate_paise, status, end_reason, connected_at, ended_at,
                                  billed_minutes, coins_spent, earnings_paise)
               VALUES (1, 1, 2, 'audio', 'basic', 10, 100, 'completed', 'hangup', now(), now(),
                       1, 10, 100),
                      (2, 1, 3, 'audio', 'basic', 10, 100, 'ongoing', NULL, now(), NULL,
                       0, 0, 0);
               INSERT INTO ledger VALUES
                   ('ext:1:a', 1, 'coins', 80, 'purchase', NULL, NULL, now() - interval '1h'),
                   ('call:1:1', 1, 'coins', -10, 'spend', 1, 1, now()),
                   ('earn:call:1', 2, 'paise', 100, 'earn', 1, NULL, now()),
                   ('call:2:1', 1, 'coins', -10, 'spend', 2, 1, now()),
                   ('call:2:2', 1, 'coins', -10, 'spend', 2, 2, now())"""
        )
        assert await migrate(conn) == max(v for v, _, _ in MIGRATIONS)
        row = await conn.fetchrow("SELECT * FROM wallet_balances WHERE user_id = 1")
        # 80 bought; call 1 settled (10); call 2's two minutes wait for its end
        assert (row["settled_coins"], row["unsettled_coins"], row["balance_coins"]) == (70, -20, 50)
        pool = await asyncpg.create_pool(with_database(services.admin_url, name))
        try:
            assert {n: c for n, c in await run_audit(pool) if c} == {}
        finally:
            await pool.close()
    finally:
        await conn.close()
        await recreate_database(services.admin_url, name, drop_only=True)


async def test_a_persons_calls_page_newest_first_through_indexes(pool, services):
    from actors.call import Call
    from persistence.records import call_start_record
    from persistence.writer import LedgerWriter

    payer = await store.create_user(pool, "p", "user")
    listeners = [await store.create_user(pool, f"l{i}", "listener") for i in range(5)]
    call_ids = store.SequenceIds(5)
    ids = [await call_ids.next(pool) for _ in range(5)]
    calls = [
        Call(c, payer, listeners[i], "audio", "basic", 10, 100, 1.8e9, 60.0, 240)
        for i, c in enumerate(ids)
    ]
    await LedgerWriter(services.database_url).write([call_start_record(c, None) for c in calls])
    page = await store.calls_of(pool, payer, limit=2)
    assert [c["call_id"] for c in page] == [ids[4], ids[3]]
    rest = await store.calls_of(pool, payer, limit=10, before=ids[3])
    assert [c["call_id"] for c in rest] == [ids[2], ids[1], ids[0]]
    assert [c["call_id"] for c in await store.calls_of(pool, listeners[1])] == [ids[1]]
    # Both halves are index scans; before migration 6 the query read every call. Among many
    # others' calls (and their statistics), as in production: with a few rows, or statistics
    # left by another test, scanning the primary key backwards can cost the planner as little.
    other, other_listener = listeners[2], listeners[3]
    await pool.execute(
        """INSERT INTO calls (call_id, user_id, listener_id, call_type, tier, rate_coins,
                              rate_paise, status, connected_at, ended_at, end_reason)
           SELECT 1000000 + n, $1, $2, 'audio', 'basic', 10, 100, 'completed', now(), now(),
                  'hangup'

           FROM generate_series(1, 5000) AS n""",
        other,
        other_listener,
    )
    await pool.execute("ANALYZE calls")
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(
            r[0] for r in await conn.fetch("EXPLAIN " + store.CALLS_OF_SQL, payer, 2**62, 20)
        )
    assert "calls_by_user" in plan and "calls_by_listener" in plan, plan
