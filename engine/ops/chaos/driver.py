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
import random
import time

from actors.errors import (
    BillingError,
    IdempotencyConflict,
    InsufficientCoins,
    InsufficientEarnings,
    InvariantViolation,
    PartyBusy,
)
from engine.ops.chaos.checks import ChaosResult, check_database
from engine.ops.chaos.model import Model, ModelCall
from engine.ops.faults import Proxy
from engine.runtime import cluster
from engine.runtime.listener_side import RESERVATION_UNCONFIRMED_S
from engine.runtime.raycalls import WRITER_NAME, call_name, shard_name, shard_of, wallet_name
from persistence import readback
from persistence.client import ClientLimits
from persistence.db import get_pool

STEP_SECONDS = 20.0  # clock time between batches
CLOCK_JUMP_MINUTES = (2, 12)
OUTAGE_SECONDS = (0.2, 2.0)  # how long PostgreSQL or Redis stays cut
FAULT_PROBABILITY = 0.5  # of a fault in a step, besides the late and duplicate deliveries
ATTEMPT_TIMEOUT_S = 30.0  # one attempt of a request
PATIENCE_S = 120.0  # a request unanswered this long counts as stuck, a failure of the run
RETRY_DELAY_S = (0.05, 1.0)
MAX_CALL_MINUTES = 30  # short, so that calls also expire during a run
COVERING_STEPS_MAX = 60  # steps that may go to injecting each kind of fault once
SIZES = {"sharded": (40, 12), "actor-per-call": (8, 4)}  # (users, listeners)
# Crashes that land in the windows that hurt, each followed by the request that would show it.
CRASH_KINDS = ("crash_after_tick", "crash_after_hangup")
# The payer's host dies within a hang-up's usual time after it is sent (this, to begin with).
CRASH_AFTER_HANGUP_S = 0.03
# Producers hold billed minutes this long before writing them (unless something waits): a
# crash after a tick then lands between the tick and its commit.
CHAOS_FLUSH_INTERVAL_MS = 2_000


# -- the run --------------------------------------------------------------------------------


