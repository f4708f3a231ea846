"""Rule 9 for one payer: every minute and drop due by a time, billed in the order they fell due.

A wallet's history is a log ordered by time. Whatever asks a wallet something at time t (a tick,
a top-up, a spend, a hang-up, a read) first has every minute due at or before t billed, so a
top-up never pays a minute that fell due before it arrived, and a spend is never accepted
against coins that a minute already took. When a payer has more than one call, their minutes
are billed in the order they fell due, not call by call.
"""

from __future__ import annotations

from actors.call import Call
from actors.settlement import Settlement
from actors.wallet import Wallet


def bill_call_due(
    wallet: Wallet, call: Call, through_minute: int, now_ms: int, out: list
) -> Settlement | None:
    """Bill one call's minutes up to `through_minute`; the transfers go to `out`. Returns the
    settlement if the payer ran short or the call ran out of time."""
    transfers, last, short = wallet.bill_minutes(call.call_id, through_minute)
    if transfers:
        out.extend(transfers)
    return call.after_billing_ms(last, short, now_ms)


def bill_payer_due(wallet: Wallet, calls: list[Call], now_ms: int, out: list) -> list[Settlement]:
    """Bill every minute due by `now_ms` of the ongoing `calls` that `wallet` pays, in due
    order; the transfers go to `out`, in that order. Returns the calls that ended."""
    live = [c for c in calls if c.settlement is None]
    settled: list[Settlement] = []
    if len(live) == 1:  # the usual case, and the hot path: one call, its minutes in order
        c = live[0]
        s = bill_call_due(wallet, c, c.minute_at_ms(now_ms), now_ms, out)
        if s is not None:
            settled.append(s)
    elif live:
        while True:
            # the call whose next minute fell due first
            due = [
                c
                for c in live
                if c.settlement is None
                and c.billed_minutes < c.minute_at_ms(now_ms)
                and not c.waiting(now_ms)
            ]
            if not due:
                break
            c = min(due, key=Call.next_due_ms)
            s = bill_call_due(wallet, c, c.billed_minutes + 1, now_ms, out)
            if s is not None:
                settled.append(s)
        for c in live:  # fully billed calls that ran out of time
            if c.settlement is None:
                s = c.after_billing_ms(c.billed_minutes, False, now_ms)
                if s is not None:
                    settled.append(s)
    wallet.stamp(now_ms)
    return settled


def resume_paid(wallet: Wallet, calls: list[Call], at_ms: int, out: list) -> int:
    """After a credit to `wallet` at `at_ms`: each of its calls waiting in their grace, in the
    order their unpaid minutes fell due, has that minute billed now if the coins pay it (dated
    at the credit: nothing is dated before what paid for it). Returns the minutes billed."""
    waiting = sorted((c for c in calls if c.waiting(at_ms)), key=lambda c: c.suspended_ms)
    billed = 0
    for c in waiting:
        transfers, last, short = wallet.bill_minutes(c.call_id, c.billed_minutes + 1, at_ms)
        out.extend(transfers)
        billed += len(transfers)
        c.after_billing_ms(last, short, at_ms)  # within the grace: resumed, or waits on
    return billed
