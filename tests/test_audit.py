"""The audit finds each broken rule of money it checks, by name, and the CLI exits non-zero."""

import os
import subprocess
import sys

import pytest

from bench.setup import ongoing_calls
from persistence.audit import run_audit

T0 = 1_800_000_000.0


async def violations(pool, **kw):
    return {name: n for name, n in await run_audit(pool, **kw) if n}


async def settled_call(pool):
    """Call 1 settled after 2 minutes, credited; calls 2 and 3 ongoing at minute 1."""
    await ongoing_calls(pool, 3, 100, T0)
    await pool.execute(
        """INSERT INTO ledger VALUES ('call:1:2', 1, 'coins', -10, 'spend', 1, 2, now()),
                                     ('earn:call:1', 4, 'paise', 200, 'earn', 1, NULL, now())"""
    )
    # settling moves the wallet row by the call's two minutes
    await pool.execute("UPDATE wallets SET settled_coins = settled_coins - 20 WHERE user_id = 1")
    await pool.execute("UPDATE listener_earnings SET earnings_paise = 200 WHERE listener_id = 4")
    await pool.execute(
        """UPDATE calls SET status = 'completed', end_reason = 'hangup', ended_at = now(),
                  billed_minutes = 2, coins_spent = 20, earnings_paise = 200 WHERE call_id = 1"""
    )


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
        "settled calls whose totals disagree with minutes and rates",
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
