"""The write-behind writer and its client, against real PostgreSQL."""

import asyncio

import pytest

from actors import InvariantViolation
from actors.money import Transfer
from actors.settlement import Settlement
from engine.cli.proxy import Proxy as PgProxy
from persistence import store
from persistence.client import ClientLimits, WriterClient
from persistence.records import settlement_records
from persistence.writer import LedgerWriter, WriterLimits
from tests.helpers import audit_violations, eventually

AT = 1_800_000_000_000


def purchase(user_id, key, amount):
    """Coins bought a minute before the calls' minutes below."""
    return Transfer(
        f"ext:{user_id}:{key}", user_id, "coins", amount, "purchase", None, None, AT - 60_000
    )


def spend(user_id, call_id, minute, amount=10):
    return Transfer(
        f"call:{call_id}:{minute}", user_id, "coins", -amount, "spend", call_id, minute, AT
    )


async def payer(pool, call_id=9):
    """A user paying for ongoing call `call_id`, with its listener: the call's minutes count
    in the user's live balance."""
    uid = await store.create_user(pool, "a", "user")
    lid = await store.create_user(pool, "l", "listener")
    await pool.execute(
        """INSERT INTO calls (call_id, user_id, listener_id, call_type, tier, rate_coins,
                              rate_paise, status, connected_at)
           VALUES ($1, $2, $3, 'audio', 'basic', 10, 100, 'ongoing', now())""",
        call_id,
        uid,
        lid,
    )
    return uid


def end(uid, call_id, minutes, coins=None):
    lid = uid + 1
    coins = minutes * 10 if coins is None else coins
    s = Settlement(call_id, uid, lid, "completed", "hangup", minutes, coins, minutes * 100, 1.8e9)
    return settlement_records(s)  # the call's end and the listener's credit


async def settled_coins(pool, user_id):
    return await pool.fetchval("SELECT settled_coins FROM wallets WHERE user_id = $1", user_id)


async def balance(pool, user_id):
    return await pool.fetchval(
        "SELECT balance_coins FROM wallet_balances WHERE user_id = $1", user_id
    )


async def test_writer_commits_transfers_and_moves_balances_in_one_transaction(pool, services):
    uid = await payer(pool)
    w = LedgerWriter(services.database_url)
    await w.write([purchase(uid, "k", 100), spend(uid, 9, 1), spend(uid, 9, 2)])
    assert await balance(pool, uid) == 80
    assert await pool.fetchval("SELECT count(*) FROM ledger") == 3
    assert await audit_violations(pool) == {}


async def test_call_minutes_move_the_wallet_row_once_when_the_call_settles(pool, services):
    uid = await payer(pool)
    w = LedgerWriter(services.database_url)
    await w.write([purchase(uid, "k", 100), spend(uid, 9, 1), spend(uid, 9, 2)])
    assert (await settled_coins(pool, uid), await balance(pool, uid)) == (100, 80)
    settle = [spend(uid, 9, 3), *end(uid, 9, 3)]
    await w.write(settle)
    assert (await settled_coins(pool, uid), await balance(pool, uid)) == (70, 70)
    await w.write(settle)  # the settlement sent again: the call is no longer ongoing
    assert (await settled_coins(pool, uid), await balance(pool, uid)) == (70, 70)
    assert await audit_violations(pool) == {}


async def test_a_spend_outside_any_call_moves_the_wallet_row_at_once(pool, services):
    uid = await payer(pool)
    w = LedgerWriter(services.database_url)
    outside = Transfer(f"ext:{uid}:s", uid, "coins", -30, "spend", None, None, AT)
    await w.write([purchase(uid, "k", 100), outside, spend(uid, 9, 1)])
    assert (await settled_coins(pool, uid), await balance(pool, uid)) == (70, 60)


async def test_a_settlement_that_disagrees_with_the_ledger_is_refused(pool, services):
    uid = await payer(pool)
    w = LedgerWriter(services.database_url)
    await w.write([purchase(uid, "k", 100), spend(uid, 9, 1)])
    with pytest.raises(InvariantViolation, match="call 9: 1 minutes and 10 coins in the ledger"):
        await w.write(end(uid, 9, 2))  # says 2 minutes; the ledger has 1
    assert await pool.fetchval("SELECT status FROM calls WHERE call_id = 9") == "ongoing"
    assert (await settled_coins(pool, uid), await balance(pool, uid)) == (100, 90)


