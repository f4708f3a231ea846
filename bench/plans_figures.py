"""The figures of price plans on a running engine (a manual clock, PostgreSQL and Redis given):
a 90-s call at each increment (60, 30, 6, 1) with its charge, return and earnings; a free short
call; a listener's price clamped after their tier fell; a card scheduled for later that a live
call does not feel; and the audit.

    python -m bench.plans_figures postgresql://postgres@127.0.0.1:5432/postgres redis://127.0.0.1:6379/7

It makes (and leaves) a database `plans_figures` on that server.
"""

from __future__ import annotations

import asyncio
import json
import sys

from actors.money import RateCard
from bench.figures import on_engine

BOUNDS = {"basic": [5, 15], "bronze": [5, 20], "silver": [8, 30], "gold": [10, 40]}
CARD = RateCard(price_bounds={"audio": BOUNDS}, coin_value_paise=50)


async def ended(engine, user: int, listener: int, seconds: float) -> tuple[dict, dict]:
    """A call of `seconds`: its start and its explanation once ended."""
    started = await engine.start_call(user, listener)
    await engine.advance(seconds)
    await engine.end_call(started["call_id"])
    return started, await engine.explain_call(started["call_id"])


async def increments(engine, user: int, listeners: list[int]) -> None:
    for listener, inc in zip(listeners, (60, 30, 6, 1), strict=True):
        card = {"increment_s": {"audio": inc, "video": inc}, "coin_value_paise": 50}
        await engine.schedule_rate_card(engine.clock.now(), card)
        _, ex = await ended(engine, user, listener, 90)
        c = ex["call"]
        print(f"{inc:>2}-s increments: {ex['end']['charge']}; earned {c['earnings_paise']} "
              f"paise, platform {c['platform_paise']}")  # fmt: skip


async def clamped(engine, user: int, listener: int) -> None:
    pool = await engine.pool()
    day = await pool.fetchval(
        "SELECT (to_timestamp($1) AT TIME ZONE 'UTC')::date", engine.clock.now()
    )
    await pool.execute("INSERT INTO listener_badges VALUES ($1, $2, 'gold', 0)", listener, day)
    await engine.set_prices(listener, {"audio": 35})
    started, _ = await ended(engine, user, listener, 30)
    print("gold today:", json.dumps(started["price"]))
    await engine.advance(86_400)
    started, ex = await ended(engine, user, listener, 30)
    print("basic tomorrow:", json.dumps(started["price"]))
    print("  explain:", ex["price"])


async def scheduled(engine, users: list[int], listeners: list[int]) -> None:
    later = {"coins_per_minute": {"audio": 20, "video": 60}}
    card = await engine.schedule_rate_card(engine.clock.now() + 120, later)
    live = await engine.start_call(users[0], listeners[0])
    await engine.advance(180)
    after = await engine.start_call(users[1], listeners[1])
    await engine.advance(30)
    for what, c in (("started before", live), ("started after", after)):
        await engine.end_call(c["call_id"])
        ex = await engine.explain_call(c["call_id"])
        print(f"card {card['rate_card_id']} from +120 s, a call {what}: rate "
              f"{c['price']['rate_coins']}, card {c['price']['rate_card_id']}: "
              f"{ex['end']['charge']}")  # fmt: skip


async def figures(engine) -> None:
    users = [await engine.create_user(f"u{i}") for i in range(2)]
    for u in users:
        await engine.top_up(u, 10_000, idempotency_key="seed")
    listeners = [await engine.create_listener(f"l{i}") for i in range(8)]
    await increments(engine, users[0], listeners[:4])
    free = {"increment_s": {"audio": 1, "video": 6}, "free_s": {"audio": 15, "video": 0},
            "price_bounds": {"audio": BOUNDS}, "coin_value_paise": 50}  # fmt: skip
    await engine.schedule_rate_card(engine.clock.now(), free)
    _, ex = await ended(engine, users[0], listeners[4], 12)
    print("a short call:", ex["end"]["charge"])
    await clamped(engine, users[0], listeners[5])
    await scheduled(engine, users, listeners[6:])


if __name__ == "__main__":
    asyncio.run(on_engine(sys.argv[1], sys.argv[2], "plans_figures", CARD, figures))
