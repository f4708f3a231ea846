"""Call events: in the outbox with what they report, once per call, relayed to a Redis Stream
and again after Redis loses it."""

import json
import re

import asyncpg
import pytest
import redis.asyncio as aioredis

from actors import InvariantViolation
from actors.settlement import Settlement
from engine import InvalidInput
from persistence import events
from persistence.commit import commit_batch
from persistence.events import STREAM, Relay
from persistence.records import Batch, settlement_records
from persistence.writer import LedgerWriter
from tests.conftest import PLACEMENTS, engine_config
from tests.test_writer import payer

MIN = 60.0


def types(events: list[dict]) -> list[tuple[str, int]]:
    return [(e["type"], e["call_id"]) for e in events]


async def test_a_call_tells_its_start_low_balance_drop_and_settlement_in_order(engine):
    e = engine
    user = await e.create_user("payer")
    listener = await e.create_listener("listener")
    await e.top_up(user, 40, idempotency_key="seed")  # audio basic: 10 a minute, 4 minutes
    call = await e.start_call(user, listener)
    cid = call["call_id"]
    events = await e.events()
    assert types(events) == [("call_started", cid)]  # committed with the start
    assert events[0]["data"]["listener_id"] == listener
    for _ in range(5):  # minute 3 leaves 1 minute: low; minute 5 cannot be paid
        await e.advance(MIN)
    await e.sync()
    events = await e.events()
    assert types(events) == [
        ("call_started", cid),
        ("low_balance", cid),
        ("call_dropped", cid),
        ("call_settled", cid),
    ]
    ids = [ev["id"] for ev in events]
    assert ids == sorted(ids)
    low, dropped, settled = events[1]["data"], events[2]["data"], events[3]["data"]
    assert low["minutes_left"] <= 2 and low["balance_coins"] < 30
    assert dropped["end_reason"] == "insufficient_coins"
    assert (settled["billed_minutes"], settled["coins_spent"]) == (4, 40)
    assert settled["earnings_paise"] > 0
    # Resuming after an id gives what came after it; a party sees its own calls' events.
    assert types(await e.events(after=ids[1])) == types(events[2:])
    assert types(await e.events(user_id=listener)) == types(events)
    assert await e.events(user_id=listener + 1000) == []
    # Ending again, or billing the same minutes again, adds no event.
    await e.end_call(cid)
    await e.advance(MIN)
    await e.sync()
    assert len(await e.events()) == 4


@pytest.mark.xdist_group("events_refusals")  # in a row on one worker: one engine per placement
class TestRefusals:
    """Each case refuses and changes nothing: they share one engine per placement."""

    @pytest.mark.parametrize(
        "bad", [{"after": -1}, {"after": 2**53}, {"limit": 0}, {"limit": 10**6}, {"user_id": 0}]
    )
    async def test_bad_event_reads_are_refused_by_name(self, shared_engine, bad):
        with pytest.raises(InvalidInput, match=next(iter(bad))):
            await shared_engine.events(**bad)


async def test_an_event_is_in_the_transaction_of_what_it_reports(pool, services):
    """A settlement that cannot commit leaves no event; one written twice is one event."""
    uid = await payer(pool, call_id=9)
    lid = uid + 1
    wrong = Settlement(9, uid, lid, "dropped", "insufficient_coins", 3, 30, 300, 1_800_000_000_000)
    batch = Batch()
    batch.add(settlement_records(wrong))  # 3 minutes settled, none in the ledger
    conn = await asyncpg.connect(services.database_url)
    try:
        with pytest.raises(InvariantViolation):
            await commit_batch(conn, batch)
    finally:
        await conn.close()
    assert await pool.fetchval("SELECT count(*) FROM events") == 0
    right = Settlement(9, uid, lid, "completed", "hangup", 0, 0, 0, 1_800_000_000_000)
    w = LedgerWriter(services.database_url)
    await w.write(settlement_records(right))
    await w.write(settlement_records(right))  # a replay after a crash
    rows = await pool.fetch("SELECT event_key, type FROM events ORDER BY event_id")
    assert [tuple(r) for r in rows] == [("call_settled:9", "call_settled")]


@pytest.mark.parametrize("placement", PLACEMENTS[:1])
async def test_events_reach_the_stream_once_and_again_after_redis_loses_it(
    placement, services, pool, ray_session, monkeypatch
):
    from engine.api import Engine

    async with Engine(engine_config(services, placement)) as e:
        user = await e.create_user("payer")
        listener = await e.create_listener("listener")
        await e.top_up(user, 100, idempotency_key="seed")
        call = await e.start_call(user, listener)
        await e.advance(2 * MIN)
        await e.end_call(call["call_id"])
        await e.sync()
        r = aioredis.Redis.from_url(services.redis_url, decode_responses=True)
        try:
            assert await e.relay_events() == 2
            assert await e.relay_events() == 0  # nothing new: nothing copied twice
            entries = await r.xrange(STREAM)
            assert [(i, f["type"]) for i, f in entries] == [
                ("1-0", "call_started"),
                ("2-0", "call_settled"),
            ]
            # One time format in the stream, the HTTP API's: ISO 8601 with offset, at the top
            # and inside the data alike (the Python API's `events()` says epoch seconds).
            settled = entries[1][1]
            data = json.loads(settled["data"])
            for at in (settled["at"], data["ended_at"]):
                assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", at), at
            python = (await e.events())[1]
            assert isinstance(python["at"], float) and python["at"] == data_time(data["ended_at"])
            await r.delete(STREAM)  # Redis restarted without its data
            relay = Relay(services.redis_url)
            try:
                assert await relay.relay_once(await e.pool()) == 2
            finally:
                await relay.close()
            assert [i for i, _ in await r.xrange(STREAM)] == ["1-0", "2-0"]
            # A round copies batch after batch while they come full, so it keeps up with more
            # events a second than one batch holds.
            await r.delete(STREAM)
            monkeypatch.setattr(events, "RELAY_BATCH_MAX", 1)
            monkeypatch.setattr(events, "RELAY_BATCHES_MAX", 5)
            assert await e.relay_events() == 2
            assert [i for i, _ in await r.xrange(STREAM)] == ["1-0", "2-0"]
        finally:
            await r.aclose()


async def test_an_event_of_no_call_reaches_the_stream_and_the_ones_after_it(pool, services):
    """A payout's events have no call: the relay leaves the null out, and does not stall on
    it (Redis refuses a null, and the relay retried that one batch forever)."""
    uid = await payer(pool, call_id=9)
    await pool.execute(
        """INSERT INTO events (event_key, type, call_id, user_id, at, data) VALUES
           ('payout_pending:1', 'payout_pending', NULL, $1, now(), '{}'),
           ('call_settled:9', 'call_settled', 9, $1, now(), '{}')""",
        uid,
    )
    r = aioredis.Redis.from_url(services.redis_url, decode_responses=True)
    relay = Relay(services.redis_url)
    try:
        await r.delete(STREAM)
        assert await relay.relay_once(pool) == 2
        (_, payout), (_, settled) = await r.xrange(STREAM)
        assert (payout["type"], "call_id" in payout) == ("payout_pending", False)
        assert (settled["type"], settled["call_id"]) == ("call_settled", "9")
    finally:
        await relay.close()
        await r.delete(STREAM)
        await r.aclose()


def data_time(iso: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(iso).timestamp()
