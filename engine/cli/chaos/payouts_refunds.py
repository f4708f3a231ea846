"""Payouts settled and calls refunded in a chaos run: each sent (retried with its key until
answered) and its answer checked against the model at once. (The crash that lands inside one is
a fault: `faults.py`.)"""

from __future__ import annotations

from actors.errors import (
    CallOngoing,
    IdempotencyConflict,
    InsufficientEarnings,
    PayoutSettled,
    RefundExceedsBilled,
)
from engine.cli.chaos.answers import ChaosRequests

REFUSALS = {
    "settled": PayoutSettled,
    "ongoing": CallOngoing,
    "exceeds": RefundExceedsBilled,
    "insufficient": InsufficientEarnings,
    "conflict": IdempotencyConflict,
}
CRASH_INSIDE_S = 0.05  # a refund or a settle takes about this long here, to begin with


class PayoutsAndRefunds:
    """A chaos run's payouts settled and calls refunded, each answer checked against the
    model; it keeps how long one takes lately, for a crash to land inside one."""

    def __init__(self, requests: ChaosRequests) -> None:
        self.requests = requests
        self.lately_s = CRASH_INSIDE_S  # how long a refund or a settle takes, lately

    def _refused(self, what: str, expected: str, status: str, answer) -> None:
        if status != "refused" or not isinstance(answer, REFUSALS[expected]):
            self.requests.mismatch(f"{what}: expected {expected}, got {status} {answer!r}")

    def _acknowledged(self, what: str, expected: str, applies: bool, outcomes) -> list:
        """The answers in `outcomes` that acknowledged the request, each refusal or failure
        checked first against what the model `expected` (`applies`: that it takes effect)."""
        r, out = self.requests, []
        for status, answer in outcomes:
            if status == "unanswered":
                continue  # counted as stuck
            if not applies:
                self._refused(what, expected, status, answer)
            elif status != "ok":
                r.mismatch(f"{what}: expected it to take effect, got {answer!r}")
            else:
                r.result.acknowledged += 1
                out.append(answer)
        return out

    async def settle(self, payout_id: int, outcome: str, copies: int = 1) -> None:
        r = self.requests
        r.result.operations += copies
        send = lambda: r.engine.settle_payout(payout_id, outcome, "chaos")  # noqa: E731
        outcomes, self.lately_s = await r.timed(send, copies, self.lately_s)
        expected = r.model.settle(payout_id, outcome, r.engine.clock.now())
        listener = r.model.payouts[payout_id][0]
        what = f"payout {payout_id} {outcome}"
        for answer in self._acknowledged(what, expected, expected != "settled", outcomes):
            if answer["status"] != outcome or answer["earnings_paise"] != r.model.paise[listener]:
                r.mismatch(f"{what}: answered {answer}, model {r.model.paise[listener]}")

    async def refund(self, call_id: int, minutes, pays: bool, key: str, copies: int = 1) -> None:
        r = self.requests
        r.result.operations += copies
        send = lambda: r.engine.refund_call(call_id, minutes, "chaos", key, pays)  # noqa: E731
        outcomes, self.lately_s = await r.timed(send, copies, self.lately_s)
        expected, n = r.model.refund(key, call_id, minutes, pays, r.engine.clock.now())
        what = f"refund {minutes} minutes of call {call_id} (pays={pays}) key {key}"
        applies = expected in ("applied", "repeat")
        for answer in self._acknowledged(what, expected, applies, outcomes):
            want = (n, *r.model.refunded[key])
            got = (answer["minutes"], answer["coins"], answer["paise"])
            if got != want or answer["refunded_at"] is None:
                r.mismatch(f"{what}: answered {answer}, model {want}")

    def refundable(self, user: int) -> list:
        """Ended calls of `user` with minutes left to refund, whose listener is in no call."""
        m = self.requests.model
        return [
            c
            for c in m.calls.values()
            if c.user == user
            and c.status != "ongoing"
            and c.minutes > c.refunded
            and c.charged > c.refunded_coins
            and c.listener not in m.in_call
        ]
