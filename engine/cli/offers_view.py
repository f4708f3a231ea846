"""`billing-engine offers`: the offers with their budgets and what each cost, as a table; with
`--create FILE`, an offer (its terms as JSON, times in ISO 8601 with their offset) created
first; with `--show ID`, that offer alone."""

from __future__ import annotations

import json

from rich.table import Table

from actors.errors import InvalidInput
from actors.times import iso
from engine.cli.rate_cards_view import when

TIMES = ("valid_from", "valid_until")


async def run(engine, create: str | None, key: str | None, show: int | None) -> list[dict]:
    if create is not None:
        try:
            with open(create, encoding="utf-8") as f:
                terms = json.load(f)
        except (OSError, ValueError) as e:
            raise InvalidInput(f"{create}: not an offer's JSON: {e}") from None
        if not isinstance(terms, dict):
            raise InvalidInput(f"{create}: an offer is a JSON object")
        for t in TIMES:
            if isinstance(terms.get(t), str):
                terms[t] = when(terms[t])
        made = await engine.create_offer(**terms, idempotency_key=key)
        if show is None:
            show = made["offer_id"]
    if show is not None:
        return [await engine.offer(show)]
    return await engine.offers(limit=100)


def table(offers: list[dict]) -> Table:
    t = Table(title="offers")
    for name in ("id", "free min", "eligible", "call types", "window", "pays listener",
                 "budget", "reserved", "used", "left", "calls", "coins granted",
                 "coins returned", "earnings paid"):  # fmt: skip
        t.add_column(name)
    for o in offers:
        eligible = o["eligible"] + (f" {o['code']}" if o["code"] else "")
        t.add_row(
            str(o["offer_id"]), str(o["free_minutes"]), eligible, ", ".join(o["call_types"]),
            f"{iso(o['valid_from'])} .. {iso(o['valid_until'])}", o["pays_listener"],
            *(str(o[k]) for k in ("budget_minutes", "minutes_reserved", "minutes_used",
                                  "minutes_left", "calls", "coins_granted", "coins_returned",
                                  "earnings_paid_paise")),
        )  # fmt: skip
    return t
