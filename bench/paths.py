"""The paths `billing-engine bench` compares, over the same ongoing calls and database.

Each returns a `Run`: durable call-minutes per second (a minute counts once committed), the
latency from a minute's tick to its commit, and memory. Minutes are simulated: each path bills
`minutes` rounds of one minute of every call as fast as it can.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import psutil

from bench.setup import RATE_COINS, ongoing_calls, reset

T0 = 1_800_000_000.0
COINS_EACH = 1_000_000
# The older system's loop runs one transaction per call: past this many seconds a round is cut
# short and the rate is taken from what it did.
SEED_LOOP_ROUND_S_MAX = 20.0
# Engine paths: rounds waited on one by one to measure tick-to-commit latency.
LATENCY_ROUNDS = 3


@dataclass
class Run:
    path: str
    calls: int
    call_minutes_per_s: float
    tick_to_commit_ms_p50: float
    tick_to_commit_ms_p99: float
    rss_peak_bytes: int
    rss_per_call_bytes: int
    note: str = ""
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def measured(cls, path, calls, minutes_done, elapsed_s, latencies_ms, watch, note=""):
        return cls(
            path,
            calls,
            minutes_done / elapsed_s,
            percentile(latencies_ms, 50),
            percentile(latencies_ms, 99),
            watch.peak,
            (watch.peak - watch.baseline) // calls,
            note,
        )


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


class RssWatch:
    """Peak resident memory of a set of processes (this one and the given pids), in all and
    per process."""

    def __init__(self) -> None:
        self.pids: dict[int, str] = {os.getpid(): "driver"}
        self.peak = 0
        self.peak_by_process: dict[str, int] = {}
        self.baseline = self.sample()

    def sample(self) -> int:
        total = 0
        for pid, label in list(self.pids.items()):
            try:
                rss = psutil.Process(pid).memory_info().rss
            except psutil.NoSuchProcess:
                del self.pids[pid]
                continue
            total += rss
            self.peak_by_process[label] = max(self.peak_by_process.get(label, 0), rss)
        self.peak = max(self.peak, total)
        return total


async def copy_limit(pool, calls: int, minutes: int) -> Run:
    """Raw COPY of ledger rows into a table shaped like the ledger, with its unique key: the
    columns the writer COPYs (`commit.LEDGER_COLUMNS`; `committed_at` is their default)."""
    from persistence.commit import LEDGER_COLUMNS

    await pool.execute("DROP TABLE IF EXISTS bench_ledger")
    await pool.execute("CREATE TABLE bench_ledger (LIKE ledger INCLUDING ALL)")
    watch = RssWatch()
    import datetime as dt

    at = dt.datetime.fromtimestamp(T0, dt.UTC)
    lat, started = [], time.perf_counter()
    for m in range(1, minutes + 1):
        tick = time.perf_counter()
        rows = [
            (f"call:{c}:{m}", c, "coins", -RATE_COINS, "spend", c, m, at, at)
            for c in range(1, calls + 1)
        ]
        async with pool.acquire() as conn:
            await conn.copy_records_to_table("bench_ledger", records=rows, columns=LEDGER_COLUMNS)
        lat.append((time.perf_counter() - tick) * 1000)
        watch.sample()
    elapsed = time.perf_counter() - started
    await pool.execute("DROP TABLE bench_ledger")
    return Run.measured("copy_limit", calls, calls * minutes, elapsed, lat, watch)


SEED_TX = [
    "SELECT settled_coins FROM wallets WHERE user_id = $1 FOR UPDATE",
    "UPDATE wallets SET settled_coins = settled_coins - $2::bigint WHERE user_id = $1",
    """INSERT INTO ledger (transfer_id, user_id, unit, amount, tx_type, call_id, minute_no,
                          created_at)
       VALUES ($3::text, $1, 'coins', -$2::bigint, 'spend', $4::bigint, $5::int, now())""",
    """UPDATE calls SET billed_minutes = $2::int, coins_spent = coins_spent + $3::bigint
       WHERE call_id = $1""",
]


async def seed_loop(pool, calls: int, minutes: int) -> Run:
    """The older system's way: per call per minute, one transaction of four statements."""
    await reset(pool)
    await ongoing_calls(pool, calls, COINS_EACH, T0)
    watch = RssWatch()
    lat, done, started = [], 0, time.perf_counter()
    cut_short = False
    for m in range(2, minutes + 2):
        round_started = time.perf_counter()
        async with pool.acquire() as conn:
            for c in range(1, calls + 1):
                tick = time.perf_counter()
                async with conn.transaction():
                    await conn.fetchval(SEED_TX[0], c)
                    await conn.execute(SEED_TX[1], c, RATE_COINS)
                    await conn.execute(SEED_TX[2], c, RATE_COINS, f"call:{c}:{m}", c, m)
                    await conn.execute(SEED_TX[3], c, m, RATE_COINS)
                lat.append((time.perf_counter() - tick) * 1000)
                done += 1
                if time.perf_counter() - round_started > SEED_LOOP_ROUND_S_MAX:
                    cut_short = True
                    break
        watch.sample()
        if cut_short:
            break
    elapsed = time.perf_counter() - started
    note = f"cut short after {done} call-minutes" if cut_short else ""
    return Run.measured("seed_loop", calls, done, elapsed, lat, watch, note)


