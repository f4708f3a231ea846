"""`billing-engine chaos`: load under injected faults, checked against an independent model.

A driver plays many users and listeners on a manual clock. Each step sends a batch of requests
concurrently (one per party, so their answers are exact), while a fault chosen from the seed
hits: an actor killed (Ray restarts it), PostgreSQL or Redis cut and restored through a proxy
(every connection dropped, new ones refused, as while a server restarts), requests delivered
twice or late, the clock jumping minutes ahead. Keyed requests are retried with their key until
answered; a call start that failed without an answer is looked up in PostgreSQL afterwards.

`Model` is written from DESIGN.md's billing policy, not from the engine's classes: it says what
every acknowledged request should have done. At the end the load stops, the engine drains, the
audit runs and PostgreSQL is compared with the model, coin by coin."""

from __future__ import annotations

import asyncio
import contextlib
import time

from actors.money import RateCard
from engine.cli.chaos.answers import ChaosRequests
from engine.cli.chaos.checks import ChaosResult, check_database
from engine.cli.chaos.faults import CLOCK_JUMP_MINUTES, CRASH_KINDS, FAULT_PROBABILITY, Faults
from engine.cli.chaos.payouts_refunds import PayoutsAndRefunds
from engine.cli.chaos.workload import STEP_SECONDS, Workload
from engine.cli.proxy import Proxy
from persistence import readback
from persistence.client import ClientLimits
from persistence.db import get_pool
from persistence.offers import CLAIM_UNCONFIRMED_S

MAX_CALL_MINUTES = 30  # short, so that calls also expire during a run
SIZES = {"sharded": (40, 12), "actor-per-call": (8, 4)}  # (users, listeners)
# Producers hold billed minutes this long before writing them (unless something waits): a
# crash after a tick then lands between the tick and its commit.
CHAOS_FLUSH_INTERVAL_MS = 2_000


class Chaos:
    """One run: setup, then steps (a batch of requests with a fault, a billing pass, a check)
    until the time is up and every kind of fault was injected once, then the final checks.
    `requests` sends and checks, `workload` says what a step asks, `faults` what hits it."""

    def __init__(self, engine, pg: Proxy, redis: Proxy, seed: int, seconds: float) -> None:
        self.requests = r = ChaosRequests(engine, seed, seconds)
        self.payouts = PayoutsAndRefunds(r)
        self.workload = Workload(r, self.payouts)
        self.faults = Faults(r, self.payouts, pg, redis)
        self.engine, self.rng, self.model, self.result = engine, r.rng, r.model, r.result
        self.seconds = seconds

    async def step(self) -> None:
        r, faults = self.requests, self.faults
        kinds = faults.fault_kinds()
        # Until each kind has been injected once (a kill needs a victim: an ongoing call), the
        # steps inject the first kind still missing, so that a short run sees every fault.
        kind = faults.missing_kind()
        if kind is None and self.rng.random() < FAULT_PROBABILITY:
            kind = self.rng.choice([*kinds, *CRASH_KINDS])  # crashes where it hurts: twice
        during_billing = self.rng.random() < 0.4
        # a kill or a cut, not the step's clock nor a crash of its own
        hits = kind not in (None, "clock_jump", *CRASH_KINDS)
        work = self.workload.plan()
        fault = [faults.inject(kind)] if hits and not during_billing else []
        await asyncio.gather(*work, *fault)
        await r.reconcile_starts()
        seconds = STEP_SECONDS
        if kind == "clock_jump":
            seconds = self.rng.randint(*CLOCK_JUMP_MINUTES) * self.engine.config.minute_seconds
            self.result.faults_injected[kind] += 1
        self.engine.clock.advance(seconds)
        fault = [faults.inject(kind)] if hits and during_billing else []
        self.result.operations += 1
        outcomes = await asyncio.gather(r.attempt(self.engine.bill_due), *fault)
        if outcomes[0][0] != "ok":
            r.mismatch(f"bill_due: {outcomes[0][1]!r}")
        before = {c.call_id: (c.minutes, c.waiting_ms) for c in self.model.calls.values()}
        self.model.bill(self.engine.clock.now())
        if kind in CRASH_KINDS:
            # Calls this pass billed a minute of (their payers' hosts hold it unwritten), or
            # suspended (their hosts die between the suspension and the credit resuming it).
            fresh = [
                c
                for c in self.model.calls.values()
                if (c.minutes, c.waiting_ms) != before[c.call_id]
            ]
            await faults.crash(kind, fresh)
        # Calls dropped by the tick settle behind it; their listeners are free once committed.
        # A shard killed after its tick, before the commit, lost that tick's work: its
        # successor redoes it at the next tick, here a second one at the same time.
        for _ in range(2):
            await r.must(self.engine.sync, "sync")
            await r.must(self.engine.bill_due, "bill again")
        await r.must(self.engine.sync, "sync")
        self.result.steps += 1

    async def setup(self, users: int, listeners: int, offers: bool = False) -> None:
        e, r = self.engine, self.requests
        if offers:
            # Free minutes by code, a budget far under what the starts would take.
            now = e.clock.now()
            await e.create_offer(
                OFFER_MINUTES, "code", now - 1, now + 86_400, budget_minutes=users,
                per_user_max=2, code=OFFER_CODE,
            )  # fmt: skip
            r.offer_code = OFFER_CODE
        r.users = [await e.create_user(f"chaos-user-{i}") for i in range(users)]
        r.listeners = [await e.create_listener(f"chaos-listener-{i}") for i in range(listeners)]
        for u in r.users:
            self.model.coins[u] = 0
        for p in r.listeners:
            self.model.coins[p] = 0
            self.model.paise[p] = 0

    async def run(self, progress=None) -> ChaosResult:
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline or self.faults.missing_kind() is not None:
            await self.step()
            if progress is not None:
                progress(self.result)
        await self.finish()
        return self.result

    async def finish(self) -> None:
        """Stop the load, hang up what still runs, drain, then compare."""
        r = self.requests
        await self.faults.pg.restore()
        await self.faults.redis.restore()
        for c in list(self.model.calls.values()):
            if c.status == "ongoing":
                await r.end_call(c.call_id)
        await r.must(self.engine.sync, "drain")
        # A start that failed without an answer and never happened leaves its claim on the
        # offer: its minutes go back once no write of that start can still come.
        self.engine.clock.advance(CLAIM_UNCONFIRMED_S + 1)
        await r.must(self.engine.cleanup_expired_calls, "release claims of starts never made")
        await r.compare_live()
        await r.must(self.engine.sync, "drain what the reads expired")
        await check_database(await get_pool(self.engine.database_url), self.model, self.result)