async def test_a_replayed_batch_moves_nothing(pool, services):
    uid = await payer(pool)
    w = LedgerWriter(services.database_url)
    batch = [purchase(uid, "k", 100), spend(uid, 9, 1)]
    await w.write(batch)
    await w.write(batch)
    await w.write([spend(uid, 9, 1), spend(uid, 9, 1)])  # a duplicate inside one batch too
    assert await balance(pool, uid) == 90
    assert w.stats["ledger_rows_inserted"] == 2
    assert w.stats["batches_repeating"] == 2  # the two repeats took the staging path


async def test_a_batch_the_database_refuses_fails_its_writers_not_the_next(pool, services):
    uid = await payer(pool)
    w = LedgerWriter(services.database_url)
    with pytest.raises(InvariantViolation, match="refused"):
        # settling would take the wallet below zero: the CHECK refuses the whole batch
        await w.write([spend(uid, 9, 1), *end(uid, 9, 1)])
    assert await balance(pool, uid) == 0
    assert await pool.fetchval("SELECT count(*) FROM ledger") == 0
    await w.write([purchase(uid, "k", 5)])
    assert await balance(pool, uid) == 5
    assert w.stats["failed_batches"] == 1


async def test_a_transfer_for_a_missing_account_is_refused(pool, services):
    w = LedgerWriter(services.database_url)
    with pytest.raises(InvariantViolation, match="does not exist"):
        await w.write([purchase(999, "k", 5)])
    assert await pool.fetchval("SELECT count(*) FROM ledger") == 0


async def test_writer_checks_money_again_when_it_reads_a_batch(pool, services):
    uid = await payer(pool)
    w = LedgerWriter(services.database_url)
    bad = spend(uid, 9, 1)._replace(amount=10)  # a spend that adds coins
    with pytest.raises(InvariantViolation, match="wrong sign"):
        await w.write([bad])


async def test_flushes_when_a_batch_reaches_its_size(pool, services):
    uid = await payer(pool)
    await LedgerWriter(services.database_url).write([purchase(uid, "k", 10_000)])
    w = LedgerWriter(
        services.database_url, WriterLimits(batch_size_max=10, flush_interval_ms=60_000)
    )
    await asyncio.wait_for(
        asyncio.gather(*(w.write([spend(uid, 9, m)]) for m in range(1, 31))), timeout=20
    )
    assert w.stats["batches_committed"] == 3  # by size alone: the age limit is a minute
    assert await balance(pool, uid) == 10_000 - 300


async def test_flushes_when_the_oldest_record_reaches_its_age(pool, services):
    uid = await payer(pool)
    w = LedgerWriter(services.database_url, WriterLimits(batch_size_max=1000, flush_interval_ms=50))
    await asyncio.wait_for(w.write([purchase(uid, "k", 1)]), timeout=20)
    assert await balance(pool, uid) == 1


async def test_producers_wait_when_the_buffer_is_full(pool, services):
    uid = await payer(pool)
    w = LedgerWriter(services.database_url, WriterLimits(buffer_records_max=5, flush_interval_ms=1))
    async with pool.acquire() as blocker, blocker.transaction():
        # Hold the wallet row: the writer's flush blocks on it.
        await blocker.execute("SELECT 1 FROM wallets WHERE user_id = $1 FOR UPDATE", uid)
        first = asyncio.create_task(w.write([purchase(uid, f"k{i}", 1) for i in range(3)]))
        await eventually(
            lambda: w.stats["batches_committed"] == 0 and not w._queue, what="first batch in flight"
        )
        second = asyncio.create_task(w.write([purchase(uid, f"j{i}", 1) for i in range(3)]))
        await asyncio.sleep(0.3)
        assert not first.done() and not second.done()
        assert w._queued_records == 3  # the second batch was not let in: 3 + 3 > 5
    await asyncio.wait_for(asyncio.gather(first, second), timeout=20)
    assert await balance(pool, uid) == 6


