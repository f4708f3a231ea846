"""`billing-engine bench --workload`: live traffic, open loop, on the real clock.

Calls arrive as a Poisson process at a rate raised step by step; each lasts an exponentially
distributed number of minutes (mean WORKLOAD_MEAN_MINUTES) and is then hung up, unless its
payer ran dry first; a payer whose coins run low tops up before their next call. Minutes are
short (`minute_s`, default 1 s), so a machine's worth of load fits in seconds.

A step passes when, over its window: every minute the timers billed was billed within
LATE_MS_MAX of its due time, the p99 of call starts is under START_P99_MS_MAX, and nothing was
refused. Every step is one row: `calls` is the mean number of ongoing calls in the second half
of the step, `call_minutes_per_s` the minutes billed per second, the latency fields the starts'.

**Scaling to 10-minute calls of 60-second minutes.** A load is its rates: starts, ends and
minutes per second. With minutes of `minute_s` seconds and a mean of 10 minutes, C ongoing calls
ask for C / (10 minute_s) starts and ends and C / minute_s minutes per second; with 60-second
minutes the same rates come from C * 60 / minute_s ongoing calls. So a step's `calls` times
60 / minute_s is what it stands for at 10-minute calls (`concurrent_at_60s_minutes`). What the
rates do not scale is memory: those calls must also fit in the shards (about 1 KiB each, see
`bench --calls`).
"""

from __future__ import annotations

import asyncio
import os
import random
import time

import psutil

from actors import BillingError, CapacityExceeded, EngineUnavailable
from bench.paths import RssWatch, Run, percentile
from bench.requests import COINS_EACH, People

WORKLOAD_MINUTE_S = 1.0  # a minute's length unless --minute-seconds says otherwise
WORKLOAD_MEAN_MINUTES = 10.0
WORKLOAD_STEP_S = 30.0
WORKLOAD_RATES = (50, 100, 200, 400, 800, 1600)
START_P99_MS_MAX = 100.0
LATE_MS_MAX = 1_000
TOP_UP_BELOW_COINS = 500
TOP_UP_COINS = 5_000
# Payers and listeners made ready before the run: enough for the largest step's calls.
PEOPLE_SLACK = 2.0
# Calls under way in the driver at most (a step past what the engine takes stops adding).
IN_FLIGHT_MAX = 50_000


# Processes outside the engine's own whose CPU a step counts, by name: the servers and Ray's.
RAY_SYSTEM = "ray (raylet, gcs)"
SERVER_PROCESSES = {
    "postgres": "postgresql",
    "redis-server": "redis",
    "raylet": RAY_SYSTEM,
    "gcs_server": RAY_SYSTEM,
}


DRIVER = "driver (load and Engine client)"
MACHINE = "machine (busy)"
LOAD_ALONE = "load generator (measured alone)"
CLIENT = "Engine client (driver less load)"
# The load generator alone: its calls last a tenth of a step's (a steady state within a second),
# for this long, at the first step's rate (or this one, if higher).
LOAD_ALONE_S = 10.0
LOAD_ALONE_RATE_MIN = 100
LOAD_ALONE_MINUTE_S = 0.01


class CpuWatch:
    """CPU seconds (user + system) each part used: the driver (the load generator with the
    Engine client it drives: one process), each engine actor (`Engine.processes`), PostgreSQL's
    and Redis's processes, Ray's raylet and GCS; and the whole machine's busy time, which
    counts what none of them names."""

    def __init__(self, engine_pids: dict[int, str]) -> None:
        self.pids = {os.getpid(): DRIVER} | dict(engine_pids)

    def _labelled(self) -> dict[int, str]:
        out = dict(self.pids)
        for p in psutil.process_iter(["pid", "name"]):
            for prefix, label in SERVER_PROCESSES.items():
                if (p.info["name"] or "").startswith(prefix):
                    out.setdefault(p.info["pid"], label)
        return out

    def sample(self) -> dict[tuple, float]:
        """CPU seconds so far of each process, keyed by (label, pid, start time), and the
        machine's busy seconds under ("machine (busy)",)."""
        by: dict[tuple, float] = {}
        for pid, label in self._labelled().items():
            try:
                p = psutil.Process(pid)
                t = p.cpu_times()
                by[(label, pid, p.create_time())] = t.user + t.system
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        m = psutil.cpu_times()
        by[(MACHINE,)] = sum(m) - m.idle - getattr(m, "iowait", 0.0)
        return by

    @staticmethod
    def per_call(before: dict[tuple, float], after: dict[tuple, float], calls: int) -> dict:
        """CPU seconds of each part between two samples, and milliseconds of it per call. Each
        process counts what it used between them (all of it if it started since); one that
        exited in between is left out (its CPU is unknown), so a part never goes negative when
        a PostgreSQL backend ends."""
        sums: dict[str, float] = {}
        for key, cpu in after.items():
            sums[key[0]] = sums.get(key[0], 0.0) + cpu - before.get(key, 0.0)
        used = {k: round(v, 2) for k, v in sums.items()}
        per = {k: round(v * 1000 / calls, 3) if calls else None for k, v in used.items()}
        return {"cpu_s": used, "cpu_ms_per_call": per}


