"""How a host reads wallets from PostgreSQL: one query for a person with nothing open, the
rest only for those who have it, and no JIT on the engine's connections."""

import asyncpg

from actors import buckets as bk
from actors.buckets import BONUS
from actors.money import to_ms
from engine.operations import TopUp, Withdraw
from persistence import store
from persistence.db import SERVER_SETTINGS, _keep_session, connect
from tests.test_shard import MIN, T0, ask, end_call, new_call, shard, top_up


async def counting_pool(services, queries: list):
    """A pool of one connection, set up as the engine's, that records every query it runs
    (asyncpg's own: none on release, as the engine's pools; its type look-ups happen at a
    connection's first use, which the caller makes before counting)."""

    async def init(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(lambda q: queries.append(q.query))

    return await asyncpg.create_pool(
        services.database_url,
        min_size=1,
        max_size=1,
        init=init,
        reset=_keep_session,
        server_settings=SERVER_SETTINGS,
    )


async def test_a_wallet_is_one_query_unless_its_person_has_a_call_a_payout_or_a_bucket(
    pool, services
):
    plain, payer, listener, bonus, earner, earner_payer = [
        await store.create_user(pool, f"p{i}", "listener" if i in (2, 4) else "user")
        for i in range(6)
    ]
    sh = shard(services)
    for u in (plain, payer, bonus, earner_payer):
        await top_up(sh, u, 1_000, "k")
    call_id = await new_call(pool, sh, payer, listener)  # ongoing
    ended = await new_call(pool, sh, earner_payer, earner)
    await end_call(sh, earner_payer, ended, T0 + 2 * MIN)
    await sh.sync()
    payout_id = await store.SequenceIds(1, "payouts_payout_id_seq").next(pool)
    withdraw = Withdraw(
        now=T0 + 3 * MIN, listener_id=earner, amount_paise=100, key="w", payout_id=payout_id
    )
    await ask(sh, withdraw)
    bonus_op = TopUp(
        now=T0, user_id=bonus, amount_coins=50, tx_type=BONUS, key="b", expires_ms=to_ms(T0 + 3_600)
    )
    await ask(sh, bonus_op)
    await sh.sync()

    queries: list[str] = []
    counting = await counting_pool(services, queries)
    everyone = [plain, payer, listener, bonus, earner]
    try:
        await store.load_wallets(counting, everyone, MIN)  # the connection's first use
        queries.clear()
        alone = await store.load_wallets(counting, [plain], MIN)
        assert len(queries) == 1, queries  # before: five, whatever the person had
        assert alone[plain].balance_coins == 1_000 and not alone[plain].calls
        queries.clear()
        every = await store.load_wallets(counting, everyone, MIN)
    finally:
        await counting.close()
    # The wallets, the ongoing calls with their last minutes, the payouts, the buckets with
    # the debits since their checkpoints.
    assert len(queries) == 6, queries
    assert list(every[payer].calls) == [call_id]
    assert every[listener].listener_call_id == call_id
    assert every[earner].payouts == {payout_id: 100}
    assert [b[bk.LEFT] for b in every[bonus].buckets] == [50]
    assert every[plain].balance_coins == 1_000 and not every[plain].buckets


async def test_the_engines_connections_plan_without_jit(pool, services):
    """JIT compiles a plan at every execution of a generic plan estimated above
    `jit_above_cost`; the engine's look-ups are such plans (17 ms against 0.3 ms here)."""
    assert await pool.fetchval("SHOW jit") == "off"
    own = await connect(services.database_url)
    try:
        assert await own.fetchval("SHOW jit") == "off"
        assert await own.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
    finally:
        await own.close()