class Chaos:
    def __init__(self, engine, pg: Proxy, redis: Proxy, seed: int, seconds: float) -> None:
        self.engine = engine
        self.pg, self.redis = pg, redis
        self.rng = random.Random(seed)
        self.seconds = seconds
        cfg = engine.config
        self.model = Model(cfg.minute_seconds, cfg.max_call_minutes)
        self.result = ChaosResult(seed, cfg.placement, seconds)
        self.users: list[int] = []
        self.listeners: list[int] = []
        self.history: list[tuple[int, str, str, int]] = []  # acknowledged keyed requests
        self.ambiguous_starts: list[tuple[int, int]] = []  # (user, listener)
        self.quarantined: dict[int, float] = {}  # listener -> when its reservation lapses
        self._keys = 0
        self._hang_up_s = CRASH_AFTER_HANGUP_S

    # -- bookkeeping -----------------------------------------------------------------------

    def mismatch(self, what: str) -> None:
        self.result.mismatch(what)

    def key(self) -> str:
        self._keys += 1
        return f"chaos-{self.result.seed}-{self._keys}"

    async def attempt(self, fn, retry: bool = True):
        """('ok', answer) | ('refused', error) | ('violation', error) | ('unanswered', error).
        Retries what failed without an answer (an actor restarting, a server cut)."""
        deadline = time.monotonic() + PATIENCE_S
        delay = RETRY_DELAY_S[0]
        while True:
            try:
                return "ok", await asyncio.wait_for(fn(), ATTEMPT_TIMEOUT_S)
            except BillingError as e:
                return "refused", e
            except InvariantViolation as e:
                return "violation", e
            except Exception as e:  # noqa: BLE001 - no answer: the request may or may not be in
                if not retry:
                    return "unanswered", e
                if time.monotonic() > deadline:
                    self.result.stuck += 1
                    self.mismatch(f"stuck for {PATIENCE_S:.0f} s: {type(e).__name__}: {e}")
                    return "unanswered", e
                self.result.retries += 1
                await asyncio.sleep(delay)
                delay = min(RETRY_DELAY_S[1], delay * 2)

    async def must(self, fn, what: str):
        """What must be answered: None, counted as a violation, if it never is."""
        status, answer = await self.attempt(fn)
        if status == "ok":
            return answer
        if status != "unanswered":  # a stuck one is counted already
            self.mismatch(f"could not {what}: {type(answer).__name__}: {answer}")
        return None

    # -- requests ----------------------------------------------------------------------------

    async def external(self, who: int, tx_type: str, amount: int, key: str, copies: int = 1):
        e = self.engine
        send = {
            "purchase": lambda: e.top_up(who, amount, "purchase", key),
            "bonus": lambda: e.top_up(who, amount, "bonus", key),
            "spend": lambda: e.spend(who, amount, key),
            "withdraw": lambda: e.withdraw(who, amount, key),
        }[tx_type]
        self.result.operations += copies
        now = self.engine.clock.now()
        outcomes = await asyncio.gather(*(self.attempt(send) for _ in range(copies)))
        expected = self.model.external(who, key, tx_type, amount, now)
        for status, answer in outcomes:
            self.check_external(who, tx_type, amount, key, expected, status, answer)
        if expected in ("applied", "repeat"):
            self.history.append((who, tx_type, key, amount))

    def check_external(self, who, tx_type, amount, key, expected, status, answer) -> None:
        what = f"{tx_type} {amount} by {who} key {key}"
        if status == "unanswered":
            return  # counted as stuck
        if expected in ("applied", "repeat"):
            if status != "ok":
                self.mismatch(f"{what}: expected to apply, got {answer!r}")
                return
            self.result.acknowledged += 1
            held = self.model.paise[who] if tx_type == "withdraw" else self.model.coins[who]
            got = answer["earnings_paise" if tx_type == "withdraw" else "balance_coins"]
            if got != held:
                self.mismatch(f"{what}: answered balance {got}, model {held}")
            return
        refusal = {"conflict": IdempotencyConflict, "insufficient": (InsufficientCoins,)}
        if tx_type == "withdraw":
            refusal["insufficient"] = (InsufficientEarnings,)
        if status != "refused" or not isinstance(answer, refusal[expected]):
            self.mismatch(f"{what}: expected {expected}, got {status} {answer!r}")

    async def start_call(self, user: int, listener: int, call_type: str) -> None:
        rate_coins, rate_paise = self.engine.config.rate_card.rates(call_type, "basic")
        now = self.engine.clock.now()
        expected = self.model.start_refusal(user, listener, rate_coins, now)
        self.result.operations += 1
        # A start has no idempotency key: it is sent once; without an answer it is looked up.
        status, answer = await self.attempt(
            lambda: self.engine.start_call(user, listener, call_type), retry=False
        )
        what = f"start {call_type} call {user}->{listener}"
        if status == "unanswered":
            self.ambiguous_starts.append((user, listener))
            return
        if expected is None:
            if status != "ok":
                self.mismatch(f"{what}: expected to start, got {answer!r}")
                return
            self.result.acknowledged += 1
            self.model.start(answer["call_id"], user, listener, rate_coins, rate_paise, now)
            if (answer["rate_coins"], answer["rate_paise"]) != (rate_coins, rate_paise):
                self.mismatch(f"{what}: rates {answer['rate_coins']}/{answer['rate_paise']}")
            return
        error = {"busy": PartyBusy, "insufficient": InsufficientCoins}[expected]
        if status != "refused" or not isinstance(answer, error):
            self.mismatch(f"{what}: expected {expected}, got {status} {answer!r}")

    async def end_call(self, call_id: int, copies: int = 1) -> None:
        self.result.operations += copies
        started = time.monotonic()
        outcomes = await asyncio.gather(
            *(self.attempt(lambda: self.engine.end_call(call_id)) for _ in range(copies))
        )
        if all(status == "ok" for status, _ in outcomes):  # how long a hang-up takes, lately
            self._hang_up_s = 0.8 * self._hang_up_s + 0.2 * (time.monotonic() - started)
        self.model.end(call_id, self.engine.clock.now())
        c = self.model.calls[call_id]
        for status, answer in outcomes:
            if status == "unanswered":
                continue
            if status != "ok":
                self.mismatch(f"end call {call_id}: {answer!r}")
                continue
            self.result.acknowledged += 1
            got = (answer["status"], answer["end_reason"], answer["billed_minutes"])
            if got != (c.status, c.reason, c.minutes):
                self.mismatch(f"end call {call_id}: answered {got}, model {c}")

    async def reconcile_starts(self) -> None:
        """A start that got no answer either happened whole or not at all: find out which."""
        if not self.ambiguous_starts:
            return
        await self.must(self.engine.sync, "sync")
        pool = await get_pool(self.engine.database_url)
        users = [u for u, _ in self.ambiguous_starts]
        rows = await self.must(lambda: readback.calls_of(pool, users), "read calls")
        if rows is None:
            return
        found = {r["listener_id"] for r in rows if r["call_id"] not in self.model.calls}
        for _, listener in self.ambiguous_starts:
            if listener not in found:
                # Reserved for a start that never happened: the reservation lapses.
                lapse = time.monotonic() + RESERVATION_UNCONFIRMED_S + 1
                self.quarantined[listener] = lapse
        for r in rows:
            if r["call_id"] not in self.model.calls:
                self.model.start(
                    r["call_id"],
                    r["user_id"],
                    r["listener_id"],
                    r["rate_coins"],
                    r["rate_paise"],
                    r["connected_at"],
                )
                self.model.bill(self.engine.clock.now())
        self.ambiguous_starts.clear()

    # -- a step ------------------------------------------------------------------------------

    def plan(self) -> list:
        rng, m = self.rng, self.model
        requests = []
        busy_now: set[int] = set()
        now = time.monotonic()
        self.quarantined = {p: t for p, t in self.quarantined.items() if t > now}
        free_listeners = [
            p for p in self.listeners if p not in m.in_call and p not in self.quarantined
        ]
        rng.shuffle(free_listeners)
        for user in rng.sample(self.users, k=max(1, len(self.users) // 3)):
            busy_now.add(user)
            if user in m.in_call:
                if rng.random() < 0.25:
                    busy_now.add(m.calls[m.in_call[user]].listener)  # its earnings change
                    requests.append(self.end_call(m.in_call[user], self._copies()))
                continue
            roll = rng.random()
            if roll < 0.45 and free_listeners:
                listener = free_listeners.pop()
                busy_now.add(listener)
                kind = "video" if rng.random() < 0.15 else "audio"
                requests.append(self.start_call(user, listener, kind))
            elif roll < 0.8:
                copies = self._copies()  # drawn first: a seed's requests stay what they were
                tx = "bonus" if rng.random() < 0.1 else "purchase"
                requests.append(self.external(user, tx, rng.randint(5, 150), self.key(), copies))
            elif roll < 0.9:
                requests.append(self.external(user, "spend", rng.randint(1, 60), self.key()))
        for listener in self.listeners:
            if listener in busy_now or rng.random() > 0.1:
                continue
            busy_now.add(listener)
            ceiling = max(1, m.paise[listener] + 50)
            requests.append(
                self.external(listener, "withdraw", rng.randint(1, ceiling), self.key())
            )
        # A late delivery: an old request arrives again, after newer ones (changes nothing), or
        # its key comes back with another amount (refused).
        late = [h for h in self.history if h[0] not in busy_now]
        if late and rng.random() < 0.3:
            who, tx, key, amount = rng.choice(late)
            self.result.faults_injected["reordered_delivery"] += 1
            if rng.random() < 0.3:
                amount += 1
            requests.append(self.external(who, tx, amount, key))
        ended = [c.call_id for c in m.calls.values() if c.status != "ongoing"]
        if ended and rng.random() < 0.2:
            self.result.faults_injected["reordered_delivery"] += 1
            requests.append(self.end_call(rng.choice(ended)))
        return requests

    def _copies(self) -> int:
        """How many times a request is delivered: twice, now and then (a duplicate)."""
        if self.rng.random() < 0.2:
            self.result.faults_injected["duplicate_delivery"] += 1
            return 2
        return 1

    def fault_kinds(self) -> list[str]:
        kinds = ["kill_writer", "postgres_restart", "redis_restart", "clock_jump", *CRASH_KINDS]
        if self.engine.config.placement == "sharded":
            return kinds + ["kill_shard"]
        return kinds + ["kill_call_actor", "kill_wallet_actor"]

    def _payer_host(self, user: int) -> str:
        if self.engine.config.placement == "sharded":
            return shard_name(shard_of(user, self.engine.config.shards))
        return wallet_name(user)

    def _kill(self, name: str) -> bool:
        """Kill a named actor of the engine (Ray restarts it); False if it is gone already."""
        return cluster.kill_actor(name, self.engine.config.namespace)

    async def crash(self, kind: str, fresh: list[ModelCall]) -> None:
        """A crash where it hurts, then the request that would see its damage.

        `crash_after_tick`: the payer's host (shard or wallet actor) dies right after a pass
        billed minutes it has not written yet; the clock may move past more minute starts with
        no tick; then that payer asks for something (a top-up or a spend), and sometimes hangs
        up. The answer must come from state brought up to the request's time.
        `crash_after_hangup`: the payer's host dies a few milliseconds after a hang-up is
        sent; once the hang-up is answered, the listener's host must show the credit and the
        listener free."""
        rng = self.rng
        ongoing = [c for c in self.model.calls.values() if c.status == "ongoing"]
        if not ongoing:
            return
        c = rng.choice(ongoing)
        if kind == "crash_after_tick":
            fresh = [f for f in fresh if f.status == "ongoing"]
            c = rng.choice(fresh) if fresh else c
            if not self._kill(self._payer_host(c.user)):
                return
            self.result.faults_injected[kind] += 1
            self.engine.clock.advance(rng.choice((0.0, rng.uniform(1, 2 * STEP_SECONDS))))
            roll = rng.random()
            if roll < 0.3:
                await self.external(c.user, "purchase", rng.randint(5, 60), self.key())
            elif roll < 0.5:
                await self.external(c.user, "spend", rng.randint(1, 40), self.key())
            else:
                # Just more than the payer has once the minutes due are billed: a host that
                # forgot a billed minute would accept it.
                self.model.bill(self.engine.clock.now())
                amount = self.model.coins[c.user] + rng.randint(1, c.rate_coins)
                await self.external(c.user, "spend", amount, self.key())
            if self.engine.config.placement != "sharded" or rng.random() < 0.5:
                await self.end_call(c.call_id)
            return
        # A listener on another host than its payer: a lost release strands their credit.
        apart = [o for o in ongoing if self._payer_host(o.listener) != self._payer_host(o.user)]
        c = rng.choice(apart) if apart else c
        hang_up = asyncio.ensure_future(self.end_call(c.call_id))
        # Somewhere inside the hang-up: before its commit, between the commit and the release
        # of the listener, or after.
        await asyncio.sleep(rng.uniform(0, self._hang_up_s))
        if self._kill(self._payer_host(c.user)):
            self.result.faults_injected[kind] += 1
        await hang_up
        await self.check_listener(c.listener)

    async def check_listener(self, listener: int) -> None:
        """What the listener's host answers now must be what the model says."""
        state = await self.must(lambda: self.engine.inspect("wallet", listener), "inspect")
        if state is None:
            return
        if state["earnings_paise"] != self.model.paise[listener]:
            self.mismatch(
                f"listener {listener}: host shows {state['earnings_paise']} paise, "
                f"model {self.model.paise[listener]}"
            )
        in_call = self.model.in_call.get(listener)
        if state["listener_call_id"] != in_call:
            self.mismatch(
                f"listener {listener}: host shows call {state['listener_call_id']}, model {in_call}"
            )

    async def inject(self, kind: str) -> None:
        await asyncio.sleep(self.rng.random() * 0.05)
        if kind in ("postgres_restart", "redis_restart"):
            proxy = self.pg if kind == "postgres_restart" else self.redis
            await proxy.cut()
            await asyncio.sleep(self.rng.uniform(*OUTAGE_SECONDS))
            await proxy.restore()
        else:
            name = self._victim(kind)
            if name is None or not self._kill(name):
                return
        self.result.faults_injected[kind] += 1

    def _victim(self, kind: str) -> str | None:
        rng = self.rng
        if kind == "kill_writer":
            return WRITER_NAME
        if kind == "kill_shard":
            return shard_name(rng.randrange(self.engine.config.shards))
        ongoing = [c for c in self.model.calls.values() if c.status == "ongoing"]
        if not ongoing:
            return None
        c = rng.choice(ongoing)
        return call_name(c.call_id) if kind == "kill_call_actor" else wallet_name(c.user)

    async def step(self) -> None:
        kinds = self.fault_kinds()
        # Until each kind has been injected once (a kill needs a victim: an ongoing call), the
        # steps inject the first kind still missing, so that a short run sees every fault.
        kind = self._missing_kind()
        if kind is None and self.rng.random() < FAULT_PROBABILITY:
            kind = self.rng.choice([*kinds, *CRASH_KINDS])  # crashes where it hurts: twice
        during_billing = self.rng.random() < 0.4
        # a kill or a cut, not the step's clock nor a crash of its own
        hits = kind not in (None, "clock_jump", *CRASH_KINDS)
        work = self.plan()
        fault = [self.inject(kind)] if hits and not during_billing else []
        await asyncio.gather(*work, *fault)
        await self.reconcile_starts()
        seconds = STEP_SECONDS
        if kind == "clock_jump":
            seconds = self.rng.randint(*CLOCK_JUMP_MINUTES) * self.engine.config.minute_seconds
            self.result.faults_injected[kind] += 1
        self.engine.clock.advance(seconds)
        fault = [self.inject(kind)] if hits and during_billing else []
        self.result.operations += 1
        outcomes = await asyncio.gather(self.attempt(self.engine.bill_due), *fault)
        if outcomes[0][0] != "ok":
            self.mismatch(f"bill_due: {outcomes[0][1]!r}")
        before = {c.call_id: c.minutes for c in self.model.calls.values()}
        self.model.bill(self.engine.clock.now())
        if kind in CRASH_KINDS:
            # Calls this pass billed a minute of: their payers' hosts hold it unwritten.
            fresh = [c for c in self.model.calls.values() if c.minutes > before[c.call_id]]
            await self.crash(kind, fresh)
        # Calls dropped by the tick settle behind it; their listeners are free once committed.
        # A shard killed after its tick, before the commit, lost that tick's work: its
        # successor redoes it at the next tick, here a second one at the same time.
        for _ in range(2):
            await self.must(self.engine.sync, "sync")
            await self.must(self.engine.bill_due, "bill again")
        await self.must(self.engine.sync, "sync")
        self.result.steps += 1

    # -- the whole run -------------------------------------------------------------------------

    async def setup(self, users: int, listeners: int) -> None:
        e = self.engine
        self.users = [await e.create_user(f"chaos-user-{i}") for i in range(users)]
        self.listeners = [await e.create_listener(f"chaos-listener-{i}") for i in range(listeners)]
        for u in self.users:
            self.model.coins[u] = 0
        for p in self.listeners:
            self.model.coins[p] = 0
            self.model.paise[p] = 0

    def _missing_kind(self) -> str | None:
        if self.result.steps >= COVERING_STEPS_MAX:
            return None
        return next((k for k in self.fault_kinds() if not self.result.faults_injected[k]), None)

    async def run(self, progress=None) -> ChaosResult:
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline or self._missing_kind() is not None:
            await self.step()
            if progress is not None:
                progress(self.result)
        await self.finish()
        return self.result

    async def finish(self) -> None:
        """Stop the load, hang up what still runs, drain, then compare."""
        await self.pg.restore()
        await self.redis.restore()
        for c in list(self.model.calls.values()):
            if c.status == "ongoing":
                await self.end_call(c.call_id)
        await self.must(self.engine.sync, "drain")
        await self.compare_live()
        await check_database(await get_pool(self.engine.database_url), self.model, self.result)

    async def compare_live(self) -> None:
        """What the engine's actors answer now."""
        for who in self.users + self.listeners:
            state = await self.must(lambda who=who: self.engine.balance(who), "read a balance")
            if state is None:
                continue
            if state["balance_coins"] != self.model.coins[who]:
                self.mismatch(f"live coins of {who}: {state['balance_coins']}")
            if who in self.model.paise and state["earnings_paise"] != self.model.paise[who]:
                self.mismatch(f"live earnings of {who}: {state['earnings_paise']}")


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
        await chaos.setup(users or d_users, listeners or d_listeners)
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

            return asyncio.run(run_chaos(config, seconds, seed, progress=progress))
        finally:
            if admin is not None:
                asyncio.run(recreate_database(admin, name, drop_only=True))
            if embedded is not None:
                embedded.stop()
