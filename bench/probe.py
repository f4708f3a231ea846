"""Measure one placement: ticks per second, memory per Ray actor, the writer's flushes.

    python -m bench.probe --placement sharded --calls 2000 --rounds 5

Runs on a manual clock: each round moves time one minute and bills every call once, then
waits until PostgreSQL has committed it, so a round's rate is durable call-minutes per second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import psutil

from engine.api import Engine
from engine.config import from_env

SETUP_CONCURRENCY_MAX = 64


def rss_of(pid: int) -> dict:
    p = psutil.Process(pid)
    full = p.memory_full_info()
    return {"rss_bytes": full.rss, "uss_bytes": full.uss}


async def probe(placement: str, calls: int, rounds: int, shards: int) -> dict:
    cfg = from_env(
        placement=placement,
        clock="manual",
        shards=shards,
        minute_seconds=60.0,
        actors_per_node_max=max(48, 3 * calls + 4),
    )
    engine = await Engine(cfg).start()
    try:
        sem = asyncio.Semaphore(SETUP_CONCURRENCY_MAX)

        async def one(i: int) -> int:
            async with sem:
                u = await engine.create_user(f"probe-u{i}")
                v = await engine.create_listener(f"probe-l{i}")
                await engine.top_up(u, 10 * (rounds + 5))
                return (await engine.start_call(u, v))["call_id"]

        t = time.monotonic()
        call_ids = await asyncio.gather(*(one(i) for i in range(calls)))
        setup_s = time.monotonic() - t
        rates = []
        for _ in range(rounds):
            t = time.monotonic()
            await engine.advance(60.0)
            await engine.sync()
            rates.append(calls / (time.monotonic() - t))
        writer = await engine.inspect("writer")
        actors = {"writer": rss_of(writer["pid"])}
        if placement == "sharded":
            for st in await engine.inspect("shards"):
                actors[f"shard:{st['shard']}"] = rss_of(st["pid"])
        else:
            c = await engine.inspect("call", call_ids[0])
            actors["call:first"] = rss_of(c["pid"])
            w = await engine.inspect("wallet", c["user_id"])
            actors["wallet:first"] = rss_of(w["pid"])
        for cid in call_ids:
            await engine.end_call(cid)
        return {
            "placement": placement,
            "calls": calls,
            "setup_s": round(setup_s, 2),
            "ticks_per_s_median": round(statistics.median(rates)),
            "ticks_per_s_rounds": [round(r) for r in rates],
            "actors": actors,
            "writer": {
                k: writer[k]
                for k in (
                    "batches_committed",
                    "records_committed",
                    "last_flush_records",
                    "last_flush_ms",
                    "flush_ms_max",
                )
            },
        }
    finally:
        await engine.stop()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--placement", default="sharded")
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--shards", type=int, default=2)
    a = p.parse_args()
    print(json.dumps(asyncio.run(probe(a.placement, a.calls, a.rounds, a.shards)), indent=1))


if __name__ == "__main__":
    main()
