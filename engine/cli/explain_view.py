"""`billing-engine explain call ID`: every minute of a call and the payer's transfers during
it, in time order, as a table (or JSON with `--json`), and the rule that ended it."""

from __future__ import annotations

import json

from rich.table import Table

from actors.times import iso_times
from engine.explain import clock


def rows_in_time_order(out: dict) -> list[tuple]:
    """(time, what, coins, balance after, billed, committed) for each minute and transfer."""
    rows = [
        (
            m.get("paid_at") or m["due_at"],
            f"minute {m['minute']}"
            + (" (offer)" if m.get("paid_by") == "offer" else "")
            + (" (paid in its grace)" if m.get("paid_at") else ""),
            -m["coins"],
            m["balance_after_coins"],
            m["billed_at"],
            m["committed_at"],
        )
        for m in out["minutes"]
    ]
    rows += [
        (
            e["at"],
            f"minute of call {e['call_id']}"
            if e["tx_type"] == "spend" and e["call_id"]
            else e["tx_type"],
            e["coins"],
            e["balance_after_coins"],
            e["at"],
            e["committed_at"],
        )
        for e in out["wallet_events"]
    ]
    return sorted(rows, key=lambda r: (r[0], r[2] < 0))  # at one instant, credits first


def table(out: dict) -> Table:
    c = out["call"]
    t = Table(
        title=f"call {c['call_id']}: payer {c['user_id']} -> listener {c['listener_id']}, "
        f"{c['call_type']} at {c['rate_coins']} coins a minute, {c['status']}"
    )
    for name in ("at", "what", "coins", "balance after", "billed", "committed"):
        t.add_column(name, justify="right" if name in ("coins", "balance after") else "left")
    for at, what, coins, balance, billed, committed in rows_in_time_order(out):
        t.add_row(
            clock(at),
            what,
            f"{coins:+d}",
            "-" if balance is None else str(balance),
            clock(billed),
            "[yellow]not yet[/]" if committed is None else clock(committed),
        )
    end = out["end"]
    ended = "ongoing: " + clock(c["next_tick_at"]) + " next"
    if end is not None:
        ended = f"{end['rule']}\n{end['charge']}"
    offer = "" if out.get("offer") is None else f"{out['offer']}\n"
    t.caption = f"{out['price']}\n{offer}{ended}"
    return t


def show(out: dict, as_json: bool, console) -> None:
    if as_json:
        console.print_json(json.dumps(iso_times(out)))
    else:
        console.print(table(out))
