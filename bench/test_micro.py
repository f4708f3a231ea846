"""Microbenchmarks (pytest-benchmark), not part of the CI test run:

pytest bench/test_micro.py --benchmark-only
DATABASE_URL=postgresql://postgres@127.0.0.1/test pytest bench/test_micro.py --benchmark-only
"""

import asyncio
import os

import pytest

from actors import Call, Wallet
from actors.money import Transfer
from persistence.records import Batch, pack, unpack

CALLS = 10_000
T0 = 1_800_000_000.0


# A call's price: whole minutes (the default card), or by the second with 15 s free.
PLANS = {"default": {}, "by_the_second": {"increment_s": 1, "free_s": 15}}


def setup_calls(plan: dict | None = None):
    wallets, calls = [], []
    for i in range(1, CALLS + 1):
        w = Wallet(i, "user", balance_coins=10**9)
        w.open_call(i, 10, 1, 0, 60_000)
        wallets.append(w)
        calls.append(
            Call(i, i, CALLS + i, "audio", "basic", 10, 100, T0, 60.0, 10**6, 1, **(plan or {}))
        )
    return wallets, calls


@pytest.mark.parametrize("plan", PLANS)
def test_tick_logic_one_minute_of_10k_calls(benchmark, plan):
    wallets, calls = setup_calls(PLANS[plan])
    minute = {"now": T0}

    def one_minute():
        minute["now"] += 60
        now = minute["now"]
        for w, c in zip(wallets, calls, strict=True):
            _, last, short = w.bill_minutes(c.call_id, c.minute_at(now))
            c.after_billing(last, short, now)

    benchmark(one_minute)


@pytest.mark.parametrize("plan", PLANS)
def test_settling_10k_calls_90_4_s_long(benchmark, plan):
    """A call's end: its charge by its price, its return and earnings, its transfers."""

    def settle_all():
        _, calls = setup_calls(PLANS[plan])
        for c in calls:
            c.billed_minutes = 2
            c.hang_up(T0 + 90.4).transfers()

    benchmark.pedantic(settle_all, rounds=5)


def records(n):
    return [Transfer(f"call:{i}:2", i, "coins", -10, "spend", i, 2, 0) for i in range(1, n + 1)]


def test_batch_encoding_10k_records(benchmark):
    recs = records(CALLS)
    benchmark(pack, recs)


def test_batch_decoding_and_check_10k_records(benchmark):
    packed = pack(records(CALLS))

    def decode():
        Batch().add(unpack(packed))

    benchmark(decode)


@pytest.mark.skipif("DATABASE_URL" not in os.environ, reason="needs DATABASE_URL")
def test_writer_flush_10k_minutes(benchmark):
    from bench.setup import ongoing_calls, reset
    from persistence.db import get_pool
    from persistence.writer import LedgerWriter

    url = os.environ["DATABASE_URL"]
    loop = asyncio.new_event_loop()
    pool = loop.run_until_complete(get_pool(url))
    loop.run_until_complete(reset(pool))
    loop.run_until_complete(ongoing_calls(pool, CALLS, 10**9, T0))
    writer = LedgerWriter(url)
    minute = {"n": 1}

    def flush():
        minute["n"] += 1
        m = minute["n"]
        recs = [
            Transfer(f"call:{i}:{m}", i, "coins", -10, "spend", i, m, 0)
            for i in range(1, CALLS + 1)
        ]
        loop.run_until_complete(writer.write(recs, urgent=True))

    benchmark.pedantic(flush, rounds=5, iterations=1)
    loop.close()
