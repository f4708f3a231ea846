"""The figures of offers and of the grace at the cut-off on a running engine (a manual clock,
PostgreSQL and Redis given): a first call with 3 free minutes paid by the platform, explained;
a code offer of 50 minutes that 200 starts at once run out of (exactly the budget granted); a
call suspended, topped up within its grace and continued, beside one whose grace ran out, both
explained; and the audit.

    python -m bench.offers_figures postgresql://postgres@127.0.0.1:5432/postgres redis://127.0.0.1:6379/7

It makes (and leaves) a database `offers_figures` on that server.
"""

from __future__ import annotations

import asyncio
import sys

from actors.money import RateCard
from bench.figures import on_engine
from engine.cli.explain_view import rows_in_time_order
from engine.explain import clock

CARD = RateCard(grace_s={"audio": 30, "video": 0})
RUSH = 200  # starts at once


def show(ex: dict) -> None:
    """An explanation as `billing-engine explain call ID` prints it, in plain lines."""
    c = ex["call"]
    print(f"  call {c['call_id']}: payer {c['user_id']} -> listener {c['listener_id']}, "
          f"{c['status']}; offer {c['offer']}")  # fmt: skip
    for at, what, coins, balance, _, _ in rows_in_time_order(ex):
        print(f"    {clock(at)}  {what:<24} {coins:+5d}  balance after {balance}")
    for line in (ex["price"], ex["offer"], ex["end"] and ex["end"]["rule"],
                 ex["end"] and ex["end"]["charge"]):  # fmt: skip
        if line:
            print(f"    {line}")


async def first_call(engine) -> None:
    now = engine.clock.now()
    offer = await engine.create_offer(3, "first_call", now - 1, now + 60, 1_000)  # a minute
    user, listener = await engine.create_user("asha"), await engine.create_listener("ravi")
    await engine.top_up(user, 50, idempotency_key="seed")
    started = await engine.start_call(user, listener)
    print("a first call: start answered offer", started["offer"])
    await engine.advance(4 * 60 + 10)
    await engine.end_call(started["call_id"])
    show(await engine.explain_call(started["call_id"]))
    print("  offer:", {k: v for k, v in (await engine.offer(offer["offer_id"])).items()
                       if k in ("minutes_used", "coins_granted", "coins_returned",
                                "earnings_paid_paise", "calls")})  # fmt: skip


async def rush(engine) -> None:
    now = engine.clock.now()
    offer = await engine.create_offer(3, "code", now - 1, now + 86_400, 50, code="RUSH")
    users = [await engine.create_user(f"u{i}") for i in range(RUSH)]
    listeners = [await engine.create_listener(f"l{i}") for i in range(RUSH)]
    for u in users:
        await engine.top_up(u, 100, idempotency_key="seed")
    pairs = zip(users, listeners, strict=True)
    started = await asyncio.gather(
        *(engine.start_call(u, li, offer_code="RUSH") for u, li in pairs)
    )
    got = sorted((s["offer"]["free_minutes"] for s in started if s["offer"]), reverse=True)
    print(f"{RUSH} starts at once with code RUSH (3 free minutes, budget 50): {len(got)} took "
          f"it, {sum(got)} minutes granted ({got.count(3)} x 3 + {got[-1]})")  # fmt: skip
    stats = await engine.offer(offer["offer_id"])
    print("  during:", {k: stats[k] for k in ("minutes_reserved", "minutes_used", "minutes_left")})
    await engine.advance(90)
    for s in started:
        await engine.end_call(s["call_id"])
    stats = await engine.offer(offer["offer_id"])
    print("  after their ends:", {k: stats[k] for k in (
        "minutes_reserved", "minutes_used", "minutes_left", "coins_granted", "coins_returned",
        "earnings_paid_paise", "calls")})  # fmt: skip


async def grace(engine) -> None:
    saved = await engine.create_user("saved")
    lost = await engine.create_user("lost")
    listeners = [await engine.create_listener("g1"), await engine.create_listener("g2")]
    for u in (saved, lost):
        await engine.top_up(u, 10, idempotency_key="seed")
    a = await engine.start_call(saved, listeners[0])
    b = await engine.start_call(lost, listeners[1])
    await engine.advance(60 + 10)
    print("a minute later, both short of minute 2:",
          [(c["status"], clock(c["grace_until"])) for c in
           [await engine.get_call(a["call_id"]), await engine.get_call(b["call_id"])]])  # fmt: skip
    await engine.advance(5)
    await engine.top_up(saved, 20, idempotency_key="rescue")  # 75 s: within the grace
    await engine.advance(60 + 20)
    for c in (a, b):
        await engine.end_call(c["call_id"])
        show(await engine.explain_call(c["call_id"]))


async def figures(engine) -> None:
    await first_call(engine)
    await rush(engine)
    await grace(engine)


if __name__ == "__main__":
    asyncio.run(on_engine(sys.argv[1], sys.argv[2], "offers_figures", CARD, figures))