class NullEngine:
    """An engine that answers every request at once and does nothing: the load generator driving
    it spends only its own CPU (its tasks, timers and bookkeeping)."""

    def __init__(self) -> None:
        self.calls = 0

    async def top_up(self, user_id: int, amount: int) -> dict:
        return {"balance_coins": amount}

    async def start_call(self, user_id: int, listener_id: int) -> dict:
        self.calls += 1
        return {"call_id": self.calls}

    async def end_call(self, call_id: int) -> dict:
        return {"status": "completed", "coins_spent": 0}


async def load_alone_ms_per_call(rate: float, users: list[int], listeners: list[int]) -> float:
    """CPU ms per call of the load generator by itself: the same `Traffic`, in this process,
    against a `NullEngine`. The driver's row less this is the Engine client's share (the two
    share a process: the client's calls are the load generator's awaits)."""
    traffic = Traffic(NullEngine(), users, listeners, LOAD_ALONE_MINUTE_S)
    me = psutil.Process()
    before = sum(me.cpu_times()[:2])
    await traffic.arrivals(max(rate, LOAD_ALONE_RATE_MIN), LOAD_ALONE_S, [])
    used = sum(me.cpu_times()[:2]) - before
    await asyncio.gather(*traffic.tasks, return_exceptions=True)
    return used * 1000 / max(1, len(traffic.start_ms))


def split_driver(per_call: dict, load_ms: float) -> dict:
    """`per_call` (CpuWatch.per_call's ms per call) with the driver's row split into the load
    generator's (measured alone, at most the driver's) and the Engine client's."""
    driver = per_call.get(DRIVER)
    if driver is None:
        return per_call
    load = round(min(load_ms, driver), 3)
    out = {k: v for k, v in per_call.items() if k != DRIVER}
    return {LOAD_ALONE: load, CLIENT: round(driver - load, 3)} | out


class Traffic:
    """The driver's side: free payers and listeners, ongoing calls, and what each step saw."""

    def __init__(self, engine, users: list[int], listeners: list[int], minute_s: float) -> None:
        self.engine = engine
        self.free_users = list(users)
        self.free_listeners = list(listeners)
        self.coins = dict.fromkeys(users, COINS_EACH)  # what `People` gives each payer
        self.minute_s = minute_s
        self.ongoing = 0
        self.tasks: set[asyncio.Task] = set()
        self.rng = random.Random(20261130)
        self.reset()

    def reset(self) -> None:
        self.start_ms: list[float] = []
        self.refused = 0
        self.failed: list[str] = []
        self.dropped = 0
        self.no_people = 0
        self.top_ups = 0

    async def call(self) -> None:
        if not self.free_users or not self.free_listeners:
            self.no_people += 1
            return
        user, listener = self.free_users.pop(), self.free_listeners.pop()
        try:
            if self.coins[user] < TOP_UP_BELOW_COINS:
                await self.engine.top_up(user, TOP_UP_COINS)
                self.coins[user] += TOP_UP_COINS
                self.top_ups += 1
            t = time.perf_counter()
            try:
                call = await self.engine.start_call(user, listener)
            except (CapacityExceeded, EngineUnavailable):
                self.refused += 1
                return
            self.start_ms.append((time.perf_counter() - t) * 1000)
            self.ongoing += 1
            try:
                minutes = self.rng.expovariate(1 / WORKLOAD_MEAN_MINUTES)
                await asyncio.sleep(minutes * self.minute_s)
                ended = await self.engine.end_call(call["call_id"])
            finally:
                self.ongoing -= 1
            self.coins[user] -= ended["coins_spent"]
            self.dropped += ended["status"] == "dropped"
        except BillingError as e:
            self.failed.append(f"{type(e).__name__}: {e}")
        finally:
            self.free_users.append(user)
            self.free_listeners.append(listener)

    async def arrivals(self, rate_per_s: float, seconds: float, samples: list[int]) -> None:
        """Open loop: calls arrive at `rate_per_s` on average for `seconds`, whatever the
        engine's answers take; `ongoing` is sampled every 0.25 s."""
        loop = asyncio.get_running_loop()
        started = next_at = next_sample = loop.time()
        while (now := loop.time()) < started + seconds:
            while next_at <= now:
                if len(self.tasks) < IN_FLIGHT_MAX:
                    task = loop.create_task(self.call())
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)
                next_at += self.rng.expovariate(rate_per_s)
            if now >= next_sample:
                if now - started >= seconds / 2:
                    samples.append(self.ongoing)
                next_sample += 0.25
            await asyncio.sleep(max(0.0, min(next_at, next_sample) - loop.time()))


