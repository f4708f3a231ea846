"""`billing-engine statement USER_ID`: a person's transfers in time order with the balance
after each, every page of them, as a table (or CSV with `--csv`, times in ISO 8601)."""

from __future__ import annotations

import csv
import sys

from rich.table import Table

from actors.times import iso
from engine.explain import clock

COLUMNS = ("at", "kind", "amount", "unit", "balance_after", "call_id", "minutes", "transfer_id")


async def every_row(engine, user_id: int, page_rows: int) -> list[dict]:
    rows, after = [], None
    while True:
        page = await engine.statement(user_id, after=after, limit=page_rows)
        rows += page["transfers"]
        after = page["next_after"]
        if after is None:
            return rows


def table(user_id: int, rows: list[dict]) -> Table:
    t = Table(title=f"statement of {user_id}: {len(rows)} transfers")
    for name in COLUMNS:
        t.add_column(name, justify="right" if name in ("amount", "balance_after") else "left")
    for r in rows:
        cells = {k: "" if r[k] is None else str(r[k]) for k in COLUMNS}
        t.add_row(*(clock(r["at"]) if k == "at" else cells[k] for k in COLUMNS))
    return t


def show(user_id: int, rows: list[dict], as_csv: bool, console) -> None:
    if as_csv:
        out = csv.DictWriter(sys.stdout, fieldnames=COLUMNS, extrasaction="ignore")
        out.writeheader()
        for r in rows:
            out.writerow(r | {"at": iso(r["at"])})
    else:
        console.print(table(user_id, rows))
