"""Hostile input at every public entry point: generated wrong types, signs and sizes, unknown
ids, strings full of SQL and Redis protocol characters, reused idempotency keys. Each gets a
clear error and changes nothing; the audit stays clean. Both placements, one engine each for the
module (`shared_engine`)."""

import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors import BillingError, IdempotencyConflict, InvalidInput, UnknownCall, UnknownUser
from actors.money import AMOUNT_MAX
from tests.conftest import PLACEMENTS, engine_alone
from tests.helpers import audit_violations

# One worker runs the module's tests in a row, so that they share one engine per placement.
pytestmark = pytest.mark.xdist_group("hostile")

HOSTILE = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
NASTY_TEXT = st.one_of(
    st.text(min_size=1, max_size=128),
    st.sampled_from(
        [
            "'; DROP TABLE ledger; --",
            "1 OR 1=1",
            "\r\n*1\r\n$8\r\nFLUSHALL\r\n",
            "$-1\r\n",
            "ext:1:k",
            "call:1:1",
            "%s%s%n",
            "\x00",
            "ü" * 100,
            "\\x27",
        ]
    ),
)
BAD_AMOUNTS = st.one_of(
    st.integers(max_value=0),
    st.integers(min_value=AMOUNT_MAX + 1),
    st.floats(allow_nan=True),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    NASTY_TEXT,
    st.lists(st.integers(), max_size=2),
)
BAD_IDS = st.one_of(
    st.integers(max_value=0),
    st.integers(min_value=AMOUNT_MAX + 1),
    st.floats(),
    st.booleans(),
    st.none(),
    NASTY_TEXT,
)


async def ledger_rows(engine):
    return await (await engine.pool()).fetchval("SELECT count(*) FROM ledger")


@pytest.fixture(scope="module", params=PLACEMENTS)
async def shared_engine(request, services, ray_session):
    """Every test here refuses and checks nothing changed: one engine per placement for all."""
    async with engine_alone(services, request.param) as eng:
        yield eng


@pytest.fixture
async def people(shared_engine):
    """A user with 1,000 coins and a listener, of this test's own, on the module's engine."""
    engine = shared_engine
    user = await engine.create_user("u")
    listener = await engine.create_listener("l")
    await engine.top_up(user, 1000, idempotency_key="seed")
    return engine, user, listener


@HOSTILE
@given(amount=BAD_AMOUNTS)
async def test_bad_amounts_are_refused_and_change_nothing(people, amount):
    engine, user, listener = people
    before = await ledger_rows(engine)
    for call in (
        lambda: engine.top_up(user, amount),
        lambda: engine.spend(user, amount),
        lambda: engine.withdraw(listener, amount),
    ):
        with pytest.raises(InvalidInput, match="amount"):
            await call()
    assert await ledger_rows(engine) == before
    assert (await engine.balance(user))["balance_coins"] == 1000


@HOSTILE
@given(ident=BAD_IDS)
async def test_bad_ids_are_refused_by_name(people, ident):
    engine, user, listener = people
    with pytest.raises(InvalidInput, match="user_id"):
        await engine.balance(ident)
    with pytest.raises(InvalidInput, match="call_id"):
        await engine.end_call(ident)
    with pytest.raises(InvalidInput, match="listener_id"):
        await engine.start_call(user, ident)


@HOSTILE
@given(ident=st.integers(min_value=10_000, max_value=AMOUNT_MAX))
async def test_unknown_ids_are_refused_and_change_nothing(people, ident):
    engine, user, listener = people
    before = await ledger_rows(engine)
    with pytest.raises(UnknownUser, match=str(ident)):
        await engine.top_up(ident, 10)
    with pytest.raises(UnknownUser, match=str(ident)):
        await engine.start_call(ident, listener)
    with pytest.raises(UnknownCall, match=str(ident)):
        await engine.end_call(ident)
    assert await ledger_rows(engine) == before


@HOSTILE
@given(
    key=NASTY_TEXT.filter(lambda s: s.strip() and "\x00" not in s),
    amount=st.integers(1, 10**6),
    other=st.integers(1, 10**6),
)
async def test_a_key_is_applied_once_and_refused_for_another_amount(people, key, amount, other):
    engine, user, _ = people
    before = (await engine.balance(user))["balance_coins"]
    try:
        first = await engine.top_up(user, amount, "bonus", key)
    except IdempotencyConflict:
        # An earlier example used this key for another amount: refused, nothing moved.
        assert (await engine.balance(user))["balance_coins"] == before
        return
    again = await engine.top_up(user, amount, "bonus", key)
    expected = before + amount if first["applied"] else before
    assert not again["applied"] and again["balance_coins"] == expected
    if other != amount:
        with pytest.raises(IdempotencyConflict):
            await engine.top_up(user, other, "bonus", key)
    assert (await engine.balance(user))["balance_coins"] == expected


@HOSTILE
@given(name=NASTY_TEXT.filter(lambda s: s.strip() and "\x00" not in s))
async def test_names_with_sql_and_redis_characters_are_stored_as_data(people, name):
    engine, _, _ = people
    uid = await engine.create_user(name)
    stored = await (await engine.pool()).fetchval("SELECT name FROM users WHERE user_id = $1", uid)
    assert stored == name


async def test_text_postgres_cannot_store_is_refused_before_anything_moves(people):
    engine, user, _ = people
    before = await ledger_rows(engine)
    for bad in ("a\x00b", "\ud800", " ", ""):
        with pytest.raises(InvalidInput):
            await engine.create_user(bad)
        with pytest.raises(InvalidInput, match="idempotency_key"):
            await engine.top_up(user, 10, "purchase", bad)
    assert await ledger_rows(engine) == before
    assert (await engine.balance(user))["balance_coins"] == 1000


@HOSTILE
@given(operation=NASTY_TEXT, tx_type=NASTY_TEXT, amount=BAD_AMOUNTS)
async def test_the_older_api_refuses_bad_input_with_value_error(people, operation, tx_type, amount):
    from background_tasks.services.call_service import (
        get_user_coin_balance,
        update_user_coin_balance,
    )
    from background_tasks.services.coin_deduction_service import process_call_coin_deduction

    engine, user, _ = people
    before = await ledger_rows(engine)
    with pytest.raises(ValueError):
        await update_user_coin_balance(user, amount, operation, tx_type)
    with pytest.raises(ValueError):
        await update_user_coin_balance(user, 10, operation, tx_type)
    with pytest.raises(ValueError):
        await get_user_coin_balance(operation)
    with pytest.raises(ValueError):
        await process_call_coin_deduction(None, {"call_id": operation})
    assert await ledger_rows(engine) == before


async def test_everything_refused_leaves_the_audit_clean(people):
    engine, user, _ = people
    for bad in (0, -1, 1.5, "10", None, True, 2**80):
        with pytest.raises(BillingError):
            await engine.top_up(user, bad)
    await engine.sync()
    assert await audit_violations(await engine.pool()) == {}


@pytest.mark.parametrize(
    "args",
    [
        ["demo", "--calls", "abc"],
        ["demo", "--placement", "'; DROP TABLE calls; --"],
        ["inspect", "call", "1; DROP TABLE calls"],
        ["inspect", "nothing"],
        ["jobs", "run", "rm -rf /"],
        ["bench", "--calls", "-"],
    ],
)
def test_the_cli_refuses_bad_arguments_by_name(args):
    out = subprocess.run(
        [sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    assert "invalid" in out.stderr or "error" in out.stderr
