"""`billing-engine rate-cards`: the card in force, those scheduled and past ones, as a table;
with `--schedule FILE --at TIME`, a card (the JSON of BILLING_RATE_CARD) scheduled first."""

from __future__ import annotations

import datetime as dt
import json

from rich.table import Table

from actors.errors import InvalidInput
from actors.times import iso


def when(text: str) -> float:
    """An ISO 8601 time with its offset, as epoch seconds."""
    try:
        at = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"--at must be an ISO 8601 time, got {text!r}") from None
    if at.tzinfo is None:
        raise InvalidInput(f"--at must say its offset (e.g. +05:30 or Z), got {text!r}")
    return at.timestamp()


async def run(engine, schedule: str | None, at: str | None, key: str | None) -> dict:
    if schedule is not None:
        if at is None:
            raise InvalidInput("--schedule needs --at, the time the card takes effect")
        try:
            with open(schedule, encoding="utf-8") as f:
                card = json.load(f)
        except (OSError, ValueError) as e:
            raise InvalidInput(f"{schedule}: not a rate card's JSON: {e}") from None
        await engine.schedule_rate_card(when(at), card, idempotency_key=key)
    return await engine.rate_cards()


def table(listed: dict) -> Table:
    t = Table(title="rate cards")
    for name in ("id", "state", "effective at", "coins a minute", "increments", "free s",
                 "listener bounds", "earnings"):  # fmt: skip
        t.add_column(name)
    rows = [(c, "in force") for c in [listed["in_force"]]]
    rows += [(c, "scheduled") for c in listed["scheduled"]]
    rows += [(c, "past") for c in listed["past"]]
    for c, state in rows:
        card = c["card"]
        at = "-" if c["effective_at"] is None else iso(c["effective_at"])
        rule = card["earnings_rule"]
        if rule == "share":
            rule += f" {card['share_pct']}% of {card['coin_value_paise']} paise a coin"
        t.add_row(
            str(c["rate_card_id"]), state, at, _pairs(card["coins_per_minute"]),
            _pairs(card["increment_s"]), _pairs(card["free_s"]),
            ", ".join(sorted(card["price_bounds"])) or "-", rule,
        )  # fmt: skip
    return t


def _pairs(by_type: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in by_type.items())
