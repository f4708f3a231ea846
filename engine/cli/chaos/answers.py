"""The requests of a chaos run and what their answers must be: each sent (and retried with its
key until answered), its answer checked against the model at once, and the live state of the
engine compared with the model (a listener after a crash, every balance at the end)."""

from __future__ import annotations

import asyncio
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
from engine.cli.chaos.checks import ChaosResult
from engine.cli.chaos.model import Model
from engine.host.listener_desk import RESERVATION_UNCONFIRMED_S
from persistence import readback
from persistence.db import get_pool

ATTEMPT_TIMEOUT_S = 30.0  # one attempt of a request
PATIENCE_S = 120.0  # a request unanswered this long counts as stuck, a failure of the run
RETRY_DELAY_S = (0.05, 1.0)
# The payer's host dies within a hang-up's usual time after it is sent (this, to begin with).
CRASH_AFTER_HANGUP_S = 0.03


class ChaosRequests:
    """The run's requests and what it knows: the engine, the seed's draws, the model, the
    result, the people, the keyed requests acknowledged; each request sent, its answer checked."""

    def __init__(self, engine, seed: int, seconds: float) -> None:
        self.engine = engine
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
        self.offer_code: str | None = None  # `--plan`: half the starts name it
        self._keys = 0
        self.hang_up_s = CRASH_AFTER_HANGUP_S

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

    async def timed(self, send, copies: int, lately: float) -> tuple[list, float]:
        """`copies` attempts of `send` at once, and how long such a request takes lately:
        `lately` moved toward this one's time when every copy was answered."""
        started = time.monotonic()
        outcomes = await asyncio.gather(*(self.attempt(send) for _ in range(copies)))
        if all(status == "ok" for status, _ in outcomes):
            lately = 0.8 * lately + 0.2 * (time.monotonic() - started)
        return outcomes, lately

    async def must(self, fn, what: str):
        """What must be answered: None, counted as a violation, if it never is."""
        status, answer = await self.attempt(fn)
        if status == "ok":
            return answer
        if status != "unanswered":  # a stuck one is counted already
            self.mismatch(f"could not {what}: {type(answer).__name__}: {answer}")
        return None

    async def external(
        self, who: int, tx_type: str, amount: int, key: str, copies: int = 1, lasts=None
    ):
        """An outside transfer; a bonus that `lasts` seconds is a bucket that expires."""
        e = self.engine
        now = e.clock.now()
        expires_at = None if lasts is None else now + lasts
        send = {
            "purchase": lambda: e.top_up(who, amount, "purchase", key),
            "bonus": lambda: e.top_up(who, amount, "bonus", key, expires_at),
            "spend": lambda: e.spend(who, amount, key),
            "withdraw": lambda: e.withdraw(who, amount, key),
        }[tx_type]
        self.result.operations += copies
        outcomes = await asyncio.gather(*(self.attempt(send) for _ in range(copies)))
        expected = self.model.external(who, key, tx_type, amount, now, expires_at)
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
            if tx_type == "withdraw":
                self.model.withdrawn(answer["payout_id"], who, amount)
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

    def plan(self, call_type: str) -> tuple:
        """The plan of a call of `call_type` with a listener of the tier `basic` on the card."""
        card = self.engine.config.rate_card
        share = card.share_pct["basic"] if card.earnings_rule == "share" else None
        return (card.increment_s[call_type], card.free_s[call_type], card.earnings_rule, share,
                card.coin_value_paise)  # fmt: skip

    def grace_ms(self, grace_s: int) -> int:
        """A grace of `grace_s` billed seconds, in ms (a billed second is a minute's 60th)."""
        return grace_s * round(self.engine.config.minute_seconds * 1000) // 60

    async def start_call(self, user: int, listener: int, call_type: str) -> None:
        rate_coins, rate_paise = self.engine.config.rate_card.rates(call_type, "basic")
        now = self.engine.clock.now()
        expected = self.model.start_refusal(user, listener, rate_coins, now)
        self.result.operations += 1
        # A start has no idempotency key: it is sent once; without an answer it is looked up.
        # With an offer's code, it may take the offer (as long as its budget lasts): the model
        # takes what the start answered (the audit and the final check hold the budget).
        code = self.offer_code if self.offer_code and self.rng.random() < 0.5 else None
        status, answer = await self.attempt(
            lambda: self.engine.start_call(user, listener, call_type, offer_code=code),
            retry=False,
        )
        what = f"start {call_type} call {user}->{listener}"
        if status == "unanswered":
            self.ambiguous_starts.append((user, listener))
            return
        offered = status == "ok" and answer["offer"] is not None
        if expected == "insufficient" and offered:
            expected = None  # the offer pays minute 1
        if expected is None:
            if status != "ok":
                self.mismatch(f"{what}: expected to start, got {answer!r}")
                return
            self.result.acknowledged += 1
            plan = self.plan(call_type)
            free = answer["offer"]["free_minutes"] if offered else 0
            if offered and code is None:
                self.mismatch(f"{what}: took offer {answer['offer']} without its code")
            grace_ms = self.grace_ms(self.engine.config.rate_card.grace_s[call_type])
            self.model.start(answer["call_id"], user, listener, rate_coins, rate_paise, now, plan,
                             free, grace_ms)  # fmt: skip
            if (answer["rate_coins"], answer["rate_paise"]) != (rate_coins, rate_paise):
                self.mismatch(f"{what}: rates {answer['rate_coins']}/{answer['rate_paise']}")
            price = answer["price"]
            if (price["increment_s"], price["free_s"], price["earnings"]["rule"]) != plan[:3]:
                self.mismatch(f"{what}: price {price}, model plan {plan}")
            return
        error = {"busy": PartyBusy, "insufficient": InsufficientCoins}[expected]
        if status != "refused" or not isinstance(answer, error):
            self.mismatch(f"{what}: expected {expected}, got {status} {answer!r}")

    async def end_call(self, call_id: int, copies: int = 1) -> None:
        self.result.operations += copies
        outcomes, self.hang_up_s = await self.timed(
            lambda: self.engine.end_call(call_id), copies, self.hang_up_s
        )
        # A hang-up ends at the request's time, or just after its payer's last event (a bonus
        # is granted a millisecond after a debit): at most a second later.
        now = self.engine.clock.now()
        ended = [a["ended_at"] for status, a in outcomes if status == "ok"]
        if any(t > now + 1.0 for t in ended):
            self.mismatch(f"end call {call_id}: ended at {ended}, asked at {now}")
        self.model.end(call_id, max([now, *ended]))
        c = self.model.calls[call_id]
        for status, answer in outcomes:
            if status == "unanswered":
                continue
            if status != "ok":
                self.mismatch(f"end call {call_id}: {answer!r}")
                continue
            self.result.acknowledged += 1
            got = (answer["status"], answer["end_reason"], answer["billed_minutes"])
            got += (answer["coins_charged"], answer["earnings_paise"])
            if got != (c.status, c.reason, c.minutes, c.charged, c.earned):
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
                    (r["increment_s"], r["free_s"], r["earnings_rule"], r["share_pct"],
                     r["coin_value_paise"]),
                    r["offer_minutes"],
                    self.grace_ms(r["grace_s"]),
                )  # fmt: skip
                self.model.bill(self.engine.clock.now())
        self.ambiguous_starts.clear()

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

    async def compare_live(self) -> None:
        """What the engine's actors answer now."""
        for who in self.users + self.listeners:
            await self.check_balance(who)

    async def check_balance(self, who: int) -> None:
        """What `who`'s host answers now must be what the model says."""
        state = await self.must(lambda: self.engine.balance(who), "read a balance")
        if state is None:
            return
        m = self.model
        m.bill(self.engine.clock.now())
        held = [(b[0], f"ext:{who}:{b[2]}") for b in m.buckets.get(who, ()) if b[0]]
        shown = [(b["coins"], b["bucket_id"]) for b in state["buckets"]]
        if shown != held:
            self.mismatch(f"buckets of {who}: host {shown}, model {held}")
        if state["balance_coins"] != m.coins[who]:
            self.mismatch(f"live coins of {who}: {state['balance_coins']}, model {m.coins[who]}")
        if who in m.paise and state["earnings_paise"] != m.paise[who]:
            got = state["earnings_paise"]
            self.mismatch(f"live earnings of {who}: {got}, model {m.paise[who]}")
