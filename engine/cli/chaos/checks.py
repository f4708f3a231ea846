"""What a chaos run found: its counts, and the comparison of PostgreSQL with the model."""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field

from engine.cli.chaos.model import Model
from persistence import readback
from persistence.audit import run_audit
from persistence.audit_totals import ledger_totals

MISMATCHES_KEPT = 50


@dataclass
class ChaosResult:
    seed: int
    placement: str
    seconds: float
    steps: int = 0
    operations: int = 0
    acknowledged: int = 0
    calls: int = 0
    minutes_billed: int = 0
    retries: int = 0
    stuck: int = 0
    faults_injected: Counter = field(default_factory=Counter)
    acknowledged_lost: int = 0
    minutes_double_billed: int = 0
    invariant_violations: int = 0
    audit_ok: bool = False
    audit: dict = field(default_factory=dict)
    wallet_ops: dict = field(default_factory=dict)  # payouts, refunds, buckets in the end
    mismatches: list[str] = field(default_factory=list)

    def mismatch(self, what: str) -> None:
        self.invariant_violations += 1
        if len(self.mismatches) < MISMATCHES_KEPT:
            self.mismatches.append(what)

    @property
    def ok(self) -> bool:
        return (
            self.acknowledged_lost == 0
            and self.minutes_double_billed == 0
            and self.invariant_violations == 0
            and self.stuck == 0
            and self.audit_ok
        )

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["faults_injected"] = dict(sorted(self.faults_injected.items()))
        return out | {"ok": self.ok}


def _check_money_back(db: dict, m: Model, r: ChaosResult) -> None:
    """Every acknowledged payout in its model status, every refund whole (minutes, who pays,
    coins given); nothing stored the model does not know."""
    for pid, (_, _, status) in m.payouts.items():
        if db["payouts"].get(pid) != status:
            r.mismatch(f"payout {pid}: stored {db['payouts'].get(pid)}, model {status}")
    for pid in db["payouts"].keys() - m.payouts.keys():
        r.mismatch(f"payout {pid} was stored but never acknowledged")
    known = set()
    for key, (cid, minutes, pays) in m.refunds.items():
        rid = f"refund:{cid}:{key}"
        known.add(rid)
        if db["refunds"].get(rid) != (minutes, pays, True):
            r.acknowledged_lost += rid not in db["refunds"]
            r.mismatch(f"refund {rid}: stored {db['refunds'].get(rid)}, model {minutes} {pays}")
    for rid in db["refunds"].keys() - known:
        r.mismatch(f"refund {rid} was stored but never acknowledged")
    statuses = Counter(db["payouts"].values())
    r.wallet_ops = {f"payouts_{s}": n for s, n in sorted(statuses.items())}
    r.wallet_ops |= {"refunds": len(db["refunds"]), "returns": len(db["returned"])}
    r.wallet_ops |= db["buckets"]


async def _check_offers(pool, m: Model, r: ChaosResult) -> None:
    """Every call took the free minutes its start answered (no other), and no budget was
    overspent: what ended calls used is what the model says, nothing is held at the end."""
    db = await readback.offers_state(pool)
    took = {cid: c.free for cid, c in m.calls.items() if c.free}
    if db["offer_minutes"] != took:
        r.mismatch(f"offer minutes stored {db['offer_minutes']}, answered {took}")
    used = sum(min(c.minutes, c.free) for c in m.calls.values() if c.status != "ongoing")
    for o in db["offers"]:
        if o["minutes_reserved"] + o["minutes_used"] > o["budget_minutes"]:
            r.mismatch(f"offer {o['offer_id']} overspent: {o}")
        if (o["minutes_used"], o["minutes_reserved"]) != (used, 0):
            r.mismatch(f"offer {o['offer_id']}: {o}, model used {used}, none held")
    if db["offers"]:
        r.wallet_ops |= {"offer_calls": len(took), "offer_minutes_used": used}
    r.wallet_ops |= db["grace"]


async def check_database(pool, m: Model, r: ChaosResult) -> None:
    """Compare PostgreSQL with the model; run the audit. Findings go into `r`."""
    r.calls = len(m.calls)
    r.minutes_billed = sum(c.minutes for c in m.calls.values())
    db = await readback.snapshot(pool)
    for who, held in m.coins.items():
        if db["coins"].get(who) != held:
            r.mismatch(f"stored coins of {who}: {db['coins'].get(who)}, model {held}")
    for who, held in m.paise.items():
        if db["paise"].get(who) != held:
            r.mismatch(f"stored earnings of {who}: {db['paise'].get(who)}, model {held}")
    ext = db["externals"]
    for tid, want in m.externals.items():
        if tid not in ext:
            r.acknowledged_lost += 1
            r.mismatch(f"acknowledged transfer {tid} is not in the ledger")
        elif ext[tid] != want:
            r.mismatch(f"transfer {tid}: stored {ext[tid]}, model {want}")
    for tid in ext.keys() - m.externals.keys():
        r.mismatch(f"transfer {tid} was never acknowledged")
    for cid, c in m.calls.items():
        row = db["calls"].get(cid)
        if row is None:
            r.acknowledged_lost += 1
            r.mismatch(f"acknowledged call {cid} is not stored")
            continue
        got = (row["status"], row["end_reason"], row["billed_minutes"], row["coins_spent"])
        want = (c.status, c.reason, c.minutes, c.minutes * c.rate_coins)
        if c.status != "ongoing":
            returned = c.minutes * c.rate_coins - c.charged
            got += (row["coins_charged"], db["returned"].get(cid, 0))
            want += (c.charged, returned)
        if got != want:
            r.mismatch(f"call {cid}: stored {got}, model {want}")
        n = db["minutes"].get(cid, 0)
        r.minutes_double_billed += max(0, n - c.minutes)
        if n < c.minutes:
            r.acknowledged_lost += c.minutes - n
            r.mismatch(f"call {cid}: {n} minute transfers, model {c.minutes}")
        if db["earned"].get(cid, 0) != c.earned:
            r.mismatch(f"call {cid}: earned {db['earned'].get(cid)}, model {c.earned}")
    for cid in db["calls"].keys() - m.calls.keys():
        r.mismatch(f"call {cid} was stored but never started as far as the model knows")
    _check_money_back(db, m, r)
    await _check_offers(pool, m, r)
    checks = await run_audit(pool)
    totals = await ledger_totals(pool)
    r.audit = {name: n for name, n in checks} | {"coins_conserved": totals["coins_conserved"]}
    r.audit_ok = all(n == 0 for _, n in checks) and totals["coins_conserved"]
    r.invariant_violations += sum(n for _, n in checks) + (not totals["coins_conserved"])
