"""The Batcher behind group commit: a lone request goes at once, concurrent ones share a batch,
every bound holds, and each caller gets its own outcome."""

import asyncio

import pytest

from actors import CapacityExceeded, InvalidInput, InvariantViolation
from aio.batching import Batcher, BatchLimits


class Recorder:
    """A `send` that records its batches and answers each item with item * 10, or with an
    InvalidInput for a negative item; it holds each batch until `release` is set."""

    def __init__(self, hold: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        if not hold:
            self.release.set()
        self.in_flight = 0
        self.in_flight_seen = 0

    async def send(self, items: list[int]) -> list:
        self.batches.append(list(items))
        self.in_flight += 1
        self.in_flight_seen = max(self.in_flight_seen, self.in_flight)
        await self.release.wait()
        self.in_flight -= 1
        return [InvalidInput(f"item {i} < 0") if i < 0 else i * 10 for i in items]


async def test_a_lone_request_is_sent_at_once_in_a_batch_of_its_own():
    r = Recorder()
    b = Batcher(r.send, BatchLimits(size_max=8, in_flight_max=1))
    assert await asyncio.wait_for(b.submit(3), 1.0) == 30
    assert r.batches == [[3]]


async def test_requests_made_together_share_one_batch():
    r = Recorder()
    b = Batcher(r.send, BatchLimits(size_max=8, in_flight_max=1))
    assert await asyncio.gather(*(b.submit(i) for i in range(5))) == [0, 10, 20, 30, 40]
    assert r.batches == [[0, 1, 2, 3, 4]]


async def test_requests_queue_while_batches_are_in_flight_and_batches_keep_their_size_max():
    r = Recorder(hold=True)
    b = Batcher(r.send, BatchLimits(size_max=3, in_flight_max=2))
    first = [asyncio.ensure_future(b.submit(i)) for i in range(2)]
    await asyncio.sleep(0.01)
    second = [asyncio.ensure_future(b.submit(i)) for i in range(2, 9)]
    await asyncio.sleep(0.01)
    # The second slot took the next three at once; the other four wait for a slot.
    assert r.batches == [[0, 1], [2, 3, 4]]
    assert b.state()["queued"] == 4
    r.release.set()
    out = await asyncio.wait_for(asyncio.gather(*first, *second), 1.0)
    assert out == [i * 10 for i in range(9)]
    assert all(len(batch) <= 3 for batch in r.batches)
    assert sorted(i for batch in r.batches for i in batch) == list(range(9))
    assert r.in_flight_seen <= 2
    assert b.state() | {"largest_batch": 0} == {
        "queued": 0,
        "in_flight": 0,
        "items": 9,
        "batches": len(r.batches),
        "largest_batch": 0,
    }


async def test_each_request_gets_its_own_error_and_the_others_their_results():
    r = Recorder()
    b = Batcher(r.send)
    out = await asyncio.gather(b.submit(1), b.submit(-2), b.submit(3), return_exceptions=True)
    assert out[0] == 10 and out[2] == 30
    assert isinstance(out[1], InvalidInput) and "item -2 < 0" in str(out[1])
    assert len(r.batches) == 1


async def test_a_batch_that_fails_fails_its_requests_and_not_the_next_batch():
    calls = 0

    async def send(items):
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("host restarting")
        return [i for i in items]

    b = Batcher(send)
    out = await asyncio.gather(b.submit(1), b.submit(2), return_exceptions=True)
    assert all(isinstance(e, ConnectionError) for e in out)
    assert await b.submit(7) == 7


async def test_a_full_queue_refuses_by_name_and_queues_nothing():
    r = Recorder(hold=True)
    b = Batcher(r.send, BatchLimits(size_max=1, in_flight_max=1, queued_max=2), "to shard:0")
    held = [asyncio.ensure_future(b.submit(0))]
    await asyncio.sleep(0.01)  # out, holding the one slot
    held += [asyncio.ensure_future(b.submit(i)) for i in (1, 2)]
    await asyncio.sleep(0.01)  # queued
    with pytest.raises(CapacityExceeded, match=r"to shard:0: 2 requests already queued"):
        await b.submit(99)
    assert b.state()["queued"] == 2
    r.release.set()
    assert await asyncio.wait_for(asyncio.gather(*held), 1.0) == [0, 10, 20]
    assert 99 not in [i for batch in r.batches for i in batch]


async def test_a_send_that_answers_the_wrong_number_of_outcomes_is_a_violation():
    async def send(items):
        return items[:-1]

    b = Batcher(send)
    with pytest.raises(InvariantViolation, match="1 outcomes for a batch of 2"):
        await asyncio.gather(b.submit(1), b.submit(2))


async def test_a_caller_that_stops_waiting_does_not_stop_the_others():
    r = Recorder(hold=True)
    b = Batcher(r.send, BatchLimits(size_max=8, in_flight_max=1))
    gone = asyncio.ensure_future(b.submit(1))
    kept = asyncio.ensure_future(b.submit(2))
    await asyncio.sleep(0.01)
    gone.cancel()
    r.release.set()
    assert await asyncio.wait_for(kept, 1.0) == 20
    assert b.state()["in_flight"] == 0