# `chaos --plan`: calls priced by the second (audio, the first 15 s free) and in 6-s increments
# (video, the first 20 s free), listeners paid 40-60 % of what users pay: every end returns
# part of what its minutes prepaid. An audio minute the payer cannot pay waits 20 billed
# seconds in its grace for a top-up.
PLAN_CARD = RateCard(
    increment_s={"audio": 1, "video": 6},
    free_s={"audio": 15, "video": 20},
    earnings_rule="share",
    share_pct={"basic": 40, "bronze": 45, "silver": 50, "gold": 60},
    coin_value_paise=50,
    grace_s={"audio": 20, "video": 0},
)
# `chaos --plan` also runs an offer: half the starts name its code, until its budget is spent.
OFFER_CODE, OFFER_MINUTES = "CHAOS", 2


async def run_chaos(
    config,
    seconds: float,
    seed: int,
    users: int | None = None,
    listeners: int | None = None,
    progress=None,
) -> ChaosResult:
    """Run chaos against an engine on `config` (its database must hold no users yet). PostgreSQL
    and Redis are reached through proxies this run can cut."""
    from engine.api import Engine

    if config.database_url is None or config.redis_url is None:
        raise ValueError("run_chaos needs the database and Redis URLs (embedded or not)")
    pg = await Proxy(config.database_url).start()
    redis = await Proxy(config.redis_url).start()
    d_users, d_listeners = SIZES[config.placement]
    engine = Engine(
        config.replace(
            database_url=pg.url(),
            redis_url=redis.url(),
            clock="manual",
            max_call_minutes=min(config.max_call_minutes, MAX_CALL_MINUTES),
            client=ClientLimits(flush_interval_ms=CHAOS_FLUSH_INTERVAL_MS),
        )
    )
    await engine.start()
    try:
        pool = await get_pool(engine.database_url)
        if await readback.users_count(pool):
            raise ValueError("chaos needs a database without users: its model starts empty")
        chaos = Chaos(engine, pg, redis, seed, seconds)
        offers = config.rate_card == PLAN_CARD
        await chaos.setup(users or d_users, listeners or d_listeners, offers)
        return await chaos.run(progress)
    finally:
        await pg.restore()
        await redis.restore()
        with contextlib.suppress(Exception):
            await engine.stop()
        await pg.close()
        await redis.close()


# -- the command ------------------------------------------------------------------------------


def chaos_command(config, seconds: float, seed: int, console) -> ChaosResult:
    """Run chaos on a database of its own: a new one on the given server, or embedded servers
    in a temporary folder. The namespace is the run's own, so no running engine is touched."""
    import logging
    import os
    import tempfile

    from engine.embedded import embedded_for
    from persistence.db import recreate_database, with_database

    # Connections refused while a server is cut are the point of the run, not news.
    logging.getLogger("asyncpg.pool").setLevel(logging.CRITICAL)
    config = config.replace(namespace=f"billing-chaos-{os.getpid()}")
    admin, name = config.database_url, f"billing_chaos_{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="billing-chaos-") as tmp:
        config, embedded = embedded_for(config, tmp)
        try:
            if admin is not None:
                asyncio.run(recreate_database(admin, name))
                config = config.replace(database_url=with_database(admin, name))
            last = [time.monotonic()]
            shown = [0]

            def progress(r: ChaosResult) -> None:
                for what in r.mismatches[shown[0] :]:
                    console.print(f"[red]step {r.steps}: {what}[/]")
                shown[0] = len(r.mismatches)
                if time.monotonic() - last[0] >= 10:
                    last[0] = time.monotonic()
                    faults = sum(r.faults_injected.values())
                    console.print(
                        f"step {r.steps}: {r.operations} requests, {faults} faults, "
                        f"{r.retries} retries, {r.invariant_violations} violations"
                    )

            result = asyncio.run(run_chaos(config, seconds, seed, progress=progress))
            if not result.ok and admin is not None:
                console.print(f"[red]the run's database {name} is kept, to look into[/]")
                name = None
            return result
        finally:
            if admin is not None and name is not None:
                asyncio.run(recreate_database(admin, name, drop_only=True))
            if embedded is not None:
                embedded.stop()