async def test_postgres_down_the_writer_retries_and_keeps_its_buffer(pool, services):
    uid = await payer(pool)
    proxy = await PgProxy(services.database_url).start()
    w = LedgerWriter(proxy.url(), WriterLimits(flush_interval_ms=1, retry_backoff_max_ms=100))
    await w.write([purchase(uid, "before", 1)])
    await proxy.cut()
    pending = asyncio.create_task(w.write([purchase(uid, "during", 2)]))
    await eventually(lambda: w.stats["retries"] >= 3, what="writer retrying")
    assert not pending.done()
    await proxy.restore()
    await asyncio.wait_for(pending, timeout=20)
    assert await balance(pool, uid) == 3
    await proxy.cut()


class Through:
    """A `WriterLink` over a LedgerWriter in this process, whose writes a test fails (`fail`
    times, as a restarting writer actor would) or holds (until `gate` is set)."""

    def __init__(self, writer: LedgerWriter | None, fail: int = 0, gate=None) -> None:
        self.writer, self.fail, self.gate = writer, fail, gate
        self.hurried: list[bool] = []

    async def write(self, batch, urgent):
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            self.fail -= 1
            raise ConnectionError("writer restarting")
        if self.writer is not None:  # else: a writer that takes the batch and drops it
            await self.writer.write(batch, urgent)

    async def hurry(self):
        self.hurried.append(True)
        await self.writer.hurry()

    async def drain(self):
        await self.writer.drain()

    async def take_over(self):
        await self.writer.drain()

    @staticmethod
    def is_transient(exc):
        return isinstance(exc, ConnectionError)


async def test_client_resends_a_batch_when_the_writer_is_unreachable(pool, services):
    uid = await payer(pool)
    w = LedgerWriter(services.database_url)
    c = WriterClient(Through(w, fail=2), ClientLimits(retry_backoff_min_ms=1))
    c.append([purchase(uid, "a", 1)])
    await asyncio.wait_for(c.durable([purchase(uid, "b", 2)]), timeout=20)
    assert c.stats["send_retries"] == 2 and c.pending == 0
    assert await balance(pool, uid) == 3


async def test_client_refused_by_the_writer_stops_and_says_so(pool, services):
    uid = await payer(pool)
    w = LedgerWriter(services.database_url)
    c = WriterClient(w)
    with pytest.raises(InvariantViolation):
        # settling a minute the wallet cannot pay: the CHECK refuses it
        await asyncio.wait_for(c.durable([spend(uid, 9, 1), *end(uid, 9, 1)]), timeout=20)
    with pytest.raises(InvariantViolation, match="must be reloaded"):
        c.append([purchase(uid, "x", 1)])


async def test_client_buffer_is_bounded(pool, services):
    gate = asyncio.Event()
    c = WriterClient(
        Through(None, gate=gate), ClientLimits(pending_records_max=4, flush_interval_ms=1)
    )
    c.append([[0]] * 4)
    waiting = asyncio.create_task(c.room())
    await asyncio.sleep(0.2)
    assert not waiting.done() and not c.has_room()
    gate.set()
    await asyncio.wait_for(waiting, timeout=20)


async def test_a_write_through_behind_a_held_write_behind_batch_hurries_the_writer(pool, services):
    """A producer sends one batch at a time. A write-through that queues behind a write-behind
    batch the writer holds for its flush interval (an hour here) asks the writer to commit
    now, instead of waiting out the interval."""
    uid = await payer(pool)
    w = LedgerWriter(services.database_url, WriterLimits(flush_interval_ms=3_600_000))
    link = Through(w)
    c = WriterClient(link, ClientLimits(flush_interval_ms=1))
    c.append([purchase(uid, "behind", 1)])
    await asyncio.sleep(0.2)  # sent as write-behind: the writer holds it
    assert c.pending == 1 and w.lag()["queued_writes"] == 1
    await asyncio.wait_for(c.durable([purchase(uid, "through", 2)]), timeout=20)
    assert link.hurried == [True] and c.pending == 0
    assert await balance(pool, uid) == 3