async def late_minutes(engine) -> dict[int, int]:
    """Timer-billed minutes by lateness (ms bucket), summed over the shards."""
    out: dict[int, int] = {}
    for st in await engine.inspect("shards"):
        for bucket, n in st["late_minutes"].items():
            out[int(bucket)] = out.get(int(bucket), 0) + n
    return out


def lateness(before: dict[int, int], after: dict[int, int]) -> tuple[int, float, float]:
    """(minutes, p99 ms, max ms) of the minutes billed between two `late_minutes`."""
    diff = {b: after[b] - before.get(b, 0) for b in after if after[b] > before.get(b, 0)}
    total = sum(diff.values())
    if not total:
        return 0, 0.0, 0.0
    seen, p99 = 0, 0.0
    for bucket in sorted(diff):
        seen += diff[bucket]
        if seen >= 0.99 * total:
            p99 = float(bucket)
            break
    return total, p99, float(max(diff))


def _step_row(rate, traffic, samples, late, elapsed_s, watch, minute_s, cpu) -> Run:
    minutes, late_p99, late_max = late
    concurrent = sum(samples) / len(samples) if samples else 0.0
    start_p99 = percentile(traffic.start_ms, 99)
    ok = (
        late_max < LATE_MS_MAX
        and start_p99 < START_P99_MS_MAX
        and not traffic.refused
        and not traffic.failed
        and not traffic.no_people
    )
    run = Run(
        "workload",
        round(concurrent),
        minutes / elapsed_s,
        percentile(traffic.start_ms, 50),
        start_p99,
        watch.sample(),
        0,
        f"{rate}/s arrivals",
    )
    run.extra = {
        "arrival_rate_per_s": rate,
        "minute_s": minute_s,
        "mean_minutes": WORKLOAD_MEAN_MINUTES,
        "starts": len(traffic.start_ms),
        "top_ups": traffic.top_ups,
        "dropped": traffic.dropped,
        "refused": traffic.refused,
        "failed": traffic.failed[:5],
        "no_free_people": traffic.no_people,
        "late_ms_p99": late_p99,
        "late_ms_max": late_max,
        "concurrent_at_60s_minutes": round(concurrent * 60 / minute_s),
        "sustained": ok,
        # A call's share: its start, end, minutes, its payer's top-ups, the load generator's.
        **cpu,
    }
    return run


async def bench_workload(
    rates, step_s, minute_s, shards, database_url, redis_url, console
) -> list[dict]:
    from bench.setup import reset
    from engine.api import Engine
    from engine.config import from_env
    from persistence.db import get_pool

    pool = await get_pool(database_url)
    await reset(pool)
    most = int(max(rates) * WORKLOAD_MEAN_MINUTES * minute_s * PEOPLE_SLACK) + 100
    users, listeners = await People(pool).block(most)
    cfg = from_env(
        database_url=database_url,
        redis_url=redis_url,
        placement="sharded",
        shards=shards,
        clock="real",
        minute_seconds=minute_s,
        scheduler=False,
    )
    console.print(f"[dim]workload: the load generator alone for {LOAD_ALONE_S:.0f} s...[/]")
    load_ms = await load_alone_ms_per_call(rates[0], users, listeners)
    engine = await Engine(cfg).start()
    traffic = Traffic(engine, users, listeners, minute_s)
    runs: list[dict] = []
    try:
        watch = RssWatch()
        watch.pids |= await engine.processes()
        cpu = CpuWatch(await engine.processes())
        for rate in rates:
            console.print(f"[dim]workload: {rate} calls/s arriving for {step_s:.0f} s...[/]")
            traffic.reset()
            samples: list[int] = []
            before, t, cpu_before = await late_minutes(engine), time.perf_counter(), cpu.sample()
            await traffic.arrivals(rate, step_s, samples)
            late = lateness(before, await late_minutes(engine))
            used = CpuWatch.per_call(cpu_before, cpu.sample(), len(traffic.start_ms))
            used["cpu_ms_per_call"] = split_driver(used["cpu_ms_per_call"], load_ms)
            elapsed = time.perf_counter() - t
            row = _step_row(rate, traffic, samples, late, elapsed, watch, minute_s, used)
            runs.append(row.as_dict())
            if not row.extra["sustained"]:
                break
        for task in list(traffic.tasks):  # the calls still on: hung up by the engine's stop
            task.cancel()
        await asyncio.gather(*traffic.tasks, return_exceptions=True)
    finally:
        await engine.stop()
    return runs


__all__ = ["WORKLOAD_MINUTE_S", "WORKLOAD_RATES", "WORKLOAD_STEP_S", "bench_workload", "lateness"]