SET_SQL = """
WITH due AS (
    SELECT c.call_id, c.user_id, c.rate_coins FROM calls c
    JOIN wallets w ON w.user_id = c.user_id
    WHERE c.status = 'ongoing' AND w.settled_coins >= c.rate_coins
), debit AS (
    UPDATE wallets w SET settled_coins = w.settled_coins - due.rate_coins
    FROM due WHERE w.user_id = due.user_id RETURNING w.user_id
)
INSERT INTO ledger (transfer_id, user_id, unit, amount, tx_type, call_id, minute_no, created_at)
SELECT 'call:' || call_id || ':' || $1::int, user_id, 'coins', -rate_coins, 'spend', call_id,
       $1::int, now()
FROM due
ON CONFLICT (transfer_id) DO NOTHING
"""


async def set_sql(pool, calls: int, minutes: int) -> Run:
    """One set-based statement per minute billing every call."""
    await reset(pool)
    await ongoing_calls(pool, calls, COINS_EACH, T0)
    watch = RssWatch()
    lat, started = [], time.perf_counter()
    for m in range(2, minutes + 2):
        tick = time.perf_counter()
        await pool.execute(SET_SQL, m)
        lat.append((time.perf_counter() - tick) * 1000)
        watch.sample()
    elapsed = time.perf_counter() - started
    return Run.measured("set_sql", calls, calls * minutes, elapsed, lat, watch)


# `sharded_plan`: every call priced by the second with its first 15 s free (the minute path
# must not pay for the price).
PLAN = {"increment_s": 1, "free_s": 15}


async def engine_path(
    placement: str,
    database_url: str,
    redis_url: str,
    calls: int,
    minutes: int,
    shards: int,
    plan: dict | None = None,
) -> Run:
    """The engine: N ongoing calls recovered from PostgreSQL (manual clock). Throughput:
    `minutes` rounds of one minute of every call, pipelined, the clock stopped only when all
    of them are committed. Latency: `LATENCY_ROUNDS` more rounds, each waited on until
    committed. With a `plan`, the calls and the card are priced by it."""
    from engine.api import Engine
    from persistence.db import get_pool

    pool = await get_pool(database_url)
    await reset(pool)
    await ongoing_calls(pool, calls, COINS_EACH, T0, **(plan or {}))
    cfg = _engine_config(placement, database_url, redis_url, calls, shards, plan)
    watch = RssWatch()
    t = time.perf_counter()
    engine = await Engine(cfg).start()
    engine.clock.set(T0)
    recover_s = time.perf_counter() - t
    try:
        watch.pids |= await _engine_pids(engine)
        watch.sample()  # after recovery: what it left behind counts
        started = time.perf_counter()
        for _ in range(minutes):
            await engine.advance(60.0)
            watch.sample()
        await engine.sync()
        elapsed = time.perf_counter() - started
        lat = []
        for _ in range(LATENCY_ROUNDS):
            tick = time.perf_counter()
            await engine.advance(60.0)
            await engine.sync()
            lat.append((time.perf_counter() - tick) * 1000)
            watch.sample()
        billed = await pool.fetchval("SELECT count(*) FROM ledger WHERE tx_type = 'spend'")
    finally:
        await engine.stop()
    expected = calls * (1 + minutes + LATENCY_ROUNDS)
    note = "" if billed == expected else f"billed {billed} of {expected} minutes"
    name = placement.replace("-", "_") + ("_plan" if plan is not None else "")
    run = Run.measured(name, calls, calls * minutes, elapsed, lat, watch, note)
    run.extra = {
        "recover_s": round(recover_s, 2),
        "processes": len(watch.pids),
        "rss_peak_mib_by_process": _by_process(watch.peak_by_process),
    }
    return run


def _engine_config(placement, database_url, redis_url, calls: int, shards: int, plan):
    from actors.money import CALL_TYPES, RateCard
    from engine.config import from_env

    cfg = from_env(
        database_url=database_url,
        redis_url=redis_url,
        placement=placement,
        clock="manual",
        shards=shards,
        minute_seconds=60.0,
        scheduler=False,
        actors_per_node_max=max(48, 3 * calls + 8),
    )
    if plan is None:
        return cfg
    return cfg.replace(
        rate_card=RateCard(**{k: dict.fromkeys(CALL_TYPES, v) for k, v in plan.items()})
    )


def _by_process(peaks: dict[str, int]) -> dict[str, int]:
    """Peak MiB per process; call and wallet actors as the largest of each kind."""
    out: dict[str, int] = {}
    for label, rss in sorted(peaks.items()):
        kind = label.split(":")[0]
        key = f"{kind}:* (largest)" if kind in ("call", "wallet") else label
        out[key] = max(out.get(key, 0), round(rss / 2**20))
    return out


async def _engine_pids(engine) -> dict[int, str]:
    """The processes of the engine's Ray actors, by what they host."""
    return await engine.processes()


async def run_path(
    path: str, database_url: str, redis_url: str, calls: int, minutes: int, shards: int
) -> Run:
    from persistence.db import get_pool

    pool = await get_pool(database_url)
    if path == "copy_limit":
        return await copy_limit(pool, calls, minutes)
    if path == "seed_loop":
        return await seed_loop(pool, calls, minutes)
    if path == "set_sql":
        return await set_sql(pool, calls, minutes)
    if path == "sharded_plan":
        return await engine_path("sharded", database_url, redis_url, calls, minutes, shards, PLAN)
    placement = {"actor_per_call": "actor-per-call", "sharded": "sharded"}[path]
    return await engine_path(placement, database_url, redis_url, calls, minutes, shards)


PATHS = ("copy_limit", "seed_loop", "set_sql", "actor_per_call", "sharded", "sharded_plan")
__all__ = ["PATHS", "Run", "run_path"]
