"""`billing-engine demo`: real calls, real minutes (shortened), a table read back from
PostgreSQL and a conservation check over the database."""

from __future__ import annotations

import asyncio
import random
import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from actors.errors import BillingError
from engine.api import Engine
from engine.config import Config
from persistence import readback, store
from persistence.audit import run_audit
from persistence.audit_totals import ledger_totals
from persistence.db import get_pool

# What each demo user does: (share of users, minutes of coins they hold, hang-up minute)
# "runs out" users can pay for half the call; "hangs up" users leave half-way; the rest talk
# for the whole demo and hang up at the end.
PLANS = ("runs_out", "hangs_up", "talks")
SETUP_MINUTES_MAX = 60


def _plan(i: int, minutes: int, rate: int) -> tuple[str, int, float | None]:
    kind = PLANS[i % len(PLANS)]
    if kind == "runs_out":
        return kind, rate * max(1, minutes // 2) + rate // 2, None
    # Minutes run in real time while the other calls are set up: talkers get coins for that.
    if kind == "hangs_up":
        return kind, rate * (minutes + SETUP_MINUTES_MAX), max(0.5, minutes / 2 - 0.5)
    return kind, rate * (minutes + SETUP_MINUTES_MAX), None


async def run_demo(config: Config, calls: int, minutes: int, console: Console) -> int:
    """Runs the demo; returns the process exit code (0 when every rule of money held)."""
    started = time.monotonic()
    engine = Engine(config)
    console.print(f"[bold]starting engine[/] placement={config.placement}")
    await engine.start()
    try:
        rc = await _run(engine, calls, minutes, console)
    finally:
        await engine.stop()
    console.print(f"demo wall time: {time.monotonic() - started:.1f} s")
    return rc


async def _run(engine: Engine, calls: int, minutes: int, console: Console) -> int:
    cfg = engine.config
    rng = random.Random(7)
    setup_started = time.monotonic()

    async def one(i: int) -> tuple[int, str, float | None]:
        call_type = "video" if i % 4 == 3 else "audio"
        rate = cfg.rate_card.coins_per_minute[call_type]
        kind, coins, hang_up_at = _plan(i, minutes, rate)
        user = await engine.create_user(f"demo-user-{i}")
        listener = await engine.create_listener(f"demo-listener-{i}")
        await engine.top_up(user, coins, "purchase", f"demo-{user}")
        c = await engine.start_call(user, listener, call_type)
        return c["call_id"], kind, hang_up_at

    try:
        call_ids = await asyncio.gather(*(one(i) for i in range(calls)))
    except BillingError as e:
        console.print(f"[red]refused:[/] {e}")
        return 2
    console.print(f"{calls} calls started in {time.monotonic() - setup_started:.1f} s")
    t0 = time.monotonic()
    minute_s = cfg.minute_seconds
    length_s = minutes * minute_s
    pool = await get_pool(engine.database_url)
    ids = [cid for cid, _, _ in call_ids]  # this run's: a data dir may hold earlier runs' too
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[committed]} minutes committed"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("calls running", total=length_s, committed=0)
        pending = sorted(
            ((h * minute_s + rng.random() * minute_s * 0.5, cid) for cid, _, h in call_ids if h),
        )
        while (elapsed := time.monotonic() - t0) < length_s:
            while pending and pending[0][0] <= elapsed:
                await engine.end_call(pending.pop(0)[1])
            committed = await readback.minutes_committed(pool, ids)
            progress.update(task, completed=elapsed, committed=committed)
            await asyncio.sleep(min(0.25, minute_s / 4))
        for cid, _, _ in call_ids:
            await engine.end_call(cid)
        await engine.sync()
        billed = await readback.minutes_committed(pool, ids)
        progress.update(task, completed=length_s, committed=billed)
    billing_s = time.monotonic() - t0
    console.print(
        f"{billed} call-minutes billed (minute 1 at connect included) in {billing_s:.1f} s"
    )
    return await report(pool, console, ids)


async def report(pool, console: Console, call_ids: list[int]) -> int:
    """This run's calls read back from PostgreSQL, and the checks of the whole database;
    returns 0 when all hold."""
    totals = await store.totals(pool, call_ids)
    table = Table(title="this run's calls, as PostgreSQL has them")
    table.add_column("status")
    table.add_column("reason", no_wrap=True, min_width=len("insufficient_coins"))
    for col in ("calls", "minutes", "coins spent", "earnings (paise)"):
        table.add_column(col, justify="right")
    for r in totals["by_reason"]:
        table.add_row(
            r["status"],
            r["reason"],
            str(r["calls"]),
            str(r["minutes"]),
            str(r["coins"]),
            str(r["earnings"]),
        )
    console.print(table)
    money = await ledger_totals(pool)
    checks = await run_audit(pool)
    audit = Table(title="rules of money")
    audit.add_column("check")
    audit.add_column("violations", justify="right")
    for name, count in checks:
        audit.add_row(name, f"[green]{count}[/]" if count == 0 else f"[red]{count}[/]")
    back = money["coins_returned"] + money["coins_refunded"]
    audit.add_row(
        f"coins held ({money['coins_held']}) = bought ({money['coins_in']}) "
        f"- spent ({money['coins_spent']})" + (f" + returned ({back})" if back else ""),
        "[green]0[/]" if money["coins_conserved"] else "[red]1[/]",
    )
    console.print(audit)
    ok = money["coins_conserved"] and all(count == 0 for _, count in checks)
    console.print("[bold green]conservation check passed[/]" if ok else "[bold red]FAILED[/]")
    return 0 if ok else 1
