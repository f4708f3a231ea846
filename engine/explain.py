"""Every minute of a call explained: the call's minutes and the payer's other coin transfers
during it, in time order, each with the payer's balance after it, and the end with the rule that
decided it, in words and numbers. Built from the ledger (`persistence/call_ledger.py`) and the
call as `get_call` answers it; minutes the live host billed that the ledger does not hold yet
are listed with `committed_at` null.

Times are epoch seconds, as in every answer of the engine (`get_call`, HTTP); `rule` spells
them as UTC clock times, for a person."""

from __future__ import annotations

import datetime as dt

from actors import price_plan as plan
from actors.money import REASON_EXPIRED, REASON_HANGUP, REASON_INSUFFICIENT, to_ms


def clock(t: float | None) -> str:
    """A time as a person reads it in a rule: `12:03:00.250 UTC`."""
    if t is None:
        return "-"
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%H:%M:%S.%f")[:-3] + " UTC"


def explain(call: dict, ledger: dict, heartbeat_timeout_s: float) -> dict:
    """`{"call", "minutes", "wallet_events", "end", "rows_cut"}` for one call: `call` as
    `get_call` answered it, `ledger` as `call_ledger.read` read it."""
    rows, balance = ledger["rows"], ledger["balance_now"]
    after = [0] * len(rows)
    for i in range(len(rows) - 1, -1, -1):  # the ledger's balance now, walked back
        after[i] = balance
        balance -= rows[i]["amount"]
    minutes, events = [], []
    ended_at = call["ended_at"]
    ours = [row["call_id"] == call["call_id"] and row["minute_no"] is not None for row in rows]
    # What came before the call's first row (minute 1, or its offer's grant) is not "during".
    its = [row["call_id"] == call["call_id"] for row in rows]
    first = its.index(True) if True in its else 0
    free = (call["offer"] or {}).get("free_minutes", 0)
    minute_s = (ledger["minute_ms"] or 60_000) / 1000
    for row, mine, balance_after in zip(rows[first:], ours[first:], after[first:], strict=True):
        if mine:
            due = call["connected_at"] + (row["minute_no"] - 1) * minute_s
            minutes.append(_minute(row, balance_after, free, due))
        elif ended_at is None or row["at"] <= ended_at:
            events.append(_event(row, balance_after))
    for n in range(len(minutes) + 1, call["billed_minutes"] + 1):  # live, not committed yet
        due = call["connected_at"] + (n - 1) * minute_s
        minutes.append(
            {
                "minute": n,
                "due_at": due,
                "billed_at": None,
                "committed_at": None,
                "coins": call["rate_coins"],
                "balance_after_coins": None,
                "paid_by": "offer" if n <= free else "payer",
                "paid_at": None,
            }
        )
    terms = (minute_s, ledger["max_minutes"], heartbeat_timeout_s, ledger.get("grace_s", 0))
    end = _end(call, minutes, events, terms)
    if end is not None:
        end["charge"] = _charge(call, ledger["minute_ms"] or 60_000)
    return {
        "call": call,
        "price": plan.decided_in_words(call["price"], call["tier"]),
        "offer": _offer(call, ledger.get("offer")),
        "minutes": minutes,
        "wallet_events": events,
        "end": end,
        "rows_cut": ledger["cut"],
    }


def _offer(call: dict, offer: dict | None) -> str | None:
    """The offer that paid the call's first minutes, in words."""
    if call["offer"] is None or offer is None:
        return None
    free, call_id = call["offer"]["free_minutes"], call["call_id"]
    who = "the platform pays the listener for them"
    if offer["pays_listener"] != "platform":
        who = "nobody pays the listener for them (they opted in)"
    grant = free * call["rate_coins"]
    words = (
        f"offer {offer['offer_id']} ({offer['eligible']}): the first {free} minutes free, "
        f"paid from its grant of {grant} coins (offer:{call_id}); {who}"
    )
    if call["ended_at"] is not None:
        words += (
            f"; {offer['minutes_used']} used, {offer['coins_returned']} coins back "
            f"(offer_return:{call_id}), {offer['earnings_paise']} paise of earnings paid"
        )
    return words


def _minute(row: dict, balance_after: int, free: int, due: float) -> dict:
    late = row["at"] - due > 0.0005  # paid in its grace, by a credit after it fell due
    return {
        "minute": row["minute_no"],
        "due_at": due if late else row["at"],
        "paid_at": row["at"] if late else None,
        "billed_at": row["billed_at"],
        "committed_at": row["committed_at"],
        "coins": -row["amount"],
        "balance_after_coins": balance_after,
        "paid_by": "offer" if row["minute_no"] <= free else "payer",
    }


def _event(row: dict, balance_after: int) -> dict:
    return {
        "transfer_id": row["transfer_id"],
        "tx_type": row["tx_type"],
        "coins": row["amount"],
        "call_id": row["call_id"],
        "at": row["at"],
        "committed_at": row["committed_at"],
        "balance_after_coins": balance_after,
    }


def _end(call: dict, minutes: list[dict], events: list[dict], terms: tuple) -> dict | None:
    """The end and the rule that decided it; None while the call is ongoing."""
    reason, at = call["end_reason"], call["ended_at"]
    if reason is None:
        return None
    minute_s, max_minutes, heartbeat_timeout_s, grace_s = terms
    n = call["billed_minutes"]
    if reason == REASON_HANGUP:
        started = call["connected_at"] + (n - 1) * minute_s
        rule = f"hung up at {clock(at)}: minute {n} started at {clock(started)}, billed"
    elif reason == REASON_INSUFFICIENT:
        balance = _balance_at(at, minutes, events)
        rule = (
            f"dropped at {clock(at)}: balance {balance} coins < rate {call['rate_coins']} "
            f"coins a minute, so minute {n + 1} could not be paid"
        )
        if grace_s:
            rule += f", nor was it within its {grace_s}-s grace"
    elif reason == REASON_EXPIRED and max_minutes and n >= max_minutes:
        rule = f"expired at {clock(at)}: the call reached its maximum of {max_minutes} minutes"
    else:
        rule = (
            f"expired at {clock(at)} by the cleanup: a party sent no heartbeat for "
            f"{heartbeat_timeout_s:.0f} s"
        )
    return {"status": call["status"], "reason": reason, "rule": rule, "at": at}


def _charge(call: dict, minute_ms: int) -> str:
    """The end-of-call rounding in words: the call's recorded price over its recorded length."""
    price = plan.from_view(call["price"])
    elapsed_ms = to_ms(call["ended_at"]) - to_ms(call["connected_at"])
    charged = plan.charge(price, call["billed_minutes"], elapsed_ms, minute_ms)
    return plan.in_words(price, charged, call["billed_minutes"])


def _balance_at(at: float, minutes: list[dict], events: list[dict]) -> int | None:
    """The payer's balance just before `at`: after the last transfer at or before it."""
    timed = [(m["paid_at"] or m["due_at"], m["balance_after_coins"]) for m in minutes]
    timed += [(e["at"], e["balance_after_coins"]) for e in events]
    known = [b for t, b in sorted(timed, key=lambda x: x[0]) if t <= at and b is not None]
    return known[-1] if known else None
