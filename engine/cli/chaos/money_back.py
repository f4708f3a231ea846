"""Payouts settled and calls refunded in a chaos run: each sent (retried with its key until
answered) and its answer checked against the model at once; and the crashes that land inside
them: a host killed between a refund's claw-back and its coins, or inside a payout's settling,
followed by the reads that would show the damage."""

from __future__ import annotations

import asyncio

from actors.errors import (
    CallOngoing,
    IdempotencyConflict,
    InsufficientEarnings,
    PayoutSettled,
    RefundExceedsBilled,
)

REFUSALS = {
    "settled": PayoutSettled,
    "ongoing": CallOngoing,
    "exceeds": RefundExceedsBilled,
    "insufficient": InsufficientEarnings,
    "conflict": IdempotencyConflict,
}
CRASH_INSIDE_S = 0.05  # a refund or a settle takes about this long here, to begin with


class ChaosMoneyBack:
    """Mixed into `Chaos`."""

    _money_back_s = CRASH_INSIDE_S  # how long a refund or a settle takes, lately

    def _refused(self, what: str, expected: str, status: str, answer) -> None:
        if status != "refused" or not isinstance(answer, REFUSALS[expected]):
            self.mismatch(f"{what}: expected {expected}, got {status} {answer!r}")

    async def settle(self, payout_id: int, outcome: str, copies: int = 1) -> None:
        self.result.operations += copies
        send = lambda: self.engine.settle_payout(payout_id, outcome, "chaos")  # noqa: E731
        outcomes, self._money_back_s = await self.timed(send, copies, self._money_back_s)
        expected = self.model.settle(payout_id, outcome, self.engine.clock.now())
        listener = self.model.payouts[payout_id][0]
        what = f"payout {payout_id} {outcome}"
        for status, answer in outcomes:
            if status == "unanswered":
                continue
            if expected == "settled":
                self._refused(what, expected, status, answer)
                continue
            if status != "ok":
                self.mismatch(f"{what}: expected it settled, got {answer!r}")
                continue
            self.result.acknowledged += 1
            if (
                answer["status"] != outcome
                or answer["earnings_paise"] != self.model.paise[listener]
            ):
                self.mismatch(f"{what}: answered {answer}, model {self.model.paise[listener]}")

    async def refund(self, call_id: int, minutes, pays: bool, key: str, copies: int = 1) -> None:
        self.result.operations += copies
        send = lambda: self.engine.refund_call(call_id, minutes, "chaos", key, pays)  # noqa: E731
        outcomes, self._money_back_s = await self.timed(send, copies, self._money_back_s)
        expected, n = self.model.refund(key, call_id, minutes, pays, self.engine.clock.now())
        c = self.model.calls[call_id]
        what = f"refund {minutes} minutes of call {call_id} (pays={pays}) key {key}"
        for status, answer in outcomes:
            if status == "unanswered":
                continue
            if expected not in ("applied", "repeat"):
                self._refused(what, expected, status, answer)
                continue
            if status != "ok":
                self.mismatch(f"{what}: expected it refunded, got {answer!r}")
                continue
            self.result.acknowledged += 1
            want = (n, n * c.rate_coins, n * c.rate_paise if pays else 0)
            got = (answer["minutes"], answer["coins"], answer["paise"])
            if got != want or answer["refunded_at"] is None:
                self.mismatch(f"{what}: answered {answer}, model {want}")

    def refundable(self, user: int) -> list:
        """Ended calls of `user` with minutes left to refund, whose listener is in no call."""
        m = self.model
        return [
            c
            for c in m.calls.values()
            if c.user == user
            and c.status != "ongoing"
            and c.minutes > c.refunded
            and c.listener not in m.in_call
        ]

    async def crash_inside_money_back(self) -> None:
        """A refund or a payout's settling with a host killed inside it: the listener's (the
        claw-back, the settle) or the payer's (the coins). Retried with its key, it happens
        once; then both parties' hosts must show what the model says."""
        rng, m = self.rng, self.model
        # Calls the pass just dropped settle behind it: a refund needs their settlement.
        for _ in range(2):
            await self.must(self.engine.sync, "sync")
            await self.must(self.engine.bill_due, "bill again")
        pending = [p for p, (_, _, status) in m.payouts.items() if status == "pending"]
        calls = [c for u in self.users if u not in m.in_call for c in self.refundable(u)]
        if calls and (not pending or rng.random() < 0.6):
            c = rng.choice(calls)
            victim = self._payer_host(rng.choice((c.user, c.listener)))
            work = self.refund(c.call_id, None, True, self.key())
            parties = (c.user, c.listener)
        elif pending:
            payout_id = rng.choice(pending)
            listener = m.payouts[payout_id][0]
            victim = self._payer_host(listener)
            work = self.settle(payout_id, rng.choice(("paid", "rejected")))
            parties = (listener,)
        else:
            return
        task = asyncio.ensure_future(work)
        # Somewhere inside it: before the first commit, between the steps, or after.
        await asyncio.sleep(rng.uniform(0, 1.5 * self._money_back_s))
        if self._kill(victim):
            self.result.faults_injected["crash_inside_money_back"] += 1
        await task
        for who in parties:
            await self.check_balance(who)
