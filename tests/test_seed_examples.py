"""Every code block of the older API's reference (tests/seed/background-tasks-api.md, a copy of
shared/seed), run as written against an engine with users, listeners and calls in it, on both
placements; where a block prints numbers, they are checked against the database.

Blocks that call `asyncio.run` run in a thread of their own, as from a plain script; the short
blocks written with a top-level `await` run in the test's loop. Names a block uses without
defining (`call_id`, `conn`, `current_balance`...) are given to it, as its surrounding code
would."""

import ast
import asyncio
import contextlib
import io
import pathlib
import re

import pytest

from api.clients.db import get_db_pool
from background_tasks.services.badge_service import assign_daily_badges
from background_tasks.services.call_service import get_user_coin_balance
from persistence import keys
from persistence.db import get_pool
from persistence.schema import TABLES
from tests.conftest import PLACEMENTS, engine_config
from tests.helpers import audit_violations
from tests.test_engine import MIN

DOC = pathlib.Path(__file__).parent / "seed" / "background-tasks-api.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
# Block 1 is the shape of the badge result, not code; block 23 is a test module of its own
# (tests/test_seed_testing_integration.py).
RUNNABLE = [i for i in range(len(BLOCKS)) if i not in (1, 23)]


def test_the_reference_has_the_blocks_this_suite_expects():
    assert len(BLOCKS) == 30
    shape = ast.literal_eval(BLOCKS[1])
    assert set(shape) == {
        "total_listeners",
        "basic_assigned",
        "bronze_assigned",
        "silver_assigned",
        "gold_assigned",
        "errors",
    }


# One worker runs the module's tests in a row, so that they share its engine per placement.
pytestmark = pytest.mark.xdist_group("seed_examples")


@pytest.fixture(scope="module", params=PLACEMENTS)
async def seeded(request, services, ray_session):
    """One engine per placement for the module: users 1 and 123 with coins, and a caller and
    a listener for the call each block gets."""
    from engine.api import Engine

    pool = await get_pool(services.database_url)
    await pool.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
    engine = await Engine(engine_config(services, request.param)).start()
    assert await engine.create_user("user-1") == 1
    await (await engine.pool()).execute("SELECT setval('users_user_id_seq', 122)")
    assert await engine.create_user("user-123") == 123
    for uid in (1, 123):
        await engine.top_up(uid, 5000)
        await engine.heartbeat(uid)
    caller = await engine.create_user("caller")
    listener = await engine.create_listener("listener")
    await engine.top_up(caller, 1_000_000)
    engine.pair = (caller, listener)
    yield engine
    await engine.stop()


@pytest.fixture
async def engine(seeded):
    """The module's engine, with a fresh ongoing call for the test, ended after it."""
    seeded.call = await seeded.start_call(*seeded.pair)
    yield seeded
    await seeded.end_call(seeded.call["call_id"])


async def run_block(index: int, names: dict) -> tuple[str, dict]:
    source = BLOCKS[index]
    out = io.StringIO()
    if "asyncio.run(" in source:

        def script():
            with contextlib.redirect_stdout(out):
                exec(compile(source, f"block{index}", "exec"), names)

        await asyncio.to_thread(script)
    else:
        code = compile(source, f"block{index}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        with contextlib.redirect_stdout(out):
            result = eval(code, names)  # noqa: S307 - the reference's own code
            if asyncio.iscoroutine(result):
                await result
    return out.getvalue(), names


@pytest.mark.parametrize("index", RUNNABLE)
async def test_reference_block_runs_as_written(engine, index):
    call = engine.call
    await engine.heartbeat(call["user_id"])
    await engine.heartbeat(call["listener_id"])
    await engine.advance(MIN)
    pool = await engine.pool()
    row = await pool.fetchrow("SELECT * FROM user_calls WHERE call_id = $1", call["call_id"])
    names = {
        "__name__": f"block{index}",
        "call_id": call["call_id"],
        "call_data": row,
        "conn": None,
        "current_balance": (await engine.balance(row["user_id"]))["balance_coins"],
        "get_user_coin_balance": get_user_coin_balance,
        "assign_daily_badges": assign_daily_badges,
        "get_db_pool": get_db_pool,
    }
    before_123 = await get_user_coin_balance(123)
    if index == 13:
        # Written to subtract 50 coins, then add 100 as "earn": the engine refuses the second,
        # since listener earnings are paise and never coins (the older system's bug).
        with pytest.raises(ValueError, match="never coins"):
            await run_block(index, names)
        assert await get_user_coin_balance(123) == before_123 - 50
        return
    printed, names = await run_block(index, names)
    await check_block(engine, index, printed, names, call, before_123)
    await engine.sync()
    assert await audit_violations(await engine.pool()) == {}


async def check_block(engine, index, printed, names, call, before_123):
    pool = await engine.pool()
    listeners = await pool.fetchval("SELECT count(*) FROM users WHERE role = 'listener'")
    if index in (0, 2, 24, 29):
        stats = names.get("stats") or names.get("result")
        if index == 2:
            assert f"Badge assignment completed: {{'total_listeners': {listeners}," in printed
        elif index == 29:
            assert "Badge assignment completed in" in printed
            assert f"'total_listeners': {listeners}" in printed
        else:
            assert stats["total_listeners"] == listeners and stats["errors"] == 0
    elif index == 4:
        assert re.fullmatch(r"Marked \d+ users as offline\n", printed)
    elif index == 6:
        assert re.fullmatch(r"Cleared \d+ expired busy statuses\n", printed)
    elif index in (7, 8):
        online = await engine.online_users_count()
        if index == 8:
            assert printed == f"Currently online users: {online}\n"
        else:
            assert names["count"] == online
    elif index == 12:
        assert printed == f"User 123 has {await get_user_coin_balance(123)} coins\n"
    elif index == 14:
        assert printed.startswith("Coins subtracted successfully\nInsufficient coins: ")
        assert "never coins" in printed
        assert await get_user_coin_balance(123) == before_123 - 50
    elif index in (10, 16):
        assert printed.endswith("completed successfully\n")
    elif index in (19, 20):
        s = await engine.get_call(call["call_id"])
        assert (s["status"], s["end_reason"]) == ("dropped", "insufficient_coins")
    elif index == 22:
        assert printed == (
            f"Online users: {await engine.online_users_count()}\n"
            f"User 1 balance: {await get_user_coin_balance(1)}\n"
        )
    elif index == 25:
        users, calls = await asyncio.to_thread(asyncio.run, names["efficient_task"]())
        assert users == await pool.fetchval("SELECT count(*) FROM users")
        assert calls == await pool.fetchval("SELECT count(*) FROM calls")
    elif index == 26:
        names["result"].close()  # the block's "incorrect usage": a coroutine never awaited
    elif index == 27:
        await asyncio.to_thread(asyncio.run, names["cleanup_example"]())
        assert await get_user_coin_balance(1) == 5000  # a closed pool is replaced
    elif index == 11:
        assert names["balance"] == before_123


async def test_the_cleanup_example_ends_expired_calls(engine):
    """The call-cleanup block again, with a call whose parties went quiet."""
    call = engine.call
    await engine.advance(3 * MIN)
    printed, _ = await run_block(10, {"__name__": "block10"})
    assert printed == "Call cleanup completed successfully\n"
    s = await engine.get_call(call["call_id"])
    assert (s["status"], s["end_reason"]) == ("dropped", "expired")
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(engine.redis_url)
    assert not await r.exists(keys.call_key(call["call_id"]))
    await r.aclose()
