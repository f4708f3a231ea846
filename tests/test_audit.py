"""The audit finds each broken rule of money it checks, by name, and the CLI exits non-zero."""

import os
import subprocess
import sys

import pytest

from bench.setup import ongoing_calls
from persistence.audit import run_audit
from persistence.schema import TABLES

T0 = 1_800_000_000.0


async def violations(pool, **kw):
    return {name: n for name, n in await run_audit(pool, **kw) if n}


async def settled_call(pool):
    """Call 1 settled after 2 minutes, credited; calls 2 and 3 ongoing at minute 1."""
    await ongoing_calls(pool, 3, 100, T0)
    await pool.execute(
        f"""INSERT INTO ledger VALUES
               ('call:1:2', 1, 'coins', -10, 'spend', 1, 2, to_timestamp({T0 + 60})),
               ('earn:call:1', 4, 'paise', 200, 'earn', 1, NULL, to_timestamp({T0 + 90}))"""
    )
    # settling moves the wallet row by the call's two minutes
    await pool.execute("UPDATE wallets SET settled_coins = settled_coins - 20 WHERE user_id = 1")
    await pool.execute("UPDATE listener_earnings SET earnings_paise = 200 WHERE listener_id = 4")
    await pool.execute(
        f"""UPDATE calls SET status = 'completed', end_reason = 'hangup',
                  ended_at = to_timestamp({T0 + 90}), billed_minutes = 2, coins_spent = 20,
                  coins_charged = 20, coins_returned = 0, charged_seconds = 120,
                  earnings_paise = 200 WHERE call_id = 1"""
    )


CHARGE_CHECK = "settled calls whose charge, return or earnings disagree with their price and length"
CORRUPTIONS = [
    (
        "UPDATE wallets SET settled_coins = settled_coins + 5 WHERE user_id = 2",
        "coin balance = opening + transfers",
    ),
    (
        "UPDATE listener_earnings SET earnings_paise = 1 WHERE listener_id = 5",
        "earnings = opening + transfers",
    ),
    (
        "INSERT INTO ledger VALUES ('ext:99:x', 99, 'coins', 5, 'purchase', NULL, NULL, now())",
        "transfers to accounts that do not exist",
    ),
    (
        "INSERT INTO ledger VALUES ('call:2:x', 2, 'coins', 10, 'spend', 2, 2, now())",
        "transfers with the wrong unit or sign for their type",
    ),
    (
        "INSERT INTO ledger VALUES ('call:2:again', 2, 'coins', -10, 'spend', 2, 1, now())",
        "call minutes not billed exactly once, 1..n, at the call's rate",
    ),
    (
        "UPDATE calls SET coins_spent = 30 WHERE call_id = 1",
        CHARGE_CHECK,
    ),
    (
        "UPDATE calls SET coins_charged = 15, coins_returned = 5 WHERE call_id = 1",
        CHARGE_CHECK,
    ),
    (
        "INSERT INTO ledger VALUES ('unused:2', 2, 'coins', 5, 'unused', 2, NULL, now())",
        "prepaid coins not returned exactly when due, or returns without their call",
    ),
    (
        f"INSERT INTO rate_cards VALUES (7, to_timestamp({T0 + 1}), '{{}}', now(), NULL);"
        "UPDATE calls SET rate_card_id = 7 WHERE call_id = 1",
        "calls on a card before its date, or on a card that does not exist",
    ),
    (
        "INSERT INTO rate_cards VALUES (8, now() - interval '1 day', '{}', now(), NULL)",
        "rate cards dated before they were scheduled",
    ),
    (
        """INSERT INTO listener_prices (listener_id, prices, tier, rate_card_id, bounds, set_at)
           VALUES (4, '{"audio": 50}', 'basic', 0, '{"audio": [5, 15]}', now())""",
        "listener prices outside the bounds of their card and tier when set",
    ),
    (
        "DELETE FROM ledger WHERE transfer_id = 'earn:call:1'",
        "settled calls not credited to their listener exactly once",
    ),
]


@pytest.mark.parametrize(("sql", "check"), CORRUPTIONS)
async def test_each_broken_rule_is_found_by_its_check(pool, sql, check):
    await settled_call(pool)
    assert await violations(pool) == {}
    await pool.execute(sql)
    found = await violations(pool)
    assert check in found, found


