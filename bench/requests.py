"""Request paths of `billing-engine bench`: top-ups, call starts and call ends per second, and
their latency, at a given concurrency, on the same PostgreSQL in the same run.

- `requests`: the public Python API (`Engine.top_up`, `start_call`, `end_call`), sharded.
- `seed_requests`: the older system's way, one transaction per top-up (lock the wallet row,
  update it, insert the ledger row, commit) from a pool of SEED_POOL_SIZE connections.

Each (path, concurrency) bills its own fresh people, so rows do not share wallets. A row's
`calls` is the concurrency and `call_minutes_per_s` the requests per second (the JSON shape of
the minute paths); `note` names the request. The HTTP paths are in bench/http.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time

from bench.paths import RssWatch, Run, percentile
from bench.setup import people

REQUEST_PATHS = ("requests", "seed_requests", "http_requests", "seed_http", "serve_floor")
SEED_POOL_SIZE = 16
COINS_EACH = 1_000
TOP_UP_COINS = 10

SEED_TOP_UP = [
    "SELECT settled_coins FROM wallets WHERE user_id = $1 FOR UPDATE",
    "UPDATE wallets SET settled_coins = settled_coins + $2::bigint WHERE user_id = $1",
    """INSERT INTO ledger (transfer_id, user_id, unit, amount, tx_type, call_id, minute_no,
                          created_at)
       VALUES ($3::text, $1, 'coins', $2::bigint, 'purchase', NULL, NULL, now())""",
]


class People:
    """Blocks of fresh payers (first .. first+n-1) with listeners (+n), written straight into
    PostgreSQL (`bench.setup.people`), each payer with COINS_EACH coins."""

    def __init__(self, pool, start: int = 1_000_000) -> None:
        self.pool = pool
        self.next = start

    async def block(self, n: int) -> tuple[list[int], list[int]]:
        first, self.next = self.next, self.next + 2 * n
        bought = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        async with self.pool.acquire() as conn, conn.transaction():
            await people(conn, first, n, COINS_EACH, bought)
        users = list(range(first, first + n))
        return users, [u + n for u in users]


async def timed(requests: list, concurrency: int) -> tuple[float, list[float]]:
    """Run the zero-argument coroutine functions `requests`, `concurrency` at a time; returns
    (elapsed seconds, each request's latency in ms)."""
    queue = list(reversed(requests))
    latencies: list[float] = []

    async def worker() -> None:
        while queue:
            request = queue.pop()
            t = time.perf_counter()
            await request()
            latencies.append((time.perf_counter() - t) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies


def _row(path: str, kind: str, concurrency: int, elapsed, latencies, watch) -> Run:
    run = Run.measured(path, concurrency, len(latencies), elapsed, latencies, watch, kind)
    run.extra = {"request": kind, "requests": len(latencies)}
    return run


async def engine_requests(engine, people: People, n: int, concurrency: int, via) -> list[Run]:
    """Top-ups, starts and ends through `via` (the Engine, or an HTTP client)."""
    watch = RssWatch()
    watch.pids |= await engine.processes()
    users, listeners = await people.block(n)
    rows = []
    top = [via.top_up(u) for u in users]
    rows.append(("top_up", *await timed(top, concurrency)))
    calls: list[int] = []

    async def start(u: int, v: int) -> None:
        calls.append(await via.start_call(u, v))

    # Each payer calls a listener drawn at random, so that a start finds both parties on one
    # shard as often as it would among real people (1 in `shards`), not always or never.
    listeners = list(listeners)
    random.Random(concurrency).shuffle(listeners)
    starts = [lambda u=u, v=v: start(u, v) for u, v in zip(users, listeners, strict=True)]
    rows.append(("start_call", *await timed(starts, concurrency)))
    ends = [lambda c=c: via.end_call(c) for c in list(calls)]
    rows.append(("end_call", *await timed(ends, concurrency)))
    watch.sample()
    return [_row(via.path, kind, concurrency, e, lat, watch) for kind, e, lat in rows]


class ViaEngine:
    path = "requests"

    def __init__(self, engine) -> None:
        self.engine = engine

    def top_up(self, user: int):
        return lambda: self.engine.top_up(user, TOP_UP_COINS, idempotency_key=f"b{user}")

    async def start_call(self, user: int, listener: int) -> int:
        return (await self.engine.start_call(user, listener))["call_id"]

    async def end_call(self, call_id: int) -> None:
        await self.engine.end_call(call_id)


async def seed_requests(database_url: str, people: People, n: int, concurrency: int) -> list[Run]:
    import asyncpg

    watch = RssWatch()
    users, _ = await people.block(n)
    seed_pool = await asyncpg.create_pool(database_url, min_size=4, max_size=SEED_POOL_SIZE)
    try:

        async def top_up(user: int) -> None:
            async with seed_pool.acquire() as conn, conn.transaction():
                await conn.fetchval(SEED_TOP_UP[0], user)
                await conn.execute(SEED_TOP_UP[1], user, TOP_UP_COINS)
                await conn.execute(SEED_TOP_UP[2], user, TOP_UP_COINS, f"ext:{user}:b{user}")

        elapsed, lat = await timed([lambda u=u: top_up(u) for u in users], concurrency)
    finally:
        await seed_pool.close()
    watch.sample()
    return [_row("seed_requests", "top_up", concurrency, elapsed, lat, watch)]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def fresh_engine(database_url: str, redis_url: str, shards: int, first: int = 1_000_000):
    """An empty database, a sharded engine on it without its jobs, and people from `first`."""
    from bench.setup import reset
    from engine.api import Engine
    from engine.config import from_env
    from persistence.db import get_pool

    pool = await get_pool(database_url)
    await reset(pool)
    cfg = from_env(
        database_url=database_url,
        redis_url=redis_url,
        placement="sharded",
        shards=shards,
        scheduler=False,
    )
    return await Engine(cfg).start(), People(pool, first)


async def bench_requests(
    paths, concurrencies, n, shards, database_url, redis_url, console
) -> list[dict]:
    engine, people = await fresh_engine(database_url, redis_url, shards)
    runs: list[dict] = []
    try:
        for c in concurrencies:
            for path in paths:
                console.print(f"[dim]{path} at concurrency {c}...[/]")
                if path == "seed_requests":
                    out = await seed_requests(database_url, people, n, c)
                else:
                    out = await engine_requests(engine, people, n, c, ViaEngine(engine))
                runs += [r.as_dict() for r in out]
    finally:
        await engine.stop()
    return runs


__all__ = ["REQUEST_PATHS", "bench_requests", "percentile"]