async def test_a_producers_successor_takes_its_fence_only_once_its_connection_ended(
    pool, services, monkeypatch
):
    """A shard commits its own writes, fenced: a successor (Ray restarted the shard) cannot
    read or commit until the predecessor's connection has ended, so nothing the predecessor
    had under way commits after the successor read PostgreSQL."""
    from persistence import committer as committers
    from persistence.committer import FenceHeld

    uid = await payer(pool)
    first = LedgerWriter(services.database_url, fence=7)
    await first.write([purchase(uid, "a", 100)])
    second = LedgerWriter(services.database_url, fence=7)
    taking = asyncio.ensure_future(second.fenced())
    await asyncio.sleep(0.5)
    assert not taking.done()  # the predecessor still holds it
    other = LedgerWriter(services.database_url, fence=8)  # another producer's is its own
    await other.write([purchase(uid, "c", 1)])
    first.committer._conn.terminate()  # the predecessor's process died
    await asyncio.wait_for(taking, 10)
    await second.write([purchase(uid, "b", 50)])
    assert await balance(pool, uid) == 151
    monkeypatch.setattr(committers, "FENCE_WAIT_S", 0.2)
    with pytest.raises(FenceHeld, match="producer 7's fence .* still held"):
        await LedgerWriter(services.database_url, fence=7).fenced()
    await second.close()
    await other.close()


async def test_event_ids_become_visible_in_the_order_their_transactions_commit(pool, services):
    """Writers commit at once (each shard its own), and events are read by id after a cursor:
    a transaction's events get their ids only after every earlier one with events committed,
    so a reader never passes an id that commits later."""
    import asyncpg

    from persistence.commit import EVENTS_LOCK_CLASS, EVENTS_LOCK_SQL

    uid = await payer(pool)
    conn = await asyncpg.connect(services.database_url)
    tx = conn.transaction()
    await tx.start()
    await conn.execute(EVENTS_LOCK_SQL, EVENTS_LOCK_CLASS)
    held = await conn.fetchval(
        """INSERT INTO events (event_key, type, call_id, user_id, at, data)
           VALUES ('held', 'call_started', 9, $1, now(), '{}') RETURNING event_id""",
        uid,
    )
    writing = asyncio.ensure_future(LedgerWriter(services.database_url).write(end(uid, 9, 0)))
    await asyncio.sleep(0.5)
    assert not writing.done()  # its events wait for the open transaction's commit
    await tx.commit()
    await conn.close()
    await asyncio.wait_for(writing, 10)
    rows = await pool.fetch("SELECT event_id, event_key FROM events ORDER BY event_id")
    assert rows[0]["event_key"] == "held" and len(rows) > 1
    assert all(r["event_id"] > held for r in rows[1:])


async def test_a_batch_undone_by_a_deadlock_is_committed_again_once(pool, services):
    """Two writers' transactions that wait on each other's rows: PostgreSQL undoes one, and
    the writer commits its batch again (transient), moving every account once."""
    import asyncpg

    uid = await payer(pool)  # pays ongoing call 9
    other = await store.create_user(pool, "b", "user")
    await LedgerWriter(services.database_url).write([purchase(uid, "k", 100), spend(uid, 9, 1)])
    conn = await asyncpg.connect(services.database_url)
    tx = conn.transaction()
    await tx.start()
    touch = "UPDATE wallets SET settled_coins = settled_coins WHERE user_id = $1"
    await conn.execute(touch, uid)  # holds the payer's row
    w = LedgerWriter(services.database_url)
    # The batch moves `other` at once, then waits for the payer's row to settle the call.
    writing = asyncio.ensure_future(w.write([purchase(other, "k", 50), *end(uid, 9, 1)]))
    await asyncio.sleep(0.3)
    await conn.execute(touch, other)  # a deadlock: the writer waited first and is undone
    await tx.commit()
    await conn.close()
    await asyncio.wait_for(writing, 10)
    assert w.stats["retries"] >= 1
    assert (await balance(pool, uid), await balance(pool, other)) == (90, 50)
    assert await settled_coins(pool, uid) == 90
    assert await audit_violations(pool) == {}