async def test_an_ongoing_call_billed_too_far_behind_is_found(pool):
    await settled_call(pool)
    assert await violations(pool, now=T0 + 90, minute_seconds=60.0) == {}
    found = await violations(pool, now=T0 + 300, minute_seconds=60.0, lag_minutes_max=2)
    assert found == {"ongoing calls more than 2 minutes behind": 2}


def test_the_audit_command_exits_non_zero_on_a_violation(services):
    env = dict(os.environ, DATABASE_URL=services.database_url)

    def audit():
        return subprocess.run(
            [sys.executable, "-m", "engine.cli", "audit"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    import asyncio

    import asyncpg

    async def corrupt(sql):
        conn = await asyncpg.connect(services.database_url)
        await conn.execute(sql)
        await conn.close()

    asyncio.run(
        corrupt(
            "TRUNCATE listener_badges, ledger, calls, listener_earnings, wallets, "
            "users RESTART IDENTITY CASCADE"
        )
    )
    clean = audit()
    assert clean.returncode == 0 and "audit passed" in clean.stdout, clean.stdout + clean.stderr
    asyncio.run(
        corrupt(
            "INSERT INTO users VALUES (1, 'a', 'user', now()); INSERT INTO wallets VALUES (1, 0, 7)"
        )
    )
    broken = audit()
    # the account and the system-wide total both disagree with the ledger
    assert broken.returncode == 1 and "2 violations" in broken.stdout


# The tables of a history, parents first (foreign keys).
RESTORE_ORDER = (
    "users",
    "wallets",
    "listener_earnings",
    "offers",
    "calls",
    "offer_claims",
    "listener_offer_optins",
    "ledger",
    "events",
    "listener_badges",
    "payouts",
    "refunds",
    "buckets",
    "api_keys",
    "webhooks",
    "webhook_deliveries",
    "rate_cards",
    "listener_prices",
)


# One worker runs the module's tests in a row, so that the history is built once.
pytestmark = pytest.mark.xdist_group("audit")


@pytest.fixture(scope="module")
async def history_rows(services, ray_session):
    """A history the engine made on the manual clock: call A hung up after 3 minutes, its
    listener then withdrew; call B dropped for coins at its third minute, and its payer topped
    up a minute after the drop; then payouts settled both ways and both calls refunded. Call C,
    of a payer without coins, took a code's 5 free minutes and hung up with A: 2 go back."""
    from engine.api import Engine
    from tests.conftest import clean, engine_config

    pool = await clean(services)
    eng = await Engine(engine_config(services, "sharded")).start()
    ids = {}
    try:
        ids["ua"], ids["la"] = await eng.create_user("a"), await eng.create_listener("la")
        ids["ub"], ids["lb"] = await eng.create_user("b"), await eng.create_listener("lb")
        await eng.top_up(ids["ua"], 100, idempotency_key="seed")
        await eng.top_up(ids["ub"], 20, idempotency_key="seed")
        # A bonus that expires during call A: minutes 1 and 2 draw 20 of it, 5 expire at 90 s.
        now = eng.clock.now()
        await eng.top_up(ids["ua"], 25, "bonus", idempotency_key="bonus", expires_at=now + 90)
        ids["uc"], ids["lc"] = await eng.create_user("c"), await eng.create_listener("lc")
        offer = await eng.create_offer(
            5, "code", now - 1, now + 3600, budget_minutes=8, code="AUDIT", call_types=["audio"]
        )
        ids["offer"] = offer["offer_id"]
        ids["a"] = (await eng.start_call(ids["ua"], ids["la"]))["call_id"]
        ids["b"] = (await eng.start_call(ids["ub"], ids["lb"]))["call_id"]
        ids["c"] = (await eng.start_call(ids["uc"], ids["lc"], offer_code="AUDIT"))["call_id"]
        await eng.advance(150)
        await eng.end_call(ids["a"])
        await eng.end_call(ids["c"])
        paid = await eng.withdraw(ids["la"], 100, idempotency_key="w")
        await eng.advance(60)
        await eng.top_up(ids["ub"], 50, idempotency_key="after")
        # Payouts and refunds: one payout paid, one rejected; call A refunded a minute (its
        # listener pays), call B its two minutes with the coins alone.
        await eng.settle_payout(paid["payout_id"], "paid")
        rejected = await eng.withdraw(ids["la"], 50, idempotency_key="w2")
        await eng.settle_payout(rejected["payout_id"], "rejected")
        await eng.refund_call(ids["a"], 1, idempotency_key="r")
        await eng.refund_call(ids["b"], idempotency_key="r", listener_pays=False)
        await eng.sync()
        # Made once: each test gets these rows back in a clean database (an engine per test
        # made the tampering tests most of this file's time).
        rows = {t: await pool.fetch(f"SELECT * FROM {t}") for t in RESTORE_ORDER}
    finally:
        await eng.stop()  # it closes the shared pool
    return ids, rows


@pytest.fixture
async def engine_history(pool, history_rows):
    ids, rows = history_rows
    assert set(RESTORE_ORDER) == set(TABLES), "a table the history does not restore"
    for table in RESTORE_ORDER:
        if rows[table]:
            columns = list(rows[table][0].keys())
            records = [tuple(r) for r in rows[table]]
            await pool.copy_records_to_table(table, records=records, columns=columns)
    return ids


POLICY_CORRUPTIONS = [
    (
        "UPDATE calls SET ended_at = ended_at + interval '5 minutes' WHERE call_id = {a}",
        "ended calls whose billed minutes disagree with their start, end and reason",
    ),
    (
        "UPDATE calls SET ended_at = ended_at + interval '30 seconds' WHERE call_id = {b}",
        "ended calls whose billed minutes disagree with their start, end and reason",
    ),
    (
        "UPDATE ledger SET created_at = created_at + interval '10 minutes' "
        "WHERE transfer_id = 'call:{a}:3'",
        "call minutes not dated when they started (or, waiting in their grace, when a credit "
        "paid them), or dated after their call ended",
    ),
    (
        "UPDATE ledger SET created_at = created_at + interval '1 hour' "
        "WHERE transfer_id = 'ext:{ub}:seed'",
        "coin transfers that take a balance below zero in time order",
    ),
    (
        "UPDATE ledger SET created_at = created_at - interval '2 minutes' "
        "WHERE transfer_id = 'ext:{ub}:after'",
        "calls dropped for coins when the payer could pay the next minute",
    ),
    (
        "UPDATE ledger SET created_at = '2000-01-01' WHERE transfer_id = 'ext:{la}:w'",
        "withdrawals that take earnings below zero in time order",
    ),
    (
        "DELETE FROM ledger WHERE transfer_id = 'earn:call:{b}'",
        "settled calls not credited to their listener exactly once",
    ),
    # buckets
    (
        "DELETE FROM ledger WHERE tx_type = 'expire'",
        "buckets not drawn earliest expiry first, or whose rest did not expire exactly",
    ),
    (
        "UPDATE ledger SET amount = amount - 1 WHERE tx_type = 'expire'",
        "buckets not drawn earliest expiry first, or whose rest did not expire exactly",
    ),
    (
        # a minute drawn from the bucket after it had expired
        "UPDATE buckets SET expires_at = expires_at - interval '40 seconds'",
        "buckets not drawn earliest expiry first, or whose rest did not expire exactly",
    ),
    (
        "UPDATE ledger SET created_at = created_at + interval '1 minute' WHERE tx_type = 'expire'",
        "buckets without their top-up, or expiries without their bucket or not at its expiry",
    ),
    (
        "UPDATE ledger SET amount = 24 WHERE transfer_id = 'ext:{ua}:bonus'",
        "buckets without their top-up, or expiries without their bucket or not at its expiry",
    ),
    # payouts and refunds
    (
        "DELETE FROM payouts WHERE transfer_id = 'ext:{la}:w'",
        "payouts without exactly their hold, or holds without their payout",
    ),
    (
        "UPDATE payouts SET amount_paise = amount_paise + 1 WHERE transfer_id = 'ext:{la}:w'",
        "payouts without exactly their hold, or holds without their payout",
    ),
    (
        "UPDATE payouts SET status = 'paid' WHERE transfer_id = 'ext:{la}:w2'",
        "payout holds not released exactly when the payout was rejected",
    ),
    (
        "UPDATE payouts SET status = 'rejected' WHERE transfer_id = 'ext:{la}:w'",
        "payout holds not released exactly when the payout was rejected",
    ),
    (
        "UPDATE ledger SET created_at = '2000-01-01' WHERE tx_type = 'payout_void'",
        "payout holds not released exactly when the payout was rejected",
    ),
    (
        "UPDATE ledger SET created_at = '2000-01-01' WHERE transfer_id = 'ext:{la}:w2'",
        "withdrawals that take earnings below zero in time order",
    ),
    (
        "UPDATE refunds SET minutes = 4, coins = 40, paise = 400 WHERE call_id = {a}",
        "refunds of more minutes than their call billed, or of a call not ended",
    ),
    (
        "UPDATE refunds SET coins = coins + 1 WHERE call_id = {b}",
        "refunds whose coins or earnings disagree with their call's parties and rates",
    ),
    (
        "UPDATE refunds SET paise = 200 WHERE call_id = {b}",
        "refunds whose coins or earnings disagree with their call's parties and rates",
    ),
    (
        "DELETE FROM ledger WHERE transfer_id = 'refund:{b}:r'",
        "refunds not moved by exactly their transfers, or refund transfers without a refund",
    ),
    (
        "UPDATE ledger SET amount = amount - 1 WHERE transfer_id = 'refund:{a}:r:clawback'",
        "refunds not moved by exactly their transfers, or refund transfers without a refund",
    ),
    (
        "DELETE FROM refunds WHERE call_id = {a}",
        "refunds not moved by exactly their transfers, or refund transfers without a refund",
    ),
    (
        "UPDATE ledger SET created_at = '2000-01-01' WHERE transfer_id = 'refund:{a}:r:clawback'",
        "withdrawals that take earnings below zero in time order",
    ),
    # offers
    (
        "UPDATE offers SET minutes_used = minutes_used + 1",
        "offers whose budget counters disagree with their claims and calls, or over budget",
    ),
    (
        "INSERT INTO offer_claims VALUES (99, {offer}, {uc}, {lc}, 1, NULL, now(), true)",
        "offers taken beyond their per-user limit, outside their window or call types, by a "
        "call that was not the payer's first (with the listener), or unclaimed",
    ),
    (
        "UPDATE offers SET valid_from = valid_from + interval '1 minute'",
        "offers taken beyond their per-user limit, outside their window or call types, by a "
        "call that was not the payer's first (with the listener), or unclaimed",
    ),
    (
        "UPDATE offers SET call_types = '{{video}}'",
        "offers taken beyond their per-user limit, outside their window or call types, by a "
        "call that was not the payer's first (with the listener), or unclaimed",
    ),
    (
        "UPDATE offers SET eligible = 'first_call', code = NULL; "
        "UPDATE calls SET user_id = {ua} WHERE call_id = {c}",
        "offers taken beyond their per-user limit, outside their window or call types, by a "
        "call that was not the payer's first (with the listener), or unclaimed",
    ),
    (
        "DELETE FROM ledger WHERE transfer_id = 'offer:{c}'",
        "free minutes not paid from their offer's grant, or its rest not returned at the end",
    ),
    (
        "UPDATE ledger SET amount = amount + 1 WHERE transfer_id = 'offer_return:{c}'",
        "free minutes not paid from their offer's grant, or its rest not returned at the end",
    ),
    (
        "UPDATE calls SET offer_earnings_paise = 0 WHERE call_id = {c}",
        "settled calls whose charge, return or earnings disagree with their price and length",
    ),
    (
        "UPDATE calls SET offer_pays = 'nobody', earnings_paise = 0 WHERE call_id = {c}",
        "settled calls whose charge, return or earnings disagree with their price and length",
    ),
]


async def test_the_engine_history_follows_the_billing_policy(engine_history, pool):
    ids = engine_history
    a = await pool.fetchrow("SELECT * FROM calls WHERE call_id = $1", ids["a"])
    b = await pool.fetchrow("SELECT * FROM calls WHERE call_id = $1", ids["b"])
    assert (a["status"], a["billed_minutes"]) == ("completed", 3)
    assert (b["status"], b["end_reason"], b["billed_minutes"]) == (
        "dropped",
        "insufficient_coins",
        2,
    )
    assert (b["ended_at"] - b["connected_at"]).total_seconds() == 120
    expired = await pool.fetchval("SELECT amount FROM ledger WHERE tx_type = 'expire'")
    assert expired == -5  # 25 bonus coins, 20 of them paid minutes 1 and 2
    c = await pool.fetchrow("SELECT * FROM calls WHERE call_id = $1", ids["c"])
    assert (c["billed_minutes"], c["offer_minutes_used"], c["offer_coins_returned"]) == (3, 3, 20)
    assert await violations(pool) == {}


@pytest.mark.parametrize(("sql", "check"), POLICY_CORRUPTIONS)
async def test_each_broken_billing_rule_is_found_by_its_check(engine_history, pool, sql, check):
    await pool.execute(sql.format(**engine_history))
    found = await violations(pool)
    assert check in found, found
